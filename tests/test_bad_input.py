"""Issue 16's hostile inputs: each gives a clear NeardupInputError (or exit 2), never a
traceback, a crash or silently wrong numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import neardup
from neardup import (
    Cosine,
    Distance,
    DuplicatesResult,
    NeardupInputError,
    ReferenceIndex,
    Relative,
    Slope,
)


def _neardup(*args, cwd):
    return subprocess.run(
        [sys.executable, "-m", "neardup", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


def _with_leaks(n=600, d=16, leaks=5, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    train = rng.normal(size=(n, d)) * scale
    test = rng.normal(size=(n // 5, d)) * scale
    test[:leaks] = train[:leaks] * (1 + 1e-4)
    return train, test


# ------------------------------------------------------------------------------ overflow
def test_float64_beyond_float32_is_refused_not_turned_into_nan():
    train, test = _with_leaks()
    train[3, 2] = 1e39
    with pytest.raises(NeardupInputError, match=r"values up to 1e\+39, beyond float32's range"):
        neardup.find_duplicates({"train": train, "test": test})


def test_cli_float64_overflow_exits_2(tmp_path):
    train, test = _with_leaks()
    train[0, 0] = 1e300
    np.save(tmp_path / "train.npy", train)
    np.save(tmp_path / "test.npy", test)
    out = _neardup("scan", "--split", "train=train.npy", "--split", "test=test.npy", cwd=tmp_path)
    assert out.returncode == 2 and "beyond float32's range" in out.stderr


def test_unnormalized_huge_values_are_refused_and_normalized_ones_work():
    train, test = _with_leaks(scale=1e20)
    train, test = train.astype(np.float32), test.astype(np.float32)
    with pytest.raises(NeardupInputError, match="without normalisation their squares overflow"):
        neardup.find_duplicates({"train": train, "test": test}, normalize=None)
    with pytest.raises(NeardupInputError, match="overflow"):
        ReferenceIndex.build(train, normalize=None)
    result = neardup.find_duplicates({"train": train, "test": test})  # row norms in float64
    assert result.leakage["test"].count == 5
    small = neardup.find_duplicates({"train": train / 1e20, "test": test / 1e20}, normalize=None)
    assert small.leakage["test"].count == 5


# ------------------------------------------------------------------------------ Relative
def test_relative_threshold_survives_many_exact_copies():
    """60 % of train in groups of 11 exact copies: the k-th neighbour distance of most rows
    is 0, which made Relative's threshold 0 and hid all 20 noisy leaks."""
    rng = np.random.default_rng(0)
    distinct = rng.normal(size=(600, 32)).astype(np.float32)
    copied = np.repeat(distinct[:110], 11, axis=0)[:1200]  # 60 % of 2,000 rows
    train = np.concatenate([copied, distinct[110:]])[:2000]
    train = np.concatenate([train, rng.normal(size=(2000 - len(train), 32)).astype(np.float32)])
    test = rng.normal(size=(200, 32)).astype(np.float32)
    noisy_sources = np.arange(1300, 1320)
    test[:20] = train[noisy_sources] + rng.normal(scale=0.01, size=(20, 32))
    for dedupe in (True, False):
        result = neardup.find_duplicates(
            {"train": train, "test": test}, backend="annoy", dedupe=dedupe
        )
        assert result.threshold.value > 0
        assert result.leakage["test"].count == 20
    plain = neardup.find_duplicates({"train": train[1200:], "test": test})
    assert plain.leakage["test"].count == 20


# ------------------------------------------------------------------------------ unclear errors
@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: Slope(2.5), "Slope sensitivity must be an int > 2"),
        (lambda: Cosine(None), "Cosine similarity must be a number"),
        (lambda: Distance("x"), "Distance must be a number"),
        (lambda: Relative([1]), "Relative ratio must be a number"),
        (lambda: neardup.Percentile("98"), "Percentile must be a number"),
    ],
)
def test_threshold_strategies_check_their_numbers_at_once(make, message):
    with pytest.raises(NeardupInputError, match=message):
        make()


