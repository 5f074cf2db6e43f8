"""The Ray Serve application: REST API, tile and overlay endpoints, inference deployments.

Depends on :mod:`pathray` and :mod:`pipelines`; neither imports this package (the ``pathray
serve`` command loads it lazily).
"""
