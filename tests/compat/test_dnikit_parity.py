"""The seed-compatible facade against DNIKit 2.0.0 itself, and DNIKit's own test cases."""

from __future__ import annotations

import numpy as np
import pytest
from dnikit.base import Batch
from dnikit.introspectors import Duplicates as DnikitDuplicates

import neardup
from neardup._clusters import ClusterAssignment
from neardup._threshold import Percentile, Slope


def _co_member_pairs(clusters) -> set[tuple[int, int]]:
    pairs = set()
    for c in clusters:
        idx = sorted(int(i) for i in c.indices)
        pairs |= {(a, b) for n, a in enumerate(idx) for b in idx[n + 1 :]}
    return pairs


def _planted(n=3000, d=20, copies=300, noise=0.01, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)).astype(np.float32)
    targets = rng.choice(n, copies, replace=False)
    x[targets] = x[rng.integers(0, n, copies)] + rng.normal(scale=noise, size=(copies, d))
    return x


def _producer(arrays):
    def produce(batch_size):
        n = len(next(iter(arrays.values())))
        for i in range(0, n, batch_size):
            yield Batch({k: v[i : i + batch_size] for k, v in arrays.items()})

    return produce


@pytest.mark.parametrize("threshold", [None, Percentile(98.5)])
def test_clusters_agree_with_dnikit(threshold):
    x = _planted()
    producer = _producer({"layer": x})
    theirs = DnikitDuplicates.introspect(producer, batch_size=128, threshold=threshold)
    ours = neardup.Duplicates.introspect(producer, batch_size=128, threshold=threshold)
    a, b = _co_member_pairs(theirs.results["layer"]), _co_member_pairs(ours.results["layer"])
    f1 = 2 * len(a & b) / (len(a) + len(b))
    assert len(a) > 150
    assert f1 >= 0.95, f"pairwise F1 {f1:.3f}"
    assert ours.count == theirs.count == 3000
    for candidate in ours.results["layer"]:
        assert candidate.size == len(candidate.indices) >= 2
        assert (candidate.projection is None) == (candidate.size <= 5)


@pytest.mark.parametrize("sensitivity", [3, 5, 20])
def test_slope_matches_dnikit_on_real_distance_curves(sensitivity):
    rng = np.random.default_rng(sensitivity)
    for n in (37, 1000, 54321):
        d = np.sort(np.concatenate([rng.exponential(0.05, n // 10), rng.normal(1, 0.2, n)]))
        d = np.trim_zeros(d[d > 0])
        ours = Slope(sensitivity)(d)
        theirs = DnikitDuplicates.ThresholdStrategy.Slope(sensitivity)(d)
        assert ours == theirs


@pytest.mark.parametrize("p", [50, 90, 98, 98.5, 99.9])
def test_percentile_matches_dnikit(p):
    d = np.sort(np.random.default_rng(0).gamma(2.0, size=20000))
    assert Percentile(p)(d) == DnikitDuplicates.ThresholdStrategy.Percentile(p)(d)


def _merge(groups: list[list[int]]) -> list[set[int]]:
    """Transitive closure of DNIKit-style candidate groups through our component step."""
    rows = np.array([g[0] for g in groups for _ in g[1:]])
    cols = np.array([m for g in groups for m in g[1:]])
    assignment = ClusterAssignment(max(max(g) for g in groups) + 1, rows, cols)
    return sorted((set(m.tolist()) for m in assignment.members), key=min)


def test_dnikit_merge_case_one():
    groups = [[10, 11, 12, 13], [1, 2, 3, 4], [6, 8], [1, 2, 3, 7]]
    assert _merge(groups) == [{1, 2, 3, 4, 7}, {6, 8}, {10, 11, 12, 13}]


def test_dnikit_merge_case_two():
    groups = [[1, 2, 3, 4], [7, 2, 8, 9], [10, 11, 12], [11, 13], [1, 13]]
    assert _merge(groups) == [{1, 2, 3, 4, 7, 8, 9, 10, 11, 12, 13}]


def test_more_planted_duplicates_give_more_clusters():
    """DNIKit's ordering test: 5,000 samples, 10/20/50 % duplicates in three responses."""
    rng = np.random.default_rng(7)
    n, d = 5000, 16
    responses = {}
    for name, fraction in (("ten", 0.1), ("twenty", 0.2), ("fifty", 0.5)):
        x = rng.normal(size=(n, d)).astype(np.float32)
        m = int(fraction * n)
        x[n - m :] = x[:m]  # exact copies: always within any threshold
        responses[name] = x
    result = neardup.Duplicates.introspect(responses, threshold=Percentile(98))
    counts = [len(result.results[name]) for name in ("ten", "twenty", "fifty")]
    assert counts[0] < counts[1] < counts[2], counts


def test_facade_accepts_iterables_of_mappings_and_sorting_by_mean():
    x = _planted(n=600, copies=40)
    batches = [{"r": x[i : i + 100]} for i in range(0, 600, 100)]
    result = neardup.Duplicates.introspect(batches)
    clusters = sorted(result.results["r"], key=lambda c: c.mean)  # the seed docs' idiom
    assert clusters and all(c.mean >= 0 and c.std >= 0 for c in clusters)
    with pytest.raises(neardup.NeardupInputError, match="Slope sensitivity must be > 2"):
        neardup.Duplicates.ThresholdStrategy.Slope(2)