def test_torch_bfloat16_is_widened():
    torch = pytest.importorskip("torch")
    train, test = _with_leaks()
    result = neardup.find_duplicates(
        {
            "train": torch.tensor(train, dtype=torch.bfloat16),
            "test": torch.tensor(test, dtype=torch.bfloat16),
        }
    )
    assert result.leakage["test"].count >= 5


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        (np.array([1, "a"] * 300, dtype=object), "hold int, str values; use all ints or all"),
        ([1, None] * 300, "hold NoneType, int values"),
        ([1.0, np.nan] * 300, r"contain NaN or Inf \(positions \[1, 3, 5, 7, 9\]\)"),
    ],
)
def test_bad_labels_are_refused_before_the_analysis(labels, message):
    train, test = _with_leaks()
    with pytest.raises(NeardupInputError, match=message):
        neardup.find_duplicates({"train": train, "test": test}, labels={"train": labels})


def test_reduce_on_a_very_wide_layer_is_not_a_memory_error():
    """Once refused (a 23.8 GiB covariance); the engine's randomized PCA now handles it."""
    wide = np.zeros((3, 40_000), dtype=np.float32)
    wide[:, :3] = np.eye(3)
    result = neardup.find_duplicates(wide, reduce=8)
    assert result.settings["reduce"] == 8
    assert result.clusters == []


def test_spilling_with_a_split_that_is_not_a_string():
    c = neardup.ActivationCollector(memory_budget=64)
    with pytest.raises(NeardupInputError, match=r"split='3' \(int\) is not valid"):
        c.add(3, "fc", np.zeros((4, 8)))


def test_long_names_are_bounded(tmp_path):
    train, test = _with_leaks()
    with pytest.raises(NeardupInputError, match="split name 'xxxx.*has 1,000,000 characters"):
        neardup.find_duplicates({"train": train, "x" * 1_000_000: test})
    ids = [f"{i}" + "y" * 2000 for i in range(len(test))]
    with pytest.raises(NeardupInputError, match="a string of 2,00[0-9] characters"):
        neardup.find_duplicates({"train": train, "test": test}, ids={"test": ids})


# ------------------------------------------------------------------------------ result JSON
@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    train, test = _with_leaks()
    path = tmp_path_factory.mktemp("json") / "r.json"
    neardup.find_duplicates({"train": train, "test": test}).to_json(path)
    return json.loads(path.read_text())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: {**d, "schema": 2}, "written with result schema 2; .*Upgrade neardup"),
        (lambda d: {**d, "schema": "1"}, 'no valid "schema"'),
        (lambda d: {**d, "clusters": 5}, "is not a valid neardup result"),
        (lambda d: {**d, "leakage": {"test": {"count": "many"}}}, "not a valid neardup result"),
        (lambda d: {k: v for k, v in d.items() if k != "threshold"}, "missing field 'threshold'"),
        (lambda d: [d], "holds a JSON list"),
    ],
)
def test_hand_edited_json_is_refused(tmp_path, saved, edit, message):
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(edit(saved)))
    with pytest.raises(NeardupInputError, match=message):
        DuplicatesResult.from_json(path)


