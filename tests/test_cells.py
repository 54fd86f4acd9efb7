"""The cell engine against brute force: exact pairs, determinism, executors, the contract."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import neardup
from neardup.search import (
    Cells,
    ClosePairs,
    Partition,
    ThreadExecutor,
    fit_partition,
    join_cell,
    merge_pairs,
    primary_mask,
    route_rows,
    sample_rows,
    sampled_neighbor_graph,
)


def _clustered(n: int, d: int, seed: int = 0) -> np.ndarray:
    """Clustered unit rows with exact, noisy and shifted copies (as the benchmark's data)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(5, n // 100), d))
    x = centres[rng.integers(0, len(centres), n)] + rng.normal(scale=0.5, size=(n, d))
    m = n // 30
    src, dst = rng.choice(n, m, replace=False), rng.choice(n, m, replace=False)
    x[dst[: m // 3]] = x[src[: m // 3]]
    x[dst[m // 3 :]] = x[src[m // 3 :]] + rng.normal(scale=0.02, size=(m - m // 3, d))
    x = x.astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _brute_pairs(x: np.ndarray, t: float) -> set[tuple[int, int]]:
    """Every pair within ``t`` by direct differences (float64 sums), 200 rows at a time."""
    out: set[tuple[int, int]] = set()
    for s in range(0, len(x), 200):
        diff = (x[s : s + 200, None, :] - x[None, :, :]).astype(np.float64)
        d = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff)).astype(np.float32)
        i, j = np.nonzero(d <= np.float32(t))
        i += s
        out |= {(a, b) for a, b in zip(i.tolist(), j.tolist()) if a < b}
    return out


def _pairs(p: ClosePairs) -> set[tuple[int, int]]:
    return set(zip(p.i.tolist(), p.j.tolist()))


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return _clustered(3000, 24)


def test_join_cell_equals_brute_force_and_is_sorted(data):
    x = data[:700]
    ids = np.arange(1000, 1700)[::-1].copy()  # global ids in any order
    got = join_cell(x, ids, threshold=0.45, block_size=97)
    want = {(min(ids[a], ids[b]), max(ids[a], ids[b])) for a, b in _brute_pairs(x, 0.45)}
    assert _pairs(got) == want and len(want) > 50
    assert np.all(got.i < got.j)
    assert np.all(np.diff(got.i * 10_000 + got.j) > 0)
    diff = x[np.searchsorted(-ids, -got.i)] - x[np.searchsorted(-ids, -got.j)]
    np.testing.assert_allclose(got.distance, np.linalg.norm(diff, axis=1), atol=1e-6)
    assert got.distance.dtype == np.float32 and got.i.dtype == np.int64


def test_join_cell_primary_rows_only(data):
    x = data[:400]
    got = join_cell(x, np.arange(400), threshold=0.45, n_primary=100)
    want = {(a, b) for a, b in _brute_pairs(x, 0.45) if a < 100}
    assert _pairs(got) == want and want


def test_join_cell_in_torch_matches_numpy(data):
    torch = pytest.importorskip("torch")
    x = data[:500]
    ids = np.arange(500)
    ref = join_cell(x, ids, threshold=0.45)
    # CPU torch stands in for a CUDA device here (no GPU on the test machines)
    for rows, device in ((torch.from_numpy(x), None), (x, "cpu")):
        got = join_cell(rows, ids, threshold=0.45, block_size=128, device=device)
        assert _pairs(got) == _pairs(ref)
        np.testing.assert_allclose(got.distance, ref.distance, atol=1e-6)


@pytest.mark.parametrize("n_cells", [1, 7, 90])  # one cell, flat, two levels
def test_cells_find_every_pair_within_the_threshold(data, n_cells):
    rows = neardup._rows.Rows([data], None)
    t = 0.45
    pairs = Cells(n_cells=n_cells).find_pairs(rows, t, seed=0)
    assert _pairs(pairs) == _brute_pairs(data, t)


def test_smaller_margin_loses_pairs_and_margin_one_does_not(data):
    rows = neardup._rows.Rows([data], None)
    t = 0.6  # wide enough that many pairs straddle cell boundaries
    truth = _brute_pairs(data, t)
    full = _pairs(Cells(n_cells=90).find_pairs(rows, t, seed=0))
    none = _pairs(Cells(n_cells=90, margin=0.0).find_pairs(rows, t, seed=0))
    assert full == truth
    assert none < truth  # strictly fewer: the margin is what makes the join exact


def test_route_rows_primary_first_and_partition_round_trip(data):
    part = fit_partition(data[:2000], n_cells=100, seed=3)
    assert len(np.unique(part.parent)) > 1  # two levels
    assert np.all(np.diff(part.parent) >= 0)
    row, cell = route_rows(part, data, margin=0.1)
    first = primary_mask(row)
    assert first.sum() == len(data) and np.all(np.diff(row) >= 0)
    nearest = np.argmin(((data[:, None] - part.centroids[None]) ** 2).sum(-1), axis=1)
    # the primary cell is the nearest leaf of the nearest coarse cell
    coarse = np.argmin(((data[:, None] - part.coarse[None]) ** 2).sum(-1), axis=1)
    agree = part.parent[cell[first]] == coarse
    assert agree.mean() > 0.99
    flat = fit_partition(data[:2000], n_cells=10, seed=3)
    r, c = route_rows(flat, data, margin=0.0)
    assert np.mean(c[primary_mask(r)] == np.argmin(
        ((data[:, None] - flat.centroids[None]) ** 2).sum(-1), axis=1
    )) > 0.999
    del nearest
    buffer = io.BytesIO()
    np.savez(buffer, **part.arrays())
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as saved:
        again = Partition.from_arrays(saved)
    assert np.array_equal(again.centroids, part.centroids)
    assert np.array_equal(route_rows(again, data, margin=0.1)[1], cell)


def test_merge_pairs_is_order_independent(data):
    rows = neardup._rows.Rows([data], None)
    backend = Cells(n_cells=20)
    partition = backend.fit(rows, seed=0)
    parts = [join_cell_result for join_cell_result in map(
        lambda task: join_cell(task.rows, task.row_ids, threshold=0.4, n_primary=task.n_primary),
        backend.cell_tasks(rows, partition, 0.4),
    )]
    a = merge_pairs(parts)
    b = merge_pairs(parts[::-1] + parts[:3])  # other order, some parts twice
    for field in ("i", "j", "distance"):
        assert np.array_equal(getattr(a, field), getattr(b, field))


def test_same_pairs_for_any_executor_and_for_a_seed(data):
    rows = neardup._rows.Rows([data], "row")
    t = 0.4
    serial = Cells(n_cells=40).find_pairs(rows, t, seed=5)
    for executor in (ThreadExecutor(2), ThreadPoolExecutor(3)):
        other = Cells(n_cells=40, executor=executor).find_pairs(rows, t, seed=5)
        assert np.array_equal(other.i, serial.i) and np.array_equal(other.j, serial.j)
        assert np.array_equal(other.distance, serial.distance)
    again = Cells(n_cells=40).find_pairs(rows, t, seed=5)
    assert np.array_equal(again.i, serial.i)


def test_sampled_graph_is_the_exact_graph_of_the_sampled_rows(data):
    rows = neardup._rows.Rows([data], "row")
    sample = sample_rows(len(data), 300, seed=1)
    assert len(np.unique(sample)) == 300 and np.all(np.diff(sample) > 0)
    graph = sampled_neighbor_graph(rows, sample, 7)
    exact = neardup._neighbors.build_graph(rows.matrix(), 7, backend="exact")
    np.testing.assert_allclose(graph.distances, exact.distances[sample], atol=1e-6)
    assert np.array_equal(graph.rows, sample)


def test_default_backend_matches_exact_search(data):
    split = {"train": data[:2400], "test": data[2400:]}
    cells = neardup.find_duplicates(split)
    exact = neardup.find_duplicates(split, backend="exact")
    assert cells.settings["backend"] == "cells" and exact.settings["backend"] == "exact"
    assert cells.threshold.value == exact.threshold.value  # every row sampled below 5,000
    assert cells.leakage["test"].positions == exact.leakage["test"].positions
    assert sorted(map(sorted, (s.positions for s in cells.clusters))) == sorted(
        map(sorted, (s.positions for s in exact.clusters))
    )
    assert cells.histogram == exact.histogram


def test_large_input_uses_a_sample_and_stays_exact():
    x = _clustered(12_000, 16, seed=2)
    result = neardup.find_duplicates(x, backend=neardup.Cells(cell_size=500))
    t = result.threshold.value
    # every pair within the resolved threshold, as brute force on the flagged rows' blocks
    rows = neardup._rows.Rows([x], "row")
    pairs = Cells(n_cells=1).find_pairs(rows, t, seed=0)
    members = {r for s in result.clusters for r in s.positions}
    assert members == set(pairs.i.tolist()) | set(pairs.j.tolist())
    assert sum(result.histogram["within"]) == Cells().sample_size_for(12_000, 16)


def test_backend_objects_and_the_older_keywords():
    x = _clustered(300, 8)
    annoy = neardup.find_duplicates(x, backend=neardup.Annoy(n_trees=8, query_jobs=1))
    assert annoy.settings["backend"] == "annoy" and annoy.settings["n_trees"] == 8
    legacy = neardup.find_duplicates(x, backend="annoy", n_trees=8, query_jobs=1)
    assert legacy.settings == annoy.settings
    cells = neardup.find_duplicates(x, backend=neardup.Cells(cell_size=64))
    assert cells.settings["cell_size"] == 64 and cells.settings["n_trees"] is None
    with pytest.raises(neardup.NeardupInputError, match=r"backend=neardup.Annoy\(n_trees=...\)"):
        neardup.find_duplicates(x, n_trees=8)
    with pytest.raises(neardup.NeardupInputError, match="n_trees is an option of the annoy"):
        neardup.find_duplicates(x, backend=neardup.Cells(), n_trees=8)
    with pytest.raises(neardup.NeardupInputError, match="margin must be a number >= 0"):
        neardup.Cells(margin=-1)
    with pytest.raises(neardup.NeardupInputError, match="has no map"):
        neardup.Cells(executor=object())
