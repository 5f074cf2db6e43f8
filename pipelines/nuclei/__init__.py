"""Nucleus segmentation and measurement.

- :mod:`pipelines.nuclei.segment`: classical instance segmentation of a tile
  (``segment_nuclei`` with its ``SegmentParams``).
- :mod:`pipelines.nuclei.merge`: merging of watershed basins split by shallow saddles.
- :mod:`pipelines.nuclei.features`: outlines in level-0 coordinates (``label_to_polygons``)
  and per-nucleus features (``nucleus_features``).
- :mod:`pipelines.nuclei.units`: the algorithms adapted to the unit contract.
- :mod:`pipelines.nuclei.pixel_classifier`, :mod:`pipelines.nuclei.unet`: trainable segmenters.
- :mod:`pipelines.nuclei.augment`, :mod:`pipelines.nuclei.stain`: colour augmentation and
  Macenko stain normalisation; :mod:`pipelines.nuclei.resample`: resolution changes;
  :mod:`pipelines.nuclei.instances`: seeded splitting of touching nuclei.
- :mod:`pipelines.nuclei.train_default`, :mod:`pipelines.nuclei.default_model`: the shipped
  default model of the ``nuclei`` preset, its training script and its first-use registration.
"""
