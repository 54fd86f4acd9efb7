"""ReferenceIndex: built once on train, saved, loaded elsewhere, scored against new data."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from scipy.spatial.distance import cdist

import neardup
from neardup import (
    Cells,
    Cosine,
    Distance,
    NeardupInputError,
    ReferenceIndex,
    Relative,
    find_duplicates,
)

N_TRAIN = 1500


@pytest.fixture(scope="module")
def data(digits):
    """Digits: 1,500 train rows; test = the 297 others + 40 planted copies of train rows.

    Planted (by position in test): 297-306 exact copies, 307-316 noisy (sigma 0.02),
    317-326 brightness-shifted, 327-336 shifted one pixel right.
    """
    images, labels = digits
    x = images.reshape(len(images), -1)
    train, rng = x[:N_TRAIN], np.random.default_rng(0)
    src = rng.choice(N_TRAIN, 40, replace=False)
    planted = [
        train[src[:10]],
        np.clip(train[src[10:20]] + rng.normal(scale=0.02, size=(10, 64)), 0, 1),
        np.clip(train[src[20:30]] * 0.9 + 0.03, 0, 1),
        np.roll(images[src[30:40]], 1, axis=2).reshape(10, 64),
    ]
    test = np.concatenate([x[N_TRAIN:], *planted]).astype(np.float32)
    test_labels = np.concatenate([labels[N_TRAIN:], labels[src]])
    return train, labels[:N_TRAIN], test, test_labels, src


def _same_leakage(a: neardup.Leakage, b: neardup.Leakage) -> None:
    assert a.ids == b.ids
    assert a.nearest_ids == b.nearest_ids
    assert a.positions == b.positions
    assert a.nearest_positions == b.nearest_positions
    np.testing.assert_array_equal(a.distances, b.distances)
    assert (a.split, a.reference, a.total) == (b.split, b.reference, b.total)
    assert a.by_class == b.by_class
    assert a.label_conflicts == b.label_conflicts


def _pairs(*leaks: neardup.Leakage) -> set[tuple]:
    return {
        (i, n, float(d)) for leak in leaks
        for i, n, d in zip(leak.ids, leak.nearest_ids, leak.distances)
    }  # fmt: skip


def _brute_force(train: np.ndarray, test: np.ndarray, t: float) -> dict[int, int]:
    """test row -> nearest train row within ``t`` on unit rows (numpy, float64)."""
    a = train / np.linalg.norm(train, axis=1, keepdims=True)
    b = test / np.linalg.norm(test, axis=1, keepdims=True)
    d = cdist(b, a)
    nearest = d.argmin(1)
    return {i: int(nearest[i]) for i in np.flatnonzero(d.min(1) <= t)}


@pytest.mark.parametrize(
    ("t", "backend", "search_k"),
    [
        (0.05, "auto", -1),
        (0.15, "auto", -1),
        (0.25, "auto", -1),
        (0.15, Cells(cell_size=16), -1),  # 94 cells in two levels, automatic margin
        (0.25, Cells(cell_size=16, margin=0.5), -1),  # the provably exact margin
        (0.15, "exact", -1),
        (0.25, "annoy", 3000),
    ],
)
def test_fixed_threshold_flags_what_exact_find_duplicates_flags(data, t, backend, search_k):
    train, train_labels, test, test_labels, src = data
    expected = find_duplicates(
        {"train": train, "test": test},
        labels={"train": train_labels, "test": test_labels},
        threshold=Distance(t),
        backend="exact",
    ).leakage["test"]
    index = ReferenceIndex.build(train, labels=train_labels, threshold=Distance(t), backend=backend)
    got = index.score(test, labels=test_labels, split="test", search_k=search_k)
    _same_leakage(got, expected)
    oracle = _brute_force(train, test, t)
    assert dict(zip(got.positions, got.nearest_positions)) == oracle
    # exact and noisy copies are found, through the training row they were copied from
    planted = dict(zip(got.positions, got.nearest_ids))
    assert all(planted[297 + i] == src[i] for i in range(20))
    assert index.threshold.value == t and index.settings["graph_backend"] == "none"
    name = backend if isinstance(backend, str) else backend.name
    assert index.settings["backend"] == {"auto": "cells"}.get(name, name)
    if name == "cells" and not isinstance(backend, str):
        assert index.settings["n_cells_used"] > 64  # two levels: coarse cells, then leaves
    if name == "cells" and backend in ("auto", Cells(cell_size=16)):  # the automatic margin
        assert index.settings["entries_per_row"] == 1.0  # each row listed once, at home


def test_relative_threshold_is_resolved_once_on_the_reference(data):
    train, _, test, _, _ = data
    index = ReferenceIndex.build(train)
    assert index.threshold.strategy == "Relative"
    assert index.threshold.value == find_duplicates(train, threshold=Relative()).threshold.value
    before = index.threshold.value
    index.score(np.repeat(train[:50], 5, axis=0))  # a batch of copies cannot move the bar
    assert index.threshold.value == before
    assert index.score(test).count >= 20


def test_save_then_load_in_a_fresh_process_scores_identically(data, tmp_path):
    train, train_labels, test, test_labels, _ = data
    ids = np.array([f"img{i:04d}" for i in range(N_TRAIN)], dtype=object)  # stored as unicode
    index = ReferenceIndex.build(train, ids=ids, labels=train_labels, threshold=Cosine(0.99))
    here = index.score(test, labels=test_labels, split="test")
    assert index.save(tmp_path / "idx") == tmp_path / "idx"
    saved = tmp_path / "idx"
    generation = json.loads((saved / "meta.json").read_text())["generation"]
    assert sorted(p.name for p in saved.iterdir()) == [".lock", generation, "meta.json"]
    assert sorted(p.name for p in (saved / generation).iterdir()) == [
        "cells.npz",
        "ids.npy",
        "labels.npy",
        "screen.npy",
        "transform.npz",
        "vectors.npy",
    ]
    np.save(tmp_path / "test.npy", test)
    np.save(tmp_path / "test_labels.npy", test_labels)
    script = (
        "import json, sys, numpy as np, neardup\n"
        "index = neardup.ReferenceIndex.load(sys.argv[1])\n"
        "test = np.load(sys.argv[2]); labels = np.load(sys.argv[3])\n"
        "leak = index.score(test, labels=labels, split='test')\n"
        "print(json.dumps({'leak': leak.to_dict(), 'mmap': type(index._vectors).__name__,\n"
        "                  'threshold': index.threshold.value}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, tmp_path / "idx", tmp_path / "test.npy",
         tmp_path / "test_labels.npy"],
        capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    there = json.loads(out.stdout)
    assert there["mmap"] == "memmap"
    assert there["threshold"] == index.threshold.value
    assert there["leak"] == json.loads(json.dumps(here.to_dict()))
    assert there["leak"]["nearest_ids"][0].startswith("img")
    loaded = ReferenceIndex.load(tmp_path / "idx")
    _same_leakage(loaded.score(test, labels=test_labels, split="test"), here)
    assert loaded.settings == index.settings and loaded.ids.dtype.kind == "U"


def test_incremental_batches_equal_their_concatenation(data):
    train, _, test, _, _ = data
    index = ReferenceIndex.build(train, threshold=Distance(0.15))
    ids = np.arange(len(test)) + 10_000
    whole = index.score(test, ids=ids)
    parts = [index.score(test[:200], ids=ids[:200]), index.score(test[200:], ids=ids[200:])]
    assert _pairs(*parts) == _pairs(whole)
    assert sum(p.count for p in parts) == whole.count and whole.count > 30
    assert parts[1].positions == [p - 200 for p in whole.positions if p >= 200]


@pytest.mark.parametrize(
    ("normalize", "reduce"), [("column", None), ("row", 16), ("column", 16), (None, 200)]
)
def test_transform_fitted_on_the_reference_round_trips(data, tmp_path, normalize, reduce):
    train, _, test, _, _ = data
    index = ReferenceIndex.build(train, normalize=normalize, reduce=reduce)
    here = index.score(test)
    loaded = ReferenceIndex.load(index.save(tmp_path / "idx"))
    _same_leakage(loaded.score(test), here)
    # the same transform, written out in numpy: PCA of train, then train's column norms
    x_train, x_test = train.astype(np.float64), test.astype(np.float64)
    if reduce is not None and reduce < 64:
        pca = neardup.PCA(reduce).fit(train)
        x_train, x_test = pca.transform(train), pca.transform(test)
        np.testing.assert_allclose(loaded._transform.reducer.components_, pca.components_)
    if normalize == "column":
        norms = np.linalg.norm(x_train, axis=0)
        norms[norms == 0] = 1.0  # digits has all-zero pixels: kept at zero
        x_train, x_test = x_train / norms, x_test / norms
    elif normalize == "row":
        x_train = x_train / np.linalg.norm(x_train, axis=1, keepdims=True)
        x_test = x_test / np.linalg.norm(x_test, axis=1, keepdims=True)
    engine = loaded._engine  # rows listed once, at home, are stored in cell order
    assert engine.in_cell_order and sorted(engine.members) == list(range(N_TRAIN))
    np.testing.assert_allclose(loaded._vectors, x_train[engine.members], rtol=1e-4, atol=1e-5)
    d = cdist(x_test, x_train)
    oracle = np.flatnonzero(d.min(1) <= index.threshold.value)
    assert sorted(here.positions) == oracle.tolist()
    assert set(range(297, 307)) <= set(here.positions)  # exact copies, whatever the transform
    assert index.settings["dim"] == (reduce if reduce is not None and reduce < 64 else 64)


def test_by_class_and_label_conflicts(data):
    train, train_labels, test, test_labels, src = data
    test_labels = test_labels.copy()
    test_labels[297] = (train_labels[src[0]] + 1) % 10  # an exact copy, relabelled
    index = ReferenceIndex.build(train, labels=train_labels, threshold=Distance(0.05))
    leak = index.score(test, labels=test_labels, split="test")
    assert leak.label_conflicts == [
        {
            "id": 297,
            "nearest_id": int(src[0]),
            "label": int(test_labels[297]),
            "nearest_label": int(train_labels[src[0]]),
            "distance": 0.0,
        }
    ]
    assert sum(c["count"] for c in leak.by_class.values()) == leak.count
    assert sum(c["total"] for c in leak.by_class.values()) == len(test)
    unlabelled = ReferenceIndex.build(train, threshold=Distance(0.05))
    assert unlabelled.score(test, labels=test_labels).label_conflicts == []


def test_properties_and_repr(data):
    train, *_ = data
    index = ReferenceIndex.build(train, reduce=8, threshold=Distance(0.1), reference="base")
    assert (index.size, index.dim, index.reference) == (N_TRAIN, 64, "base")
    assert index.settings["dim"] == 8 and index.settings["reduce"] == 8
    assert repr(index) == (
        "ReferenceIndex('base': 1,500 samples x 64 features, reduce=8, normalize='row', "
        "threshold Distance -> distance 0.1)"
    )
    assert index.score(train[:3] + 1e-4, split="test").reference == "base"
    assert index.ids.tolist() == list(range(N_TRAIN)) and index.labels is None


@pytest.fixture(scope="module")
def small_index(data):
    train, train_labels, *_ = data
    return ReferenceIndex.build(train[:200], labels=train_labels[:200], threshold=Distance(0.1))


@pytest.mark.parametrize(
    ("make", "options", "message"),
    [
        (lambda t: t[:, :32], {}, r"has 32 features per sample, but the reference index was "
         r"built from 64; score activations of the same layer, with the same pooling"),
        (lambda t: np.where(np.arange(len(t))[:, None] % 100 == 3, np.nan, t), {},
         r"4 row\(s\) with NaN or Inf values \(rows 3, 103, 203, 303\)"),
        (lambda t: t, {"split": "train"}, "other than the reference's"),
        (lambda t: t, {"k": 0}, r"k=0 is not valid: k .* must be an int >= 1"),
        (lambda t: t, {"search_k": -2}, r"search_k=-2 is not valid: .* >= 1, or -1"),
        (lambda t: t, {"search_k": 500}, r"search_k=500: annoy options, but this reference "
         r"index uses the cell engine.*backend=neardup.Annoy"),
        (lambda t: t, {"k": 5}, r"k=5: annoy options, but this reference index uses the cell"),
        (lambda t: t[:3], {"ids": [1, 1, 2]}, r"are not unique: \[1\]"),
        (lambda t: t[:3], {"labels": [1, 2]}, r"labels for split 'new' have shape \(2,\)"),
        (lambda t: t[0], {}, r"is 1-D with shape \(64,\)"),
    ],
)  # fmt: skip
def test_bad_score_input_is_explained(data, small_index, make, options, message):
    test = data[2]
    with pytest.raises(NeardupInputError, match=message):
        small_index.score(make(test), **options)


@pytest.mark.parametrize(
    ("args", "options", "message"),
    [
        ((slice(0, 1),), {}, "holds a single sample; a reference index needs at least 2"),
        ((slice(0, 50),), {"n_jobs": 0}, r"n_jobs=0 is not valid: .* from 1 to 1,024, or -1"),
        ((slice(0, 50),), {"n_trees": 0}, r"n_trees=0 is not valid: .* an int from 1"),
        ((slice(0, 50),), {"query_jobs": 0}, r"query_jobs=0 is not valid: query_jobs .* or -1"),
        ((slice(0, 50),), {"n_trees": 4}, r"n_trees is an option of the annoy backend, but "
         r"backend='auto' uses the cell engine; pass backend=neardup.Annoy\(n_trees=...\)"),
        ((slice(0, 50),), {"backend": Cells(device="cpu")}, r"Cells\(device=...\) is not "
         r"supported; a reference index is built and scored with numpy"),
        ((slice(0, 50),), {"backend": "fast"}, r"backend='fast' is not valid"),
        ((slice(0, 50),), {"reference": ""}, "reference='' is not valid: .* a non-empty string"),
        ((slice(0, 50),), {"normalize": "column", "threshold": Cosine(0.9)},
         "needs normalize='row'"),
        ((slice(0, 3),), {"ids": np.array([1, 2.5, 3], dtype=object)},
         r"ids for split 'train' hold float, int values; a saved reference index stores "
         r"ids as ints or strings only"),
        ((slice(0, 3),), {"labels": np.array([1, None, 2], dtype=object)},
         r"labels for split 'train' hold NoneType, int values"),
    ],
)  # fmt: skip
def test_bad_build_input_is_explained(data, args, options, message):
    train = data[0]
    with pytest.raises(NeardupInputError, match=message):
        ReferenceIndex.build(train[args[0]], **options)


def test_object_ids_of_one_type_are_converted(data):
    train = data[0][:20]
    ints = ReferenceIndex.build(train, ids=np.array(list(range(100, 120)), dtype=object))
    assert ints.ids.dtype == np.int64
    strs = ReferenceIndex.build(train, ids=np.array([f"s{i}" for i in range(20)], dtype=object))
    assert strs.ids.dtype.kind == "U"
    assert strs.score(train[:2], split="test").nearest_ids == ["s0", "s1"]


def test_load_and_save_errors_name_the_problem(data, tmp_path):
    index = ReferenceIndex.build(data[0][:200], labels=data[1][:200], threshold=Distance(0.1))
    with pytest.raises(NeardupInputError, match="no reference index at .*does not exist"):
        ReferenceIndex.load(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(NeardupInputError, match="is a file; a reference index is a directory"):
        ReferenceIndex.load(tmp_path / "file")
    (tmp_path / "empty").mkdir()
    with pytest.raises(NeardupInputError, match="not a neardup reference index: meta.json is"):
        ReferenceIndex.load(tmp_path / "empty")

    path = index.save(tmp_path / "idx")
    meta = json.loads((path / "meta.json").read_text())
    (path / "meta.json").write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(NeardupInputError, match="format version 99 .*reads format versions 1 to 5"):
        ReferenceIndex.load(path)
    (path / "meta.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(NeardupInputError, match="meta.json does not describe one"):
        ReferenceIndex.load(path)
    (path / "meta.json").write_text(json.dumps(meta))
    files = path / meta["generation"]
    (files / "labels.npy").unlink()
    with pytest.raises(NeardupInputError, match="incomplete .* labels.npy is missing"):
        ReferenceIndex.load(path)
    (files / "cells.npz").unlink()
    with pytest.raises(NeardupInputError, match="cells.npz is missing"):
        ReferenceIndex.load(path)

    with pytest.raises(NeardupInputError, match="the directory is not empty.*overwrite=True"):
        index.save(path)
    with pytest.raises(NeardupInputError, match="it is a file"):
        index.save(tmp_path / "file")
    index.save(path, overwrite=True)
    assert ReferenceIndex.load(path).size == 200
    files = path / json.loads((path / "meta.json").read_text())["generation"]
    (files / "vectors.npy").write_bytes(b"not numpy")
    with pytest.raises(NeardupInputError, match="is damaged: .*Save it again"):
        ReferenceIndex.load(path)


def test_saving_over_the_directory_it_was_loaded_from_keeps_it_usable(data, tmp_path):
    train, _, test, _, _ = data
    first = ReferenceIndex.build(train, threshold=Distance(0.1)).save(tmp_path / "idx")
    loaded = ReferenceIndex.load(first)
    before = loaded.score(test)
    ReferenceIndex.build(train[:100], threshold=Distance(0.2)).save(first, overwrite=True)
    _same_leakage(loaded.score(test), before)  # still reads the files it mapped
    loaded.save(first, overwrite=True)
    assert ReferenceIndex.load(first).size == N_TRAIN
    _same_leakage(ReferenceIndex.load(first).score(test), before)
    assert [p.name for p in first.rglob("*") if p.name.endswith(".tmp")] == []
    assert len([p for p in first.iterdir() if p.name.startswith("generation-")]) == 1


def test_format_1_flat_layout_still_loads_and_is_replaced_whole(data, tmp_path):
    train, _, test, _, _ = data
    index = ReferenceIndex.build(train[:300], threshold=Distance(0.1), backend="annoy")
    path = index.save(tmp_path / "idx")
    meta = json.loads((path / "meta.json").read_text())
    for f in (path / meta["generation"]).iterdir():  # the flat layout of format 1
        f.rename(path / f.name)
    (path / meta["generation"]).rmdir()
    meta = {k: v for k, v in meta.items() if k not in ("generation", "files")}
    (path / "meta.json").write_text(json.dumps({**meta, "format_version": 1}))
    old = ReferenceIndex.load(path)
    _same_leakage(old.score(test), index.score(test))
    index.save(path, overwrite=True)  # format 2 replaces it; the flat files are removed
    assert sorted(p.suffix for p in path.iterdir() if p.is_file()) == ["", ".json"]
    _same_leakage(ReferenceIndex.load(path).score(test), index.score(test))


# ------------------------------------------------------------------------------ formats, cells
FORMAT_2 = __import__("pathlib").Path(__file__).parent / "data" / "format2-annoy"


def _format_2_queries() -> tuple[np.ndarray, np.ndarray]:
    """The fixture's reference rows (regenerated) and queries: 20 near-copies, 40 fresh."""
    rng = np.random.default_rng(0)
    train = rng.normal(size=(300, 8)).astype(np.float32)
    queries = np.concatenate(
        [train[::15] + 1e-3, np.random.default_rng(5).normal(size=(40, 8))]
    ).astype(np.float32)
    return train, queries


