"""The HTML report: rendered for real digits images and real text, opened in headless Chromium.

Chromium is required (`make test` installs Debian's ``chromium`` when missing): a missing browser
fails these tests instead of skipping them. Each browser test loads a copy of the report with a
small probe script added to ``<head>`` (the report itself has no script): it records every
error event (a broken inline PNG fires one), each image's decoded width and the number of
``<script>`` elements, into ``<body>`` attributes that ``--dump-dom`` prints.
"""

from __future__ import annotations

import inspect
import io
import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

import neardup
from neardup import DuplicateSet, DuplicatesResult, Leakage, NeardupInputError, ResolvedThreshold
from neardup.report import encode_png, to_image_array

NEARDUP = Path(sys.executable).with_name("neardup")

_PROBE = """<script>
window.__errors = [];
window.addEventListener("error", function (e) {
  window.__errors.push(e.message || (e.target && e.target.tagName) || "error");
}, true);
window.addEventListener("load", function () {
  var images = [].slice.call(document.images), body = document.body;
  body.setAttribute("data-images", images.length);
  body.setAttribute("data-broken", images.filter(function (i) {
    return !i.complete || i.naturalWidth === 0; }).length);
  body.setAttribute("data-widths", Array.from(new Set(images.map(function (i) {
    return i.naturalWidth; }))).sort().join(","));
  body.setAttribute("data-scripts", document.scripts.length);
  var box = document.getElementById("only-spanning");
  if (box) {  // the CSS-only filter: tick it and count the sets still displayed
    box.checked = true;
    body.setAttribute("data-filtered", [].filter.call(document.querySelectorAll("section.set"),
      function (s) { return getComputedStyle(s).display !== "none"; }).length);
    box.checked = false;
  }
  body.setAttribute("data-errors", window.__errors.join("|"));
  body.setAttribute("data-loaded", "1");
});
</script>"""


# -- helpers ---------------------------------------------------------------------------------
class _Dom(HTMLParser):
    """Counts the report's elements in Chromium's serialised DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.body: dict[str, str] = {}
        self.sets = self.spanning = self.pairs = self.conflicts = self.scripts = 0
        self.texts: list[str] = []
        self._in_text = 0

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "body":
            self.body = {k: v or "" for k, v in attrs}
        if tag == "script":
            self.scripts += 1
        if tag == "section" and "set" in classes:
            self.sets += 1
            self.spanning += "spans" in classes
        if tag == "div" and "pair" in classes:
            self.pairs += 1
            self.conflicts += "conflict" in classes
        if tag == "div" and "text" in classes:
            self._in_text += 1
            self.texts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag == "div" and self._in_text:
            self._in_text -= 1

    def handle_data(self, data: str) -> None:
        if self._in_text:
            self.texts[-1] += data


def _open_in_chromium(report: Path, workdir: Path) -> tuple[_Dom, Path]:
    """Load ``report`` (plus the probe) in headless Chromium; return its DOM and a screenshot."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.fail(
            "chromium is not installed: `apt-get install -y chromium` (`make system-deps` does it)"
        )
    probed = workdir / f"{report.stem}-probed.html"
    probed.write_text(report.read_text(encoding="utf-8").replace("<head>", "<head>" + _PROBE, 1))
    shot = workdir / f"{report.stem}.png"
    proc = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={workdir / 'chromium-profile'}",
            "--window-size=1200,2000",
            f"--screenshot={shot}",
            "--dump-dom",
            probed.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = _Dom()
    dom.feed(proc.stdout)
    assert dom.body.get("data-loaded") == "1", "the page's load event never fired"
    assert dom.body["data-errors"] == "", f"errors while loading: {dom.body['data-errors']}"
    assert dom.body["data-broken"] == "0", "some inline thumbnails did not decode"
    assert shot.stat().st_size > 10_000, "the screenshot is (nearly) blank"
    return dom, shot


def _assert_screenshot_has_content(shot: Path) -> None:
    from PIL import Image

    with Image.open(shot) as img:
        assert img.size == (1200, 2000)
        colors = img.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colors is None or len(colors) > 50, "the screenshot shows almost nothing"


def _assert_offline(text: str) -> None:
    """No resource from elsewhere: the page must open without a network."""
    for needle in ('src="http', "src='http", 'href="http', "url(http", "@import", "<link"):
        assert needle not in text, needle


