"""Exact copies, found first by hashing rows, so the approximate search sees each value once.

Scraped and augmented datasets often hold many byte-identical samples (blank images, boiler-
plate sentences). Hashing every row is O(N*d); the annoy index then holds one item per
distinct row, and the neighbour lists of the copies are rebuilt from their group (the other
copies first, at distance 0) and from the group's approximate neighbours. Copies are therefore
found exactly, whatever the annoy recall, and a group of thousands of identical rows cannot
crowd the k neighbours of the rows around it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ._rows import Rows

__all__ = ["CopyGroups", "expand_neighbours", "find_copies"]

_VERIFY_ROWS = 65_536


@dataclass
class CopyGroups:
    """Rows grouped by identical values: ``group[i]`` of row ``i``, groups numbered by ``first``.

    ``first`` (ascending) is each group's first row, the one whose values are indexed.
    """

    group: np.ndarray  # (N,) int64
    first: np.ndarray  # (G,) int64, ascending

    @property
    def n_copies(self) -> int:
        """Rows that repeat an earlier row exactly."""
        return len(self.group) - len(self.first)


def _row_hashes(block: np.ndarray, multipliers: np.ndarray) -> np.ndarray:
    """A 64-bit multiply-add hash (wrapping) of each float32 row's bit pattern.

    With an even width, pairs of float32 are read as one uint64 word: no copy at all for a
    contiguous float32 block, ~3 ms per 65k x 64 block here. ``-0.0`` and ``0.0`` hash apart,
    so such rows stay separate items (the annoy search still finds them at distance 0).
    """
    block = np.ascontiguousarray(block)
    if block.shape[1] % 2 == 0:
        words = block.view(np.uint64)
    else:
        words = block.view(np.uint32).astype(np.uint64)
    return words @ multipliers[: words.shape[1]]


def find_copies(rows: Rows) -> CopyGroups:
    """Group the rows of ``rows`` that are exactly equal (after the cast to float32).

    Rows are hashed, grouped by hash, then compared value by value with their group's first
    row, so a hash collision never merges two different rows.
    """
    multipliers = np.random.default_rng(0x6E656172).integers(
        1, np.iinfo(np.int64).max, size=rows.d, dtype=np.uint64
    ) | np.uint64(1)
    hashes = np.empty(rows.n, dtype=np.uint64)
    for start, block in rows.raw_blocks():
        hashes[start : start + len(block)] = _row_hashes(block, multipliers)
    leader = _first_of_equal_hash(hashes)
    del hashes
    _split_collisions(rows, leader)
    is_first = leader == np.arange(len(leader))
    number = np.cumsum(is_first) - 1  # groups numbered by their first row
    return CopyGroups(group=number[leader], first=np.flatnonzero(is_first))


def _first_of_equal_hash(hashes: np.ndarray) -> np.ndarray:
    """For every row, the smallest row with the same hash (one unstable sort, then O(N))."""
    order = np.argsort(hashes)
    sorted_hashes = hashes[order]
    new_run = np.empty(len(order), dtype=bool)
    new_run[0] = True
    np.not_equal(sorted_hashes[1:], sorted_hashes[:-1], out=new_run[1:])
    del sorted_hashes
    leader = np.arange(len(order), dtype=np.int64)
    if new_run.all():
        return leader
    starts = np.flatnonzero(new_run)
    smallest = np.minimum.reduceat(order, starts)
    leader[order] = smallest[np.cumsum(new_run) - 1]
    return leader


def _split_collisions(rows: Rows, leader: np.ndarray) -> None:
    """Make every row whose values differ from its leader's a leader of its own (in place).

    A 64-bit hash collision is vanishingly rare, but it must never merge two different rows.
    """
    later = np.flatnonzero(leader != np.arange(len(leader)))
    for start in range(0, len(later), _VERIFY_ROWS):
        chunk = later[start : start + _VERIFY_ROWS]
        same = np.all(rows.raw_rows(chunk) == rows.raw_rows(leader[chunk]), axis=1)
        leader[chunk[~same]] = chunk[~same]


def expand_neighbours(
    group_neighbours: np.ndarray, copies: CopyGroups, k: int, prefer: np.ndarray | None = None
) -> np.ndarray:
    """Per-row neighbour candidates ``(N, k)`` from the per-group neighbours ``(G, k_g)``.

    A row's list starts with the other rows of its own group (up to ``k``), then the groups
    nearest to its group, each represented by one row. ``prefer`` (a ``(N,)`` bool mask, e.g.
    the reference split) decides which rows come first among copies and which row stands for
    a group, so a copy of a reference sample always lists a reference row. ``-1`` pads.
    """
    group, n = copies.group, len(copies.group)
    key = np.zeros(n, dtype=np.int8) if prefer is None else (~prefer).astype(np.int8)
    order = np.lexsort((np.arange(n), key, group))  # by group, preferred first, then row
    sizes = np.bincount(group, minlength=len(copies.first))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    stand_in = order[starts]  # the row that represents each group
    k_g = group_neighbours.shape[1]
    external = np.where(group_neighbours >= 0, stand_in[np.maximum(group_neighbours, 0)], -1)

    out = np.full((n, k), -1, dtype=np.int64)
    alone = np.flatnonzero(sizes[group] == 1)
    width = min(k, k_g)
    out[alone, :width] = external[group[alone], :width]
    for m in np.unique(sizes[sizes > 1]).tolist():
        groups = np.flatnonzero(sizes == m)
        members = order[starts[groups][:, None] + np.arange(m)]  # (G_m, m), preferred first
        n_copies = min(k, m - 1)
        n_ext = min(k - n_copies, k_g)
        tail = external[groups, :n_ext]
        # members past position n_copies all list the first n_copies members
        rest = members[:, n_copies:]
        out[rest, :n_copies] = members[:, None, :n_copies]
        out[rest, n_copies : n_copies + n_ext] = tail[:, None, :]
        for j in range(min(n_copies, m)):  # the first members skip themselves
            cols = np.delete(np.arange(n_copies + 1), j)
            out[members[:, j], :n_copies] = members[:, cols]
            out[members[:, j], n_copies : n_copies + n_ext] = tail
    return out