def test_an_annoy_index_saved_by_the_previous_version_still_loads_and_scores(tmp_path):
    """tests/index/data/format2-annoy was written by neardup 0.1.0 before the cell engine
    (format 2: annoy, 300 x 8, string ids, labels, Distance(0.1), n_trees=2)."""
    import shutil

    path = shutil.copytree(FORMAT_2, tmp_path / "old")
    old = ReferenceIndex.load(path)
    assert old.settings["backend"] == "annoy" and old.settings["n_trees"] == 2
    train, queries = _format_2_queries()
    got = old.score(queries, split="test")
    assert dict(zip(got.positions, got.nearest_positions)) == _brute_force(train, queries, 0.1)
    assert sorted(got.nearest_ids) == [f"r{i:03d}" for i in range(0, 300, 15)]
    rebuilt = ReferenceIndex.build(train, ids=old.ids, labels=old.labels, threshold=Distance(0.1))
    _same_leakage(rebuilt.score(queries, split="test"), got)  # the cells agree
    with pytest.raises(NeardupInputError, match="search_k=5 is too small for k=10"):
        old.score(queries, search_k=5)
    old.save(path, overwrite=True)  # saved again: format 5, still annoy
    meta = json.loads((path / "meta.json").read_text())
    assert meta["format_version"] == 5 and meta["settings"]["backend"] == "annoy"
    _same_leakage(ReferenceIndex.load(path).score(queries, split="test"), got)


