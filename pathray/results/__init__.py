"""The cold store: run results as Lance datasets, region queries, Parquet export."""

import os

# Lance logs a warning each time it creates a dataset, and PathRay creates one per run on purpose.
# The variable is read when Lance's native library loads, so it is set before any import of it.
os.environ.setdefault("LANCE_LOG", "error")
