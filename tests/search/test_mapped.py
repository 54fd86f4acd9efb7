"""Memory-mapped inputs: streamed without staying in the resident set, results unchanged."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import neardup
import neardup._mapped
from neardup import NeardupInputError
from neardup._mapped import FileRows, release_pages
from neardup._validate import check_finite
from neardup.search import Rows


def _rss_file_kib() -> int:
    """File-backed resident memory of this process (Linux ``/proc/self/status``)."""
    for line in open("/proc/self/status"):
        if line.startswith("RssFile:"):
            return int(line.split()[1])
    raise AssertionError("no RssFile line")


def _memmap(tmp_path, rows: int, d: int, seed: int = 0) -> np.memmap:
    x = np.random.default_rng(seed).normal(size=(rows, d)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    return np.load(tmp_path / "x.npy", mmap_mode="r")


def test_release_keeps_the_values_and_skips_private_maps(tmp_path):
    x = _memmap(tmp_path, 1000, 16)
    before = np.array(x[:10])
    assert release_pages(x) and release_pages(x[100:200])  # slices share the map
    assert release_pages(np.asarray(x)[5:9])  # validated inputs are plain views of the map
    np.testing.assert_array_equal(x[:10], before)  # read again from the page cache
    assert not release_pages(np.zeros((3, 3)))
    private = np.load(tmp_path / "x.npy", mmap_mode="c")
    private[0, 0] = 123.0
    assert not release_pages(private)  # would drop the private change
    assert private[0, 0] == 123.0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_streaming_a_memmap_does_not_keep_it_resident(tmp_path):
    x = _memmap(tmp_path, 400_000, 64)  # 98 MiB on disk
    rows = Rows([x[:300_000], x[300_000:]], "row")
    start = _rss_file_kib()
    total = 0.0
    for _, block in rows.blocks():
        total += float(block[:, 0].sum())
    grown = _rss_file_kib() - start
    assert grown < 40 * 1024, f"{grown} KiB of the 98 MiB file stayed resident"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_validation_does_not_keep_a_memmap_resident(tmp_path):
    x = _memmap(tmp_path, 400_000, 64)  # 98 MiB on disk
    start = _rss_file_kib()
    check_finite(np.asarray(x), "data")  # every value read, as find_duplicates validates
    grown = _rss_file_kib() - start
    assert grown < 40 * 1024, f"{grown} KiB of the 98 MiB file stayed resident"
    assert np.isfinite(x[123]).all()  # still readable
    with pytest.raises(NeardupInputError, match=r"1 row\(s\) with NaN"):
        bad = np.array(x[:1000])
        bad[7, 3] = np.nan
        check_finite(bad, "data")


def test_file_rows_only_for_large_shared_maps(tmp_path):
    x = _memmap(tmp_path, 1000, 16)
    assert FileRows.of(x) is None  # 64 KB: gathered through the map
    assert FileRows.of(np.zeros((3, 3)), above=0) is None
    assert FileRows.of(np.load(tmp_path / "x.npy", mmap_mode="c"), above=0) is None
    assert FileRows.of(x[:, ::2], above=0) is None  # a row's values not contiguous
    np.testing.assert_array_equal(FileRows.of(x[:, 4:12], above=0).take([3, 1]), x[[3, 1], 4:12])
    reader = FileRows.of(np.asarray(x)[100:], above=0)  # a validated view, from row 100
    picked = np.array([5, 899, 0, 5, 431])
    np.testing.assert_array_equal(reader.take(picked), x[100:][picked])
    sliced = FileRows.of(x[100:], above=0)  # a memmap slice repeats its parent's offset
    np.testing.assert_array_equal(sliced.take(picked), x[100:][picked])
    assert reader.take(np.zeros(0, dtype=np.int64)).shape == (0, 16)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_scattered_gathers_of_a_large_map_are_read_not_mapped(tmp_path, monkeypatch):
    # a cell's rows lie anywhere in the file: through the map each maps a page or more
    x = _memmap(tmp_path, 400_000, 64)  # 98 MiB on disk
    monkeypatch.setattr(neardup._mapped, "READ_ABOVE_BYTES", 1 << 20)  # "large" from 1 MiB
    views = [np.asarray(x)[:300_000], np.asarray(x)[300_000:]]
    rows, plain = Rows(views, "row"), Rows([np.array(v) for v in views], "row")
    rng = np.random.default_rng(0)
    start = _rss_file_kib()
    for _ in range(40):  # 80,000 scattered rows: every page of the file
        picked = rng.choice(len(x), 2_000, replace=False)
        np.testing.assert_array_equal(rows.take(picked), plain.take(picked))
    grown = _rss_file_kib() - start
    assert grown < 8 * 1024, f"{grown} KiB of the 98 MiB file became resident"


def test_find_duplicates_on_a_memmap_equals_the_array(tmp_path):
    x = np.array(_memmap(tmp_path, 3000, 24, seed=1))
    x[2000:2100] = x[:100] + 1e-3  # 100 test rows leaked from train
    np.save(tmp_path / "y.npy", x)
    mapped = np.load(tmp_path / "y.npy", mmap_mode="r")
    splits = {"train": mapped[:2000], "test": mapped[2000:]}
    got = neardup.find_duplicates(splits, backend=neardup.Cells(cell_size=64))
    expected = neardup.find_duplicates(
        {"train": x[:2000], "test": x[2000:]}, backend=neardup.Cells(cell_size=64)
    )
    assert got.leakage["test"].count == expected.leakage["test"].count >= 100
    assert [c.positions for c in got.clusters] == [c.positions for c in expected.clusters]
    assert got.threshold.value == expected.threshold.value