def _rewrite_cells(path, change) -> None:
    """Change ``cells.npz`` with ``change(arrays)`` and record its new digest in meta.json."""
    import hashlib

    meta = json.loads((path / "meta.json").read_text())
    target = path / meta["generation"] / "cells.npz"
    with np.load(target) as npz:
        arrays = {key: npz[key] for key in npz.files}
    change(arrays)
    with open(target, "wb") as fh:
        np.savez(fh, **arrays)
    meta["files"]["cells.npz"] = {
        "bytes": target.stat().st_size,
        "sha256": hashlib.sha256(target.read_bytes()).hexdigest(),
    }
    (path / "meta.json").write_text(json.dumps(meta))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda a: a["members"].__setitem__(0, 10**6), "listed rows outside the 1,500"),
        (lambda a: a.update(starts=a["starts"][:-1]), "cell bounds of the wrong shape"),
        (lambda a: a.update(centroids=a["centroids"][:, :5]), "cell centres of the wrong shape"),
        (lambda a: a.update(margin=np.float64(np.nan)), "an impossible margin"),
        (lambda a: a.update(members=a["members"].astype(np.float32)),
         "listed rows that are not integers"),
        (lambda a: a.pop("parent"), r"cells.npz cannot be read \('parent"),
        (lambda a: a["members"].__setitem__(0, a["members"][1]),
         "rows in cell order that are not each row once"),
    ],
)  # fmt: skip
def test_crafted_cells_are_refused(data, tmp_path, change, message):
    index = ReferenceIndex.build(data[0], threshold=Distance(0.1), backend=Cells(cell_size=64))
    path = index.save(tmp_path / "idx")
    _rewrite_cells(path, change)
    with pytest.raises(NeardupInputError, match=f"is damaged: (cells.npz holds )?{message}"):
        ReferenceIndex.load(path)
    # the file is read without pickle: a pickled object array is refused, not unpickled
    _rewrite_cells(path, lambda a: a.update(members=np.array([object()] * 3)))
    with pytest.raises(NeardupInputError, match="cells.npz cannot be read"):
        ReferenceIndex.load(path)


