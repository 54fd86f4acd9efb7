"""``neardup scan`` on samples themselves, run as a real subprocess: folders of image files
(real digits written as PNG and JPEG, in class subfolders) and text files (pydoc sentences)."""

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
        timeout=300,
    )


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
    palette and RGBA images are read as colour; every image shrinks to 64 px at most."""
    from neardup._sample_files import read_image_folder

    ramp = (np.arange(100 * 80).reshape(100, 80) * 8).astype(np.uint16)
    (tmp_path / "a").mkdir()
    Image.fromarray(ramp).save(tmp_path / "a" / "wide.png")
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).convert("P").save(tmp_path / "a" / "p.gif")
    Image.fromarray(np.full((5, 7, 4), 200, np.uint8)).save(tmp_path / "a" / "rgba.png")
    folder = read_image_folder(str(tmp_path), "split 'x'")
    assert folder.ids == ["a/p.gif", "a/rgba.png", "a/wide.png"] and folder.labels == ["a"] * 3
    wide = folder.images[2]
    assert wide.shape == (64, 51) and wide.min() < 10 and wide.max() > 245
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
