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

from .._stats import distinct
from ._cells import ClosePairs
from ._rows import Rows

__all__ = ["CopyGroups", "copy_pairs", "expand_neighbors", "find_copies"]

_VERIFY_ROWS = 65_536
#: bytes of rows hashed at once: the mixing's half a dozen passes over the (rows, d / 2) words
#: then stay in the CPU's cache (measured at 1M x 64: 0.39-0.56 CPU s of hashing in blocks of
#: 65,536 rows, 0.11-0.14 in blocks of 4,096; the same hashes, row by row).
_HASH_BYTES = 1 << 20
#: columns of every row hashed first by :func:`find_copies` (only rows sharing their hash are
#: hashed in full)
_PROBE_COLUMNS = 8
#: above this share of rows sharing their probes, every row is hashed whole, streamed (rather
#: than gathering most rows)
_MOST_ROWS = 0.25


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
    """A 64-bit hash of each float32 row's bit pattern.

    Every 64-bit word (two float32 values; one, widened, for an odd width) is first mixed by
    the splitmix64 finaliser, then the words are summed with odd multipliers (wrapping). The
    mixing matters: a plain weighted sum collides on structured rows (sign flips of +-1
    features cancel in bit 63). ``-0.0`` and ``0.0`` hash apart, so such rows stay separate
    items (the annoy search still finds them at distance 0).
    """
    block = np.ascontiguousarray(block)
    if block.shape[1] % 2 == 0:
        words = block.view(np.uint64).copy()  # a copy: the mixing below works in place
    else:
        words = block.view(np.uint32).astype(np.uint64)
    words ^= words >> np.uint64(30)
    words *= np.uint64(0xBF58476D1CE4E5B9)
    words ^= words >> np.uint64(27)
    words *= np.uint64(0x94D049BB133111EB)
    words ^= words >> np.uint64(31)
    return words @ multipliers[: words.shape[1]]


