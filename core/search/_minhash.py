"""Candidate pairs of rows whose token sets are alike: banded MinHash (locality-sensitive).

Hashed character n-grams of text (:class:`neardup.views.TextView`) are wide and scattered: no
partition keeps close pairs in one cell, so the cell engine's spill grows with the data
(measured on 60,000 real sentences: 201 s, most of it in cells that every row spills into).
Near-duplicate texts share most of their n-grams instead, and MinHash finds pairs of
rows whose n-gram *sets* have a high Jaccard similarity in time linear in the rows, as text
deduplication does at web scale (Broder 1997; Leskovec, Rajaraman and Ullman, *Mining of
Massive Datasets*, ch. 3).

Each row's signature is the minimum of ``H`` seeded hashes over its tokens; two rows agree on
one signature entry with probability equal to their Jaccard similarity ``J``. The signature is
cut into ``bands`` of :data:`BAND_ROWS` entries; rows whose entries agree over a whole band
become a candidate pair, which happens in at least one band with probability
``1 - (1 - J^r)^bands``. :func:`bands_for` chooses the bands so that a pair at
``min_jaccard`` is a candidate with probability :data:`PAIR_RECALL`; pairs of higher
similarity are more likely. Candidates are only candidates: the caller measures them.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["BAND_ROWS", "PAIR_RECALL", "banded_candidates", "bands_for", "minhash_signatures"]

#: signature entries per band: unrelated texts (Jaccard ~0.02-0.05 in character 4-grams)
#: agree on 4 entries with probability < 1e-5, so candidates stay a few per row.
BAND_ROWS = 4

#: probability that a pair at the smallest Jaccard similarity of interest becomes a candidate.
PAIR_RECALL = 0.99

_MIX_A = np.uint32(0x2C1B3C6D)
_PAIR_KEY = np.uint64(0x100000001B3)
_ENTRIES_PER_BLOCK = 1 << 18  # tokens hashed at a time (x H 4-byte values)


def bands_for(min_jaccard: float, band_rows: int = BAND_ROWS, recall: float = PAIR_RECALL) -> int:
    """Bands so that a pair of Jaccard similarity ``min_jaccard`` is a candidate with
    probability ``recall`` (``1 - (1 - J^r)^bands >= recall``)."""
    if not 0.0 < min_jaccard <= 1.0:
        raise ValueError(f"min_jaccard must be in (0, 1], got {min_jaccard!r}")
    agree = min_jaccard**band_rows
    if agree >= 1.0:
        return 1
    return max(1, math.ceil(math.log1p(-recall) / math.log1p(-agree)))


def minhash_signatures(
    owner: np.ndarray, tokens: np.ndarray, n_rows: int, n_hashes: int, *, seed: int
) -> np.ndarray:
    """``(n_rows, n_hashes)`` uint32 MinHash signatures of the rows' token sets.

    Parameters
    ----------
    owner:
        ``(E,)`` int64 row of each token, ascending (a row's tokens are contiguous).
    tokens:
        ``(E,)`` uint64 token hashes (repeats within a row are harmless).
    n_rows:
        Rows; a row without tokens gets the largest value in every entry.
    n_hashes:
        Signature length ``H``.
    seed:
        Seeds the ``H`` hash functions: the same seed gives the same signatures.

    Each distinct token is hashed once per function (``(V, H)`` values for ``V`` distinct
    tokens), then each row takes the minimum over its tokens, ``2**18`` tokens at a time.
    """
    signatures = np.full((n_rows, n_hashes), np.iinfo(np.uint32).max, dtype=np.uint32)
    if len(tokens) == 0:
        return signatures
    distinct, token_of = np.unique(tokens, return_inverse=True)
    rng = np.random.default_rng(seed)
    odd = rng.integers(0, 1 << 31, n_hashes, dtype=np.uint32) * np.uint32(2) + np.uint32(1)
    salt = rng.integers(0, 1 << 32, n_hashes, dtype=np.uint32)
    with np.errstate(over="ignore"):
        folded = (distinct ^ (distinct >> np.uint64(32))).astype(np.uint32)
        table = (folded[:, None] ^ salt[None, :]) * odd[None, :]
        table ^= table >> np.uint32(15)
        table *= _MIX_A
        table ^= table >> np.uint32(12)
    rows_with, starts = np.unique(owner, return_index=True)
    bounds = np.r_[starts, len(owner)]
    first = 0
    while first < len(rows_with):
        last = int(np.searchsorted(starts, starts[first] + _ENTRIES_PER_BLOCK, side="right"))
        last = max(last, first + 1)
        begin, end = bounds[first], bounds[last]
        signatures[rows_with[first:last]] = np.minimum.reduceat(
            table[token_of[begin:end]], starts[first:last] - begin, axis=0
        )
        first = last
    return signatures


def banded_candidates(
    signatures: np.ndarray, bands: int, band_rows: int = BAND_ROWS
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate pairs ``(i, j)``, ``i < j`` (int64, unique, sorted): rows whose signatures
    agree over all ``band_rows`` entries of at least one of the first ``bands`` bands.

    Rows whose signature is all largest values (no tokens) are never candidates.
    """
    n = len(signatures)
    empty = (signatures == np.iinfo(np.uint32).max).all(axis=1)
    live = np.flatnonzero(~empty)
    found = [np.zeros(0, dtype=np.int64)]
    for band in range(bands):
        block = signatures[live, band * band_rows : (band + 1) * band_rows]
        with np.errstate(over="ignore"):
            key = block[:, 0].astype(np.uint64)
            for column in range(1, block.shape[1]):
                key = (key * _PAIR_KEY) ^ block[:, column]
        order = np.argsort(key, kind="stable")
        sorted_key = key[order]
        if not (sorted_key[1:] == sorted_key[:-1]).any():
            continue
        i, j = _pairs_within_runs(order, sorted_key)
        i, j = live[i], live[j]
        found.append(np.minimum(i, j) * n + np.maximum(i, j))
    keys = np.unique(np.concatenate(found))
    return keys // n, keys % n


def _pairs_within_runs(order: np.ndarray, sorted_key: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pair of positions ``order[a], order[b]`` (``a < b``) within a run of equal keys."""
    starts = np.flatnonzero(np.r_[True, sorted_key[1:] != sorted_key[:-1]])
    sizes = np.diff(np.r_[starts, len(sorted_key)])
    run_end = np.repeat(starts + sizes, sizes)  # one past the end of each position's run
    later = run_end - np.arange(len(sorted_key))  # itself and the positions after it
    later -= 1
    left = np.repeat(np.arange(len(sorted_key)), later)
    offset = np.arange(len(left)) - np.repeat(np.cumsum(later) - later, later) + 1
    return order[left], order[left + offset]
