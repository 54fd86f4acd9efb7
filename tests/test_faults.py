"""Fault injection: kills, full disks, concurrent saves and loads, threads.

Every test asserts that the previous file is intact (the old content or the complete new
one, never a part) and that no partial file is left behind. Real processes are killed with
SIGKILL, and a full disk is a real ``RLIMIT_FSIZE`` in a child process (no mount needed).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import neardup
from neardup import ActivationCollector, Distance, NeardupInputError, ReferenceIndex

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="POSIX signals and rlimits")


def _planted(seed: int, n: int = 400, d: int = 16, copies: int = 10):
    rng = np.random.default_rng(seed)
    train = rng.normal(size=(n, d)).astype(np.float32)
    test = rng.normal(size=(n // 4, d)).astype(np.float32)
    test[:copies] = train[:copies] + rng.normal(scale=1e-3, size=(copies, d))
    return train, test


def _child(script: str, *, cwd: Path, limit_bytes: int | None = None) -> subprocess.Popen:
    """Start ``script`` in a fresh interpreter (optionally with a file-size limit)."""
    prologue = ""
    if limit_bytes is not None:
        prologue = (
            "import resource, signal\n"
            "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"  # EFBIG instead of a signal
            f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit_bytes}, {limit_bytes}))\n"
        )
    return subprocess.Popen(
        [sys.executable, "-c", prologue + textwrap.dedent(script)],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _leftovers(directory: Path) -> list[str]:
    """Temporary files of atomic writes still in ``directory``."""
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def _wait_for(path: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} never appeared")
        time.sleep(0.01)


# ------------------------------------------------------------------------------ kill -9
def _kill_while_looping(write, delays) -> None:
    """Fork a process that calls ``write(i)`` for i = 0, 1, 2, ... and SIGKILL it after each
    delay in turn (one fresh process per delay)."""
    import multiprocessing

    def loop() -> None:
        i = 0
        while True:
            write(i)
            i += 1

    context = multiprocessing.get_context("fork")
    for delay in delays:
        proc = context.Process(target=loop)
        proc.start()
        time.sleep(delay)
        os.kill(proc.pid, signal.SIGKILL)
        proc.join(timeout=30)
        assert proc.exitcode == -signal.SIGKILL


def _duration(write) -> float:
    start = time.perf_counter()
    write(1)
    return time.perf_counter() - start


@pytest.mark.parametrize("kind", ["json", "html"])
def test_kill_during_report_writes_keeps_a_whole_file(tmp_path, kind, monkeypatch):
    # the footer's time would otherwise differ across a minute boundary (CI failed on it)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    rng = np.random.default_rng(0)
    train = rng.normal(size=(300, 16)).astype(np.float32)
    results = [
        neardup.find_duplicates(
            {"train": train, "test": train[:n] + 1e-3},
            ids={"train": [f"t{i:05d}" + "x" * 200 for i in range(300)],
                 "test": [f"s{i:05d}" + "y" * 200 for i in range(n)]},
        )
        for n in (40, 80)
    ]  # fmt: skip
    target = tmp_path / f"report.{kind}"
    images = train.reshape(-1, 4, 4)
    samples = [{"train": images, "test": images[:n] + 1e-3} for n in (40, 80)]

    def write(i: int) -> None:
        if kind == "json":
            results[i % 2].to_json(target)
        else:
            results[i % 2].to_html(target, samples=samples[i % 2])

    write(0)
    whole = {target.read_text(encoding="utf-8")}
    took = _duration(write)
    whole.add(target.read_text(encoding="utf-8"))
    assert len(whole) == 2
    _kill_while_looping(write, [took * f for f in (0.05, 0.3, 0.55, 0.8, 1.1, 1.7)])
    assert target.read_text(encoding="utf-8") in whole  # one whole version, never a part
    # a kill can leave the dead writer's temporary file; the next write removes it
    write(0)
    assert _leftovers(tmp_path) == []


def test_kill_during_index_save_keeps_the_previous_index(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(3000, 16)).astype(np.float32)
    indexes = [ReferenceIndex.build(a[:n], threshold=Distance(0.05)) for n in (2000, 3000)]

    def write(i: int) -> None:
        indexes[i % 2].save(tmp_path / "idx", overwrite=True)

    write(0)
    took = _duration(write)
    for f in (0.05, 0.25, 0.5, 0.75, 1.0, 1.5):
        _kill_while_looping(write, [took * f])
        index = ReferenceIndex.load(tmp_path / "idx")  # never half of a generation
        assert index.size in (2000, 3000)
        assert index.score(a[:2000] + 1e-4).count == 2000
    # the next save removes generations and temporary files that killed saves left
    write(0)
    entries = sorted(p.name for p in (tmp_path / "idx").iterdir())
    assert len([e for e in entries if e.startswith("generation-")]) == 1
    assert _leftovers(tmp_path / "idx") == []


# ------------------------------------------------------------------------------ full disk
_FULL_DISK_WRITE = """
import numpy as np, neardup
rng = np.random.default_rng(0)
train = rng.normal(size=(300, 16)).astype("float32")
# a report of 50 leaks (> 16 KiB): Auto finds them although 100 of 350 rows are copies
result = neardup.find_duplicates({"train": train, "test": train[:50] + 1e-3},
    ids={"train": [f"t{i}" + "x" * 400 for i in range(300)],
         "test": [f"s{i}" + "y" * 400 for i in range(50)]})
