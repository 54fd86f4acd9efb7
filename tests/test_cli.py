"""The command line, run as a real subprocess."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest


def _neardup(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "neardup", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


@pytest.fixture(scope="module")
def files(tmp_path_factory, digits):
    images, labels = digits
    x = images.reshape(len(images), -1)
    rng = np.random.default_rng(0)
    test = np.concatenate([x[1500:], x[:20] + rng.normal(scale=0.01, size=(20, 64))])
    test_labels = np.concatenate([labels[1500:], labels[:20]])
    d = tmp_path_factory.mktemp("cli")
    np.savez(d / "train.npz", x=x[:1500], y=labels[:1500])
    np.save(d / "test.npy", test.astype(np.float32))
    np.save(d / "test_labels.npy", test_labels)
    return d


def test_scan_prints_summary_and_writes_json(files):
    out = _neardup(
        "scan",
        "--split",
        "train=train.npz",
        "--split",
        "test=test.npy",
        "--labels",
        "test=test_labels.npy",
        "--json",
        "r.json",
        cwd=files,
    )
    assert out.returncode == 0, out.stderr
    assert "leakage test -> train: 20 of 317 samples" in out.stdout
    assert "closest leaked samples" in out.stdout
    data = json.loads((files / "r.json").read_text())
    assert data["leakage"]["test"]["count"] == 20
    assert sorted(data["leakage"]["test"]["nearest_ids"]) == list(range(20))
    shown = _neardup("show", "r.json", cwd=files)
    assert shown.returncode == 0 and "20 of 317" in shown.stdout


def test_fail_above_is_a_ci_gate(files):
    args = ["scan", "--split", "train=train.npz", "--split", "test=test.npy", "--quiet"]
    failing = _neardup(*args, "--fail-above", "0.05", cwd=files)
    assert failing.returncode == 1
    assert "exceeds --fail-above 5.00 %" in failing.stderr
    passing = _neardup(*args, "--fail-above", "0.10", cwd=files)
    assert passing.returncode == 0


def test_json_to_stdout_and_threshold_option(files):
    out = _neardup(
        "scan",
        "--split",
        "train=train.npz",
        "--split",
        "test=test.npy",
        "--threshold",
        "cosine:0.98",
        "--backend",
        "annoy",
        "--json",
        "-",
        "--quiet",
        cwd=files,
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["threshold"]["strategy"] == "Cosine"
    assert data["settings"]["backend"] == "annoy"
    assert data["leakage"]["test"]["count"] >= 20


def test_progress_is_shown_on_stderr(files):
    out = _neardup("scan", "--split", "train=train.npz", "--backend", "annoy", cwd=files)
    assert out.returncode == 0
    assert "querying annoy index: done in" in out.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--split", "train=missing.npy"], "does not exist"),
        (["--split", "train"], "expected NAME=PATH"),
        (["--split", "train=train.npz", "--threshold", "cosine:high"], "is not a number"),
        (["--split", "train=train.npz", "--threshold", "magic"], "unknown threshold"),
        (["--split", "a=train.npz", "--split", "b=test.npy"], "unknown reference split 'train'"),
    ],
)
def test_bad_input_exits_2_with_a_message(files, args, message):
    out = _neardup("scan", *args, cwd=files)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr
