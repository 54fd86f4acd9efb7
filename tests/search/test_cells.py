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
    HomeLimits,
    MarginChoice,
    Partition,
    Rows,
    ThreadExecutor,
    _backends,
    _margin,
    band_share,
    build_graph,
    fit_partition,
    join_cell,
    merge_pairs,
    route_entries,
    route_rows,
    sample_rows,
    sampled_neighbor_graph,
    screen_cell,
)
from neardup.search._cells import orthonormal_projection


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


_DISTANCES: dict[int, tuple[np.ndarray, np.ndarray]] = {}


def _brute_pairs(x: np.ndarray, t: float) -> set[tuple[int, int]]:
    """Every pair within ``t`` by direct differences (float64 sums; cached per array)."""
    cached = _DISTANCES.get(id(x))
    d = cached[1] if cached is not None and cached[0] is x else None
    if d is None:
        d = np.empty((len(x), len(x)), dtype=np.float32)
        for s in range(0, len(x), 100):
            diff = x[s : s + 100, None, :] - x[None, :, :]
            d[s : s + 100] = np.sqrt(np.einsum("ijk,ijk->ij", diff, diff, dtype=np.float64))
        _DISTANCES[id(x)] = (x, d)
    i, j = np.nonzero(np.triu(d <= np.float32(t), 1))
    return set(zip(i.tolist(), j.tolist()))


def _pairs(p: ClosePairs) -> set[tuple[int, int]]:
    return set(zip(p.i.tolist(), p.j.tolist()))


@pytest.fixture(scope="module")
def data() -> np.ndarray:
    return _clustered(3000, 24)


def test_join_cell_equals_brute_force_and_is_sorted(data):
    x = data[:700].copy()
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
    x = data[:400].copy()
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
    rows = Rows([data], None)
    t = 0.45
    pairs = Cells(n_cells=n_cells).find_pairs(rows, t, seed=0)
    assert _pairs(pairs) == _brute_pairs(data, t)


def test_smaller_margin_loses_pairs_and_half_the_threshold_does_not(data):
    rows = Rows([data], None)
    t = 0.6  # wide enough that many pairs straddle cell boundaries
    truth = _brute_pairs(data, t)
    half = _pairs(Cells(n_cells=90, margin=0.5).find_pairs(rows, t, seed=0))
    less = _pairs(Cells(n_cells=90, margin=0.3).find_pairs(rows, t, seed=0))
    assert half == truth
    assert less < truth  # strictly fewer: the margin is what makes the join exact


def test_route_rows_nearest_first_and_partition_round_trip(data):
    part = fit_partition(data[:2000], n_cells=100, seed=3)
    assert len(np.unique(part.parent)) > 1  # two levels
    assert np.all(np.diff(part.parent) >= 0)
    row, cell, primary = route_rows(part, data, margin=0.1, return_primary=True)
    first = np.r_[True, row[1:] != row[:-1]]
    assert first.sum() == len(data) and np.all(np.diff(row) >= 0) and primary[first].all()
    coarse = np.argmin(((data[:, None] - part.coarse[None]) ** 2).sum(-1), axis=1)
    assert np.mean(part.parent[cell[first]] == coarse) > 0.99  # nearest coarse cell first
    # one primary leaf per coarse cell reached: the nearest leaf of that coarse cell
    reached = np.unique(np.stack([row, part.parent[cell]]), axis=1).shape[1]
    assert primary.sum() == reached
    flat = fit_partition(data[:2000], n_cells=10, seed=3)
    r, c = route_rows(flat, data, margin=0.0)
    nearest = np.argmin(((data[:, None] - flat.centroids[None]) ** 2).sum(-1), axis=1)
    assert len(r) == len(data) and np.mean(c == nearest) > 0.999
    buffer = io.BytesIO()
    np.savez(buffer, **part.arrays())
    buffer.seek(0)
    with np.load(buffer, allow_pickle=False) as saved:
        again = Partition.from_arrays(saved)
    assert np.array_equal(again.centroids, part.centroids)
    assert np.array_equal(route_rows(again, data, margin=0.1)[1], cell)


