"""The serve load benchmark fails when requests fail (issue 23 item 3: 0/200 OK exited 0)."""

from __future__ import annotations

from typing import Any

from benchmarks.serve_load import unexpected_failures


def _payload(ok: int, other: int = 0) -> dict[str, Any]:
    return {
        "rows": [
            {"mode": "in-process", "tiles/s": 10.0},
            {"mode": "served, no batching", "requests": 200, "ok": ok, "errors": {500: "x"}},
        ],
        "overload": [
            {"ok": 3, "503": 40, "other": other, "retry_after_on_all_503": True, "errors": {}}
        ],
    }


def test_a_run_where_requests_failed_is_a_failure() -> None:
    assert unexpected_failures(_payload(ok=200)) == []
    failed = unexpected_failures(_payload(ok=0))
    assert len(failed) == 1 and "0/200 requests succeeded" in failed[0]
    assert "other" in unexpected_failures(_payload(ok=200, other=2))[0]