# -- fixtures --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_split(digits):
    """Real digits: 1,400 train / 397 test, 20 test images replaced by noisy training copies,
    one of them with a wrong label (a label conflict)."""
    images, labels = digits
    rng = np.random.default_rng(0)
    train, test = images[:1400], images[1400:].copy()
    y_train, y_test = labels[:1400], labels[1400:].copy()
    source = rng.choice(len(train), 20, replace=False)
    noise = rng.normal(0, 0.02, (20, 8, 8)).astype(np.float32)
    test[:20] = np.clip(train[source] + noise, 0, 1)
    y_test[:20] = y_train[source]
    y_test[0] = (y_test[0] + 1) % 10
    return {"train": train, "test": test}, {"train": y_train, "test": y_test}


@pytest.fixture(scope="module")
def digits_result(digits_split):
    images, labels = digits_split
    return neardup.find_duplicates(images, labels=labels)


def _stdlib_sentences() -> list[str]:
    """Real English text: the first docstring line of public functions of a few stdlib modules."""
    import collections
    import json as json_module
    import os
    import re
    import shutil as shutil_module
    import string
    import textwrap

    seen: dict[str, None] = {}
    for module in (os, re, json_module, shutil_module, collections, textwrap, string):
        for name, obj in sorted(vars(module).items()):
            doc = inspect.getdoc(obj) if not name.startswith("_") else None
            line = doc.strip().splitlines()[0] if doc else ""
            if len(line) > 25 and "\t" not in line:
                seen.setdefault(line, None)
    return list(seen)


@pytest.fixture(scope="module")
def text_case():
    """Real sentences with planted near-duplicates (case/punctuation edits) and hostile strings,
    embedded with character n-gram hashing (a real text featurisation, no model download)."""
    from sklearn.feature_extraction.text import HashingVectorizer

    sentences = _stdlib_sentences()
    assert len(sentences) > 150
    train, test = sentences[:120], sentences[120:150]
    test[:5] = [s.upper().rstrip(".") + "!" for s in train[:5]]  # near-duplicates of train
    hostile = "<script>alert('xss')</script> & friends"
    train[10] = hostile
    test[5] = hostile + "."
    vectorizer = HashingVectorizer(analyzer="char_wb", ngram_range=(2, 4), n_features=2048)
    features = {
        s: vectorizer.transform([t.lower() for t in v]).toarray()
        for s, v in (("train", train), ("test <b>", test))
    }
    labels = {
        "train": ["<i>doc</i>"] * len(train),
        "test <b>": ["<i>doc</i>"] * len(test),
    }
    result = neardup.find_duplicates(
        features,
        labels=labels,
        reference="train",
        threshold=neardup.Cosine(0.9),
        layer="<img src=x onerror=alert(1)>",
    )
    return result, {"train": train, "test <b>": test}, hostile


# -- browser tests ---------------------------------------------------------------------------
def test_digits_report_in_chromium(digits_result, digits_split, tmp_path):
    images, _ = digits_split
    result = digits_result
    leak = result.leakage["test"]
    assert leak.count >= 20 and len(result.clusters) >= 20 and leak.label_conflicts

    report = tmp_path / "digits.html"
    text = result.to_html(report, samples=images)
    assert report.read_text(encoding="utf-8") == text
    _assert_offline(text)
    dom, shot = _open_in_chromium(report, tmp_path)

    assert dom.sets == len(result.clusters)
    assert dom.spanning == sum(c.spans_splits for c in result.clusters)
    assert dom.pairs == leak.count
    assert dom.conflicts == len(leak.label_conflicts)
    members = sum(min(c.size, 8 + 40) for c in result.clusters)
    assert int(dom.body["data-images"]) == members + 2 * leak.count
    assert dom.body["data-widths"] == "8", "8x8 digits must decode as 8-pixel-wide PNGs"
    assert dom.body["data-scripts"] == "1", "the report itself must not need a script"
    _assert_screenshot_has_content(shot)
    # the charts: histogram with the threshold line, class bars before/after per split
    assert text.count('class="threshold"') == 1
    assert text.count("samples per class before and after") == len(result.split_sizes)


def test_text_report_escapes_everything(text_case, tmp_path):
    result, texts, hostile = text_case
    assert result.leakage["test <b>"].count >= 5
    report = tmp_path / "text.html"
    text = result.to_html(report, samples=texts, title="<u>title</u>")
    for raw in ("<script>alert", "<img src=x", "<i>doc</i>", "test <b>", "<u>title"):
        assert raw not in text, f"{raw!r} reached the page unescaped"
    assert "&lt;script&gt;alert(&#x27;xss&#x27;)&lt;/script&gt;" in text
    dom, _ = _open_in_chromium(report, tmp_path)
    assert dom.body["data-scripts"] == "1", "a sample injected a <script> element"
    assert dom.body["data-images"] == "0", "the layer name injected an <img> element"
    assert any(hostile in shown for shown in dom.texts), "the <script> sample is not shown as text"
    assert dom.sets == len(result.clusters) > dom.spanning > 0
    assert dom.body["data-filtered"] == str(dom.spanning), "the span-splits filter is broken"
    assert dom.pairs == result.leakage["test <b>"].count


