"""The structure of a validated pipeline: levels, parallel branches, sources and sinks.

A node's *level* is the length of the longest chain of precursors above it. Nodes of one level
never depend on each other (each level is an antichain of the DAG), so they are the branches that
can run in parallel once the levels above them are done.

Example:
    >>> from pathray.pipeline.infer import infer_pipeline
    >>> spec = infer_pipeline(["tile_stats", "nucleus_segmentation", "tissue_mask"])
    >>> parallel_groups(spec)
    [['tissue_mask'], ['tile_stats', 'nucleus_segmentation']]
    >>> sinks(spec)
    ['tile_stats', 'nucleus_segmentation']
"""

from __future__ import annotations

from pathray.pipeline.graph import children, depths
from pathray.pipeline.spec import PipelineSpec


def parents_of(spec: PipelineSpec) -> dict[str, tuple[str, ...]]:
    """The precursors of every node, in listing order."""
    return {node.id: node.after for node in spec.units}


def levels(spec: PipelineSpec) -> dict[str, int]:
    """The level of every node (sources are at 0), after validating the spec.

    Raises:
        ConfigError: If the spec is invalid.
    """
    spec.ordered()
    return depths(parents_of(spec))


def parallel_groups(spec: PipelineSpec) -> list[list[str]]:
    """The nodes grouped by level: each group's nodes can run in parallel.

    Within a group the nodes keep the order the engine runs them in.

    Raises:
        ConfigError: If the spec is invalid.
    """
    order = [node.id for node in spec.ordered()]
    depth = depths(parents_of(spec))
    groups: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for node_id in order:
        groups[depth[node_id]].append(node_id)
    return groups


def sources(spec: PipelineSpec) -> list[str]:
    """Nodes without precursors: they read the tiles."""
    return [node.id for node in spec.units if not node.after]


def sinks(spec: PipelineSpec) -> list[str]:
    """Nodes no other node runs after: their outputs are the analysis result."""
    kids = children(parents_of(spec))
    return [node_id for node_id, below in kids.items() if not below]