def test_cells_find_every_pair_of_wide_rows_and_batches_do_not_matter():
    """300 x 1,024 rows in many cells (projected routing): every query's nearest reference
    row within the threshold, as brute force, with the exact margin and the automatic one."""
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(8, 1024))
    train = (centres[rng.integers(0, 8, 600)] + rng.normal(size=(600, 1024))).astype(np.float32)
    test = np.concatenate([train[:60] + rng.normal(scale=0.05, size=(60, 1024)),
                           rng.normal(size=(40, 1024))]).astype(np.float32)  # fmt: skip
    oracle = _brute_force(train, test, 0.06)
    assert len(oracle) >= 50
    for margin in (0.5, None):
        index = ReferenceIndex.build(
            train, threshold=Distance(0.06), backend=Cells(cell_size=16, margin=margin)
        )
        assert index.settings["n_cells_used"] > 30
        whole = index.score(test)
        assert dict(zip(whole.positions, whole.nearest_positions)) == oracle
        ids = np.arange(100) + 1000
        parts = [index.score(test[:37], ids=ids[:37]), index.score(test[37:], ids=ids[37:])]
        assert _pairs(*parts) == _pairs(index.score(test, ids=ids))


def test_rows_listed_at_home_meet_every_query_within_the_whole_threshold():
    """The home listing's guarantee: queries routed with a margin of the whole threshold
    reach the home cell of every reference row within it (two-level partition; every query at
    0.99 t from a reference row in a random direction, so pairs cross boundaries)."""
    from neardup.index._home import home_cells
    from neardup.search import Rows, route_entries

    rng = np.random.default_rng(4)
    t = 0.3
    ref = rng.normal(size=(3000, 16)).astype(np.float32)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    step = rng.normal(size=(600, 16)).astype(np.float32)
    queries = ref[:600] + 0.99 * t * step / np.linalg.norm(step, axis=1, keepdims=True)
    partition = Cells(cell_size=16).fit(Rows.from_matrix(ref), seed=0)
    assert len(partition.coarse) > 1  # two levels
    home = home_cells(partition, ref)
    qi, rj = np.nonzero(cdist(queries, ref) <= t)
    missed = {}
    for multiple in (1.0, 0.05):
        row, cell, _, _ = route_entries(partition, queries, margin=multiple * t)
        reached = set(zip(row.tolist(), cell.tolist()))
        pairs = zip(qi.tolist(), home[rj].tolist())
        missed[multiple] = sum(pair not in reached for pair in pairs)
    assert missed[1.0] == 0
    assert missed[0.05] > 0  # a small margin does miss some: the check can fail