# -- limits and size -------------------------------------------------------------------------
def _million_sample_result(rng: np.random.Generator) -> DuplicatesResult:
    """A result shaped like a 1M-sample run: 60k duplicate sets, 40k leaked, 1,000 classes."""
    sizes = {"train": 900_000, "test": 100_000}
    classes = list(range(1000))
    clusters = []
    for i in range(60_000):
        n = 2 + int(rng.integers(0, 4)) if i % 500 else 120
        splits = ["train"] * (n - 1) + ["test" if i % 3 == 0 else "train"]
        positions = rng.integers(0, 100_000, n).tolist()
        clusters.append(
            DuplicateSet(
                ids=[f"img-{s}-{p}" for s, p in zip(splits, positions)],
                splits=splits,
                positions=positions,
                labels=rng.integers(0, 1000, n).tolist(),
                mean=0.001 * i,
                std=0.0,
            )
        )
    leaked = 40_000
    leakage = Leakage(
        split="test",
        reference="train",
        ids=[f"img-test-{p}" for p in range(leaked)],
        nearest_ids=[f"img-train-{p}" for p in range(leaked)],
        distances=np.sort(rng.random(leaked).astype(np.float32)),
        total=100_000,
        positions=list(range(leaked)),
        nearest_positions=list(range(leaked)),
        by_class={c: {"count": 40, "total": 100, "fraction": 0.4} for c in classes},
        label_conflicts=[],
    )
    counts = {s: {c: n // 1000 for c in classes} for s, n in sizes.items()}
    effective = {s: {c: n // 1000 - 7 for c in classes} for s, n in sizes.items()}
    return DuplicatesResult(
        split_sizes=sizes,
        reference="train",
        threshold=ResolvedThreshold("Relative", {"ratio": 0.2}, 0.05),
        clusters=clusters,
        leakage={"test": leakage},
        class_counts=counts,
        effective_class_counts=effective,
        histogram={
            "edges": np.linspace(0, 1, 61).tolist(),
            "within": rng.integers(0, 10**5, 60).tolist(),
            "cross": rng.integers(0, 10**4, 60).tolist(),
        },
        settings={"normalize": "row", "k": 10, "backend": "annoy", "dim": 512},
    )


def test_million_sample_result_renders_a_small_page(tmp_path):
    rng = np.random.default_rng(1)
    result = _million_sample_result(rng)
    assert result.num_samples == 1_000_000

    def noisy_rgb(split, sample_id):  # incompressible 96x96 RGB photos: the worst case
        return rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)

    report = tmp_path / "large.html"
    text = result.to_html(report, samples=noisy_rgb, max_sets=150, max_pairs=100)
    size = report.stat().st_size
    assert size < 5_000_000, f"{size:,} bytes"
    dom = _Dom()
    dom.feed(text)
    assert (dom.sets, dom.pairs) == (150, 100)
    assert "59,850 more sets not shown" in text
    assert "39,900 more leaked test samples not shown" in text
    assert "thumbnails left out (thumbnail_budget reached)" in text
    assert "960 more not shown" in text  # class chart keeps 40 of 1,000 classes
    plain = result.to_html(tmp_path / "plain.html")
    assert len(plain.encode()) < 1_000_000
    _assert_offline(text)


def test_large_set_is_collapsed(digits_result, digits_split):
    images, _ = digits_split
    big = DuplicateSet(
        ids=list(range(100)),
        splits=["train"] * 100,
        positions=list(range(100)),
        labels=[1] * 100,
        mean=0.0,
        std=0.0,
    )
    result = DuplicatesResult(**{**vars(digits_result), "clusters": [big]})
    text = result.to_html(None, samples=images, max_members=5)
    first, _, rest = text.partition('<details class="rest">')
    assert first.count('class="member"') - 2 * result.leakage["test"].count == 5
    assert "<summary>40 more members</summary>" in rest
    assert "55 more members not shown" in rest


# -- thumbnails ------------------------------------------------------------------------------
def _decode(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)))


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (np.arange(12, dtype=np.uint8).reshape(3, 4) * 20, np.arange(12).reshape(3, 4) * 20),
        (np.ones((2, 3, 3), np.uint8) * [[[255, 0, 10]]], np.ones((2, 3, 3)) * [[[255, 0, 10]]]),
        (np.full((3, 2, 2), 0.5, np.float32), np.full((2, 2, 3), 128)),  # CHW float in [0, 1]
        (np.full((2, 2, 4), 200, np.uint8), np.full((2, 2, 4), 200)),  # RGBA
        (np.array([[-1.0, 1.0]]), np.array([[0, 255]])),  # [-1, 1]
        (np.array([[0, 1000]], np.int32), np.array([[0, 255]])),  # any range: min-max
        (np.eye(2, dtype=bool), np.eye(2) * 255),
        (np.arange(64, dtype=np.uint8), np.arange(64).reshape(8, 8)),  # flat square
        (np.ones((1, 1, 2, 2), np.uint8), np.ones((2, 2))),  # batch of one, CHW
    ],
)
def test_png_thumbnails_decode_exactly(image, expected):
    array = to_image_array(image)
    assert np.array_equal(_decode(encode_png(array)), expected.astype(np.uint8))


