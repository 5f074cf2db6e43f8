"""Tissue masking units."""
