"""Exact copies found by hashing (``neardup.search``) and the streamed rows they are read from."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import neardup
from neardup._normalize import normalize_inplace
from neardup.search import Rows, build_graph, expand_neighbors, find_copies
from neardup.search._copies import _first_of_equal_hash, _split_collisions


def _with_copies(seed: int = 0, n: int = 3000, d: int = 24) -> np.ndarray:
    """Gaussian rows, then many exact copies: pairs, a group of 40 and a group of 300."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    x[rng.choice(n, 300, replace=False)] = x[5]  # 300 copies of one row (blank images)
    x[rng.choice(n, 40, replace=False)] = x[7]
    pairs = rng.choice(n, 200, replace=False)
    x[pairs[:100]] = x[pairs[100:]]
    return x


def test_find_copies_groups_exactly_equal_rows_across_splits_and_dtypes() -> None:
    x = _with_copies()
    train, test = x[:2000], x[2000:].astype(np.float64)  # same values, other dtype
    copies = find_copies(Rows([train, test], "row"))
    _, expected_first, expected_group = np.unique(x, axis=0, return_index=True, return_inverse=True)
    assert copies.n_copies == len(x) - len(expected_first) > 300
    # same partition as numpy's exact row comparison, groups numbered by first row
    assert np.array_equal(np.sort(copies.first), np.sort(expected_first))
    same = copies.group[:, None] == copies.group[None, :]
    expected_same = expected_group.reshape(-1)[:, None] == expected_group.reshape(-1)[None, :]
    assert np.array_equal(same, expected_same)
    assert np.all(copies.first[copies.group] <= np.arange(len(x)))


def test_a_hash_collision_never_merges_different_rows() -> None:
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    x[4] = x[1]
    rows = Rows.from_matrix(x)
    leader = np.array([0, 1, 0, 0, 1, 5])  # as if rows 2, 3 and 4 hashed like rows 0 / 1
    _split_collisions(rows, leader)
    assert leader.tolist() == [0, 1, 2, 3, 1, 5]  # only the true copy (row 4) keeps its leader


def test_hashes_equal_in_their_high_bits_lead_together_until_their_values_split_them() -> None:
    # 6 rows: 3 bits of row number, so hashes that differ in their low 3 bits only lead
    # together; the values then split such rows apart (as after a full-hash collision)
    hashes = np.array([0x10, 0x21, 0x11, 0x10, 0x20, 0x17], dtype=np.uint64)
    assert _first_of_equal_hash(hashes).tolist() == [0, 1, 0, 0, 1, 0]
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    x[3] = x[0]
    leader = _first_of_equal_hash(hashes)
    _split_collisions(Rows.from_matrix(x), leader)
    assert leader.tolist() == [0, 1, 2, 0, 4, 5]


def test_structured_rows_are_grouped_despite_a_weak_linear_hash() -> None:
    # +-1 features: sign flips cancel in a plain weighted sum of words; every copy must group
    signs = np.array(list(itertools.product([-1.0, 1.0], repeat=8)), dtype=np.float32)
    copies = find_copies(Rows([np.repeat(signs, 3, axis=0)], "row"))
    assert len(copies.first) == 256 and copies.n_copies == 512
    assert np.array_equal(copies.group, np.repeat(np.arange(256), 3))


def test_lists_are_full_k_like_exact_search() -> None:
    x = np.array([[0, 1], [-0.0, 1], [0, 1]], dtype=np.float32)  # -0.0 hashes apart
    graph = build_graph(x, 2, backend="annoy", dedupe=True, query_jobs=1)
    assert (graph.indices >= 0).all() and (graph.distances == 0).all()


def test_relative_threshold_matches_exact_search_with_many_copies() -> None:
    rng = np.random.default_rng(8)
    base = rng.normal(size=(400, 16)).astype(np.float32)
    x = np.repeat(base, 5, axis=0)  # every row five times, then near copies
    x[::7] += rng.normal(scale=0.01, size=x[::7].shape).astype(np.float32)
    exact = neardup.find_duplicates(x, backend="exact")
    deduped = neardup.find_duplicates(x, backend="annoy", n_trees=50, query_jobs=1)
    assert deduped.settings["dedupe"] is True
    assert deduped.threshold.value == pytest.approx(exact.threshold.value, rel=1e-6)
    assert [c.positions for c in deduped.clusters] == [c.positions for c in exact.clusters]


