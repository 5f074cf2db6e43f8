"""The Serve application's health as the app shows it: latency per endpoint and drift warnings.

The inference service (``pathray serve``) keeps its statistics in its ingress replica; the app
reads them over HTTP from ``GET /v1/monitoring`` with a token of a role allowed to monitor
(engineer or service). Where the service lives and which token to use come from the environment:

- ``PATHRAY_SERVE_URL``: the service's base URL, e.g. ``http://127.0.0.1:8000``;
- ``PATHRAY_SERVE_TOKEN``: a bearer token (``pathray tokens create app-monitor --role engineer``).

Example:
    >>> print(service_markdown(None, None))  # doctest: +ELLIPSIS
    No inference service is configured...
"""

from __future__ import annotations

import os
from typing import Any

import httpx


def service_settings() -> tuple[str | None, str | None]:
    """``(url, token)`` of the inference service, from the environment (None where unset)."""
    return os.environ.get("PATHRAY_SERVE_URL") or None, os.environ.get("PATHRAY_SERVE_TOKEN")


def fetch_monitoring(url: str, token: str | None, timeout: float = 5.0) -> dict[str, Any]:
    """The service's ``/v1/monitoring`` report.

    Raises:
        httpx.HTTPError: The service did not answer, or answered with an error status.
    """
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    response = httpx.get(f"{url.rstrip('/')}/v1/monitoring", headers=headers, timeout=timeout)
    response.raise_for_status()
    return dict(response.json())


def service_markdown(url: str | None, token: str | None) -> str:
    """The service's state as Markdown: drift first (what needs attention), then latency."""
    if not url:
        return (
            "No inference service is configured: set PATHRAY_SERVE_URL (and "
            "PATHRAY_SERVE_TOKEN, an engineer's token) before `pathray ui`."
        )
    try:
        report = fetch_monitoring(url, token)
    except httpx.HTTPStatusError as exc:
        code = exc.response.status_code
        why = "the token is missing or not allowed to monitor" if code in (401, 403) else ""
        return f"**The service at {url} refused the request ({code})** {why}".rstrip()
    except httpx.HTTPError as exc:
        return f"**The service at {url} did not answer:** {type(exc).__name__}"
    return "\n\n".join([_drift_markdown(report.get("drift", {})), _latency_markdown(report)])


def _drift_markdown(drift: dict[str, Any]) -> str:
    if not drift.get("reference"):
        return "Drift: no training reference is loaded, so input drift is not watched."
    if drift.get("warning"):
        items = "\n".join(f"- {w}" for w in drift.get("warnings", []))
        return f"**⚠ Drift warning:** inputs or predictions drifted past the threshold:\n{items}"
    return "Drift: none (incoming tiles and predictions are close to the training reference)."


def _latency_markdown(report: dict[str, Any]) -> str:
    endpoints = report.get("endpoints", {})
    if not endpoints:
        return "No requests in the last minute."
    rows = [
        "| endpoint | requests | per s | errors | p50 ms | p99 ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, e in sorted(endpoints.items()):
        rows.append(
            f"| `{name}` | {e.get('requests', 0)} | {e.get('per_second', 0):.2f} "
            f"| {e.get('errors', 0)} | {e.get('p50_ms', 0):.1f} | {e.get('p99_ms', 0):.1f} |"
        )
    return "\n".join(rows)
