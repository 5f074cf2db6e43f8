"""Built-in units and preset pipelines: tissue masking, nuclei, classification.

Depends on :mod:`pathray`; the core never imports this package.
"""
