"""Duplicate sets from close pairs: components (numpy union-find against scipy), the batched
per-set statistics and diameters (against one set at a time)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from neardup._chains import euclidean_set_diameters
from neardup._clusters import ClusterAssignment, set_statistics
from neardup._components import component_roots


def _scipy_roots(n: int, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    graph = coo_matrix((np.ones(len(i)), (i, j)), shape=(n, n))
    _, component = connected_components(graph, directed=True, connection="weak")
    smallest = np.full(component.max() + 1, n)
    np.minimum.at(smallest, component, np.arange(n))
    return smallest[component]


@settings(max_examples=60, deadline=None)
@given(
    n=st.integers(1, 60),
    edges=st.lists(st.tuples(st.integers(0, 59), st.integers(0, 59)), max_size=120),
)
def test_component_roots_match_scipy(n, edges):
    pairs = np.array([(a % n, b % n) for a, b in edges], dtype=np.int64).reshape(-1, 2)
    i, j = pairs[:, 0], pairs[:, 1]
    assert np.array_equal(component_roots(n, i, j), _scipy_roots(n, i, j))


def test_component_roots_of_a_long_shuffled_chain():
    order = np.random.default_rng(0).permutation(20_000)
    roots = component_roots(20_000, order[1:], order[:-1])
    assert np.all(roots == 0)


def test_importing_neardup_loads_no_scipy():
    code = "import sys, neardup; print('scipy' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _pca_order_and_projection(x: np.ndarray, members: np.ndarray):
    """One set at a time, as before the batching: order by the first component, then 2-D."""

    def scores(samples, n):
        centered = samples - samples.mean(axis=0)
        u, s, _ = np.linalg.svd(centered.astype(np.float64), full_matrices=False)
        out = u[:, :n] * s[:n]
        signs = np.sign(out[np.abs(out).argmax(axis=0), np.arange(n)])
        signs[signs == 0] = 1
        return out * signs

    if len(members) > 2:
        members = members[np.argsort(scores(x[members], 1)[:, 0], kind="stable")]
    projection = scores(x[members], 2) if len(members) > 5 else None
    return members, projection


def test_batched_set_statistics_match_one_set_at_a_time():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(400, 12)).astype(np.float32)
    sizes = np.array([2, 3, 3, 5, 6, 6, 9, 40, 2, 7])
    rows = rng.permutation(400)[: sizes.sum()]
    stats = set_statistics(x, rows, sizes)
    starts = np.cumsum(sizes) - sizes
    for s, (lo, size) in enumerate(zip(starts, sizes)):
        members = rows[lo : lo + size]
        expected, projection = _pca_order_and_projection(x, members)
        got = rows[stats.order[lo : lo + size]]
        assert np.array_equal(got, expected)
        if projection is None:
            assert stats.projections[s] is None
        else:
            np.testing.assert_allclose(stats.projections[s], projection, rtol=1e-5, atol=1e-5)
        centred = np.linalg.norm(x[members].astype(np.float64) - x[members].mean(0), axis=1)
        assert abs(stats.mean[s] - centred.mean()) < 1e-6
        assert abs(stats.std[s] - centred.std()) < 1e-6
        ordered = x[got].astype(np.float64)
        spread = np.linalg.norm(ordered - ordered.mean(0), axis=1)
        nearest = np.flatnonzero(spread <= spread.min() + 1e-9)  # both members of a pair tie
        assert stats.central[s] in nearest


def test_set_diameters_are_the_largest_member_distance():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(600, 8)).astype(np.float32)
    x[1] = x[0]  # exact copies: diameter exactly 0
    sizes = np.array([2, 2, 3, 17, 33, 80])  # small sets batched, larger ones blocked
    rows = np.concatenate([[0, 1], 2 + rng.permutation(598)[: sizes[1:].sum()]])
    got = euclidean_set_diameters(x, rows, sizes)
    starts = np.cumsum(sizes) - sizes
    for s, (lo, size) in enumerate(zip(starts, sizes)):
        m = x[rows[lo : lo + size]].astype(np.float64)
        brute = np.sqrt(((m[:, None] - m[None]) ** 2).sum(-1)).max()
        assert abs(got[s] - brute) < 1e-5
    assert got[0] == 0.0


def test_assignment_flat_members_and_lists_agree():
    assignment = ClusterAssignment(12, np.array([3, 5, 9, 0]), np.array([5, 7, 10, 11]))
    assert [m.tolist() for m in assignment.members] == [[0, 11], [3, 5, 7], [9, 10]]
    assert assignment.sizes.tolist() == [2, 3, 2]
    assert assignment.rows.tolist() == [0, 11, 3, 5, 7, 9, 10]
    assert assignment.label.tolist() == [0, -1, -1, 1, -1, 1, -1, 1, -1, 2, 2, 0]