def test_kmeans_sums_of_wide_rows_match_per_column_sums():
    from neardup.search import _cells

    rng = np.random.default_rng(0)
    x = rng.normal(size=(9000, 300)).astype(np.float32)  # wide: one-hot products, 2 blocks
    label = rng.integers(0, 7, len(x))
    by_products = np.zeros((7, 300))
    _cells._add_rows(by_products, label, x)
    by_columns = np.stack([x[label == c].sum(axis=0, dtype=np.float64) for c in range(7)])
    assert np.allclose(by_products, by_columns, rtol=1e-5, atol=1e-3)
    part = fit_partition(x, n_cells=100, seed=1)  # two levels in full width
    assert np.array_equal(part.centroids, fit_partition(x, n_cells=100, seed=1).centroids)


def test_home_only_routing_has_one_primary_entry_per_row_at_its_home(data):
    part = fit_partition(data[:2000], n_cells=100, seed=3)
    margin = 0.05
    row, cell, primary = route_rows(part, data, margin=margin, return_primary=True)
    h_row, h_cell, h_primary = route_rows(
        part, data, margin=margin, return_primary=True, home_only=True
    )
    first = np.r_[True, row[1:] != row[:-1]]
    h_first = np.r_[True, h_row[1:] != h_row[:-1]]
    # one primary entry per row: its home (nearest leaf of its nearest coarse cell), first
    assert h_primary.sum() == len(data) and np.all(h_primary == h_first)
    assert np.array_equal(h_cell[h_first], cell[first])
    assert primary.sum() > len(data)  # the exact routing has one per coarse cell reached
    # every other entry is a leaf within the margin of its boundary with the home leaf
    home = np.repeat(h_cell[h_first], np.diff(np.r_[np.flatnonzero(h_first), len(h_row)]))
    x = data[h_row].astype(np.float64)
    a, b = part.centroids[home].astype(np.float64), part.centroids[h_cell].astype(np.float64)
    to_bisector = (((x - b) ** 2).sum(1) - ((x - a) ** 2).sum(1)) / (
        2 * np.maximum(np.linalg.norm(a - b, axis=1), 1e-12)
    )
    assert np.all(to_bisector[~h_primary] <= margin + 1e-4)


def test_home_limits_kept_across_blocks_give_the_same_entries(data):
    part = fit_partition(data[:2000], n_cells=100, seed=3)
    margin = 0.05
    limits = HomeLimits(part, margin)
    for start in range(0, len(data), 700):  # blocks reuse the tables of the first ones
        block = data[start : start + 700]
        plain = route_entries(part, block, margin=margin, home_only=True)
        kept = route_entries(part, block, margin=margin, home_only=True, home_limits=limits)
        for a, b in zip(plain, kept):
            assert np.array_equal(a, b)
    assert HomeLimits.within(part, margin, budget=4 * part.n_cells**2 - 1) is None


def test_merge_pairs_is_order_independent(data):
    rows = Rows([data], None)
    backend = Cells(n_cells=20)
    partition = backend.fit(rows, seed=0)
    parts = [
        join_cell_result
        for join_cell_result in map(
            lambda task: join_cell(
                task.rows, task.row_ids, threshold=0.4, n_primary=task.n_primary
            ),
            backend.cell_tasks(rows, partition, 0.4),
        )
    ]
    a = merge_pairs(parts)
    b = merge_pairs(parts[::-1] + parts[:3])  # other order, some parts twice
    for field in ("i", "j", "distance"):
        assert np.array_equal(getattr(a, field), getattr(b, field))


def test_same_pairs_for_any_executor_and_for_a_seed(data):
    rows = Rows([data], "row")
    t = 0.4
    serial = Cells(n_cells=40).find_pairs(rows, t, seed=5)
    for executor in (ThreadExecutor(2), ThreadPoolExecutor(3)):
        other = Cells(n_cells=40, executor=executor).find_pairs(rows, t, seed=5)
        assert np.array_equal(other.i, serial.i) and np.array_equal(other.j, serial.j)
        assert np.array_equal(other.distance, serial.distance)
    again = Cells(n_cells=40).find_pairs(rows, t, seed=5)
    assert np.array_equal(again.i, serial.i)


def test_sampled_graph_is_the_exact_graph_of_the_sampled_rows(data):
    rows = Rows([data], "row")
    sample = sample_rows(len(data), 300, seed=1)
    assert len(np.unique(sample)) == 300 and np.all(np.diff(sample) > 0)
    graph = sampled_neighbor_graph(rows, sample, 7)
    exact = build_graph(rows.matrix(), 7, backend="exact")
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
    rows = Rows([x], "row")
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


