"""Vector search: LanceDB's approximate indexes against an exact NumPy scan, on the same vectors.

Data: ``--size`` synthetic vectors of ``--dim`` values (default 1,000,000 x 256), clustered so that
nearest neighbours mean something: 2,000 cluster centres drawn from a normal distribution, each
vector its centre plus variation along ``--latent`` (16) directions of its own cluster plus a
little isotropic noise, L2-normalised (as the embedding units' vectors are); see
:func:`clustered`. The queries are further points drawn the same way, not in the table.

- Exact: a brute-force NumPy scan (one float32 matrix-vector product over all vectors, then
  ``argpartition``), query by query; it is also the ground truth of recall.
- LanceDB, one table per index kind (``--index``), built with the settings of PathRay's own
  indexes (:func:`pathray.results.vectors.ann_config`): IVF_PQ (sqrt(n) / 4 partitions, 8 values
  per sub-vector, refined by re-ranking ``refine_factor`` x k candidates on the raw vectors) and
  IVF_HNSW_SQ (an HNSW graph per 100,000 vectors over 8-bit scalar-quantised vectors). The table's
  ``search(...).limit(10)`` is timed query by query, Python overhead included, as PathRay calls it.

Reported per kind: table write and index build seconds, recall@10 against the exact answer, query
p50/p99 in ms, the process's RSS growth while building and its peak RSS while querying (MiB; the
benchmark's own NumPy copy of the vectors, ``size x dim x 4`` bytes, included), the index's size on
disk; and the exact scan's p50/p99 and the speed-up of the index over it.

Run: ``python -m benchmarks.vector_search [--size 1000000] [--dim 256] [--queries 200]
[--index IVF_PQ,IVF_HNSW_SQ]``.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from benchmarks.common import RssSampler, print_table, write_result
from pathray.results.vectors import NPROBES, REFINE, ann_config

CLUSTERS = 2_000
#: Spread of a cluster along its own latent directions, and isotropic noise on every value.
SPREAD = 0.1
NOISE = 0.02
K = 10


def clustered(n: int, dim: int, seed: int, latent: int = 16) -> np.ndarray:
    """``n`` unit-norm vectors in clusters of low intrinsic dimension.

    Vector = its cluster's centre + ``SPREAD`` x (``latent`` normal factors along the cluster's
    own random directions) + ``NOISE`` x isotropic noise, normalised: like embeddings, whose
    variation within a kind of tissue follows a few factors (stain, density, scale). With
    ``latent=0`` the clusters are isotropic (centre + 0.1 x noise on all ``dim`` values), where
    the 10 nearest of a cluster's members are nearly tied and approximate indexes rank them
    almost at random.
    """
    rng = np.random.default_rng(seed)
    shape = np.random.default_rng(0)  # centres and directions: the same for data and queries
    centres = shape.standard_normal((CLUSTERS, dim), np.float32)
    bases = shape.standard_normal((CLUSTERS, max(latent, 1), dim), np.float32)
    out = np.empty((n, dim), np.float32)
    for start in range(0, n, 10_000):  # in chunks: each row draws its cluster's directions
        m = min(10_000, n - start)
        picks = rng.integers(0, CLUSTERS, m)
        rows = centres[picks]
        if latent:
            factors = rng.standard_normal((m, latent), np.float32)
            rows += SPREAD * np.einsum("ml,mld->md", factors, bases[picks])
            rows += NOISE * rng.standard_normal((m, dim), np.float32)
        else:
            rows += 0.1 * rng.standard_normal((m, dim), np.float32)
        out[start : start + m] = rows
    out /= np.linalg.norm(out, axis=1, keepdims=True)
    return out


def exact_top_k(
    data: np.ndarray, queries: np.ndarray, k: int = K
) -> tuple[np.ndarray, list[float]]:
    """The exact k nearest (cosine) of each query by a NumPy scan, and each query's seconds."""
    found = np.empty((len(queries), k), np.int64)
    seconds = []
    for i, q in enumerate(queries):
        start = time.perf_counter()
        scores = data @ q
        top = np.argpartition(-scores, k)[:k]
        found[i] = top[np.argsort(-scores[top])]
        seconds.append(time.perf_counter() - start)
    return found, seconds


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of the true k nearest among those found."""
    return float(
        np.mean([len(set(f) & set(t)) / len(t) for f, t in zip(found, truth, strict=True)])
    )


def _table(data: np.ndarray) -> pa.Table:
    flat = pa.array(data.reshape(-1), pa.float32())
    vectors = pa.FixedSizeListArray.from_arrays(flat, data.shape[1])
    return pa.table({"vector": vectors, "id": pa.array(np.arange(len(data), dtype=np.int64))})


def _folder_mib(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20


def bench_index(
    kind: str,
    data: np.ndarray,
    queries: np.ndarray,
    truth: np.ndarray,
    folder: Path,
    nprobes: int,
    refine: int,
) -> dict[str, Any]:
    """Build one kind of index over the data and time the queries against it."""
    import lancedb

    n, dim = data.shape
    db = lancedb.connect(str(folder))
    start = time.perf_counter()
    table = db.create_table(kind.lower(), data=_table(data), mode="overwrite")
    write_s = time.perf_counter() - start
    config = ann_config(n, dim, kind)  # the settings PathRay's indexes use
    partitions = config.num_partitions
    with RssSampler() as build_rss:
        start = time.perf_counter()
        table.create_index("vector", config=config)
        build_s = time.perf_counter() - start
    index_mib = sum(_folder_mib(p) for p in (folder / f"{kind.lower()}.lance").glob("_indices"))
    table = db.open_table(kind.lower())
    nprobes = min(nprobes, partitions)

    def query(q: np.ndarray) -> np.ndarray:
        search = table.search(q, vector_column_name="vector").distance_type("cosine")
        search = search.nprobes(nprobes).limit(K).select(["id"])
        if kind == "IVF_PQ":
            search = search.refine_factor(refine)
        return np.asarray(search.to_arrow()["id"])

    for q in queries[:10]:  # warm the index cache
        query(q)
    found = np.empty_like(truth)
    seconds = []
    with RssSampler() as query_rss:
        for i, q in enumerate(queries):
            start = time.perf_counter()
            ids = query(q)
            seconds.append(time.perf_counter() - start)
            found[i, : len(ids)] = ids
            found[i, len(ids) :] = -1
    ms = np.asarray(seconds) * 1000
    return {
        "index": kind,
        "partitions": partitions,
        "nprobes": nprobes,
        "refine": refine if kind == "IVF_PQ" else None,
        "write s": round(write_s, 1),
        "build s": round(build_s, 1),
        "recall@10": round(recall(found, truth), 4),
        "p50 ms": round(float(np.percentile(ms, 50)), 2),
        "p99 ms": round(float(np.percentile(ms, 99)), 2),
        "build RSS MiB": round(build_rss.growth_mib),
        "query RSS MiB": round(query_rss.peak_mib),
        "index MiB": round(index_mib, 1),
    }


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print (and record) its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--latent", type=int, default=16, help="intrinsic dimension of a cluster (0: isotropic)"
    )
    parser.add_argument("--index", default="IVF_PQ,IVF_HNSW_SQ", help="IVF_PQ and/or IVF_HNSW_SQ")
    parser.add_argument("--nprobes", type=int, default=NPROBES, help="partitions searched")
    parser.add_argument("--refine", type=int, default=REFINE, help="IVF_PQ: refine_factor")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    data = clustered(args.size, args.dim, seed=1, latent=args.latent)
    queries = clustered(args.queries, args.dim, seed=2, latent=args.latent)
    print(f"{args.size:,} x {args.dim} vectors made in {time.perf_counter() - start:.1f} s")
    with RssSampler() as scan_rss:
        truth, scan_seconds = exact_top_k(data, queries)
    scan_ms = np.asarray(scan_seconds) * 1000
    exact = {
        "index": "NumPy exact scan",
        "recall@10": 1.0,
        "p50 ms": round(float(np.percentile(scan_ms, 50)), 2),
        "p99 ms": round(float(np.percentile(scan_ms, 99)), 2),
        "query RSS MiB": round(data.nbytes / 2**20 + scan_rss.growth_mib),
    }
    rows: list[dict[str, Any]] = [exact]
    folder = Path(tempfile.mkdtemp(prefix="vector-search-"))
    try:
        for kind in [k.strip() for k in args.index.split(",") if k.strip()]:
            row = bench_index(kind, data, queries, truth, folder, args.nprobes, args.refine)
            row["speed-up vs scan (p50)"] = round(exact["p50 ms"] / row["p50 ms"], 1)
            rows.append(row)
            print_table([row], title=f"{kind} done")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    title = f"vector search: {args.size:,} x {args.dim}, {args.queries} queries, k={K}"
    print_table(rows, columns=list(rows[-1]), title=title)
    write_result(
        "vector_search",
        {"args": vars(args), "rows": rows},
    )


if __name__ == "__main__":
    main()
