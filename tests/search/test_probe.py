"""``probed_neighbors``: kNN between two sets by probing the nearest cells of a partition."""

import numpy as np
import pytest

from neardup.search import _probe as probe
from neardup.search import probed_neighbors, top_k_by_product


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _clustered(rng: np.random.Generator, n: int, d: int = 16) -> np.ndarray:
    centres = rng.normal(size=(40, d))
    return _unit(centres[rng.integers(0, 40, n)] + 0.4 * rng.normal(size=(n, d)))


def test_small_inputs_are_exact_brute_force():
    rng = np.random.default_rng(0)
    queries, targets = _clustered(rng, 300), _clustered(rng, 900)
    found = probed_neighbors(queries, targets, 5)
    exact = np.argsort(-(queries @ targets.T), axis=1)[:, :5]
    assert np.array_equal(np.sort(found, axis=1), np.sort(exact, axis=1))
    assert np.array_equal(np.sort(top_k_by_product(queries, targets, 5), axis=1), np.sort(exact, 1))


def test_probing_finds_nearly_every_true_neighbour_and_each_planted_copy(monkeypatch):
    monkeypatch.setattr(probe, "EXACT_PRODUCT", 1_000_000)  # probe at a size a test affords
    rng = np.random.default_rng(1)
    targets = _clustered(rng, 6_000)
    queries = _clustered(rng, 1_500)
    sources = rng.choice(len(targets), 300, replace=False)
    queries[:300] = _unit(targets[sources] + 0.02 * rng.normal(size=(300, targets.shape[1])))
    assert len(queries) * len(targets) > probe.EXACT_PRODUCT  # probing, not brute force
    found = probed_neighbors(queries, targets, 10, seed=0)
    assert found.shape == (len(queries), 10) and found.min() >= 0
    exact = top_k_by_product(queries, targets, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, exact)])
    assert recall >= 0.9
    assert all(s in row for s, row in zip(sources, found[:300]))
    assert np.array_equal(found, probed_neighbors(queries, targets, 10, seed=0))  # seeded
    monkeypatch.setattr(probe, "_QUERY_CHUNK", 400)  # queries in chunks: the same lists
    assert np.array_equal(found, probed_neighbors(queries, targets, 10, seed=0))


@pytest.mark.parametrize("k", [0, 1, 3])
def test_k_larger_than_targets_or_zero(k):
    rng = np.random.default_rng(2)
    found = probed_neighbors(_clustered(rng, 4), _clustered(rng, 2), k)
    assert found.shape == (4, min(k, 2))
