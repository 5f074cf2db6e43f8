"""Nucleus segmentation and measurement.

- :mod:`pipelines.nuclei.segment`: classical instance segmentation of a tile
  (``segment_nuclei`` with its ``SegmentParams``).
- :mod:`pipelines.nuclei.merge`: merging of watershed basins split by shallow saddles.
- :mod:`pipelines.nuclei.features`: outlines in level-0 coordinates (``label_to_polygons``)
  and per-nucleus features (``nucleus_features``).
- :mod:`pipelines.nuclei.units`: the algorithms adapted to the unit contract.
"""
