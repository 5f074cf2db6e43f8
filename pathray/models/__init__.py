"""Bring-your-own models: cards, safe file formats, version folders and predictors.

A core package: units use it, so it imports neither the catalog nor the cold store (the
services layer, :mod:`pathray.services.models`, joins the three).
"""
