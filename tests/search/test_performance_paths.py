"""Fast paths of the annoy backend checked against the exact backend (never timed here).

Timing lives in ``benchmarks/``; these tests pin what the fast paths must keep: the same graph
for any number of query workers, exact distances from the blocked distance step, and
within-threshold recall of the default tree count on near-duplicates up to the threshold.
"""

from __future__ import annotations

import numpy as np
import pytest

import neardup
from neardup.search import DEFAULT_TREES, _annoy, build_graph, pair_distances, row_distances


def _hard(n: int, d: int, seed: int = 3) -> np.ndarray:
    """Clustered unit rows; 5 % noisy copies at distances spread from 0 to about 0.15."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(n // 100, d))
    x = centers[rng.integers(0, len(centers), n)] + rng.normal(scale=0.7, size=(n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    m = n // 20
    targets = rng.choice(n, m, replace=False)
    noise = rng.uniform(0, 0.15, size=(m, 1)) / np.sqrt(d)
    x[targets] = x[rng.integers(0, n, m)] + rng.normal(size=(m, d)) * noise
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


@pytest.fixture
def small_chunks(monkeypatch):
    """Fork query workers even for a few thousand rows (the real cut-off is 20,000)."""
    monkeypatch.setattr(_annoy, "_PARALLEL_MIN_ROWS", 0)
    monkeypatch.setattr(_annoy, "_CHUNK_ROWS", 500)


def test_query_workers_give_the_same_graph(small_chunks):
    x = _hard(4000, 16)
    one = build_graph(x, 10, backend="annoy", n_trees=3, query_jobs=1)
    for jobs in (2, 3):
        many = build_graph(x, 10, backend="annoy", n_trees=3, query_jobs=jobs)
        np.testing.assert_array_equal(many.indices, one.indices)
        np.testing.assert_array_equal(many.distances, one.distances)
    assert not (one.indices == np.arange(4000)[:, None]).any()


def test_parallel_progress_reaches_the_total(small_chunks):
    seen = []
    build_graph(
        _hard(3000, 8),
        5,
        backend="annoy",
        n_trees=2,
        query_jobs=2,
        progress=lambda stage, done, total: seen.append((stage, done, total)),
    )
    queried = [done for stage, done, _ in seen if stage == "querying annoy index"]
    assert queried == sorted(queried) and queried[-1] == 3000


def test_find_duplicates_does_not_depend_on_query_jobs(small_chunks):
    x = _hard(3000, 12)
    data = {"train": x[:2400], "test": x[2400:]}
    a = neardup.find_duplicates(data, backend="annoy", query_jobs=1)
    b = neardup.find_duplicates(data, backend="annoy", query_jobs=2)
    assert a.threshold.value == b.threshold.value
    assert [c.positions for c in a.clusters] == [c.positions for c in b.clusters]
    assert a.leakage["test"].positions == b.leakage["test"].positions
    assert a.leakage["test"].count > 0


def test_blocked_row_distances_match_pair_distances_and_padding():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5000, 24)).astype(np.float32)
    indices = rng.integers(0, 5000, size=(5000, 7))
    indices[::13, -2:] = -1
    got = row_distances(x, indices)
    valid = indices >= 0
    rows = np.repeat(np.arange(5000), 7)[valid.ravel()]
    np.testing.assert_array_equal(got[valid], pair_distances(x, rows, indices[valid]))
    assert np.isinf(got[~valid]).all()
    brute = np.linalg.norm(x[3].astype(np.float64) - x[indices[3]], axis=1)
    np.testing.assert_allclose(got[3], brute, rtol=1e-6)


def test_default_trees_keep_recall_on_near_duplicates_up_to_the_threshold():
    x = _hard(20000, 64)
    exact = build_graph(x, 10, backend="exact")
    fast = build_graph(x, 10, backend="annoy")  # DEFAULT_TREES, default search_k
    threshold = 0.2 * float(np.median(exact.distances[:, -1]))
    pairs = {}
    for name, g in (("exact", exact), ("annoy", fast)):
        rows, cols = np.nonzero(g.distances <= threshold)
        pairs[name] = {(min(a, b), max(a, b)) for a, b in zip(rows, g.indices[rows, cols])}
    assert len(pairs["exact"]) >= 500
    recall = len(pairs["exact"] & pairs["annoy"]) / len(pairs["exact"])
    assert recall >= 0.99, (DEFAULT_TREES, recall)


@pytest.mark.parametrize("bad", [0, -2, 1.5, "2", True])
def test_bad_query_jobs_is_a_clear_error(bad):
    x = np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32)
    with pytest.raises(neardup.NeardupInputError, match="query_jobs"):
        neardup.find_duplicates(x, query_jobs=bad)


@pytest.mark.parametrize(("size", "m"), [(16384, 250), (1000, 250), (700, 3000), (5, 7), (3, 1)])
def test_bounds_compared_in_tiles_as_by_broadcast(size, m):
    from neardup.search._sample_knn import _within_bounds

    rng = np.random.default_rng(size + m)
    d2 = rng.normal(size=(size, m)).astype(np.float32)
    bound = rng.normal(size=m).astype(np.float32)
    out = np.empty((size, m), dtype=bool)
    assert np.array_equal(_within_bounds(d2, bound, out), d2 <= bound[None, :])


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16, np.int32])
@pytest.mark.parametrize("shape", [(0, 5), (1, 1), (7, 40), (3000, 64), (513, 3)])
def test_squared_norms_equal_the_casting_einsum(dtype, shape):
    import neardup._normalize as normalize

    rng = np.random.default_rng(shape[0] + shape[1])
    x = (rng.normal(size=shape) * rng.lognormal(size=(shape[0], 1)) * 50).astype(dtype)
    expected = np.einsum("ij,ij->i", x, x, dtype=np.float64)
    got = normalize.squared_norms(x)
    assert got.dtype == np.float64
    assert np.array_equal(got, expected)  # bit for bit


def test_screen_with_squares_passes_the_same_candidates():
    from neardup.search import screen_cell

    rng = np.random.default_rng(5)
    x = _hard(900, 24)
    ids = np.sort(rng.choice(10_000, len(x), replace=False))
    with_sq = np.concatenate([x, np.einsum("ij,ij->i", x, x)[:, None]], axis=1)
    for n_primary in (1, 130, 900):
        plain = screen_cell(x, ids, threshold=0.3, n_primary=n_primary)
        squared = screen_cell(with_sq, ids, threshold=0.3, n_primary=n_primary, with_squares=True)
        assert len(plain[0]) > 0
        assert np.array_equal(plain[0], squared[0])
        assert np.array_equal(plain[1], squared[1])


def test_sample_knn_does_not_depend_on_the_block_rows(monkeypatch):
    from neardup.search import Rows, _sample_knn, sample_rows, sampled_neighbor_graph

    x = _hard(6000, 16)
    rows = Rows([x[:5000], x[5000:]], "row")
    sample = sample_rows(rows.n, 300, 0)
    graphs = []
    for block_rows in (16384, 2048, 700):
        monkeypatch.setattr(_sample_knn, "_BLOCK_ROWS", block_rows)
        graphs.append(sampled_neighbor_graph(rows, sample, 10))
    for graph in graphs[1:]:
        assert np.array_equal(graph.indices, graphs[0].indices)
        assert np.array_equal(graph.distances, graphs[0].distances)


def test_routing_most_rows_whole_gives_the_same_entries(monkeypatch):
    from neardup.search import Rows, _backends

    x = _hard(20_000, 16)
    rows = Rows.from_matrix(x)
    engine = neardup.Cells(cell_size=64)
    partition = engine.fit(rows, seed=0)
    items = np.flatnonzero(np.random.default_rng(1).random(len(x)) < 0.95)
    routed = []
    for share in (2.0, 0.0):  # never / always routed whole
        monkeypatch.setattr(_backends, "_ROUTE_ALL_SHARE", share)
        routed.append(engine.route(rows, partition, 0.2, margin=0.15, items=items))
    for a, b in zip(*routed):
        assert np.array_equal(a, b)
    assert set(routed[0][0].tolist()) == set(items.tolist())


def test_mapped_empty_is_a_writable_array_of_its_shape():
    from neardup._mapped import mapped_empty

    a = mapped_empty((1000, 33))
    assert a.shape == (1000, 33) and a.dtype == np.float32 and a.flags.writeable
    a[:] = 2.0
    assert float(a.sum()) == 66_000.0


@pytest.mark.parametrize("block_size", [None, 1, 7, 128, 1000])
def test_screen_passes_every_pair_once_from_its_earlier_row(block_size):
    from neardup.search import screen_cell

    x = _hard(700, 24)
    ids = np.arange(700) * 3
    d = np.linalg.norm(x[:, None, :] - x[None, :, :], axis=2)
    for n_primary in (1, 130, 700):
        a, b = screen_cell(x, ids, threshold=0.3, n_primary=n_primary, block_size=block_size)
        got = set(zip(a.tolist(), b.tolist()))
        assert len(got) == len(a) and np.all(a < b)  # each candidate once, i < j
        assert np.all(np.minimum(a, b) // 3 < n_primary)  # a primary row in every pair
        want = {
            (3 * i, 3 * j)
            for i, j in zip(*np.nonzero(np.triu(d <= 0.3 - 1e-6, 1)))
            if i < n_primary
        }
        assert want <= got and (len(want) > 0 or n_primary == 1)


def test_rows_record_the_squares_of_their_first_pass_and_read_them_back():
    from neardup._normalize import squared_norms
    from neardup.search import Rows

    x = _hard(5000, 16) * 3.0
    rows = Rows([x[:3000], x[3000:]], "row")
    first = [rows.squares(start, block) for start, block in rows.blocks(700)]
    expected = [squared_norms(block).astype(np.float32) for _, block in rows.blocks(1024)]
    assert np.array_equal(np.concatenate(first), np.concatenate(expected))
    again = [rows.squares(start, block) for start, block in rows.blocks(1024)]
    assert np.array_equal(np.concatenate(again), np.concatenate(expected))
    assert rows._squares_filled == rows.n
    out_of_order = Rows([x], "row")  # a pass that does not start at row 0 records nothing
    block = out_of_order.take(np.arange(100, 200))
    assert np.array_equal(out_of_order.squares(100, block), squared_norms(block).astype(np.float32))
    assert out_of_order._squares is None


@pytest.mark.parametrize("width", [0, 1, 2, 3, 8, 63, 64, 65, 250])
def test_true_positions_are_nonzeros_in_row_major_order(width):
    from neardup.search._masks import true_positions

    mask = np.random.default_rng(width).random((37, width)) < 0.2
    rows, cols = true_positions(mask)
    want_rows, want_cols = np.nonzero(mask)
    assert np.array_equal(rows, want_rows) and np.array_equal(cols, want_cols)
    assert rows.dtype == np.int64 and cols.dtype == np.int64