def test_no_copies_gives_singletons() -> None:
    x = np.random.default_rng(1).normal(size=(500, 7)).astype(np.float32)  # odd width too
    copies = find_copies(Rows([x], None))
    assert copies.n_copies == 0
    assert np.array_equal(copies.group, np.arange(500))


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.lists(st.integers(1, 15), min_size=2, max_size=12),
    k=st.integers(1, 6),
    seed=st.integers(0, 2**16),
)
def test_expanded_lists_put_copies_first_and_never_repeat(sizes, k, seed) -> None:
    rng = np.random.default_rng(seed)
    group = rng.permutation(np.repeat(np.arange(len(sizes)), sizes))
    # number groups by first row, as find_copies does
    _, first = np.unique(group, return_index=True)
    rank = np.argsort(np.argsort(first))
    group = rank[group]
    first = np.sort(first)
    copies = neardup.search.CopyGroups(group=group, first=first)
    n_groups = len(first)
    k_g = min(k, n_groups - 1)
    group_neighbors = np.array(
        [rng.permutation(np.delete(np.arange(n_groups), g))[:k_g] for g in range(n_groups)]
    ).reshape(n_groups, k_g)
    prefer = rng.random(len(group)) < 0.3
    out = expand_neighbors(group_neighbors, copies, k, prefer)
    assert out.shape == (len(group), k)
    for r in range(len(group)):
        listed = out[r][out[r] >= 0]
        assert r not in listed
        assert len(set(listed.tolist())) == len(listed)
        mates = np.flatnonzero((group == group[r]) & (np.arange(len(group)) != r))
        n_mates = min(k, len(mates))
        assert set(listed[:n_mates].tolist()) <= set(mates.tolist())
        if len(mates) > k and prefer[mates].any():
            # preferred copies are listed before others
            listed_pref = prefer[listed[:n_mates]]
            assert listed_pref.sum() == min(n_mates, prefer[mates].sum())
        # after the copies: every member of the neighbour groups, group by group, in order,
        # preferred members first inside each group (what exact search would list)
        expected = []
        for h in group_neighbors[group[r]]:
            members = np.flatnonzero(group == h)
            expected += sorted(members.tolist(), key=lambda i: (not prefer[i], i))
        others = listed[n_mates:]
        assert others.tolist() == expected[: len(others)]
        assert len(listed) == min(k, n_mates + len(expected))


def test_dedupe_graph_lists_every_copy_exactly() -> None:
    x = normalize_inplace(_with_copies(), "row")
    exact = build_graph(x, 10, backend="exact")
    deduped = build_graph(x, 10, backend="annoy", dedupe=True, query_jobs=1)
    # every row lists min(k, its copies) rows at distance 0, as exact search does
    zeros = (deduped.distances == 0).sum(axis=1)
    assert np.array_equal(zeros, (exact.distances == 0).sum(axis=1))
    assert zeros.max() == 10 and (zeros == 0).sum() > 2000
    hit = deduped.distances == 0
    rows = np.nonzero(hit)[0]
    assert np.array_equal(x[rows], x[deduped.indices[hit]])


@pytest.mark.parametrize("normalize", ["row", "column", None])
def test_find_duplicates_same_sets_and_leakage_with_and_without_dedupe(normalize) -> None:
    x = _with_copies(seed=3)
    rng = np.random.default_rng(4)
    x[:300] += rng.normal(scale=1e-3, size=(300, x.shape[1])).astype(np.float32)  # near ones
    data = {"train": x[:2400], "test": x[2400:]}
    labels = {"train": rng.integers(0, 3, 2400), "test": rng.integers(0, 3, 600)}
    threshold = neardup.Distance(0.05 if normalize != "column" else 0.002)
    kwargs = dict(labels=labels, threshold=threshold, normalize=normalize, query_jobs=1)
    exact = neardup.find_duplicates(data, backend="exact", **kwargs)
    deduped = neardup.find_duplicates(data, backend="annoy", dedupe=True, **kwargs)
    plain = neardup.find_duplicates(data, backend="annoy", dedupe=False, **kwargs)
    assert deduped.settings["dedupe"] is True and exact.settings["dedupe"] is None
    for result in (deduped, plain):
        assert [c.positions for c in result.clusters] == [c.positions for c in exact.clusters]
        assert [(c.splits, c.labels) for c in result.clusters] == [
            (c.splits, c.labels) for c in exact.clusters
        ]
        assert result.leakage["test"].positions == exact.leakage["test"].positions
        assert result.effective_class_counts == exact.effective_class_counts
    assert exact.leakage["test"].count >= 100