def test_coarse_cells_fitted_in_the_screen_projection_give_full_width_homes():
    """Coarse centres fitted through the screen's projection (``coarse_basis``) lie in its
    span, so a row's coarse cell found from its projected rows is its full-width one: the
    same homes as ``home_cells`` in full width; wide rows partitioned through their own
    projection ignore the basis."""
    from neardup.index._home import home_cells
    from neardup.index._products import ProjectedRows
    from neardup.search import Rows

    rng = np.random.default_rng(8)
    centres = rng.normal(size=(40, 64))
    x = (centres[rng.integers(0, 40, 6000)] + 0.5 * rng.normal(size=(6000, 64))).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    backend = Cells(cell_size=16)
    among = backend.fit_sample(*x.shape, seed=0)
    projected = ProjectedRows.fit(x, 16, seed=0, among=among)
    basis = projected.projection
    partition = backend.fit(Rows.from_matrix(x), seed=0, coarse_basis=basis)
    assert len(partition.coarse) > 1 and partition.projection is None
    np.testing.assert_allclose(partition.coarse @ basis @ basis.T, partition.coarse, atol=1e-5)
    plain = backend.fit(Rows.from_matrix(x), seed=0)
    assert not np.allclose(plain.coarse @ basis @ basis.T, plain.coarse, atol=1e-3)
    home = home_cells(partition, x, projected=projected)
    np.testing.assert_array_equal(home, home_cells(partition, x))
    wide = np.repeat(x, 5, axis=1)[:, :300]
    basis = ProjectedRows.fit(wide, 16, seed=0).projection
    through = backend.fit(Rows.from_matrix(wide), seed=0, coarse_basis=basis)
    assert through.projection is not None
    alone = backend.fit(Rows.from_matrix(wide), seed=0)
    np.testing.assert_array_equal(through.coarse, alone.coarse)


