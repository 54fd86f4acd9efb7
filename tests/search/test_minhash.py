"""Banded MinHash: signature agreement estimates Jaccard similarity; bands reach the recall
they promise; candidates are every pair that agrees over a band, and only those."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from neardup.search import BAND_ROWS, PAIR_RECALL, banded_candidates, bands_for, minhash_signatures


def _sets(*members: list[int]) -> tuple[np.ndarray, np.ndarray]:
    owner = np.concatenate([np.full(len(m), row, np.int64) for row, m in enumerate(members)])
    tokens = np.concatenate([np.asarray(m, dtype=np.uint64) for m in members])
    return owner, tokens


def test_bands_reach_the_promised_recall_and_no_fewer_would():
    for jaccard in (0.3, 0.55, 0.8):
        bands = bands_for(jaccard)
        assert 1 - (1 - jaccard**BAND_ROWS) ** bands >= PAIR_RECALL
        assert 1 - (1 - jaccard**BAND_ROWS) ** (bands - 1) < PAIR_RECALL
    assert bands_for(1.0) == 1
    with pytest.raises(ValueError, match="min_jaccard"):
        bands_for(0.0)


def test_signature_agreement_estimates_jaccard_similarity():
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, 400, dtype=np.uint64)
    a, b, c = hashes[:200], hashes[100:300], hashes[300:]  # J(a, b) = 1/3, J(a, c) = 0
    owner, tokens = _sets(a, b, c)
    signatures = minhash_signatures(owner, tokens, 3, 3000, seed=0)
    assert abs(np.mean(signatures[0] == signatures[1]) - 1 / 3) < 0.03
    assert np.mean(signatures[0] == signatures[2]) < 0.005
    within = np.lexsort((rng.random(len(owner)), owner))  # tokens shuffled within each row
    same = minhash_signatures(owner[within], tokens[within], 3, 3000, seed=0)
    assert np.array_equal(same, signatures)
    assert not np.array_equal(minhash_signatures(owner, tokens, 3, 3000, seed=1), signatures)


def test_rows_without_tokens_are_never_candidates():
    owner, tokens = _sets([1, 2, 3], [1, 2, 3])
    signatures = minhash_signatures(owner, tokens, 4, 8, seed=0)  # rows 2 and 3: no tokens
    assert (signatures[2:] == np.iinfo(np.uint32).max).all()
    i, j = banded_candidates(signatures, 2)
    assert (i.tolist(), j.tolist()) == ([0], [1])


def test_candidates_are_exactly_the_pairs_agreeing_over_a_band():
    rng = np.random.default_rng(1)
    signatures = rng.integers(0, 3, size=(60, 3 * BAND_ROWS)).astype(np.uint32)
    i, j = banded_candidates(signatures, 3)
    expected = [
        (a, b)
        for a, b in itertools.combinations(range(60), 2)
        if any(
            np.array_equal(
                signatures[a, k * BAND_ROWS : (k + 1) * BAND_ROWS],
                signatures[b, k * BAND_ROWS : (k + 1) * BAND_ROWS],
            )
            for k in range(3)
        )
    ]
    assert list(zip(i.tolist(), j.tolist())) == expected  # unique, i < j, sorted
    assert len(expected) > 10
