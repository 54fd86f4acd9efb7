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


def test_progress_bars_on_stderr_start_with_loading(files):
    np.save(files / "train_only_x.npy", np.load(files / "train.npz")["x"])
    out = _neardup(
        "scan", "--split", "train=train_only_x.npy", "--split", "test=test.npy",
        "--backend", "annoy", cwd=files,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    err = out.stderr
    loading = err.index("neardup: loading split 'train' (train_only_x.npy)")
    assert loading < err.index("neardup: loading split 'test' (test.npy)")
    assert "1500/1500" in err  # rows read, before any computing
    querying = err.index("neardup: querying annoy index")
    assert loading < querying and "100%" in err[querying:]
    quiet = _neardup("scan", "--split", "train=train.npz", "--quiet", cwd=files)
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_version_and_exit_codes_in_every_help(files):
    from neardup import __version__

    out = _neardup("--version", cwd=files)
    assert out.returncode == 0 and out.stdout.strip() == f"neardup {__version__}"
    gated = "Exit codes: 0 success, 1 leakage above --fail-above, 2 bad input."
    for command, expected in [
        ([], gated),
        (["scan"], gated),
        (["show"], gated),
        (["report"], "Exit codes: 0 success, 2 bad input."),
        (["index"], gated),
        (["index", "build"], "Exit codes: 0 success, 2 bad input."),
        (["index", "score"], gated),
    ]:
        shown = _neardup(*command, "--help", cwd=files)
        assert shown.returncode == 0
        assert expected in " ".join(shown.stdout.split()), command


def test_split_with_a_space_explains_name_equals_path(files):
    out = _neardup("scan", "--split", "train", "train.npz", cwd=files)
    assert out.returncode == 2
    assert "write --split train=train.npz" in out.stderr
    assert "NAME=PATH" in out.stderr and "Traceback" not in out.stderr


def test_index_build_refuses_a_full_directory_before_computing(files, index_dir):
    big = np.random.default_rng(0).normal(size=(3000, 64)).astype(np.float32)
    np.save(files / "big.npy", big)
    out = _neardup("index", "build", "big.npy", index_dir, cwd=files)
    assert out.returncode == 2
    assert "pass --overwrite" in out.stderr and "overwrite=True" not in out.stderr
    assert "loading" not in out.stderr and "annoy" not in out.stderr  # nothing computed
    again = _neardup("index", "build", "big.npy", "ref_big", "--overwrite", "--quiet", cwd=files)
    assert again.returncode == 0, again.stderr


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


@pytest.fixture(scope="module")
def index_dir(files):
    out = _neardup("index", "build", "train.npz", "ref", "--quiet", cwd=files)
    assert out.returncode == 0, out.stderr
    assert "reference index ref: 1,500 train samples x 64 features" in out.stdout
    assert "threshold Relative(ratio=0.2) -> distance" in out.stdout
    return files / "ref"


def test_index_build_then_score_reports_leakage_and_writes_json(files, index_dir):
    out = _neardup(
        "index", "score", index_dir, "test.npy", "--labels", "test_labels.npy",
        "--split", "test", "--json", "leak.json", cwd=files,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "leakage test -> train: 20 of 317 samples (6.31 %)" in out.stdout
    assert "closest leaked samples" in out.stdout
    data = json.loads((files / "leak.json").read_text())
    leak = data["leakage"]["test"]
    assert leak["count"] == 20 and sorted(leak["nearest_ids"]) == list(range(20))
    assert leak["label_conflicts"] == []  # the index kept train.npz's own labels
    assert data["threshold"]["strategy"] == "Relative" and data["settings"]["k"] == 10
    scanned = _neardup(
        "scan", "--split", "train=train.npz", "--split", "test=test.npy", "--json", "-",
        "--quiet", cwd=files,
    )  # fmt: skip
    assert sorted(json.loads(scanned.stdout)["leakage"]["test"]["ids"]) == sorted(leak["ids"])


def test_index_score_gate_and_json_to_stdout(files, index_dir):
    failing = _neardup("index", "score", index_dir, "test.npy", "--fail-above", "0.05", cwd=files)
    assert failing.returncode == 1
    assert "exceeds --fail-above 5.00 %" in failing.stderr
    passing = _neardup(
        "index", "score", index_dir, "test.npy", "--fail-above", "0.10", "--json", "-", cwd=files
    )
    assert passing.returncode == 0
    assert json.loads(passing.stdout)["leakage"]["new"]["count"] == 20


def test_index_options_ids_and_threshold(files):
    np.save(files / "train_x.npy", np.load(files / "train.npz")["x"])
    (files / "train_ids.txt").write_text("".join(f"train/{i}.png\n" for i in range(1500)))
    out = _neardup(
        "index", "build", "train_x.npy", "ref_cos", "--ids", "train_ids.txt",
        "--threshold", "cosine:0.999", "--reduce", "32", "--backend", "annoy", "--trees", "4",
        "--quiet", cwd=files,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "PCA to 32" in out.stdout and "Cosine(similarity=0.999)" in out.stdout
    scored = _neardup("index", "score", "ref_cos", "test.npy", "--json", "-", cwd=files)
    leak = json.loads(scored.stdout)["leakage"]["new"]
    assert leak["count"] >= 1 and all(n.startswith("train/") for n in leak["nearest_ids"])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["score", "missing_dir", "test.npy"], "no reference index at 'missing_dir'"),
        (["score", ".", "test.npy"], "is not a neardup reference index: meta.json is missing"),
        (["score", "INDEX", "narrow.npy"], "has 32 features per sample, but the reference index "
         "was built from 64; score activations of the same layer, with the same pooling"),
        (["score", "INDEX", "test.npy", "--split", "train"], "other than the reference's"),
        (["build", "train.npz", "INDEX"], "the directory is not empty"),
        (["build", "missing.npy", "new_dir"], "does not exist"),
        (["build", "train.npz", "new_dir", "--threshold", "cosine:high"], "is not a number"),
    ],
)  # fmt: skip
def test_index_bad_input_exits_2_with_a_message(files, index_dir, args, message):
    np.save(files / "narrow.npy", np.zeros((5, 32), dtype=np.float32))
    out = _neardup("index", *[str(index_dir) if a == "INDEX" else a for a in args], cwd=files)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr
