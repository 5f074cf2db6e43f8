"""A worker process for the slide fuzz tests: register and read one (mutated) slide per request.

Opens the catalog named by its argument once, then reads one slide path a line on stdin and
answers one JSON line
on stdout: ``{"outcome": "ok" | "rejected" | "error", "detail": ..., "seconds": ..., "peak_mb":
...}``. ``rejected`` is the clear refusal PathRay promises (a ``PathRayError``);
``error`` is any other exception, which the test counts as a defect. A native crash or a hang
shows as the worker dying or not answering, which the test sees from outside.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
import traceback

from pathray.catalog import Catalog
from pathray.errors import PathRayError
from pathray.slides.readers import open_reader
from pathray.slides.register import register_slides


def handle(catalog: Catalog, path: str, number: int) -> dict[str, object]:
    """Register (on a store of its own) and read one slide; say how it went."""
    start = time.perf_counter()
    try:
        report = register_slides(catalog, path, store=f"fuzz-{number}")
        if report.rejected:
            outcome, detail = "rejected", next(iter(report.rejected.values()))
        else:
            reader = open_reader(path)
            last = len(reader.level_dimensions) - 1
            width, height = reader.level_dimensions[last]
            tile = reader.read_level(0, 0, 0, 256, 256)
            overview = reader.read_level(last, 0, 0, min(width, 512), min(height, 512))
            assert tile.shape == (256, 256, 3) and overview.dtype.name == "uint8"
            outcome, detail = "ok", f"{len(reader.level_dimensions)} levels"
    except PathRayError as exc:
        outcome, detail = "rejected", str(exc)
    except Exception:
        outcome, detail = "error", traceback.format_exc(limit=6)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    seconds = time.perf_counter() - start
    return {"outcome": outcome, "detail": detail, "seconds": seconds, "peak_mb": peak_mb}


def main() -> None:
    # Answers go to the original stdout alone; whatever the libraries print goes to stderr.
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    from tiatoolbox.wsicore.wsireader import WSIReader  # noqa: F401  (imported before timing)

    with Catalog.open(sys.argv[1]) as catalog:
        answers.write(json.dumps({"ready": True}) + "\n")
        answers.flush()
        for number, line in enumerate(sys.stdin):
            answers.write(json.dumps(handle(catalog, line.strip(), number)) + "\n")
            answers.flush()


if __name__ == "__main__":
    main()
