"""ActivationCollector: batches in, one float32 copy held, analyze per layer."""

from __future__ import annotations

import numpy as np
import pytest

import neardup
from neardup import ActivationCollector, NeardupInputError


def _batches(x, size):
    for start in range(0, len(x), size):
        yield start, x[start : start + size]


def test_batches_equal_one_shot_analysis():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(300, 3, 4)).astype(np.float64)
    test = np.concatenate([train[:7] + 1e-4, rng.normal(size=(50, 3, 4))])
    collector = ActivationCollector()
    for split, x in (("train", train), ("test", test)):
        for start, batch in _batches(x, 32):
            ids = np.arange(start, start + len(batch)) + 1000
            collector.add(split, "feat", batch, ids=ids, labels=np.zeros(len(batch), int))
            collector.add(split, "other", batch[:, 0])
    results = collector.analyze()
    assert set(results) == {"feat", "other"}
    direct = neardup.find_duplicates(
        {"train": train, "test": test},
        ids={"train": np.arange(300) + 1000, "test": np.arange(57) + 1000},
    )
    assert results["feat"].leakage["test"].ids == direct.leakage["test"].ids
    assert sorted(results["feat"].leakage["test"].ids) == list(range(1000, 1007))
    assert results["other"].leakage["test"].ids[0] in range(7)  # default ids: positions


def test_one_float32_copy_independent_of_the_callers_buffer():
    collector = ActivationCollector()
    buffer = np.ones((10, 6), dtype=np.float64)
    for _ in range(5):
        collector.add("train", "l", buffer)
        buffer[:] = 7.0  # the caller reuses its buffer
    values, ids, labels = collector.get("train", "l")
    assert values.dtype == np.float32 and values.shape == (50, 6)
    assert (values[:10] == 1).all() and (values[10:] == 7).all()
    assert collector.nbytes == 50 * 6 * 4  # consolidated: one copy, no leftover chunks
    np.testing.assert_array_equal(ids, np.arange(50))
    assert labels is None


def test_errors_name_the_problem():
    collector = ActivationCollector()
    collector.add("train", "l", np.ones((4, 3)))
    with pytest.raises(NeardupInputError, match="batch has 5 features.*earlier batches had 3"):
        collector.add("train", "l", np.ones((4, 5)))
    with pytest.raises(NeardupInputError, match="some batches came with ids and others without"):
        collector.add("train", "l", np.ones((4, 3)), ids=[1, 2, 3, 4])
    with pytest.raises(NeardupInputError, match="ids has shape"):
        ActivationCollector().add("train", "l", np.ones((4, 3)), ids=[1, 2])
    with pytest.raises(NeardupInputError, match=r"NaN or Inf.*rows 1"):
        collector.add("train", "l", np.array([[1, 2, 3], [np.nan, 0, 0]]))
    with pytest.raises(NeardupInputError, match="unknown layer 'layr'.*closest: 'l'"):
        collector.get("train", "layr")
    with pytest.raises(NeardupInputError, match="collector is empty"):
        ActivationCollector().analyze()


def test_layer_missing_in_a_split_is_reported():
    collector = ActivationCollector()
    collector.add("train", "a", np.random.default_rng(0).normal(size=(20, 3)))
    collector.add("test", "a", np.random.default_rng(1).normal(size=(5, 3)))
    collector.add("train", "b", np.random.default_rng(2).normal(size=(20, 3)))
    with pytest.raises(NeardupInputError, match=r"layer 'b' has no activations for split\(s\)"):
        collector.analyze()
    assert set(collector.analyze(layers=["a"])) == {"a"}