def test_the_projected_screen_finds_every_close_pair_exactly():
    """``ProjectedRows`` (the home margin's sampled pairs through a 16-dimension projection)
    finds the pairs ``close_pairs`` and brute force find, with the same distances: on rows
    whose variance the projection keeps, and on isotropic rows where its screen passes too
    many pairs and is redone in full width."""
    from neardup.index._products import ProjectedRows, close_pairs

    rng = np.random.default_rng(5)
    centres = rng.normal(size=(40, 64)).astype(np.float32)
    clustered = centres[rng.integers(0, 40, 4000)] + 0.02 * rng.normal(size=(4000, 64))
    for x, t in ((clustered.astype(np.float32), 0.4), (rng.normal(size=(4000, 64)), 10.0)):
        x = np.ascontiguousarray(x, dtype=np.float32)
        q = x[:50] + np.float32(0.01)
        listed = np.sort(rng.choice(len(x), 3000, replace=False))
        a, b, dist = ProjectedRows.fit(x, 16, seed=0).pairs(x, q, listed, t)
        ea, eb, edist = close_pairs(q, x[listed], t)
        qi, rj = np.nonzero(cdist(q, x[listed]) <= t - 1e-4)
        found = set(zip(a.tolist(), b.tolist()))
        assert found == set(zip(ea.tolist(), eb.tolist()))
        assert set(zip(qi.tolist(), rj.tolist())) <= found and len(found) > 50
        assert np.array_equal(dist[np.lexsort((b, a))], edist[np.lexsort((eb, ea))])


def test_unnormalized_rows_score_like_brute_force():
    """The score's screen bounds ``-2 q.r`` with each cell's smallest row norm: rows of very
    different norms (normalize=None) still give the nearest row within the threshold."""
    rng = np.random.default_rng(6)
    train = (rng.normal(size=(3000, 12)) * rng.uniform(0.1, 10, size=(3000, 1))).astype(np.float32)
    test = np.concatenate([train[:200] + 0.02, rng.normal(size=(100, 12))]).astype(np.float32)
    index = ReferenceIndex.build(
        train, threshold=Distance(0.05), normalize=None, backend=Cells(cell_size=32, margin=0.5)
    )
    got = index.score(test)
    d = cdist(test, train)
    expected = np.flatnonzero(d.min(axis=1) <= 0.05)
    assert sorted(got.positions) == expected.tolist()
    nearest = dict(zip(got.positions, got.nearest_positions))
    assert all(nearest[i] == int(np.argmin(d[i])) for i in expected)


def _drop_screen(path) -> None:
    """Rewrite a saved cells index as format 4 wrote it: no projected screen."""
    meta = json.loads((path / "meta.json").read_text())
    if "screen.npy" not in meta["files"]:
        return
    _rewrite_cells(path, lambda a: (a.pop("screen_projection"), a.pop("screen_largest")))
    meta = json.loads((path / "meta.json").read_text())
    (path / meta["generation"] / "screen.npy").unlink()
    del meta["files"]["screen.npy"]
    (path / "meta.json").write_text(json.dumps({**meta, "format_version": 4}))


def test_a_format_4_index_without_a_screen_loads_and_scores_alike(data, tmp_path):
    """Format 5 stores the rows listed at home through a 16-dimension projection
    (``screen.npy``, screened first when scored); a format 4 index has none and is screened
    in full width: the same leakage. Saved again, it is format 5 (still without a screen)."""
    train, _, test, _, _ = data
    index = ReferenceIndex.build(train, threshold=Distance(0.15), backend=Cells(cell_size=64))
    expected = index.score(test)
    path = index.save(tmp_path / "idx")
    meta = json.loads((path / "meta.json").read_text())
    assert meta["format_version"] == 5 and "screen.npy" in meta["files"]
    with np.load(path / meta["generation"] / "cells.npz") as npz:
        assert npz["screen_projection"].shape == (train.shape[1], 16)
    new = ReferenceIndex.load(path)
    assert new._engine.projected is not None
    _same_leakage(new.score(test), expected)
    _drop_screen(path)
    old = ReferenceIndex.load(path)
    assert old._engine.projected is None
    _same_leakage(old.score(test), expected)
    old.save(path, overwrite=True)
    meta = json.loads((path / "meta.json").read_text())
    assert meta["format_version"] == 5 and "screen.npy" not in meta["files"]
    _same_leakage(ReferenceIndex.load(path).score(test), expected)


def test_no_screen_where_the_projection_would_pass_most_pairs(tmp_path):
    """Isotropic rows at a threshold near their typical distance: a 16-dimension projection
    passes most in-cell pairs, so the index keeps no screen (scored in full width)."""
    rng = np.random.default_rng(7)
    train = rng.normal(size=(4000, 64)).astype(np.float32)
    test = np.concatenate([train[:50] + 0.01, rng.normal(size=(50, 64))]).astype(np.float32)
    index = ReferenceIndex.build(train, threshold=Distance(1.0), backend=Cells(cell_size=64))
    assert index._engine.projected is None
    meta = json.loads((index.save(tmp_path / "idx") / "meta.json").read_text())
    assert "screen.npy" not in meta["files"]
    a = train / np.linalg.norm(train, axis=1, keepdims=True)
    b = test / np.linalg.norm(test, axis=1, keepdims=True)
    got = index.score(test)
    assert set(range(50)) <= set(got.positions)  # the near-copies
    assert set(got.positions) <= set(np.flatnonzero(cdist(b, a).min(axis=1) <= 1.0 + 1e-5))


