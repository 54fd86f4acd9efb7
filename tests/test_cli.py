"""The command line, run as a real subprocess: on activations (.npy/.npz), on folders of
image files (real digits written as PNG and JPEG, in class subfolders) and on text files
(pydoc sentences)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image


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


# ------------------------------------------------------- samples: image folders, text files
@pytest.fixture(scope="module")
def image_folders(tmp_path_factory, digits):
    """Digits as files: train/<label>/NNNN.png; test/<label>/NNNN.jpg (colour JPEG of grey
    pictures, 4x upscaled like a photo folder), 12 of them re-lit or noisy copies of train
    images. Returns the folder and ``{test id: train id}`` of the planted copies."""
    images, labels = digits  # float32 in [0, 1]
    pixels = np.rint(images * 255).astype(np.uint8)
    rng = np.random.default_rng(3)
    root = tmp_path_factory.mktemp("folders")
    train_ids = {}
    for i in range(1400):
        path = root / "train" / str(labels[i]) / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels[i]).save(path)
        train_ids[i] = f"{labels[i]}/{i:04d}.png"
    sources = rng.choice(1400, 12, replace=False)
    planted = {}
    for i in range(1400, len(pixels)):
        picture, label = pixels[i], labels[i]
        if i - 1400 < len(sources):
            source = int(sources[i - 1400])
            picture, label = pixels[source], labels[source]
            if i % 2:
                picture = np.rint(picture * 0.85).astype(np.uint8)
            else:
                noisy = picture + rng.normal(0, 6, picture.shape)
                picture = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
            planted[f"{label}/{i:04d}.jpg"] = train_ids[source]
        path = root / "test" / str(label) / f"{i:04d}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        big = Image.fromarray(picture).convert("RGB").resize((32, 32), Image.NEAREST)
        big.save(path, quality=95)
    (root / "test" / "notes.txt").write_text("not an image: skipped")
    return root, planted


def test_scan_image_folders_finds_the_copies_by_file_name(image_folders):
    root, planted = image_folders
    out = _neardup(
        "scan", "--split", "train=train", "--split", "test=test", "--json", "r.json",
        "--html", "r.html", cwd=root,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert "reading split 'train'" in out.stderr  # progress while files are read
    data = json.loads((root / "r.json").read_text())
    leak = data["leakage"]["test"]
    found = dict(zip(leak["ids"], leak["nearest_ids"]))
    assert {k: found.get(k) for k in planted} == planted  # each copy with its own source
    assert len(found) <= len(planted) + 1  # at most one natural look-alike beside them
    # grey pictures saved as colour JPEG are analysed as grey: no colour views
    assert "view image:aligned" in out.stdout and "image-luma" not in out.stdout
    # class subfolders are the labels; ids are paths, shown in the table
    assert leak["label_conflicts"] == []
    assert re.search(r"test +\d/\d{4}\.jpg +train:\d/\d{4}\.png", out.stdout), out.stdout
    page = (root / "r.html").read_text()
    assert page.count("data:image/png") >= 2 * len(planted)  # both sides of each leaked pair
    assert "HTML report: r.html" in out.stdout


def test_scan_text_files_finds_edited_sentences_by_line_number(tmp_path):
    import pydoc_data.topics as topics

    text = re.sub(r"\s+", " ", " ".join(topics.topics.values()))
    sentences = list(
        dict.fromkeys(s for s in re.split(r"(?<=[.!?])\s+", text) if 8 <= len(s.split()) <= 30)
    )[:1200]
    train, test = sentences[:1000], sentences[1000:]
    expected = {}  # test line -> train line (1-based; the test file has a blank line
    for n, source in enumerate(range(0, 200, 20)):  # between sentences: k is on line 2k + 1)
        edited = train[source].lower() if n % 2 else re.sub(r"[^\w\s]", "", train[source])
        test[n * 7] = edited
        expected[2 * n * 7 + 1] = source + 1
    (tmp_path / "train.txt").write_text("\n".join(train) + "\n")
    (tmp_path / "test.txt").write_text("\n\n".join(test) + "\n")  # blank lines: skipped
    out = _neardup(
        "scan", "--split", "train=train.txt", "--split", "test=test.txt", "--json", "-",
        "--quiet", cwd=tmp_path,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    leak = json.loads(out.stdout)["leakage"]["test"]
    found = dict(zip(leak["ids"], leak["nearest_ids"]))
    assert {line: found.get(line) for line in expected} == expected


def test_sixteen_bit_and_palette_images_are_read_without_clipping(tmp_path):
    """A 16-bit grey PNG keeps its gradient (Pillow's own conversion clips it to white);
    palette and RGBA images are read as colour; every image shrinks to 32 px at most."""
    from neardup._sample_files import read_image_folder

    ramp = (np.arange(100 * 80).reshape(100, 80) * 8).astype(np.uint16)
    (tmp_path / "a").mkdir()
    Image.fromarray(ramp).save(tmp_path / "a" / "wide.png")
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).convert("P").save(tmp_path / "a" / "p.gif")
    Image.fromarray(np.full((5, 7, 4), 200, np.uint8)).save(tmp_path / "a" / "rgba.png")
    folder = read_image_folder(str(tmp_path), "split 'x'")
    assert folder.ids == ["a/p.gif", "a/rgba.png", "a/wide.png"] and folder.labels == ["a"] * 3
    wide = folder.images[2]
    assert wide.shape == (32, 26) and wide.min() < 10 and wide.max() > 245
    assert len(np.unique(wide)) > 50  # a gradient, not a clipped white image
    assert folder.images[0].shape == (9, 9, 3) and folder.images[1].shape == (5, 7, 3)


@pytest.mark.parametrize(
    ("setup", "args", "message"),
    [
        (lambda d: (d / "empty").mkdir(), ["--split", "train=empty"], "holds no image files"),
        (
            lambda d: ((d / "a").mkdir(), (d / "a" / "x.png").write_bytes(b"not a png")),
            ["--split", "train=a"],
            "cannot read image",
        ),
        (
            lambda d: ((d / "b").mkdir(), np.save(d / "x.npy", np.zeros((4, 3)))),
            ["--split", "train=b", "--split", "test=x.npy"],
            "every split must be of one kind",
        ),
        (
            lambda d: (d / "t.txt").write_text("\n \n"),
            ["--split", "train=t.txt"],
            "holds no text",
        ),
        (
            lambda d: (d / "t.txt").write_bytes(b"\xff\xfe caf\xe9"),
            ["--split", "train=t.txt"],
            "is not UTF-8 text",
        ),
        (
            lambda d: (d / "t.txt").write_text("one\ntwo\n"),
            ["--split", "train=t.txt", "--labels", "train=t.txt"],
            "take no --labels",
        ),
    ],
    ids=["empty-folder", "broken-image", "mixed-kinds", "blank-text", "not-utf8", "labels"],
)
def test_sample_files_bad_input_exits_2_with_a_message(tmp_path, setup, args, message):
    setup(tmp_path)
    out = _neardup("scan", *args, "--quiet", cwd=tmp_path)
    assert out.returncode == 2, out.stderr
    assert message in out.stderr
    assert "Traceback" not in out.stderr
