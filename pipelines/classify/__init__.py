"""Nucleus classification units.

- :mod:`pipelines.classify.object_classifier`: :class:`NucleusObjectClassifier` (object ->
  object), XGBoost / random forest / SVM on the shape and stain features of
  :class:`~pipelines.nuclei.units.NucleusFeatures`.
- :mod:`pipelines.classify.crop_cnn`: :class:`NucleusCropCNN` (tile -> object), a small CNN (or
  a ResNet-18) on image crops centred on each segmented nucleus.

Both output ``class_label`` (str) and ``class_probability`` (float32) per nucleus.
"""