def test_a_damaged_screen_is_refused(data, tmp_path):
    """A screen of the wrong shape, a projection of the wrong width, or a missing screen
    file named in meta.json are refused with a message naming the file."""
    train, _, _, _, _ = data
    index = ReferenceIndex.build(train, threshold=Distance(0.15), backend=Cells(cell_size=64))
    path = index.save(tmp_path / "idx")
    meta = json.loads((path / "meta.json").read_text())
    screen = path / meta["generation"] / "screen.npy"
    rows = np.load(screen)
    np.save(screen, rows[:, :-1])  # one column short: its size no longer matches meta.json
    meta["files"]["screen.npy"]["bytes"] = screen.stat().st_size
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(NeardupInputError, match="screen.npy does not match the reference rows"):
        ReferenceIndex.load(path)
    np.save(screen, rows)
    meta["files"]["screen.npy"]["bytes"] = screen.stat().st_size
    (path / "meta.json").write_text(json.dumps(meta))
    ReferenceIndex.load(path)  # whole again
    _rewrite_cells(path, lambda a: a.update(screen_projection=a["screen_projection"][:-1]))
    with pytest.raises(NeardupInputError, match="screen projection of the wrong shape"):
        ReferenceIndex.load(path)
    screen.unlink()
    with pytest.raises(NeardupInputError, match="screen.npy"):
        ReferenceIndex.load(path)


def test_a_format_3_cells_index_still_loads_and_scores_as_before(data, tmp_path):
    """Format 3 stored the reference rows in row order and listed them in their cells (and,
    within the margin, in the neighbouring ones); format 4 stores rows listed once in cell
    order. Both load and score alike; saving a format 3 index again writes format 5."""
    train, _, test, _, _ = data
    for backend in (Cells(cell_size=64, margin=0.3), Cells(cell_size=64)):
        index = ReferenceIndex.build(train, threshold=Distance(0.15), backend=backend)
        expected = index.score(test)
        path = index.save(tmp_path / "idx", overwrite=True)
        assert json.loads((path / "meta.json").read_text())["format_version"] == 5
        _drop_screen(path)  # formats 3 and 4 had none
        meta = json.loads((path / "meta.json").read_text())
        folder = path / meta["generation"]
        with np.load(folder / "cells.npz") as npz:
            members, in_cell_order = npz["members"], "in_cell_order" in npz.files
        assert in_cell_order == (backend.margin is None)  # listed once: stored in cell order
        if in_cell_order:  # rewrite it as format 3 did: rows in row order, no flag
            np.save(folder / "vectors.npy", np.load(folder / "vectors.npy")[np.argsort(members)])
            _rewrite_cells(path, lambda a: a.pop("in_cell_order"))
            meta = json.loads((path / "meta.json").read_text())
            meta["files"]["vectors.npy"]["sha256"] = None
        (path / "meta.json").write_text(json.dumps({**meta, "format_version": 3}))
        old = ReferenceIndex.load(path)
        assert not old._engine.in_cell_order
        _same_leakage(old.score(test), expected)
        old.save(path, overwrite=True)
        _same_leakage(ReferenceIndex.load(path).score(test), expected)


FASHION = __import__("pathlib").Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not FASHION.exists(), reason="make system-deps installs Fashion-MNIST")
def test_the_automatic_margin_finds_every_close_pair_of_real_pixels():
    """Fashion-MNIST pixels (784 features, partitioned through a projection): close pairs are
    sparse there (29 of 4,000 test images within 0.12 of 20,000 train images), so the margin is
    judged on the sampled pairs within twice the threshold; with those within it alone it chose
    0.15 and missed test images at 0.12 and 0.15."""
    import gzip

    def images(name: str, n: int) -> np.ndarray:
        with gzip.open(FASHION / name) as fh:
            raw = np.frombuffer(fh.read(16 + n * 784), np.uint8, offset=16)
        return raw.reshape(n, 784).astype(np.float32) / 255

    train = images("train-images-idx3-ubyte.gz", 20_000)
    test = images("t10k-images-idx3-ubyte.gz", 4_000)
    a = train / np.linalg.norm(train, axis=1, keepdims=True)
    b = test / np.linalg.norm(test, axis=1, keepdims=True)
    nearest = np.sqrt(np.maximum(2 - 2 * (b @ a.T).max(axis=1), 0))
    for t in (0.12, 0.15):
        index = ReferenceIndex.build(train, threshold=Distance(t))
        truth = set(np.flatnonzero(nearest <= t - 1e-5).tolist())
        assert len(truth) >= 25
        assert truth <= set(index.score(test).positions), index.settings["margin_used"]


def test_a_huge_threshold_keeps_the_margin_sample_bounded(data):
    """With every row within the threshold of every other, the margin's sampled pairs are a
    seeded subset (64 per sampled row), not all of them; the index still flags every query."""
    train, _, test, _, _ = data
    index = ReferenceIndex.build(train, threshold=Distance(1.9), backend=Cells(cell_size=16))
    assert index.settings["entries_per_row"] == 1.0
    assert index.score(test).count == len(test)
    assert index.settings["margin_used"] >= 0.15


def test_screen_block_matches_dense_screen(monkeypatch):
    """One cell's screen (a column of bounds) passes the positions ``dense_screen`` passes,
    in one product and when the product is cut into blocks."""
    from neardup.index import _products

    rng = np.random.default_rng(4)
    left = rng.normal(size=(300, 17)).astype(np.float32)
    right = rng.normal(size=(500, 17)).astype(np.float32)
    limit = rng.normal(scale=3.0, size=300).astype(np.float32) - 4.0
    expected = _products.dense_screen(left, limit, right)
    assert 0 < len(expected) < 300 * 500
    np.testing.assert_array_equal(_products.screen_block(left, limit[:, None], right), expected)
    monkeypatch.setattr(_products, "_PRODUCT_ENTRIES", 4096)
    np.testing.assert_array_equal(_products.screen_block(left, limit[:, None], right), expected)