def test_wide_rows_are_screened_through_a_projection_and_stay_exact():
    rng = np.random.default_rng(4)
    base = rng.normal(size=(40, 600)).astype(np.float32)
    x = base[rng.integers(0, 40, 1500)] + rng.normal(scale=0.6, size=(1500, 600)).astype(np.float32)
    x[1000:1100] = x[:100] + rng.normal(scale=0.02, size=(100, 600)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    rows = Rows([x], None)
    t = 0.35
    backend = Cells(n_cells=12, project_above=256, project_to=32)
    partition = backend.fit(rows, seed=0)
    assert partition.projection.shape == (32, 600)
    np.testing.assert_allclose(partition.projection @ partition.projection.T, np.eye(32), atol=1e-5)
    got = backend.find_pairs(rows, t, seed=0, partition=partition)
    assert _pairs(got) == _brute_pairs(x, t) and len(got) >= 100
    full_width = Cells(n_cells=12, project_above=None).find_pairs(rows, t, seed=0)
    assert np.array_equal(full_width.i, got.i) and np.array_equal(full_width.distance, got.distance)


def test_exact_copies_joined_once_give_the_same_result():
    """A group of 400 identical rows: 399 link pairs instead of 79,800, same sets and leakage."""
    rng = np.random.default_rng(6)
    train = _clustered(1500, 12, seed=6)
    test = _clustered(500, 12, seed=7)
    train[100:500] = train[99]  # one large group of copies in train
    test[:50] = train[99]  # ...reaching into test
    test[50:80] = test[80]  # a group in test only, near a train row
    test[80:81] = train[700] + rng.normal(scale=0.01, size=(1, 12)).astype(np.float32)
    test[50:80] = test[80]
    data = {"train": train, "test": test}
    copies = neardup.find_duplicates(data, backend=neardup.Cells(cell_size=64))
    plain = neardup.find_duplicates(data, backend=neardup.Cells(cell_size=64, dedupe=False))
    assert copies.settings["dedupe"] is True and plain.settings["dedupe"] is False
    assert sorted(map(sorted, (s.positions for s in copies.clusters))) == sorted(
        map(sorted, (s.positions for s in plain.clusters))
    )
    a, b = copies.leakage["test"], plain.leakage["test"]
    assert a.positions == b.positions and a.nearest_positions == b.nearest_positions
    np.testing.assert_array_equal(a.distances, b.distances)
    assert a.nearest_positions[:50] == [99] * 50 and a.count >= 81


def test_torch_device_gives_the_same_result():
    pytest.importorskip("torch")
    x = _clustered(1200, 16, seed=8)
    data = {"train": x[:1000], "test": x[1000:]}
    numpy_result = neardup.find_duplicates(data, backend=neardup.Cells(cell_size=100))
    # device="cpu" runs the in-cell products in torch, as "cuda" would on a GPU (none here)
    torch_result = neardup.find_duplicates(data, backend=neardup.Cells(cell_size=100, device="cpu"))
    assert torch_result.settings["device"] == "cpu"
    assert [s.positions for s in torch_result.clusters] == [
        s.positions for s in numpy_result.clusters
    ]
    assert torch_result.leakage["test"].positions == numpy_result.leakage["test"].positions


def test_route_rows_of_an_empty_block():
    part = fit_partition(_clustered(500, 8), n_cells=80, seed=0)
    row, cell = route_rows(part, np.zeros((0, 8), dtype=np.float32), margin=0.1)
    assert len(row) == len(cell) == 0


# ----------------------------------------------------------------- automatic margin


def _auto_join(x: np.ndarray, t: float, cell_size: int):
    rows = Rows([x], None)
    engine = Cells(cell_size=cell_size)
    partition = engine.fit(rows, seed=0)
    graph = engine.neighbor_graph(rows, 10, seed=0)
    margin = engine.margin_for(rows, partition, graph, t)
    pairs = engine.find_pairs(rows, t, seed=0, partition=partition, margin=margin)
    return margin, _pairs(pairs)


def test_spread_out_wide_data_gets_a_smaller_margin_and_keeps_recall():
    # 64 dimensions, a threshold of half the typical neighbour distance, cells of 24 rows:
    # at 0.5 t each row lands in many cells, so the margin comes down
    x = _clustered(3000, 64, seed=1)
    t = 0.4
    margin, found = _auto_join(x, t, cell_size=24)
    truth = _brute_pairs(x, t)
    assert len(truth) > 100
    assert 0.15 <= margin < 0.5
    assert len(found & truth) / len(truth) >= 0.99
    assert found <= truth  # never a pair beyond the threshold


def test_low_dimensional_data_keeps_the_exact_margin():
    x = _clustered(3000, 3, seed=2)
    t = 0.02
    margin, found = _auto_join(x, t, cell_size=64)
    assert margin == 0.5
    assert found == _brute_pairs(x, t)


def test_an_explicit_margin_is_used_as_given_and_recorded():
    x = _clustered(1500, 16, seed=3)
    result = neardup.find_duplicates(x, backend=Cells(cell_size=32, margin=0.3))
    assert result.settings["margin"] == 0.3
    assert result.settings["margin_used"] == 0.3
    auto = neardup.find_duplicates(x, backend=Cells(cell_size=32))
    assert auto.settings["margin"] is None
    assert 0.15 <= auto.settings["margin_used"] <= 0.5


@pytest.mark.parametrize("bad", [-0.1, float("nan"), "0.5", True])
def test_bad_margin_is_refused_with_the_rule(bad):
    with pytest.raises(neardup.NeardupInputError, match="margin must be a number >= 0"):
        Cells(margin=bad)


def test_the_numpy_join_loads_no_framework():
    # torch is imported (by _torch_join) only for torch rows or a torch device
    import subprocess
    import sys

    code = (
        "import sys, numpy as np, neardup\n"
        "from neardup.search import join_cell\n"
        "x = np.random.default_rng(0).normal(size=(50, 8)).astype('float32')\n"
        "join_cell(x, np.arange(50), threshold=3.0)\n"
        "print(sorted(m for m in ('torch', 'tensorflow', 'keras', 'datasets') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_wide_rows_are_projected_only_when_the_projection_keeps_their_spread():
    rng = np.random.default_rng(5)
    rows_of = lambda x: Rows([x.astype(np.float32)], "row")  # noqa: E731
    low_rank = rng.normal(size=(2000, 20)) @ rng.normal(size=(20, 600))
    isotropic = rng.normal(size=(2000, 600))  # 64 of 600 directions keep ~11 % of it
    engine = Cells(cell_size=50)
    projected = engine.fit(rows_of(low_rank), seed=0)
    full_width = engine.fit(rows_of(isotropic), seed=0)
    assert projected.projection is not None and full_width.projection is None
    # in full width a pair costs 600 products: cells of a quarter of the size (2,000 / 12.5)
    assert projected.n_cells <= 40 < 80 < full_width.n_cells <= 160  # 4x smaller cells
    explicit = Cells(n_cells=40).fit(rows_of(isotropic), seed=0)
    assert explicit.n_cells <= 40  # an explicit n_cells is kept
    # either way the pairs are those of brute force
    x = rows_of(isotropic).matrix()
    x[1000:1100] = x[:100] + 0.001
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    t = 0.05
    got = engine.find_pairs(Rows.from_matrix(x), t, seed=0)
    assert _pairs(got) == _brute_pairs(x, t)


@pytest.mark.parametrize("margin", [0.15, 0.5])
def test_route_entries_sorted_by_cell_primary_first_then_row(data, margin):
    rows = Rows([data], "row")
    backend = Cells(n_cells=40)
    partition = backend.fit(rows, seed=0)
    items = np.arange(0, len(data), 3)
    row, cell, primary = backend.route(rows, partition, 0.4, margin=margin, items=items)
    assert row.dtype == cell.dtype == np.int32 and primary.dtype == bool
    # the same entries as routing the chosen rows in one go, in (cell, primary first, row)
    r, c, p, _ = route_entries(
        partition, rows.matrix()[items], margin=margin * 0.4, home_only=margin < 0.5
    )
    order = np.lexsort((items[r], ~p, c))
    assert np.array_equal(row, items[r][order]) and np.array_equal(cell, c[order])
    assert np.array_equal(primary, p[order]) and primary.sum() >= len(items)


def test_screen_projection_keeps_every_pair():
    # narrow rows screened through half their width, candidates measured in full width: the
    # pairs (and distances) of brute force, the same as without the screen
    x = _clustered(3000, 48, seed=5)
    rows = Rows.from_matrix(x)
    cells = Cells(cell_size=64)
    graph = sampled_neighbor_graph(rows, sample_rows(rows.n, 400, 0), 10)
    t = 0.25  # between the copies (up to ~0.02) and the natural neighbours (from ~0.41)
    partition = cells.fit(rows, seed=0)
    screen = cells.screen_for(rows, partition, graph, t, seed=0)
    assert screen is not None and screen.shape == (24, 48)
    np.testing.assert_allclose(screen @ screen.T, np.eye(24), atol=1e-5)
    plain = cells.find_pairs(rows, t, seed=0, partition=partition, margin=0.5)
    screened = cells.find_pairs(rows, t, seed=0, partition=partition, margin=0.5, screen=screen)
    assert _pairs(screened) == _pairs(plain) == _brute_pairs(x, t) and len(plain) > 20
    np.testing.assert_array_equal(screened.distance, plain.distance)
    result = neardup.find_duplicates(x, backend=cells)
    assert result.settings["screen_width"] == 24


def test_screened_pairs_above_the_projection_budget_are_measured_cell_by_cell(monkeypatch):
    # above the budget of the once-projected rows each cell projects its own rows (and
    # measures its own candidates): the same pairs and distances
    from neardup.search import _backends

    x = _clustered(2000, 48, seed=8)
    rows = Rows.from_matrix(x)
    screen = np.eye(48, dtype=np.float32)[::2]
    once = Cells(cell_size=64).find_pairs(rows, 0.25, seed=0, margin=0.5, screen=screen)
    monkeypatch.setattr(_backends, "_PROJECTED_BYTES", 0)
    monkeypatch.setattr(_backends, "screen_cell", None)  # never called on this path
    by_cell = Cells(cell_size=64).find_pairs(rows, 0.25, seed=0, margin=0.5, screen=screen)
    assert np.array_equal(once.i, by_cell.i) and np.array_equal(once.j, by_cell.j)
    np.testing.assert_array_equal(once.distance, by_cell.distance)
    assert _pairs(by_cell) == _brute_pairs(x, 0.25) and len(by_cell) > 10


def test_screened_pairs_measured_once_for_any_executor_and_items():
    # the cells screen their projected rows and the candidates are measured once, in full
    # width: brute force's pairs and the unscreened join's distances, with threads and items
    x = _clustered(3000, 48, seed=7)
    rows = Rows([x * 3.0], "row")  # normalised on the fly, as find_duplicates' rows are
    t = 0.25
    screen = np.eye(48, dtype=np.float32)[::2]  # every other coordinate: orthonormal
    plain = Cells(cell_size=64).find_pairs(rows, t, seed=0, margin=0.5)
    normalised = rows.matrix()
    assert _pairs(plain) == _brute_pairs(normalised, t) and len(plain) > 20
    for executor in (None, ThreadExecutor(2)):
        cells = Cells(cell_size=64, executor=executor)
        got = cells.find_pairs(Rows([x * 3.0], "row"), t, seed=0, margin=0.5, screen=screen)
        assert np.array_equal(got.i, plain.i) and np.array_equal(got.j, plain.j)
        np.testing.assert_array_equal(got.distance, plain.distance)
    items = np.arange(0, len(x), 2)
    got = Cells(cell_size=64).find_pairs(rows, t, seed=0, margin=0.5, items=items, screen=screen)
    kept = np.isin(plain.i, items) & np.isin(plain.j, items)
    assert np.array_equal(got.i, plain.i[kept]) and np.array_equal(got.j, plain.j[kept])


def test_screened_cells_passing_too_much_are_joined_in_full_width():
    # rows that agree on the screened coordinates: every pair of a cell is a candidate, so
    # the cell is joined again in full width (the same pairs as brute force)
    rng = np.random.default_rng(4)
    x = np.zeros((600, 32), dtype=np.float32)
    x[:, :16] = rng.normal(size=(6, 16))[rng.integers(0, 6, 600)]
    x[:, 16:] = rng.normal(scale=0.05, size=(600, 16))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    screen = np.eye(32, dtype=np.float32)[:16]
    t = 0.06
    got = Cells(n_cells=4).find_pairs(Rows.from_matrix(x), t, seed=0, margin=0.5, screen=screen)
    assert _pairs(got) == _brute_pairs(x, t) and len(got) > 10


def test_screen_projection_refused_where_it_passes_too_much():
    # isotropic noise: half the directions keep half of every distance, so at a threshold
    # near the neighbours' distances most far neighbours would pass the projected screen
    x = np.random.default_rng(3).normal(size=(2000, 64)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    rows = Rows.from_matrix(x)
    cells = Cells(cell_size=64)
    graph = sampled_neighbor_graph(rows, sample_rows(rows.n, 300, 0), 10)
    partition = cells.fit(rows, seed=0)
    t = float(np.median(graph.distances[:, 0]))
    assert cells.screen_for(rows, partition, graph, t, seed=0) is None
    narrow = Rows.from_matrix(np.ascontiguousarray(x[:, :16]))  # below 32 wide: never
    narrow_graph = sampled_neighbor_graph(narrow, sample_rows(narrow.n, 300, 0), 10)
    assert cells.screen_for(narrow, cells.fit(narrow, seed=0), narrow_graph, 1e-3, seed=0) is None
    wide = Rows.from_matrix(np.repeat(x, 5, axis=1)[:600] / np.sqrt(5))  # 320 wide: never
    full_width = Cells(cell_size=64, project_above=None)
    wide_graph = sampled_neighbor_graph(wide, sample_rows(wide.n, 100, 0), 10)
    wide_partition = full_width.fit(wide, seed=0)
    assert full_width.screen_for(wide, wide_partition, wide_graph, 1e-3, seed=0) is None


def test_many_cells_fit_on_at_least_eight_sampled_rows_each(monkeypatch):
    # at 10M x 64 the 65,536-row cap left 1.7 sampled rows per leaf: cells so uneven that 1 % of
    # them held 74 % of the join's work; the cap never takes the sample below 8 rows a cell
    from neardup.search import _backends

    fitted = []
    real_fit = _backends.fit_partition

    def recording_fit(sample, **kwargs):
        fitted.append(len(sample))
        return real_fit(sample, **kwargs)

    monkeypatch.setattr(_backends, "fit_partition", recording_fit)
    monkeypatch.setattr(_backends, "_FIT_ROWS_MAX", 1024)  # the cap, scaled down
    x = _clustered(20_000, 8)
    partition = Cells(cell_size=64).fit(Rows.from_matrix(x), seed=0)  # 312 cells
    assert fitted == [8 * 312]
    assert partition.n_cells >= 250


@pytest.mark.parametrize(("width", "iterations"), [(8, 5), (160, 5), (8, 3), (160, 3)])
def test_kmeans_of_groups_matches_kmeans_of_each_group(width, iterations):
    """The leaves' k-means batched over all coarse cells gives each group's own centres, bit
    for bit, for narrow rows (one bincount per column) and wide ones (one-hot products)."""
    from neardup.search import _cells

    rng = np.random.default_rng(3)
    x = rng.normal(size=(3000, width)).astype(np.float32)
    groups, ks = [(0, 700), (700, 710), (900, 2999)], [9, 12, 40]
    batched = _cells._kmeans_groups(
        x, groups, ks, [np.random.default_rng([5, g]) for g in range(3)], iterations=iterations
    )
    for g, ((lo, hi), k) in enumerate(zip(groups, ks)):
        alone = _cells._kmeans(
            x[lo:hi].copy(), k, np.random.default_rng([5, g]), iterations=iterations
        )
        np.testing.assert_array_equal(batched[g], alone)


def test_leaf_iterations_default_to_five():
    """``leaf_iterations=None`` and ``5`` give the same partition; fewer give another one,
    with the same coarse cells."""
    x = np.random.default_rng(9).normal(size=(3000, 10)).astype(np.float32)
    default = fit_partition(x, n_cells=90, seed=1)
    five = fit_partition(x, n_cells=90, seed=1, leaf_iterations=5)
    three = fit_partition(x, n_cells=90, seed=1, leaf_iterations=3)
    np.testing.assert_array_equal(default.centroids, five.centroids)
    np.testing.assert_array_equal(default.coarse, three.coarse)
    assert not np.array_equal(default.centroids, three.centroids)


def test_coarse_centres_fitted_on_a_subset_of_the_sample():
    """``coarse_rows_per_cell`` fits the coarse centres on every k-th sampled row (leaves on
    all of them): deterministic, a valid two-level partition, and the whole sample when the
    subset would hold fewer rows per coarse cell than asked."""
    from neardup.search import _cells

    x = np.random.default_rng(8).normal(size=(4000, 12)).astype(np.float32)
    default = fit_partition(x, n_cells=100, seed=3)
    whole = fit_partition(x, n_cells=100, seed=3, coarse_rows_per_cell=400)  # 10 x 400 = all
    np.testing.assert_array_equal(whole.centroids, default.centroids)
    subset = fit_partition(x, n_cells=100, seed=3, coarse_rows_per_cell=100)  # every 4th row
    again = fit_partition(x, n_cells=100, seed=3, coarse_rows_per_cell=100)
    np.testing.assert_array_equal(subset.centroids, again.centroids)
    expected = _cells._kmeans(x[::4], 10, np.random.default_rng(3))
    np.testing.assert_array_equal(subset.coarse, expected)  # every coarse cell kept here
    assert np.all(np.diff(subset.parent) >= 0) and 90 <= subset.n_cells <= 110


# --------------------------------------------------------------------------- trial margin
# joins of a cell's primary rows against its other entries alone, the trial margin kept or
# topped up to the ladder's, and the gates that offer it


@pytest.fixture(scope="module")
def spread() -> np.ndarray:
    """64 dimensions, exact and noisy copies: cells of 24 rows spill a row into many."""
    return _clustered(3000, 64, seed=1)


def test_a_wider_margin_keeps_every_primary_entry_and_adds_others(spread):
    # the trial's top-up joins the entries a wider routing adds: a row's home (its primary
    # entry) is the same at any margin, and the narrower routing's entries come again
    rows = Rows([spread], "row")
    engine = Cells(cell_size=24)
    partition = engine.fit(rows, seed=0)
    narrow = engine.route(rows, partition, 0.4, margin=0.1)
    wide = engine.route(rows, partition, 0.4, margin=0.3)
    entries = [set(zip(r.tolist(), c.tolist(), p.tolist())) for r, c, p in (narrow, wide)]
    assert entries[0] < entries[1]
    assert {e for e in entries[0] if e[2]} == {e for e in entries[1] if e[2]}


@pytest.mark.parametrize("device", [None, "cpu"])
def test_cross_only_joins_the_primary_rows_against_the_others_alone(spread, device):
    x = spread[:600].copy()
    x[400:450] = x[:50] + 1e-3  # pairs across the primary rows' boundary
    ids = np.arange(5000, 5600)
    n_primary = 300
    every = _pairs(join_cell(x, ids, threshold=0.5, n_primary=n_primary, device=device))
    cross = join_cell(x, ids, threshold=0.5, n_primary=n_primary, cross_only=True, device=device)
    among_primary = {(i, j) for i, j in every if j < 5000 + n_primary}
    assert among_primary and _pairs(cross) == every - among_primary
    assert len(_pairs(cross)) >= 50
    # the screen of projected rows: the candidates without the primary rows' own pairs
    i, j = screen_cell(x, ids, threshold=0.5, n_primary=n_primary, cross_only=True)
    assert np.all(j >= 5000 + n_primary) and _pairs(cross) <= set(zip(i.tolist(), j.tolist()))
    # nothing but primary rows: nothing to join
    none = join_cell(x[:10], ids[:10], threshold=0.5, n_primary=10, cross_only=True)
    assert len(none) == 0


@pytest.mark.parametrize("screened", [False, True])
def test_a_trial_that_does_not_hold_gives_the_pairs_of_the_margin(spread, screened):
    rows = Rows([spread], "row")
    engine = Cells(cell_size=24)
    partition = engine.fit(rows, seed=0)
    screen = orthonormal_projection(spread[:1000], 32, seed=0)  # screened through 32 columns
    join = {"seed": 0, "partition": partition, "screen": screen if screened else None}
    # fewer pairs than a trial needs to hold (TRIAL_MIN_PAIRS): the entries beyond the trial
    # margin are joined too
    pairs, used = engine.join(rows, 0.4, margin=MarginChoice(0.3, trial=0.1), **join)
    assert used == 0.3 and len(pairs) < _margin.TRIAL_MIN_PAIRS
    plain = engine.find_pairs(rows, 0.4, margin=0.3, **join)
    assert _pairs(pairs) == _pairs(plain)
    np.testing.assert_array_equal(pairs.distance, plain.distance)
    trial_only = _pairs(engine.find_pairs(rows, 0.4, margin=0.1, **join))
    assert trial_only < _pairs(plain)  # the wider margin found more: the top-up mattered
    assert _pairs(plain) <= _brute_pairs(spread, 0.4)


def test_a_trial_that_holds_is_kept(spread, monkeypatch):
    monkeypatch.setattr(_margin, "TRIAL_MIN_PAIRS", 10)
    monkeypatch.setattr(_margin, "TRIAL_BAND_SHARE", 1.0)
    rows = Rows([spread], "row")
    engine = Cells(cell_size=24)
    partition = engine.fit(rows, seed=0)
    pairs, used = engine.join(
        rows, 0.4, seed=0, partition=partition, margin=MarginChoice(0.3, trial=0.1)
    )
    assert used == 0.1
    assert _pairs(pairs) == _pairs(
        engine.find_pairs(rows, 0.4, seed=0, partition=partition, margin=0.1)
    )
    # judged on a seeded subset of the pairs found when there are many
    monkeypatch.setattr(_backends, "_TRIAL_PAIRS", 20)
    subset, used = engine.join(
        rows, 0.4, seed=0, partition=partition, margin=MarginChoice(0.3, trial=0.1)
    )
    assert used == 0.1 and _pairs(subset) == _pairs(pairs)


def test_trial_holds_reads_the_band_below_the_trial_margin(spread, monkeypatch):
    monkeypatch.setattr(_margin, "TRIAL_MIN_PAIRS", 10)
    part = fit_partition(spread[:2000], n_cells=100, seed=3)
    rng = np.random.default_rng(0)
    first = spread[:1000]
    near = first + rng.normal(scale=1e-4, size=first.shape).astype(np.float32)
    # copies a hair apart share a cell at any margin: none needs more than half the trial
    assert _margin.trial_holds(part, first, near, 0.1, 0.4)
    assert band_share(part, first, near, 0.1, 0.4) == 0.0
    # pairs as long as the threshold straddle boundaries far from their rows
    far = spread[1000:2000]
    assert not _margin.trial_holds(part, first, far, 0.1, 0.4)
    assert band_share(part, first, far, 0.1, 0.4) > 0.5
    assert band_share(part, first[:0], far[:0], 0.1, 0.4) == 0.0
    monkeypatch.setattr(_margin, "TRIAL_MIN_PAIRS", 2000)
    assert not _margin.trial_holds(part, first, near, 0.1, 0.4)  # too few pairs to tell


def test_no_trial_where_the_sampled_pairs_are_long(spread):
    rows = Rows([spread], "row")
    engine = Cells(cell_size=24)
    partition = engine.fit(rows, seed=0)
    sample = spread[:200]
    a = b = np.arange(200, dtype=np.int64)
    tight = _margin.choose_margins(partition, sample, (a, b), sample + 1e-4, 0.4, n_rows=1_000_000)
    assert tight == MarginChoice(0.15, trial=0.1)
    # too few rows for the pairs a trial needs to hold (TRIAL_MIN_PAIRS): no trial
    few = _margin.choose_margins(partition, sample, (a, b), sample + 1e-4, 0.4, n_rows=5_000)
    assert few == MarginChoice(0.15)
    rng = np.random.default_rng(1)
    step = rng.normal(size=sample.shape).astype(np.float32)
    step *= 0.3 * 0.4 / np.linalg.norm(step, axis=1, keepdims=True)  # 0.3 of the threshold
    long = _margin.choose_margins(partition, sample, (a, b), sample + step, 0.4, n_rows=1_000_000)
    assert long.trial is None and long.margin >= 0.15
    # an explicit margin, or a torch device: no trial
    graph = engine.neighbor_graph(rows, 10, seed=0)
    assert Cells(cell_size=24, margin=0.2).margins_for(rows, partition, graph, 0.4) == MarginChoice(
        0.2
    )
    on_torch = Cells(cell_size=24, device="cpu").margins_for(rows, partition, graph, 0.4)
    assert on_torch.trial is None


def test_find_duplicates_records_the_trial_margin_and_finds_the_same_sets(monkeypatch):
    monkeypatch.setattr(_margin, "TRIAL_MIN_PAIRS", 100)  # 20,000 rows hold ~640 pairs
    x = _clustered(20_000, 64, seed=4)
    trial = neardup.find_duplicates(x)
    assert trial.settings["margin_used"] == 0.1
    wider = neardup.find_duplicates(x, backend=Cells(margin=0.15))
    assert wider.settings["margin_used"] == 0.15
    assert [c.ids for c in trial.clusters] == [c.ids for c in wider.clusters]
    assert len(trial.clusters) > 300
