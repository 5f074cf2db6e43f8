"""A unit failing inside a chain of Serve replicas reaches the client as one clean message."""

from __future__ import annotations

from ray.exceptions import RayTaskError

from pathray.errors import ConfigError
from serve.errors import CODES
from serve.ingress import _root_cause


def _through_replica(exc: BaseException) -> BaseException:
    """What an awaiting handle raises: a Ray task error that is also an instance of the cause."""
    error = RayTaskError("handle_request", "Traceback (most recent call last): ...", exc)
    return error.as_instanceof_cause()


def test_the_root_cause_comes_out_of_nested_task_errors() -> None:
    original = ConfigError("unit 'nucleus_unet' is not fitted.")
    from_unit = _through_replica(original)
    assert isinstance(from_unit, ConfigError)  # why the generic PathRayError handler caught it
    assert str(from_unit) != str(original)  # Ray's own text, not the unit's message
    chained = RayTaskError("pipeline", "Traceback ...", from_unit)  # unit replica -> pipeline
    assert _root_cause(chained) is original
    assert str(_root_cause(chained)) == "unit 'nucleus_unet' is not fitted."


def test_a_failed_pipeline_is_a_server_error_with_its_own_code() -> None:
    assert CODES["pipeline.failed"] == 500
    assert _root_cause(ValueError("plain")).args == ("plain",)