assert result.leakage["test"].count == 50, result.threshold.reason
for write in (lambda: result.to_json("report.json"), lambda: result.to_html("report.html"),
              lambda: neardup.ReferenceIndex.build(train).save("idx", overwrite=True)):
    try:
        write()
    except OSError as err:
        print("OSError", err.errno)
    else:
        print("written")
"""


def test_full_disk_keeps_old_reports_and_index(tmp_path):
    old_json = '{"old": true}'
    (tmp_path / "report.json").write_text(old_json)
    (tmp_path / "report.html").write_text("<html>old</html>")
    small = np.random.default_rng(1).normal(size=(50, 16)).astype(np.float32)
    ReferenceIndex.build(small, threshold=Distance(0.1)).save(tmp_path / "idx")
    proc = _child(_FULL_DISK_WRITE, cwd=tmp_path, limit_bytes=16_384)
    out, err = proc.communicate(timeout=120)
    lines = out.split("\n")
    assert lines[:2] == ["OSError 27"] * 2, (out, err)  # EFBIG: the file-size limit was hit
    assert lines[2].startswith("OSError"), (out, err)
    assert (tmp_path / "report.json").read_text() == old_json
    assert (tmp_path / "report.html").read_text() == "<html>old</html>"
    assert ReferenceIndex.load(tmp_path / "idx").size == 50
    assert _leftovers(tmp_path) == []
    assert len(list((tmp_path / "idx").glob("generation-*"))) == 1


_FULL_DISK_SPILL = """
import numpy as np, neardup
c = neardup.ActivationCollector(memory_budget=256, spill_dir="spill")
rng = np.random.default_rng(0)
first = rng.normal(size=(8, 16)).astype("float32")
c.add("train", "fc", first)          # 512 bytes: spilled at once, within the 2 KiB limit
try:
    for _ in range(10):
        c.add("train", "fc", rng.normal(size=(8, 16)).astype("float32"))
except OSError as err:
    print("message:", "free space there" in str(err))
