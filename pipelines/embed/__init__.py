"""Embedding units: fixed-length vectors of tiles for similarity search."""
