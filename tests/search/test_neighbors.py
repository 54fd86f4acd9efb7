"""Neighbour backends: exact vs brute force, annoy vs exact, self removal, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest

from neardup.search import build_graph, choose_backend, drop_self


def _brute_force(x: np.ndarray, k: int) -> np.ndarray:
    d = np.linalg.norm(x[:, None, :].astype(np.float64) - x[None, :, :], axis=2)
    np.fill_diagonal(d, np.inf)
    return np.sort(d, axis=1)[:, :k]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exact_backend_equals_brute_force(dtype):
    x = np.random.default_rng(0).normal(size=(300, 7)).astype(dtype).astype(np.float32)
    graph = build_graph(x, 5, backend="exact")
    np.testing.assert_allclose(graph.distances, _brute_force(x, 5), rtol=1e-5, atol=1e-6)
    assert not (graph.indices == np.arange(300)[:, None]).any()


def test_many_identical_copies_never_list_the_query_itself():
    x = np.zeros((30, 4), dtype=np.float32)  # 30 identical rows: any order is valid
    x[20:] = 1.0
    for backend in ("exact", "annoy"):
        graph = build_graph(x, 5, backend=backend)
        assert not (graph.indices == np.arange(30)[:, None]).any()
        assert (graph.distances[:20] == 0).all()


def test_drop_self_wherever_it_is():
    found = np.array([[5, 0, 7], [3, 4, 6], [2, 9, 8]])  # row 0 lists itself second
    np.testing.assert_array_equal(drop_self(found, 2), [[5, 7], [3, 4], [9, 8]])


def test_annoy_recall_against_exact_on_planted_near_duplicates():
    rng = np.random.default_rng(1)
    n, d = 20000, 32
    x = rng.normal(size=(n, d)).astype(np.float32)
    copies = rng.choice(n, 1000, replace=False)
    x[copies] = x[rng.integers(0, n, 1000)] + rng.normal(scale=0.05, size=(1000, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    threshold = 0.15
    pairs = {}
    for backend in ("exact", "annoy"):
        g = build_graph(x, 10, backend=backend)
        rows, cols = np.nonzero(g.distances <= threshold)
        pairs[backend] = {(min(a, b), max(a, b)) for a, b in zip(rows, g.indices[rows, cols])}
    assert len(pairs["exact"]) >= 900
    recall = len(pairs["exact"] & pairs["annoy"]) / len(pairs["exact"])
    assert recall >= 0.99, recall


def test_annoy_is_reproducible_with_a_seed():
    x = np.random.default_rng(2).normal(size=(2000, 16)).astype(np.float32)
    a = build_graph(x, 5, backend="annoy", n_trees=3, seed=11)
    b = build_graph(x, 5, backend="annoy", n_trees=3, seed=11)
    np.testing.assert_array_equal(a.indices, b.indices)


def test_auto_backend_choice():
    assert choose_backend("auto", 1000, 64) == "exact"
    assert choose_backend("auto", 1_000_000, 64) == "annoy"
