"""Reproducible speed comparisons of PathRay's hot paths against their peers.

Each module runs PathRay and its peer on the same data in the same process run, prints a table
with ratios (not only absolute times) and appends one JSON line to ``benchmarks/results/``
(git-ignored). Every module has a ``main()``; ``python -m benchmarks.run_all`` runs them all.
Benchmarks are not tests: tests check correctness, benchmarks report numbers.
"""
