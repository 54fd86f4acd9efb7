"""ActivationCollector: batches in, one float32 copy held, analyze per layer."""

from __future__ import annotations

import tracemalloc

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


# ---------------------------------------------------------------- memory: linear, one copy
# tracemalloc sees numpy's data allocations, so these measure the bytes the collector
# allocates, not time. Slack: a few hundred bytes of Python objects per batch (two array
# headers and list slots) plus 64 KiB for everything else.
_PER_BATCH_SLACK = 512
_SLACK = 64 * 1024


def _collect_traced(n, d=64, batch=250, **options):
    """Add ``n`` rows in batches (one reused caller buffer); traced bytes held and merge peak."""
    source = np.random.default_rng(0).normal(size=(batch, d)).astype(np.float32)
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        collector = ActivationCollector(**options)
        for _ in range(n // batch):
            collector.add("train", "l", source)
            source += 1.0  # in place: the caller reuses its buffer
        held = tracemalloc.get_traced_memory()[0] - start
        tracemalloc.reset_peak()
        values, ids, _ = collector.get("train", "l")
        after, peak = (m - start for m in tracemalloc.get_traced_memory())
    finally:
        tracemalloc.stop()
    assert values.shape == (n, d) and len(ids) == n
    return collector, held, peak, after


def test_collection_holds_one_float32_copy_and_merges_with_one_more():
    n, d, batches = 40_000, 64, 160
    data, id_bytes = n * d * 4, n * 8  # float32 rows; int64 ids
    collector, held, peak, after = _collect_traced(n, d)
    # adding: exactly one float32 copy of the rows plus the ids, nothing per sample
    assert data + id_bytes <= held <= data + id_bytes + batches * _PER_BATCH_SLACK + _SLACK
    # merging into one matrix: one more copy of the rows at most (the output; chunks freed
    # as copied, ids merged after them), and one copy again afterwards
    assert peak - held <= data + _SLACK
    assert peak <= 2 * (data + id_bytes) + batches * _PER_BATCH_SLACK + _SLACK
    assert after <= held + _SLACK
    assert collector.nbytes == data


def test_memory_doubles_when_the_samples_double():
    _, held_1, peak_1, _ = _collect_traced(20_000)
    _, held_2, peak_2, _ = _collect_traced(40_000)
    assert held_2 / held_1 == pytest.approx(2.0, rel=0.02)
    assert (peak_2 - held_2) / (peak_1 - held_1) == pytest.approx(2.0, rel=0.02)


def test_a_later_get_does_not_copy_again():
    collector, *_ = _collect_traced(5_000)
    first = collector.get("train", "l")[0]
    assert collector.get("train", "l")[0] is first
    assert collector.arrays("l")["train"] is first


def test_a_rejected_first_batch_leaves_nothing_behind():
    collector = ActivationCollector()
    with pytest.raises(NeardupInputError, match="ids has shape"):
        collector.add("train", "l", np.ones((4, 3)), ids=[1, 2])
    assert len(collector) == 0 and collector.splits == []
    collector.add("train", "l", np.ones((4, 3)))  # without ids now: a fresh start
    np.testing.assert_array_equal(collector.get("train", "l")[1], np.arange(4))


def test_text_rows_keep_their_texts_through_batches_and_spills(tmp_path):
    """Batches of ``TextView`` rows keep their texts, so the analysis can check the words of
    each close pair (the Lightning and Keras input views of string batches); a batch without
    texts gives plain rows; a spilled split keeps its texts (and markup and grouped words) too."""
    from neardup.views import TextRows, TextView, normalize_text

    view = TextView(dim=64)
    texts = ["The cat sat on the mat.", "A <b>dog</b> ran far away.", "Rain fell (see x.org)."]
    for budget in (None, 1):
        spill = None if budget is None else tmp_path
        collector = ActivationCollector(memory_budget=budget, spill_dir=spill)
        collector.add("train", "input", view(texts[:2]))
        collector.add("train", "input", view(texts[2:]))
        values, _, _ = collector.get("train", "input")
        assert isinstance(values, TextRows)
        assert values.texts == tuple(normalize_text(t) for t in texts)
        assert values.ngram == 4  # the view's gram length: the n-gram join at scale reads it
        assert values.markup == ("", "a b dog b ran far away", "")  # the markup route's words
        assert values.grouped == ("", "", "rain fell see x-org")  # the word check's tokens
        np.testing.assert_array_equal(values, np.concatenate([view(texts[:2]), view(texts[2:])]))
        assert (budget is not None) == bool(collector.spill_files)
        collector.add("other", "input", view(texts[:1]))
        collector.add("other", "input", TextView(ngram=3, dim=64)(texts[1:]))
        assert collector.get("other", "input")[0].ngram is None  # two gram lengths: unknown
        collector.add("train", "input", np.asarray(view(texts[:1])))  # no texts: plain rows
        values, _, _ = collector.get("train", "input")
        assert not isinstance(values, TextRows) and len(values) == 4
        collector.clear()