def test_cli_refuses_hand_edited_json_with_exit_2(tmp_path, saved):
    path = tmp_path / "edited.json"
    path.write_text(json.dumps({**saved, "clusters": [{"ids": 3}]}))
    out = _neardup("show", path, cwd=tmp_path)
    assert out.returncode == 2 and "is not a valid neardup result" in out.stderr
    out = _neardup("report", path, "--html", tmp_path / "r.html", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert not (tmp_path / "r.html").exists()


def test_deeply_nested_and_overflowing_json(tmp_path, saved):
    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(NeardupInputError, match="is not valid JSON"):
        DuplicatesResult.from_json(tmp_path / "deep.json")
    text = json.dumps(saved).replace('"value": ', '"value": 1e400, "x": ', 1)
    (tmp_path / "inf.json").write_text(text)
    with pytest.raises(NeardupInputError, match="not a valid neardup result"):
        DuplicatesResult.from_json(tmp_path / "inf.json")


# ------------------------------------------------------------------------------ index files
@pytest.mark.parametrize(
    ("name", "values", "message"),
    [
        ("labels.npy", np.zeros(7, dtype=np.int64), r"labels.npy holds a int64 array of shape"),
        ("labels.npy", np.zeros((50, 2), dtype=np.int64), r"shape \(50, 2\)"),
        ("ids.npy", np.array(5), r"ids.npy holds a int64 array of shape \(\)"),
    ],
)
def test_index_files_of_the_wrong_shape_are_refused(tmp_path, name, values, message):
    """Even with meta.json's digests updated to match (a crafted index)."""
    import hashlib

    rng = np.random.default_rng(0)
    train = rng.normal(size=(50, 8)).astype(np.float32)
    path = ReferenceIndex.build(train, labels=np.arange(50) % 3, threshold=Distance(0.1)).save(
        tmp_path / "idx"
    )
    meta = json.loads((path / "meta.json").read_text())
    target = path / meta["generation"] / name
    np.save(target, values)
    data = target.read_bytes()
    meta["files"][name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(NeardupInputError, match=message):
        ReferenceIndex.load(path)


# ------------------------------------------------------------------------------ CLI
@pytest.fixture()
def cli_files(tmp_path):
    train, test = _with_leaks()
    np.save(tmp_path / "train.npy", train.astype(np.float32))
    np.save(tmp_path / "test.npy", test.astype(np.float32))
    return tmp_path


def test_cli_search_k_zero_cannot_pass_the_gate(cli_files):
    out = _neardup(
        "scan", "--split", "train=train.npy", "--split", "test=test.npy",
        "--backend", "annoy", "--search-k", "0", "--fail-above", "0", cwd=cli_files,
    )  # fmt: skip
    assert out.returncode == 2 and "search_k" in out.stderr
    gate = _neardup(
        "scan", "--split", "train=train.npy", "--split", "test=test.npy",
        "--backend", "annoy", "--fail-above", "0", "--quiet", cwd=cli_files,
    )  # fmt: skip
    assert gate.returncode == 1 and "FAIL: leakage" in gate.stderr


@pytest.mark.parametrize(
    ("prepare", "args", "message"),
    [
        (
            lambda d: np.savez(d / "obj.npz", x=np.array([1, "a"], dtype=object)),
            ["scan", "--split", "data=obj.npz"],
            "never pickled objects",
        ),
        (
            lambda d: (d / "empty.npy").write_bytes(b""),
            ["scan", "--split", "data=empty.npy"],
            "cannot read 'empty.npy' as .npy/.npz",
        ),
        (
            lambda d: (d / "ids.txt").write_bytes(b"a\n\xff\xfe\n" * 60),
            ["index", "build", "train.npy", "idx", "--ids", "ids.txt"],
            "is not UTF-8 text",
        ),
        (
            lambda d: None,
            ["scan", "--split", "train=train.npy", "--split", "test=test.npy",
             "--json", "missing/out.json"],
            "the directory 'missing' does not exist",
        ),
        (
            lambda d: None,
            ["index", "score", "nowhere", "test.npy", "--json", "missing/out.json"],
            "the directory 'missing' does not exist",
        ),
    ],
)  # fmt: skip
def test_cli_bad_input_exits_2_before_any_work(cli_files, prepare, args, message):
    prepare(cli_files)
    out = _neardup(*args, cwd=cli_files)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr
    assert "done in" not in out.stderr  # no analysis stage ran


def test_cli_help_states_the_exit_codes(capsys):
    from neardup.cli import main

    for command in (["scan"], ["show"], ["report"], ["index", "build"], ["index", "score"]):
        with pytest.raises(SystemExit) as exit_info:
            main([*command, "--help"])
        assert exit_info.value.code == 0
        text = " ".join(capsys.readouterr().out.split())
        assert "Exit codes: 0 success," in text and "2 bad input" in text
        assert "3 internal error" in text


def test_cli_report_output_is_atomic_and_bounded(cli_files):
    out = _neardup(
        "scan", "--split", "train=train.npy", "--split", "test=test.npy", "--json", "r.json",
        "--quiet", cwd=cli_files,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in Path(cli_files).iterdir() if p.name.endswith(".tmp")) == []


def test_report_of_a_result_with_huge_names_stays_small(tmp_path, saved):
    """A result JSON edited to hold 1 MB ids: the page shows each cut to 1,000 characters."""
    huge = {**saved}
    huge["clusters"] = [
        {**c, "ids": ["i" * 1_000_000 for _ in c["ids"]]} for c in saved["clusters"]
    ]
    path = tmp_path / "huge.json"
    path.write_text(json.dumps(huge))
    html = DuplicatesResult.from_json(path).to_html(None)
    assert len(html) < 2_000_000
    assert "(1,000,000 characters)" in html