def test_big_images_are_reduced_and_odd_arrays_refused():
    big = np.zeros((256, 200, 3), np.uint8)
    big[:128] = 255
    small = to_image_array(big, max_side=64)
    assert small.shape == (64, 50, 3) and small[0, 0, 0] == 255 and small[-1, 0, 0] == 0
    assert to_image_array(np.zeros((5, 8, 8))) is None  # 5 channels: not an image
    assert to_image_array(np.zeros(10)) is None  # not a square
    assert to_image_array(np.array(["a", "b"])) is None


def test_callable_samples_get_split_and_id(digits_result, digits_split):
    images, _ = digits_split
    seen = []

    def item(split, sample_id):  # a map-style dataset item: (image, target)
        seen.append((split, sample_id))
        return images[split][sample_id], 0

    text = digits_result.to_html(None, samples=item)
    assert text.count("data:image/png;base64,") == text.count('class="member"')
    assert {s for s, _ in seen} == {"train", "test"}


def test_bad_options_and_samples_raise_clear_errors(digits_result, digits_split):
    images, _ = digits_split
    with pytest.raises(NeardupInputError, match="max_sets must be an integer >= 0"):
        digits_result.to_html(None, max_sets=-1)
    with pytest.raises(
        NeardupInputError,
        match=r"names split 'val', which is not in the data \(closest: 'train', 'test'\)",
    ):
        digits_result.to_html(None, samples={"val": images["test"]})
    with pytest.raises(NeardupInputError, match="has 10 items but split 'test' has 397"):
        digits_result.to_html(None, samples={"test": images["test"][:10]})
    with pytest.raises(
        NeardupInputError, match=r"must be a mapping split -> sequence.*or a callable \(split, id\)"
    ):
        digits_result.to_html(None, samples=images["test"])
    with pytest.raises(NeardupInputError, match=r"samples\('test', \d+\) raised KeyError"):
        digits_result.to_html(None, samples=lambda split, sample_id: {}[sample_id])
    with pytest.raises(TypeError, match="max_set"):
        digits_result.to_html(None, max_set=3)


def test_single_split_without_labels(digits):
    images, _ = digits
    data = np.concatenate([images[:300], images[:10] + 0.01])
    result = neardup.find_duplicates(data)
    text = result.to_html(None, samples={"data": data})
    assert "one split only" in text
    assert 'id="only-spanning"' not in text  # no filter with one split
    assert "Without labels: one bar pair per split." in text
    assert text.count('<section class="set') == len(result.clusters) >= 10


