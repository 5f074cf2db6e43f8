"""Helpers of the browser tests: users, sign-in, screenshots (kept in tests/e2e/artifacts/)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM = "/usr/bin/chromium"
USERS = {"alice": ("clinician", "alice-password"), "erin": ("engineer", "erin-password")}


def sign_in(page: Any, url: str, user: str = "alice") -> None:
    """Fill the sign-in form of the page it is on."""
    page.fill("input[name=username]", user)
    page.fill("input[name=password]", USERS[user][1])
    page.click("button[type=submit]")


def shot(page: Any, name: str) -> Path:
    """Keep a screenshot as a test artifact."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
