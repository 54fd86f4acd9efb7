"""Chains in duplicate sets: each set's diameter, and splitting sets that stretch too far.

Connected components of close pairs can chain: ``a ~ b ~ c`` puts ``a`` and ``c`` in one set
however far apart they are. A set's *diameter* is its largest exact member-to-member
distance; :func:`split_chains` cuts a set into pieces whose diameters stay within a limit
(complete-linkage clustering, cut at the limit), so every piece is a tight group.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ._stats import distinct

__all__ = [
    "PairwiseFn",
    "euclidean_pairwise",
    "euclidean_set_diameters",
    "set_diameters",
    "split_chains",
]

#: ``pairwise(rows_a, rows_b) -> (len(rows_a), len(rows_b))`` float64 distances.
PairwiseFn = Callable[[np.ndarray, np.ndarray], np.ndarray]

#: sets up to this size are split by complete linkage on their full distance matrix; larger
#: ones greedily, by balls of radius max_diameter / 2 around their first unassigned member.
_LINKAGE_MAX_MEMBERS = 2048
_BLOCK = 2048
_BATCH_ROWS = 512
#: sets up to this size get their diameters from member differences, all sets of one size
#: at once (at most this many bytes of differences at a time); larger ones block by block.
_DIFFERENCE_MAX_MEMBERS = 32
_DIFFERENCE_BYTES = 32 << 20


def euclidean_pairwise(
    x: np.ndarray | Callable[[np.ndarray], np.ndarray], scale: float = 1.0
) -> PairwiseFn:
    """Exact Euclidean distances between rows of ``x`` ``(N, d)``, divided by ``scale``.

    ``x`` is the ``(N, d)`` array or a function ``take(rows) -> (len(rows), d)`` (rows read
    on demand, e.g. ``Rows.take``).
    """
    take = x if callable(x) else x.__getitem__

    def pairwise(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        xa = np.asarray(take(a), dtype=np.float64)
        xb = np.asarray(take(b), dtype=np.float64)
        sq = (xa * xa).sum(1)[:, None] + (xb * xb).sum(1)[None, :] - 2.0 * xa @ xb.T
        dist = np.sqrt(np.maximum(sq, 0.0))
        if scale > 0:
            return dist / scale
        return np.where(dist > 0, np.inf, 0.0)

    return pairwise


def set_diameters(members: list[np.ndarray], pairwise: PairwiseFn) -> np.ndarray:
    """``(n_sets,)`` largest member-to-member distance of each set (blocked for large sets;
    small sets many at a time, in one ``pairwise`` call per batch of up to 512 rows)."""
    out = np.zeros(len(members))
    sizes = np.array([len(rows) for rows in members], dtype=np.int64)
    small = np.flatnonzero(sizes <= _BATCH_ROWS)
    ends = np.cumsum(sizes[small])
    start = 0
    while start < len(small):  # consecutive small sets, up to _BATCH_ROWS rows together
        before = int(ends[start - 1]) if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, before + _BATCH_ROWS, side="right")))
        batch = small[start:stop]
        out[batch] = _batch_diameters([members[s] for s in batch], sizes[batch], pairwise)
        start = stop
    for s in np.flatnonzero(sizes > _BATCH_ROWS):
        rows = members[s]
        best = 0.0
        for start in range(0, len(rows), _BLOCK):
            block = pairwise(rows[start : start + _BLOCK], rows[start:])
            best = max(best, float(block.max()) if block.size else 0.0)
        out[s] = best
    return out


def euclidean_set_diameters(x: np.ndarray, rows: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """``(S,)`` largest Euclidean distance between two members of each set.

    ``x`` ``(n, d)`` holds the rows; ``rows`` ``(M,)`` lists the members set after set and
    ``sizes`` ``(S,)`` the members per set. Sets of up to 32 members are measured from their
    members' float32 differences (float64 sums, as every exact distance here), all sets of one
    size together; larger ones by blocked products (:func:`set_diameters`).
    """
    sizes = np.asarray(sizes, dtype=np.int64)
    out = np.zeros(len(sizes))
    starts = np.cumsum(sizes) - sizes
    width = max(1, x.shape[1])
    for size in distinct(sizes[(sizes >= 2) & (sizes <= _DIFFERENCE_MAX_MEMBERS)]).tolist():
        sets = np.flatnonzero(sizes == size)
        left, right = np.triu_indices(size, 1)
        per_chunk = max(1, _DIFFERENCE_BYTES // (4 * len(left) * width))
        for lo in range(0, len(sets), per_chunk):
            chunk = sets[lo : lo + per_chunk]
            members = x[rows[starts[chunk][:, None] + np.arange(size)]]  # (c, size, d)
            diff = members[:, left] - members[:, right]  # (c, pairs, d)
            squared = np.einsum("cpd,cpd->cp", diff, diff, dtype=np.float64)
            out[chunk] = np.sqrt(squared.max(axis=1))
    large = np.flatnonzero(sizes > _DIFFERENCE_MAX_MEMBERS)
    if len(large):
        members = [rows[starts[s] : starts[s] + sizes[s]] for s in large.tolist()]
        out[large] = set_diameters(members, euclidean_pairwise(x))
    return out


def _batch_diameters(
    members: list[np.ndarray], sizes: np.ndarray, pairwise: PairwiseFn
) -> np.ndarray:
    """Diameters of several small sets from one distance matrix of all their rows."""
    rows = np.concatenate(members)
    owner = np.repeat(np.arange(len(members)), sizes)
    dist = np.where(owner[:, None] == owner[None, :], pairwise(rows, rows), -np.inf)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    return np.maximum(np.maximum.reduceat(dist.max(axis=1), starts), 0.0)


def split_chains(
    members: list[np.ndarray], pairwise: PairwiseFn, max_diameter: float
) -> list[np.ndarray]:
    """Split every set wider than ``max_diameter`` into pieces of diameter <= ``max_diameter``.

    Pieces of one member are dropped (they are no longer duplicates of anything). Sets up to
    2,048 members use complete linkage (the fewest pieces that a merge order allows); larger
    ones are cut greedily into balls of radius ``max_diameter / 2``. Each piece's rows stay
    sorted; pieces are ordered by their first row.
    """
    # imported here: scipy.cluster loads scipy.spatial and scipy.special (~0.5 s of CPU), which
    # only splitting chains needs
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import squareform

    out: list[np.ndarray] = []
    for rows in members:
        if len(rows) <= _LINKAGE_MAX_MEMBERS:
            dist = pairwise(rows, rows)
            if dist.max() <= max_diameter:
                out.append(rows)
                continue
            np.fill_diagonal(dist, 0.0)
            dist = np.minimum(dist, dist.T)  # exact symmetry for scipy
            finite_cap = 2.0 * max(max_diameter, 1.0) + 1.0
            tree = linkage(squareform(np.minimum(dist, finite_cap), checks=False), "complete")
            piece = fcluster(tree, t=max_diameter, criterion="distance")
        else:
            piece = _greedy_balls(rows, pairwise, max_diameter / 2.0)
        for label in distinct(piece):
            part = rows[piece == label]
            if len(part) >= 2:
                out.append(np.sort(part))
    out.sort(key=lambda rows: int(rows[0]))
    return out


def _greedy_balls(rows: np.ndarray, pairwise: PairwiseFn, radius: float) -> np.ndarray:
    piece = np.zeros(len(rows), dtype=np.int64)
    label = 0
    while True:
        free = np.flatnonzero(piece == 0)
        if free.size == 0:
            return piece
        label += 1
        near = pairwise(rows[free[:1]], rows[free])[0] <= radius
        near[0] = True
        piece[free[near]] = label