def test_source_date_epoch_makes_reports_reproducible(digits_result, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    first = digits_result.to_html(None)
    assert "2023-11-14 22:13" in first  # 1700000000 in UTC
    assert digits_result.to_html(None) == first
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(NeardupInputError, match="SOURCE_DATE_EPOCH='yesterday'"):
        digits_result.to_html(None)


# -- CLI -------------------------------------------------------------------------------------
def test_cli_report_from_json(digits_split, tmp_path):
    images, labels = digits_split
    for split in images:
        np.savez(
            tmp_path / f"{split}.npz",
            x=images[split].reshape(len(images[split]), -1),
            y=labels[split],
        )
        np.save(tmp_path / f"{split}-images.npy", images[split])
    scan = subprocess.run(
        [
            str(NEARDUP),
            "scan",
            "--split",
            f"train={tmp_path / 'train.npz'}",
            "--split",
            f"test={tmp_path / 'test.npz'}",
            "--json",
            str(tmp_path / "r.json"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert scan.returncode == 0, scan.stderr
    report = tmp_path / "cli.html"
    proc = subprocess.run(
        [
            str(NEARDUP),
            "report",
            str(tmp_path / "r.json"),
            "--html",
            str(report),
            "--samples",
            f"train={tmp_path / 'train-images.npy'}",
            "--samples",
            f"test={tmp_path / 'test-images.npy'}",
            "--max-sets",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"HTML report: {report}" in proc.stdout
    saved = json.loads((tmp_path / "r.json").read_text())
    dom = _Dom()
    dom.feed(report.read_text(encoding="utf-8"))
    assert dom.sets == min(5, len(saved["clusters"]))
    assert dom.pairs == saved["leakage"]["test"]["count"] > 0
    assert report.read_text().count("data:image/png") > 0

    (tmp_path / "short.txt").write_text("one\ntwo\n")
    bad = subprocess.run(
        [
            str(NEARDUP),
            "report",
            str(tmp_path / "r.json"),
            "--html",
            str(report),
            "--samples",
            f"test={tmp_path / 'short.txt'}",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert bad.returncode == 2
    assert "samples['test'] has 2 items but split 'test' has 397" in bad.stderr
    missing = subprocess.run(
        [str(NEARDUP), "report", str(tmp_path / "nope.json"), "--html", str(report)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 2 and "cannot read" in missing.stderr
    assert "Traceback" not in bad.stderr + missing.stderr


# -- colours, labels, notebooks --------------------------------------------------------------
def _split_css(text: str) -> dict[str, str]:
    """split name -> background colour of its badge class on a page."""
    colors = dict(re.findall(r"\.(s\d+)\{background:(#[0-9a-f]{6})\}", text))
    names = dict(re.findall(r'class="badge split (s\d+)">([^<]+)</span>', text))
    return {name: colors[cls] for cls, name in names.items()}


def test_one_color_per_split_in_every_report(digits):
    images, _ = digits
    x = images.reshape(len(images), -1)
    two = neardup.find_duplicates({"train": x[:900], "test": x[900:]})
    three = neardup.find_duplicates({"test": x[:500], "val": x[500:900], "train": x[900:]})
    odd = neardup.find_duplicates({"holdout": x[:900], "train": x[900:]})
    pages = [r.to_html(None) for r in (two, three, odd)]
    colors = [_split_css(p) for p in pages]
    assert colors[0]["train"] == colors[1]["train"] == colors[2]["train"]
    assert colors[0]["test"] == colors[1]["test"]
    assert len({colors[1]["train"], colors[1]["test"], colors[1]["val"]}) == 3
    assert colors[2]["holdout"] not in (colors[1]["train"], colors[1]["test"])
    split_colors = {c for page in colors for c in page.values()}
    for page in pages:  # histogram and class bars use no split colour
        chart = re.findall(r'<rect [^>]*fill="(#[0-9a-f]{6})"', page)
        assert chart and not split_colors & set(chart)


def test_labels_are_named_on_the_page(digits_result):
    text = digits_result.to_html(None)
    leak = digits_result.leakage["test"]
    assert 'title="label"' not in text
    assert re.search(r'<span class="badge label">label \d</span>', text)
    conflict = leak.label_conflicts[0]
    assert f'<span class="badge label">label {conflict["nearest_label"]}</span>' in text


def test_class_chart_counts_test_copies_of_train_as_gone(digits_result):
    leaked = digits_result.leakage["test"].count
    before = sum(digits_result.class_counts["test"].values())
    after = sum(digits_result.effective_class_counts["test"].values())
    assert after <= before - leaked
    text = digits_result.to_html(None)
    assert f"{before:,} → {after:,} samples" in text


def test_repr_html_is_compact_and_escaped(text_case, digits_result):
    result, _, _ = text_case
    fragment = result._repr_html_()
    for raw in ("<script>alert", "<img src=x", "<i>doc</i>", "test <b>"):
        assert raw not in fragment, f"{raw!r} reached the notebook unescaped"
    assert fragment.count("<html") == 0 and "data:image" not in fragment
    assert "test &lt;b&gt;" in fragment and "closest leaked" in fragment
    digits = digits_result._repr_html_()
    leak = digits_result.leakage["test"]
    assert len(digits) < 20_000  # compact: figures and the first rows only
    assert f"{leak.count:,} ({100 * leak.fraction:.2f} %)" in digits
    assert f"… {leak.count - 10:,} more" in digits
