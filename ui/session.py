"""Sign-in for the app: PathRay sessions (:mod:`pathray.catalog.auth`) in an HttpOnly cookie.

Only sessions count here, never API tokens: a service token pasted into a cookie must not open
the clinician app.
"""

from __future__ import annotations

import contextlib

from pathray.catalog import Catalog
from pathray.catalog.auth import Principal
from pathray.errors import PathRayError

SESSION_PREFIX = "prs_"


def sign_in(catalog: Catalog, name: str, password: str) -> str | None:
    """A new session token for a correct name and password, else None."""
    try:
        return catalog.login(name, password).token
    except PathRayError:
        return None


def user_for(catalog: Catalog, token: str | None) -> Principal | None:
    """The signed-in user of a session token, or None (no, unknown, expired or ended session)."""
    if not token or not token.startswith(SESSION_PREFIX):
        return None
    try:
        return catalog.resolve_session(token)
    except PathRayError:
        return None


def sign_out(catalog: Catalog, token: str | None) -> None:
    """End a session (nothing happens for a missing or unknown one)."""
    if token and token.startswith(SESSION_PREFIX):
        with contextlib.suppress(PathRayError):
            catalog.end_session(token)