def test_the_callers_arrays_are_never_modified() -> None:
    rng = np.random.default_rng(5)
    train = rng.normal(size=(3000, 16)).astype(np.float32)
    test = (rng.normal(size=(500, 16)) * 100).astype(np.float64)
    ints = rng.integers(0, 255, size=(400, 16))
    before = [a.copy() for a in (train, test, ints)]
    for normalize in ("row", "column", None):
        for backend in ("annoy", "exact"):
            neardup.find_duplicates(
                {"train": train, "test": test, "ints": ints},
                normalize=normalize,
                backend=backend,
                query_jobs=1,
            )
    for a, b in zip((train, test, ints), before):
        assert np.array_equal(a, b)


def test_streamed_rows_equal_the_normalized_matrix() -> None:
    rng = np.random.default_rng(6)
    a = rng.normal(size=(70_000, 5)).astype(np.float32)  # more than one block
    b = rng.integers(-3, 3, size=(10, 5))
    for normalize in ("row", "column", None):
        stacked = np.concatenate([a, b.astype(np.float32)])
        expected = normalize_inplace(stacked, normalize)
        np.testing.assert_allclose(Rows([a, b], normalize).matrix(), expected, rtol=1e-6)


def test_reused_blocks_equal_new_blocks() -> None:
    rng = np.random.default_rng(7)
    a = rng.normal(size=(5_000, 6)).astype(np.float32)
    b = rng.normal(size=(1_234, 6))  # float64: cast into the buffer
    for normalize in ("row", "column", None):
        rows = Rows([a, b], normalize)
        new = [(s, blk.copy()) for s, blk in rows.blocks(1000)]
        reused = [(s, blk.copy()) for s, blk in rows.blocks(1000, reuse=True)]
        assert [s for s, _ in new] == [s for s, _ in reused]
        for (_, x), (_, y) in zip(new, reused):
            assert np.array_equal(x, y)


def test_rows_sharing_their_probe_columns_are_grouped_only_when_whole_rows_are_equal() -> None:
    # the middle columns that find_copies hashes first are the same in every row here; rows
    # differ elsewhere (all rows share the probe: the whole rows are hashed, streamed) or only
    # a few rows do (those are hashed in full alone)
    from neardup.search import _copies

    rng = np.random.default_rng(11)
    x = rng.normal(size=(2000, 40)).astype(np.float32)
    probes = _copies._probe_columns(40)
    assert probes is not None and probes.stop - probes.start == _copies._PROBE_COLUMNS
    x[10:20] = x[5]  # true copies
    for shared in (slice(None), slice(0, 60)):  # every row / 60 rows share the probe
        y = x.copy()
        y[shared, probes] = 1.5
        y[30:40] = y[7]  # copies among the rows sharing the probe (or not)
        copies = find_copies(Rows([y], None))
        _, first, group = np.unique(y, axis=0, return_index=True, return_inverse=True)
        assert np.array_equal(copies.first, np.sort(first))
        same = copies.group[:, None] == copies.group[None, :]
        assert np.array_equal(same, group.reshape(-1)[:, None] == group.reshape(-1)[None, :])
        assert copies.n_copies == 20


def test_narrow_rows_are_hashed_whole() -> None:
    from neardup.search import _copies

    assert _copies._probe_columns(2 * _copies._PROBE_COLUMNS - 1) is None
    x = np.random.default_rng(2).normal(size=(300, 9)).astype(np.float32)
    x[100:110] = x[3]
    copies = find_copies(Rows([x], None))
    assert copies.n_copies == 10 and np.all(copies.group[100:110] == copies.group[3])
