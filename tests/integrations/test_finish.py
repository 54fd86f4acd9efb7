"""The integrations' one post-analysis path (``finish``), on a real analysis of digits."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

from neardup import LeakageError, find_duplicates
from neardup.integrations._finish import LOGGER_NAME, finish


@pytest.fixture(scope="module")
def results(digits):
    """One view's result: 30 noisy copies of train digits planted in a test split of 330."""
    images, labels = digits
    x = images.reshape(len(images), -1)
    rng = np.random.default_rng(3)
    src = rng.choice(1400, 30, replace=False)
    test = np.concatenate([x[src] + rng.normal(scale=0.02, size=(30, 64)), x[1400:1700]])
    data = {"train": x[:1400], "test": test.astype(np.float32)}
    return find_duplicates(data, labels={"train": labels[:1400], "test": None})


def test_metrics_reports_and_summaries(results, tmp_path):
    outcome = finish(results, report_dir=tmp_path, stem="run", fail_above=None)
    leak = results.leakage["test"]
    assert leak.count >= 30
    assert outcome.metrics["neardup/test/leak_count"] == leak.count
    assert outcome.metrics["neardup/test/leak_fraction"] == pytest.approx(leak.count / 330)
    assert [p.name for p in outcome.report_paths] == ["run.json", "run.html"]
    saved = json.loads(outcome.report_paths[0].read_text())
    assert saved["leakage"]["test"]["count"] == leak.count
    assert outcome.summary == results.summary()
    assert outcome.failure is None
    outcome.raise_for_failure()  # nothing to raise


def test_fail_gate_is_reported_then_raised_and_can_be_skipped(results, tmp_path):
    fraction = results.leakage["test"].fraction
    outcome = finish(results, report_dir=None, stem="run", fail_above=fraction / 2)
    assert outcome.report_paths == []
    assert "split 'test'" in outcome.failure and "fail_above" in outcome.failure
    with pytest.raises(LeakageError, match="split 'test'"):
        outcome.raise_for_failure()
    skipped = finish(results, report_dir=None, stem="run", fail_above=fraction / 2, gate=False)
    assert skipped.failure is None
    assert finish(results, report_dir=None, stem="run", fail_above=fraction).failure is None


def test_verbose_goes_to_stdout_through_the_neardup_logger(results, tmp_path, capsys):
    outcome = finish(results, report_dir=tmp_path, stem="run", verbose=True)
    out = capsys.readouterr().out
    assert "leakage test -> train" in out and str(outcome.report_paths[1]) in out
    finish(results, report_dir=None, stem="run", verbose=False)
    assert capsys.readouterr().out == ""
    logger = logging.getLogger(LOGGER_NAME)
    level = logger.level
    logger.setLevel(logging.WARNING)  # a user silencing neardup
    try:
        finish(results, report_dir=None, stem="run", verbose=True)
    finally:
        logger.setLevel(level)
    assert capsys.readouterr().out == ""
