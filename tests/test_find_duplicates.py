"""End-to-end behaviour of find_duplicates: thresholds, sets, leakage, class counts."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import neardup
from neardup import (
    ActivationCollector,
    Cosine,
    Distance,
    NeardupInputError,
    Percentile,
    Slope,
    find_duplicates,
    find_duplicates_by_layer,
)


def test_default_finds_nothing_in_gaussian_noise_where_slope_reports_hundreds():
    x = np.random.default_rng(0).standard_normal((20000, 40)).astype(np.float32)
    assert len(find_duplicates(x).clusters) == 0
    # DNIKit's default (its facade settings) reports many sets on the same pure noise
    slope = neardup.Duplicates.introspect({"noise": x})
    assert len(slope.results["noise"]) > 100


def test_default_finds_planted_near_duplicates(digits):
    images, _ = digits
    x = images.reshape(len(images), -1)
    rng = np.random.default_rng(1)
    src = rng.choice(len(x), 40, replace=False)
    copies = np.clip(x[src] + rng.normal(scale=0.03, size=(40, 64)), 0, 1)
    result = find_duplicates({"train": x, "test": copies.astype(np.float32)})
    leak = result.leakage["test"]
    assert leak.count == 40
    assert sorted(leak.nearest_ids) == sorted(src.tolist())
    assert np.all(leak.distances <= result.threshold.value)


def test_cosine_threshold_on_real_digits(digits):
    images, labels = digits
    x = images.reshape(len(images), -1)
    result = find_duplicates(x, threshold=Cosine(0.98), labels=labels)
    assert result.threshold.value == pytest.approx(0.2)
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    sims = xn @ xn.T
    expected_pairs = int((np.triu(sims, 1) >= 0.98).sum())
    assert 150 < expected_pairs < 300  # ~216 such pairs in digits
    in_sets = {tuple(sorted(c.ids)) for c in result.clusters if c.size == 2}
    assert len(in_sets) > 0
    members = sum(c.size for c in result.clusters)
    raw = sum(result.class_counts["data"].values())
    effective = sum(result.effective_class_counts["data"].values())
    assert raw == 1797 and effective == raw - members + len(result.clusters)


def test_cosine_needs_row_normalization():
    x = np.random.default_rng(0).normal(size=(50, 4))
    with pytest.raises(neardup.NeardupInputError, match="normalize='row'"):
        find_duplicates(x, threshold=Cosine(0.9), normalize="column")


def test_distance_threshold_and_sets_ordered_tightest_first():
    x = np.random.default_rng(3).normal(size=(200, 8)).astype(np.float32) * 10
    x[100] = x[0] + 0.01
    x[101] = x[1]
    x[101, 0] += 0.5
    x[102] = x[2]  # exact
    result = find_duplicates(x, threshold=Distance(1.0), normalize=None)
    assert [sorted(c.ids) for c in result.clusters] == [[2, 102], [0, 100], [1, 101]]
    assert [c.mean for c in result.clusters] == sorted(c.mean for c in result.clusters)


def test_percentile_and_slope_always_report_something():
    x = np.random.default_rng(4).normal(size=(3000, 10))
    assert len(find_duplicates(x, threshold=Percentile(99)).clusters) > 0
    assert len(find_duplicates(x, threshold=Slope()).clusters) > 0


def test_custom_callable_threshold():
    x = np.random.default_rng(5).normal(size=(500, 6))
    result = find_duplicates(x, threshold=lambda d: float(d[0]))
    assert result.threshold.strategy == "Custom"
    assert len(result.clusters) == 1


def test_large_sets_get_order_and_projection():
    rng = np.random.default_rng(6)
    x = rng.normal(size=(300, 12)).astype(np.float32)
    x[200:210] = x[5] + rng.normal(scale=1e-3, size=(10, 12))
    result = find_duplicates(x)
    big = result.clusters[0]
    assert big.size == 11 and big.projection.shape == (11, 2)
    assert set(big.ids) == {5, *range(200, 210)}


def test_leakage_is_pair_level_not_through_chains():
    # a chain train:0 - test:0 - test:1 - test:2: only test:0 is close to train
    x_train = np.array([[0.0, 0.0]] + [[50.0 + i, 80.0 * i] for i in range(20)], dtype=np.float32)
    x_test = np.array([[0.9, 0], [1.8, 0], [2.7, 0]] + [[-60.0 * i, 30.0] for i in range(1, 20)])
    result = find_duplicates(
        {"train": x_train, "test": x_test}, threshold=Distance(1.0), normalize=None, k=3
    )
    chain = [c for c in result.clusters if c.size == 4]
    assert len(chain) == 1 and chain[0].spans_splits
    leak = result.leakage["test"]
    assert leak.ids == [0] and leak.nearest_ids == [0]
    assert leak.distances[0] == pytest.approx(0.9)


def test_leak_beyond_k_copies_inside_the_eval_split_is_found():
    rng = np.random.default_rng(8)
    train = rng.normal(size=(100, 8)).astype(np.float32)
    test = rng.normal(size=(50, 8)).astype(np.float32)
    test[:12] = train[7] + rng.normal(scale=1e-4, size=(12, 8))  # 12 copies, k=3
    result = find_duplicates({"train": train, "test": test}, k=3)
    leak = result.leakage["test"]
    assert sorted(leak.ids) == list(range(12))
    assert set(leak.nearest_ids) == {7}


def test_labels_give_per_class_leakage_and_conflicts():
    rng = np.random.default_rng(9)
    train = rng.normal(size=(200, 16)).astype(np.float32)
    test = rng.normal(size=(100, 16)).astype(np.float32)
    test[:6] = train[:6]
    train_labels = np.array(["cat", "dog"] * 100)
    test_labels = np.array(["cat"] * 100)
    result = find_duplicates(
        {"train": train, "test": test},
        labels={"train": train_labels, "test": test_labels},
        ids={"train": [f"tr{i}" for i in range(200)], "test": [f"te{i}" for i in range(100)]},
    )
    leak = result.leakage["test"]
    assert sorted(leak.ids) == [f"te{i}" for i in range(6)]
    assert leak.by_class == {"cat": {"count": 6, "total": 100, "fraction": 0.06}}
    assert sorted(c["id"] for c in leak.label_conflicts) == ["te1", "te3", "te5"]
    assert all(c["nearest_label"] == "dog" for c in leak.label_conflicts)
    # each set holds one train and one test sample: it counts in train, where it came from
    assert result.effective_class_counts["test"] == {"cat": 94}
    assert sum(result.effective_class_counts["train"].values()) == 200


def test_effective_counts_collapse_sets_within_a_split():
    rng = np.random.default_rng(10)
    x = rng.normal(size=(100, 8)).astype(np.float32)
    x[10:15] = x[0]  # six copies of sample 0, all label 1
    labels = np.zeros(100, dtype=int)
    labels[[0, 10, 11, 12, 13, 14]] = 1
    result = find_duplicates(x, labels=labels)
    assert result.class_counts["data"] == {0: 94, 1: 6}
    assert result.effective_class_counts["data"] == {0: 94, 1: 1}


def test_cross_split_sets_count_in_the_reference_then_the_first_split():
    rng = np.random.default_rng(13)
    train = rng.normal(size=(60, 8)).astype(np.float32)
    val = rng.normal(size=(40, 8)).astype(np.float32)
    test = rng.normal(size=(40, 8)).astype(np.float32)
    test[:4] = train[:4]  # 4 test samples copied from train
    test[4:7] = val[:3]  # 3 copied from val (no train member)
    val[5:7] = val[4]  # a set inside val: 3 members count once
    data = {"val": val, "test": test, "train": train}
    result = find_duplicates(data)
    eff = {s: sum(c.values()) for s, c in result.effective_class_counts.items()}
    assert eff == {"train": 60, "val": 40 - 2, "test": 40 - 4 - 3}
    without = find_duplicates(data, reference=None)  # no reference: the first split keeps it
    eff = {s: sum(c.values()) for s, c in without.effective_class_counts.items()}
    assert eff == {"val": 38, "test": 40 - 3, "train": 60 - 4}


def test_json_round_trip_keeps_types(tmp_path):
    rng = np.random.default_rng(11)
    train = rng.normal(size=(80, 8))
    test = np.concatenate([train[:3], rng.normal(size=(10, 8))])
    result = find_duplicates(
        {"train": train, "test": test},
        labels={"train": rng.integers(0, 3, 80), "test": ["a"] * 13},
    )
    path = tmp_path / "r.json"
    result.to_json(path)
    loaded = neardup.DuplicatesResult.from_json(path)
    assert loaded.summary() == result.summary()
    assert loaded.leakage["test"].ids == result.leakage["test"].ids
    assert loaded.class_counts == result.class_counts
    assert loaded.effective_class_counts["test"] == {"a": 10}  # 3 copies of train samples


def test_by_layer_runs_every_layer():
    rng = np.random.default_rng(12)
    data = {
        s: {"a": rng.normal(size=(n, 4)), "b": rng.normal(size=(n, 6))}
        for s, n in (("train", 50), ("test", 20))
    }
    results = neardup.find_duplicates_by_layer(data)
    assert set(results) == {"a", "b"}
    assert results["b"].settings["dim"] == 6 and results["b"].layer == "b"


@settings(max_examples=25, deadline=None)
@given(
    n_train=st.integers(5, 60),
    n_test=st.integers(1, 30),
    copies=st.integers(0, 5),
    seed=st.integers(0, 10_000),
)
def test_properties_against_brute_force(n_train, n_test, copies, seed):
    """Leak flags equal brute force; sets are disjoint; each leaked pair shares a set."""
    rng = np.random.default_rng(seed)
    train = rng.normal(size=(n_train, 5))
    test = rng.normal(size=(n_test, 5))
    copies = min(copies, n_test, n_train)
    test[:copies] = train[:copies] + rng.normal(scale=1e-3, size=(copies, 5))
    t = Distance(0.5)
    result = find_duplicates(
        {"train": train, "test": test}, threshold=t, normalize=None, backend="exact"
    )
    d = np.linalg.norm(test[:, None] - train[None], axis=2)
    expected = sorted(np.flatnonzero((d <= 0.5).any(axis=1)).tolist())
    assert sorted(result.leakage["test"].ids) == expected
    members = [(s, i) for c in result.clusters for s, i in zip(c.splits, c.ids)]
    assert len(members) == len(set(members))  # sets are disjoint
    set_of = {m: n for n, c in enumerate(result.clusters) for m in zip(c.splits, c.ids)}
    for row, ref in zip(result.leakage["test"].ids, result.leakage["test"].nearest_ids):
        assert set_of[("test", row)] == set_of[("train", ref)]


def test_by_layer_names_the_bad_layer_before_analyzing_any():
    rng = np.random.default_rng(0)
    good = {"train": rng.normal(size=(60, 4)), "test": rng.normal(size=(20, 4))}
    bad_test = rng.normal(size=(20, 4))
    bad_test[3] = np.nan
    data = {
        "train": {"fc1": good["train"], "fc2": rng.normal(size=(60, 4))},
        "test": {"fc1": good["test"], "fc2": bad_test},
    }
    with pytest.raises(NeardupInputError, match=r"layer 'fc2': split 'test' has 1 row\(s\)"):
        find_duplicates_by_layer(data)
    with pytest.raises(NeardupInputError, match="labels must be a mapping split -> sequence"):
        find_duplicates_by_layer(data, labels=np.zeros(60))
    with pytest.raises(NeardupInputError, match="labels names split 'val'"):
        find_duplicates_by_layer(data, labels={"val": np.zeros(20)})
    with pytest.raises(NeardupInputError, match="dedupe=.* is not valid: dedupe .*True or False"):
        find_duplicates(good, dedupe="no")


def test_collector_analyze_of_no_layers_is_empty():
    collector = ActivationCollector()
    collector.add("train", "fc", np.random.default_rng(0).normal(size=(10, 3)))
    assert collector.analyze(layers=[]) == {}
