"""ActivationCollector(memory_budget=...): rows past the budget go to a .npy file on disk."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from neardup import ActivationCollector, NeardupInputError

HEADER = 128  # bytes of .npy header in front of the rows of a spill file
SLACK = 64 * 1024


def _fill(collector, x, split="train", layer="feat", batch=100, **extra):
    for start in range(0, len(x), batch):
        rows = x[start : start + batch]
        collector.add(split, layer, rows, **{k: v[start : start + batch] for k, v in extra.items()})


def test_rows_past_the_budget_are_written_once_to_a_npy_file(tmp_path):
    x = np.random.default_rng(0).normal(size=(1_000, 32))  # float64 in, float32 stored
    collector = ActivationCollector(memory_budget=20_000, spill_dir=tmp_path)
    _fill(collector, x)
    [path] = collector.spill_files
    assert Path(path).parent == tmp_path and Path(path).name.startswith("neardup-train-feat-")
    assert collector.nbytes == 0
    assert collector.disk_nbytes == HEADER + 1_000 * 32 * 4 == os.path.getsize(path)

    values, ids, labels = collector.get("train", "feat")
    assert isinstance(values, np.memmap) and not values.flags.writeable
    np.testing.assert_array_equal(values, x.astype(np.float32))
    np.testing.assert_array_equal(np.load(path), values)  # a valid .npy with the exact shape
    np.testing.assert_array_equal(ids, np.arange(1_000))
    assert labels is None

    collector.add("train", "feat", x[:10])  # appended after the others, nothing rewritten
    assert os.path.getsize(path) == HEADER + 1_010 * 32 * 4
    np.testing.assert_array_equal(
        collector.get("train", "feat")[0][1_000:], x[:10].astype(np.float32)
    )
    np.testing.assert_array_equal(values, x.astype(np.float32))  # earlier arrays stay valid


def test_spilled_values_and_analysis_equal_the_in_memory_ones(tmp_path):
    rng = np.random.default_rng(1)
    train = rng.normal(size=(600, 24))
    test = np.concatenate([train[:9] + 1e-4, rng.normal(size=(91, 24))])
    budget = 40_000  # the train rows of one layer fit, not those of both layers
    in_ram, on_disk = ActivationCollector(), ActivationCollector(memory_budget=budget)
    for collector in (in_ram, on_disk):
        for split, x in (("train", train), ("test", test)):
            for start in range(0, len(x), 50):
                rows = x[start : start + 50]
                ids = np.arange(start, start + len(rows)) + 7_000
                labels = (ids % 3).astype(np.int64)
                collector.add(split, "a", rows, ids=ids, labels=labels)
                collector.add(split, "b", rows[:, :12] * 2, ids=ids, labels=labels)
                assert collector.nbytes <= (budget if collector is on_disk else np.inf)
    assert 0 < len(on_disk.spill_files) < 4  # some (split, layer)s on disk, others not
    for split in ("train", "test"):
        for layer in ("a", "b"):
            for mem, disk in zip(in_ram.get(split, layer), on_disk.get(split, layer)):
                np.testing.assert_array_equal(disk, mem)
    expected = in_ram.analyze(reference="train")
    got = on_disk.analyze(reference="train")
    assert {k: r.to_dict() for k, r in got.items()} == {k: r.to_dict() for k, r in expected.items()}
    assert sorted(got["a"].leakage["test"].ids) == list(range(7_000, 7_009))


def test_memory_held_stays_under_the_budget_including_the_merge():
    d, batch, n = 64, 250, 32_000  # 8.2 MB of float32 rows, 1 MB budget
    budget = 1_000_000
    source = np.ones((batch, d), dtype=np.float32)
    tracemalloc.start()
    try:
        start = tracemalloc.get_traced_memory()[0]
        collector = ActivationCollector(memory_budget=budget)
        for _ in range(n // batch):
            collector.add("train", "l", source)
        values, ids, _ = collector.get("train", "l")
        peak = tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()
    assert values.shape == (n, d) and len(ids) == n
    assert collector.disk_nbytes == HEADER + n * d * 4
    # the rows in memory never passed the budget; ids (int64) are kept and merged in memory
    assert peak <= budget + 2 * n * 8 + SLACK


def test_a_merge_that_would_pass_the_budget_goes_to_disk_instead():
    x = np.random.default_rng(2).normal(size=(1_000, 16)).astype(np.float32)
    data = x.nbytes
    tight = ActivationCollector(memory_budget=int(1.5 * data))
    _fill(tight, x)
    assert tight.nbytes == data and not tight.spill_files  # collected in memory
    values = tight.get("train", "feat")[0]  # merging would hold 2 copies > budget
    assert isinstance(values, np.memmap) and tight.nbytes == 0
    np.testing.assert_array_equal(values, x)

    roomy = ActivationCollector(memory_budget=2 * data)
    _fill(roomy, x)
    values = roomy.get("train", "feat")[0]
    assert not isinstance(values, np.memmap) and roomy.nbytes == data
    assert not roomy.spill_files


def test_files_are_removed_by_clear_and_by_garbage_collection(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the default spill place
    x = np.arange(600, dtype=np.float32).reshape(200, 3)
    collector = ActivationCollector(memory_budget="1KiB")
    _fill(collector, x, layer="a")
    _fill(collector, x, layer="b")
    paths = [Path(p) for p in collector.spill_files]
    assert len(paths) == 2 and all(p.exists() for p in paths)
    spill_dir = paths[0].parent
    assert spill_dir.parent == tmp_path and spill_dir.name.startswith("neardup-")
    values = collector.get("train", "a")[0]
    collector.clear()
    assert not spill_dir.exists() and collector.disk_nbytes == 0 and len(collector) == 0
    if sys.platform != "win32":  # an unlinked file stays readable through its mapping
        np.testing.assert_array_equal(values, x)

    _fill(collector, x)  # spills again, to a fresh temporary directory
    [path] = [Path(p) for p in collector.spill_files]
    assert path.exists() and path.parent != spill_dir
    del collector
    gc.collect()
    assert not path.exists() and not path.parent.exists()
    assert list(tmp_path.iterdir()) == []


def test_a_given_spill_dir_is_created_and_kept_its_files_removed(tmp_path):
    where = tmp_path / "spill" / "here"
    collector = ActivationCollector(memory_budget=0, spill_dir=where)
    collector.add("val/0", "model.layer1[0]", np.ones((5, 4)))
    [path] = [Path(p) for p in collector.spill_files]
    assert path.parent == where and path.name.startswith("neardup-val_0-model.layer1_0_-")
    collector.clear()
    assert where.is_dir() and list(where.iterdir()) == []


def test_files_are_removed_at_interpreter_exit(tmp_path):
    script = (
        "import numpy as np, neardup\n"
        "c = neardup.ActivationCollector(memory_budget=0)\n"
        "c.add('train', 'l', np.ones((10, 4)))\n"
        "print(c.spill_files[0], flush=True)\n"
        "import os; assert os.path.exists(c.spill_files[0])\n"
    )
    env = dict(os.environ, TMPDIR=str(tmp_path))
    out = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, check=True
    )
    path = Path(out.stdout.strip())
    assert path.parent.parent == tmp_path
    assert not path.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (4096, 4096),
        (0, 0),
        (1.5e9, 1_500_000_000),
        ("2GB", 2_000_000_000),
        ("512MiB", 512 * 2**20),
        ("1.5 kb", 1_500),
        ("100", 100),
        (None, None),
    ],
)
def test_budget_sizes(value, expected):
    assert ActivationCollector(memory_budget=value).memory_budget == expected


@pytest.mark.parametrize("value", [-1, "2 GBs", "lots", "", True, float("nan"), [1], "-3MB"])
def test_bad_budget_is_named_with_the_accepted_forms(value):
    with pytest.raises(NeardupInputError) as err:
        ActivationCollector(memory_budget=value)
    message = str(err.value)
    assert f"memory_budget={value!r} is not a size in bytes" in message
    assert "'2GB' or '512MiB'" in message and "or None" in message


def test_spill_dir_errors(tmp_path):
    with pytest.raises(NeardupInputError, match="spill_dir=.* is only used with memory_budget"):
        ActivationCollector(spill_dir=tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(NeardupInputError, match="exists and is not a directory"):
        ActivationCollector(memory_budget="1MB", spill_dir=tmp_path / "file")
    with pytest.raises(TypeError):
        ActivationCollector("1MB")  # keyword-only
