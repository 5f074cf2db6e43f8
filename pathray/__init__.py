"""PathRay: digital-pathology model management on Ray.

The library is organised by concept (see DESIGN.md): ``catalog`` (hot SQL store), ``slides``
(readers, tissue masks, tiling, the Ray Data source), ``units`` (the unit contract), ``pipeline``
(specs and ordering), ``engine`` (runs on Ray), ``results`` (cold Lance store), ``evaluate``
(metrics), ``iterate`` (judge and loop) and ``formats`` (annotation files).
"""

__version__ = "0.1.0"