@pytest.mark.parametrize("n", [0, 1, 7, 3000])
def test_distinct_values_match_numpy_unique(n):
    """The build's ``np.unique(..., return_inverse=True)`` without ``np.unique`` (whose first
    call imports ``numpy.ma``): the same distinct values and positions."""
    from neardup.index._home import distinct_values

    values = np.random.default_rng(n).integers(0, 40, n)
    distinct, inverse = distinct_values(values)
    expected, expected_inverse = np.unique(values, return_inverse=True)
    np.testing.assert_array_equal(distinct, expected)
    np.testing.assert_array_equal(inverse, expected_inverse)


def test_entry_rows_served_by_windows_match_one_gather(monkeypatch):
    """The scored entries' projected rows, gathered a window at a time, are the rows of one
    gather of every entry, cell after cell (windows smaller and larger than a cell)."""
    from neardup.index import _cell_engine

    rng = np.random.default_rng(2)
    source = rng.normal(size=(50, 5)).astype(np.float32)
    index = rng.integers(0, 50, 400)
    bounds = np.r_[0, np.sort(rng.choice(np.arange(1, 400), 30, replace=False)), 400]
    for window in (1, 7, 64, 1000):
        monkeypatch.setattr(_cell_engine, "_ENTRY_WINDOW", window)
        entries = _cell_engine._EntryRows(source, index)
        for lo, hi in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
            np.testing.assert_array_equal(entries.rows(lo, hi), source[index[lo:hi]])


@pytest.mark.parametrize("c", [1, 31, 32, 62, 63, 64, 70])
def test_padded_nearest_centres_match_plain_argmin(c):
    """Home cells' nearest centres, scored with the centres padded to 64 columns: the argmin
    of the unpadded scores, ties (repeated centres) to the lowest, rows whose every real score
    overflows to inf as unpadded (index 0), and tails of every size."""
    from neardup.index import _home

    rng = np.random.default_rng(c)
    centres = -np.abs(rng.normal(size=(c, 8))).astype(np.float32)
    centres[c // 2] = centres[0]  # a tie: the lowest index wins
    x = np.concatenate([rng.normal(size=(9000, 8)), centres[[0, c - 1]]]).astype(np.float32)
    x[5] = 1e38  # every score overflows to inf (the centres are negative)
    minus_twice = centres * np.float32(-2.0)
    sq = _home.squared_norms(centres)
    with np.errstate(over="ignore", invalid="ignore"):
        expected = np.argmin(x @ minus_twice.T + sq, axis=1)
        got = _home._nearest(x, minus_twice, sq)
    np.testing.assert_array_equal(got, expected)
    assert got[5] == 0 and got[-2] == 0


def test_mapped_empty_is_a_writable_array_with_or_without_map_populate(monkeypatch):
    """The build's transformed rows: a writable C-contiguous array of the shape and dtype
    asked for, in pages mapped in at once, or in a plain anonymous map where the system has
    no ``MAP_POPULATE``."""
    import mmap

    from neardup import _mapped

    for populate in (True, False):
        if not populate:
            monkeypatch.delattr(mmap, "MAP_POPULATE", raising=False)
        out = _mapped.mapped_empty((1000, 3), np.float64)
        assert out.shape == (1000, 3) and out.dtype == np.float64
        assert out.flags.c_contiguous and out.flags.writeable
        out[...] = np.arange(3000).reshape(1000, 3)
        assert out.sum() == 3000 * 2999 / 2
        assert _mapped.mapped_empty((0, 64)).shape == (0, 64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_reference_rows_with_nan_or_inf_are_named(dtype, bad):
    """float32 rows normalized by their norms are refused on those norms (no pass of their
    own), others before the transform: the same message, naming rows in several blocks."""
    rows = np.random.default_rng(3).normal(size=(140_000, 8)).astype(dtype)
    rows[[3, 70_000, 139_999], 5] = bad
    with pytest.raises(NeardupInputError, match=r"reference 'train' has 3 row\(s\) with NaN or "
                       r"Inf values \(rows 3, 70000, 139999\)"):  # fmt: skip
        ReferenceIndex.build(rows, threshold=Distance(0.1))


def test_queries_reach_coarse_cells_through_the_screen_only_when_its_span_holds_them():
    """Coarse centers fitted through the screen's projection route the queries' coarse level
    through it (the same leaked rows as in full width); centers off its span (an index built
    before the coarse basis) are routed in full width."""
    rng = np.random.default_rng(8)
    centers = rng.normal(size=(60, 64)).astype(np.float32)
    train = centers[rng.integers(0, 60, 6000)] + 0.5 * rng.normal(size=(6000, 64))
    train = train.astype(np.float32)
    test = np.concatenate([train[:300] + np.float32(0.002), rng.normal(size=(300, 64))])
    test = test.astype(np.float32)
    index = ReferenceIndex.build(train, threshold=Distance(0.1), backend=Cells(cell_size=32))
    engine = index._engine
    assert engine.projected is not None and len(engine.partition.coarse) > 1
    assert engine._coarse_in_span()
    through = index.score(test)
    assert through.count >= 300
    engine._in_span = False
    _same_leakage(index.score(test), through)
    engine.partition.coarse[0] += np.float32(0.01)
    engine._in_span = None
    assert not engine._coarse_in_span()