def find_copies(rows: Rows) -> CopyGroups:
    """Group the rows of ``rows`` that are exactly equal (after the cast to float32).

    Rows are hashed, grouped by hash, then compared value by value with their group's first
    row, so a hash collision never merges two different rows. A few adjacent columns of every
    row are hashed first (:func:`_probe_columns`): rows whose probe no other row shares repeat
    no row, so only the rows that share one are hashed in full (measured at 1M x 64 with 1 %
    copies: 0.16 -> 0.05 CPU s of hashing, 19,466 rows hashed in full; the same groups).
    """
    multipliers = np.random.default_rng(0x6E656172).integers(
        1, np.iinfo(np.int64).max, size=rows.d, dtype=np.uint64
    ) | np.uint64(1)
    step = max(256, min(65_536, _HASH_BYTES // (4 * rows.d)))
    probes = _probe_columns(rows.d)
    leader = _first_of_equal_hash(_streamed_hashes(rows, multipliers, step, probes))
    if probes is not None:
        candidates = _sharing(leader)
        if len(candidates) > _MOST_ROWS * rows.n:  # probes that tell few rows apart
            leader = _first_of_equal_hash(_streamed_hashes(rows, multipliers, step, None))
        else:
            leader = _leaders_in_full(rows, candidates, multipliers, step)
    _split_collisions(rows, leader)
    is_first = leader == np.arange(len(leader))
    number = np.cumsum(is_first) - 1  # groups numbered by their first row
    return CopyGroups(group=number[leader], first=np.flatnonzero(is_first))


def _streamed_hashes(
    rows: Rows, multipliers: np.ndarray, step: int, columns: slice | None
) -> np.ndarray:
    """``(N,)`` :func:`_row_hashes` of every row (of its ``columns`` only, when given), read
    ``step`` rows at a time."""
    hashes = np.empty(rows.n, dtype=np.uint64)
    for start, block in rows.raw_blocks(step):
        part = block if columns is None else block[:, columns]
        hashes[start : start + len(block)] = _row_hashes(part, multipliers)
    return hashes


def _probe_columns(d: int) -> slice | None:
    """The :data:`_PROBE_COLUMNS` adjacent columns in the middle of a row of width ``d`` that
    :func:`find_copies` hashes first (adjacent: a row's probe is one or two cache lines, where
    columns spread over the row read all of it); ``None`` when the row is hardly wider."""
    if d < 2 * _PROBE_COLUMNS:
        return None
    start = (d - _PROBE_COLUMNS) // 2
    return slice(start, start + _PROBE_COLUMNS)


def _sharing(leader: np.ndarray) -> np.ndarray:
    """``(s,)`` ascending rows that lead or follow another row in ``leader`` (``(N,)``, from
    :func:`_first_of_equal_hash`): the rows whose probes another row shares."""
    follows = leader != np.arange(len(leader))
    shared = follows.copy()
    shared[leader[follows]] = True
    return np.flatnonzero(shared)


def _leaders_in_full(
    rows: Rows, candidates: np.ndarray, multipliers: np.ndarray, step: int
) -> np.ndarray:
    """``(N,)`` leaders by full-row hashes of the ascending ``candidates`` (every other row
    leads itself): each candidate led by the first candidate whose full hash it shares. Equal
    rows share their probes, so every copy is among the candidates."""
    leader = np.arange(rows.n, dtype=np.int64)
    if len(candidates) == 0:
        return leader
    hashes = np.empty(len(candidates), dtype=np.uint64)
    for start in range(0, len(candidates), step):
        chunk = candidates[start : start + step]
        hashes[start : start + len(chunk)] = _row_hashes(rows.raw_rows(chunk), multipliers)
    leader[candidates] = candidates[_first_of_equal_hash(hashes)]
    return leader


def _first_of_equal_hash(hashes: np.ndarray) -> np.ndarray:
    """For every row, the smallest row with the same hash (one sort, then O(N)).

    Up to 2^32 rows, the hash's high bits and the row share one 64-bit key, sorted in place
    (measured at 1M rows: 52 against 94 ms for an argsort of the hashes): rows then lead by
    their high bits alone, and the rare rows whose full hashes differ are rows whose values
    differ, which :func:`_split_collisions` splits off as it does a hash collision.
    """
    n = len(hashes)
    row_bits = max(1, (n - 1).bit_length())
    if row_bits > 32:
        return _first_of_equal_full_hash(hashes)
    mask = np.uint64((1 << row_bits) - 1)
    key = hashes & ~mask
    key |= np.arange(n, dtype=np.uint64)
    key.sort()
    order = (key & mask).astype(np.int64)  # rows by high bits, ascending within each
    key >>= np.uint64(row_bits)
    new_run = np.empty(n, dtype=bool)
    new_run[:1] = True
    np.not_equal(key[1:], key[:-1], out=new_run[1:])
    del key
    leader = np.arange(n, dtype=np.int64)
    if new_run.all():
        return leader
    leader[order] = order[new_run][np.cumsum(new_run) - 1]  # each run's first row leads
    return leader


def _first_of_equal_full_hash(hashes: np.ndarray) -> np.ndarray:
    """:func:`_first_of_equal_hash` by an argsort of the full hashes (above 2^32 rows)."""
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
    """Re-lead every row whose values differ from its leader's (in place).

    A hash collision is rare, but it must never merge two different rows; rows split off
    their leader are regrouped among themselves by exact value, so copies stay together.
    """
    later = np.flatnonzero(leader != np.arange(len(leader)))
    strays = []
    for start in range(0, len(later), _VERIFY_ROWS):
        chunk = later[start : start + _VERIFY_ROWS]
        same = np.all(rows.raw_rows(chunk) == rows.raw_rows(leader[chunk]), axis=1)
        strays.append(chunk[~same])
    strays = np.concatenate(strays) if strays else np.empty(0, dtype=np.int64)
    if strays.size:
        _, first, inverse = np.unique(
            rows.raw_rows(strays), axis=0, return_index=True, return_inverse=True
        )
        leader[strays] = strays[first][inverse.reshape(-1)]  # first stray of each value


def expand_neighbors(
    group_neighbors: np.ndarray, copies: CopyGroups, k: int, prefer: np.ndarray | None = None
) -> np.ndarray:
    """Per-row neighbour candidates ``(N, k)`` from the per-group neighbours ``(G, k_g)``.

    A row's list is what exact search would list: the other rows of its own group first (up
    to ``k``), then the rows of the groups nearest to its group, group by group, until ``k``.
    ``prefer`` (a ``(N,)`` bool mask, e.g. the reference split) puts those rows first inside
    every group, so a copy of a reference sample always lists a reference row. ``-1`` pads
    only where there are fewer than ``k`` other rows.
    """
    group, n = copies.group, len(copies.group)
    key = np.zeros(n, dtype=np.int8) if prefer is None else (~prefer).astype(np.int8)
    order = np.lexsort((np.arange(n), key, group))  # by group, preferred first, then row
    sizes = np.bincount(group, minlength=len(copies.first))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    external = _external_rows(group_neighbors, order, sizes, starts, k)

    out = np.full((n, k), -1, dtype=np.int64)
    alone = np.flatnonzero(sizes[group] == 1)
    out[alone] = external[group[alone]]
    for m in distinct(sizes[sizes > 1]).tolist():
        groups = np.flatnonzero(sizes == m)
        members = order[starts[groups][:, None] + np.arange(m)]  # (G_m, m), preferred first
        n_copies = min(k, m - 1)
        tail = external[groups, : k - n_copies]
        # members past position n_copies all list the first n_copies members
        rest = members[:, n_copies:]
        out[rest, :n_copies] = members[:, None, :n_copies]
        out[rest, n_copies:] = tail[:, None, :]
        for j in range(n_copies):  # the first members skip themselves
            cols = np.delete(np.arange(n_copies + 1), j)
            out[members[:, j], :n_copies] = members[:, cols]
            out[members[:, j], n_copies:] = tail
    return out


def _external_rows(
    group_neighbors: np.ndarray, order: np.ndarray, sizes: np.ndarray, starts: np.ndarray, k: int
) -> np.ndarray:
    """``(G, k)``: the members of each group's neighbour groups, in order, ``-1`` padded."""
    n_groups, k_g = group_neighbors.shape
    out = np.full((n_groups, k), -1, dtype=np.int64)
    if k_g == 0:
        return out
    valid = group_neighbors >= 0
    neighbor = np.maximum(group_neighbors, 0)
    counts = np.where(valid, sizes[neighbor], 0)
    ends = np.cumsum(counts, axis=1)  # (G, k_g): slots used after each neighbour group
    for slot in range(k):
        j = (ends <= slot).sum(axis=1)  # which neighbour group fills this slot
        has = j < k_g
        rows = np.flatnonzero(has)
        jj = j[has]
        before = np.where(jj > 0, ends[rows, np.maximum(jj - 1, 0)], 0)
        g = neighbor[rows, jj]
        out[rows, slot] = order[starts[g] + slot - before]
    return out


def copy_pairs(copies: CopyGroups) -> ClosePairs:
    """Each copy linked to its group's first row, at distance 0 (``(n_copies,)`` pairs, sorted):
    the groups' connectivity without the ``g (g - 1) / 2`` pairs of a group of ``g``."""
    first = copies.first[copies.group]
    rows = np.flatnonzero(first != np.arange(len(first)))
    return ClosePairs(first[rows], rows, np.zeros(len(rows), dtype=np.float32))