rows = np.asarray(c.get("train", "fc")[0])
print("rows:", rows.shape[0], rows.shape[0] % 8 == 0, bool(np.array_equal(rows[:8], first)))
files = c.spill_files
c.clear()
import os
print("left:", [f for f in files if os.path.exists(f)])
"""


def test_full_disk_while_spilling_keeps_rows_and_cleans_up(tmp_path):
    proc = _child(_FULL_DISK_SPILL, cwd=tmp_path, limit_bytes=2_048)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    lines = out.strip().splitlines()
    assert lines[0] == "message: True", out  # the friendly message, not a second error
    assert lines[1].startswith("rows: ") and lines[1].endswith(" True True"), out
    assert lines[2] == "left: []", out
    assert list((tmp_path / "spill").iterdir()) == []


def test_cli_full_disk_is_an_internal_error_and_keeps_the_old_json(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.normal(size=(300, 16)).astype(np.float32)
    np.save(tmp_path / "train.npy", train)
    np.save(tmp_path / "test.npy", train[:30] + 1e-3)
    (tmp_path / "out.json").write_text('{"old": 1}')
    script = (
        "import sys\nfrom neardup.cli import main\n"
        "sys.exit(main(['scan', '--split', 'train=train.npy', '--split', 'test=test.npy', "
        "'--json', 'out.json', '--quiet']))\n"
    )
    proc = _child(script, cwd=tmp_path, limit_bytes=4096)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    assert "internal error" in err
    assert (tmp_path / "out.json").read_text() == '{"old": 1}'
    assert _leftovers(tmp_path) == []


# ------------------------------------------------------------------------------ concurrency
def test_concurrent_load_and_save_never_mix_generations(tmp_path):
    rng = np.random.default_rng(0)
    a = rng.normal(size=(1200, 16)).astype(np.float32)
    ReferenceIndex.build(a[:600], threshold=Distance(0.05)).save(tmp_path / "idx")
    proc = _child(
        """
        import numpy as np, neardup, time
        rng = np.random.default_rng(0)
        a = rng.normal(size=(1200, 16)).astype("float32")
        pair = [neardup.ReferenceIndex.build(a[:600], threshold=neardup.Distance(0.05)),
                neardup.ReferenceIndex.build(a[600:], threshold=neardup.Distance(0.05))]
        end = time.monotonic() + 2
        i = 0
        while time.monotonic() < end:
            pair[i % 2].save("idx", overwrite=True); i += 1
        print(i)
        """,
        cwd=tmp_path,
    )
    loads = 0
    while proc.poll() is None:
        index = ReferenceIndex.load(tmp_path / "idx")
        # a mixed generation would pair one half's vectors with the other's cells
        hits = index.score(a + 1e-4)
        assert hits.count == 600
        ids = np.asarray(hits.ids)
        offset = 0 if ids.min() == 0 else 600
        assert np.array_equal(np.sort(ids), np.arange(600) + offset)
        assert np.array_equal(np.asarray(hits.nearest_ids), ids - offset)
        loads += 1
    out, err = proc.communicate()
    assert proc.returncode == 0, err
    assert int(out) >= 3 and loads >= 3


def test_threads_calling_the_engine_at_once_get_their_own_results():
    """Six threads, each with its own data, querying annoy in forked workers at once.

    Before each run had its own shared index, workers forked by one thread could query
    another thread's index: out-of-range errors, or silently other duplicate sets (1 to 3
    of 6 runs differed from their serial result in this very setup).
    """
    n, threads = 33_000, 6  # 33k rows: two query workers per run (16,384 rows a chunk)
    datasets = [
        np.random.default_rng(s).normal(size=(n, 4)).astype(np.float32) for s in range(threads)
    ]
    options = dict(backend="annoy", n_trees=1, threshold=Distance(0.01), dedupe=False)
    results: list = [None] * threads
    errors: list = []

    def run(i: int) -> None:
        try:
            results[i] = neardup.find_duplicates(datasets[i], query_jobs=2, **options)
        except Exception as err:
            errors.append(err)

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert errors == []

    def sets(result) -> list:
        return sorted(tuple(sorted(c.positions)) for c in result.clusters)

    for x, result in zip(datasets, results):
        serial = neardup.find_duplicates(x, query_jobs=1, **options)
        assert len(serial.clusters) > 0
        assert sets(result) == sets(serial)
        assert result.threshold.value == serial.threshold.value


# ------------------------------------------------------------------------------ crafted files
def test_crafted_annoy_file_is_refused_not_a_segfault(tmp_path):
    """A substituted index.ann (meta.json updated to match) must not crash the process."""
    train = np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32)
    index = ReferenceIndex.build(train, threshold=Distance(0.1), backend="annoy")
    path = index.save(tmp_path / "idx")
    meta = json.loads((path / "meta.json").read_text())
    ann = path / meta["generation"] / "index.ann"
    nodes = np.fromfile(ann, dtype="<i4").reshape(-1, 4 + 8)
    split = np.flatnonzero(nodes[:, 0] > 10)
    nodes[split[0], 2] = 10**8  # a child far outside the file
    nodes.tofile(ann)
    import hashlib

    meta["files"]["index.ann"]["sha256"] = hashlib.sha256(ann.read_bytes()).hexdigest()
    (path / "meta.json").write_text(json.dumps(meta))
    script = f"""
        import numpy as np, neardup
        try:
            idx = neardup.ReferenceIndex.load({str(path)!r})
            idx.score(np.zeros((3, 8), dtype="float32"))
            print("loaded")
        except neardup.NeardupInputError as err:
            print("refused:", err)
    """
    proc = _child(script, cwd=tmp_path)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, (proc.returncode, err)
    assert out.startswith("refused:") and "not a valid annoy index" in out, out


def test_changed_annoy_file_fails_its_checksum(tmp_path):
    train = np.random.default_rng(0).normal(size=(200, 8)).astype(np.float32)
    index = ReferenceIndex.build(train, threshold=Distance(0.1), backend="annoy")
    path = index.save(tmp_path / "idx")
    ann = path / json.loads((path / "meta.json").read_text())["generation"] / "index.ann"
    data = bytearray(ann.read_bytes())
    data[100] ^= 0xFF
    ann.write_bytes(bytes(data))
    with pytest.raises(NeardupInputError, match="index.ann does not match the SHA-256"):
        ReferenceIndex.load(path)
    ann.write_bytes(bytes(data[:-4]))
    with pytest.raises(NeardupInputError, match=r"index.ann has [\d,]+ bytes, meta.json recorded"):
        ReferenceIndex.load(path)


def test_collector_clear_removes_spill_files(tmp_path):
    c = ActivationCollector(memory_budget=1024, spill_dir=tmp_path / "spill")
    c.add("train", "fc", np.ones((64, 16), dtype=np.float32))
    assert len(c.spill_files) == 1
    c.clear()
    assert list((tmp_path / "spill").iterdir()) == []
    assert os.path.isdir(tmp_path / "spill")
