"""Leakage: which evaluation samples have a near-duplicate in the reference split.

Decided pair by pair (an eval sample leaks when some reference sample lies within the
threshold), not through chained clusters, so a chain of borderline pairs cannot make a
sample "leak" into a reference sample it does not resemble.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .report import Leakage
from .search import NeighborGraph, nearest_among

__all__ = [
    "first_per_source",
    "leakage_record",
    "nearest_reference",
    "nearest_reference_by_group",
    "nearest_reference_in_pairs",
    "to_python",
]


def nearest_reference(
    x: np.ndarray,
    graph: NeighborGraph,
    threshold: float,
    split_of_row: np.ndarray,
    reference: int,
) -> tuple[np.ndarray, np.ndarray]:
    """For every row, its nearest reference row within ``threshold`` (``-1`` / ``inf`` if none).

    Uses the graph's close pairs in both directions. Rows whose whole neighbour list is within
    the threshold without a reference row among it (a large group of copies inside an eval
    split) may have a reference duplicate beyond the k-th neighbour; they are checked by exact
    search against the reference rows.
    """
    n = len(graph.indices)
    close = graph.distances <= threshold
    src = np.nonzero(close)[0].astype(np.int64)
    best_row, best_dist = nearest_reference_in_pairs(
        src, graph.indices[close], graph.distances[close], split_of_row, reference
    )

    saturated = (
        (split_of_row != reference) & (best_row < 0) & np.all(close, axis=1) & (graph.k < n - 1)
    )
    rows = np.flatnonzero(saturated)
    if rows.size:
        ref_rows = np.flatnonzero(split_of_row == reference)
        nearest, distances = nearest_among(x, rows, ref_rows)
        hit = distances <= threshold
        best_row[rows[hit]] = nearest[hit]
        best_dist[rows[hit]] = distances[hit]
    return best_row, best_dist


def nearest_reference_in_pairs(
    i: np.ndarray,
    j: np.ndarray,
    distance: np.ndarray,
    split_of_row: np.ndarray,
    reference: int,
) -> tuple[np.ndarray, np.ndarray]:
    """For every row, its nearest reference row among the close pairs ``(i, j, distance)``
    (``(p,)`` each, either order), ``-1`` / ``inf`` when it has none; ties go to the lower row.
    """
    n = len(split_of_row)
    best_row = np.full(n, -1, dtype=np.int64)
    best_dist = np.full(n, np.inf, dtype=np.float32)
    # both directions: (eval -> ref) and (ref -> eval) pairs
    a = np.concatenate([i, j])
    b = np.concatenate([j, i])
    d = np.concatenate([distance, distance])
    keep = (split_of_row[b] == reference) & (split_of_row[a] != reference)
    a, b, d = a[keep], b[keep], d[keep]
    pick = first_per_source(a, b, d)
    best_row[a[pick]] = b[pick]
    best_dist[a[pick]] = d[pick]
    return best_row, best_dist


def first_per_source(a: np.ndarray, b: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Indices into the pairs ``(a, b, d)`` ``(p,)`` each of the nearest pair of every
    distinct source ``a`` (smallest ``d``; ties go to the lower ``b``), ordered by source.
    """
    order = np.lexsort((b, d, a))
    first = np.ones(len(order), dtype=bool)
    first[1:] = a[order][1:] != a[order][:-1]
    return order[first]


def nearest_reference_by_group(
    i: np.ndarray,
    j: np.ndarray,
    distance: np.ndarray,
    group: np.ndarray,
    split_of_row: np.ndarray,
    reference: int,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`nearest_reference_in_pairs` when exact copies were joined once per group.

    ``group`` ``(N,)``: each row's group of identical rows (numbered by first row); the close
    pairs ``(i, j, distance)`` are between the groups' first rows only. A row's candidates are
    the reference rows of its own group (distance 0) and of every group paired with its own;
    from a group the lowest reference row stands for all (they are equal), so ties still go
    to the lower row.
    """
    n = len(split_of_row)
    n_groups = int(group.max()) + 1 if n else 0
    is_ref = split_of_row == reference
    lowest_ref = np.full(n_groups, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(lowest_ref, group[is_ref], np.flatnonzero(is_ref))
    has_ref = lowest_ref < np.iinfo(np.int64).max
    gi, gj = group[i], group[j]
    a = np.concatenate([gi, gj, np.flatnonzero(has_ref)])  # own group at distance 0
    b = np.concatenate([gj, gi, np.flatnonzero(has_ref)])
    d = np.concatenate([distance, distance, np.zeros(int(has_ref.sum()), np.float32)])
    keep = has_ref[b]
    a, b, d = a[keep], lowest_ref[b[keep]], d[keep]
    pick = first_per_source(a, b, d)
    group_row = np.full(n_groups, -1, dtype=np.int64)
    group_dist = np.full(n_groups, np.inf, dtype=np.float32)
    group_row[a[pick]] = b[pick]
    group_dist[a[pick]] = d[pick]
    best_row = np.where(is_ref, -1, group_row[group])
    best_dist = np.where(is_ref, np.float32(np.inf), group_dist[group]).astype(np.float32)
    return best_row, best_dist


def leakage_record(
    best_ref: np.ndarray,
    best_dist: np.ndarray,
    *,
    split: str,
    reference: str,
    ids: np.ndarray,
    labels: np.ndarray | None,
    ref_ids: np.ndarray,
    ref_labels: np.ndarray | None,
) -> Leakage:
    """The :class:`Leakage` of one split from its rows' nearest reference rows.

    ``best_ref`` ``(n,)``: position in the reference of each row's nearest reference sample
    within the threshold (``-1``: none), ``best_dist`` its distance. Leaked rows are listed
    closest first (ties by position), with per-class counts and label conflicts.
    """
    local = np.flatnonzero(best_ref >= 0)
    dist = best_dist[local]
    order = np.lexsort((local, dist))
    local, dist = local[order], dist[order]
    ref_local = best_ref[local]
    by_class: dict[Any, dict[str, float]] = {}
    conflicts: list[dict[str, Any]] = []
    if labels is not None:
        classes, totals = np.unique(labels, return_counts=True)
        leaked_counts = dict(zip(*np.unique(labels[local], return_counts=True)))
        for c, total in zip(classes.tolist(), totals.tolist()):
            count = int(leaked_counts.get(c, 0))
            by_class[c] = {"count": count, "total": total, "fraction": count / total}
        if ref_labels is not None:
            differ = np.flatnonzero(labels[local] != ref_labels[ref_local])
            conflicts = [
                {
                    "id": to_python(ids[local[i]]),
                    "nearest_id": to_python(ref_ids[ref_local[i]]),
                    "label": to_python(labels[local[i]]),
                    "nearest_label": to_python(ref_labels[ref_local[i]]),
                    "distance": float(dist[i]),
                }
                for i in differ
            ]
    return Leakage(
        split=split,
        reference=reference,
        ids=ids[local].tolist(),
        nearest_ids=ref_ids[ref_local].tolist(),
        distances=dist.astype(np.float32),
        total=len(best_ref),
        positions=local.tolist(),
        nearest_positions=ref_local.tolist(),
        by_class=by_class,
        label_conflicts=conflicts,
    )


def to_python(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
