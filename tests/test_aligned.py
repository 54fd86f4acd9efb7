"""AlignedImageView: shifted and cropped copies found by find_duplicates' defaults (real data).

Small versions of ``benchmarks/bench_quality.py``'s shift and crop rows: Fashion-MNIST (Debian
``dataset-fashion-mnist``, installed by ``make test``) and scikit-learn digits.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from neardup import NeardupInputError, find_duplicates
from neardup.views import (
    AlignedImageView,
    ImageRows,
    aligned_distances,
    as_image_rows,
    candidate_features,
    color_candidate_features,
    crop_candidate_features,
    indexed_aligned_distances,
    overlap_distances,
    shift_reach,
    source_factor,
    source_images,
)

FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
needs_fashion = pytest.mark.skipif(
    not FASHION.exists(), reason="make system-deps installs Fashion-MNIST"
)


def _fashion(n: int) -> np.ndarray:
    with gzip.open(FASHION) as fh:
        return np.frombuffer(fh.read(16 + n * 784), np.uint8, offset=16).reshape(-1, 28, 28)


def _shift(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    dy, dx = rng.choice([-2, -1, 1, 2], size=2)
    padded = np.pad(x, ((2, 2), (2, 2)) + ((0, 0),) * (x.ndim - 2), mode="edge")
    return padded[2 + dy : 2 + dy + x.shape[0], 2 + dx : 2 + dx + x.shape[1]]


def _crop(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    from PIL import Image

    h, w = x.shape[:2]
    ch, cw = round(h * 0.9), round(w * 0.9)
    y0, x0 = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    return np.asarray(Image.fromarray(x[y0 : y0 + ch, x0 : x0 + cw]).resize((w, h), Image.BILINEAR))


@needs_fashion
def test_aligned_distance_undoes_shifts_and_crops_but_not_other_images():
    rng = np.random.default_rng(0)
    images = _fashion(400)
    view = AlignedImageView()
    source = view(images[:100]).images()
    shifted = view(np.stack([_shift(x, rng) for x in images[:100]])).images()
    cropped = view(np.stack([_crop(x, rng) for x in images[:100]])).images()
    others = view(images[100:200]).images()
    assert np.quantile(aligned_distances(shifted, source), 0.95) < 0.01  # whole-pixel shifts
    crop = aligned_distances(cropped, source)
    assert np.quantile(crop, 0.95) < 0.12
    np.testing.assert_allclose(crop, aligned_distances(source, cropped), atol=1e-5)  # symmetric
    assert np.median(aligned_distances(others, source)) > 0.5


@needs_fashion
def test_crop_candidate_rows_bring_a_crop_near_its_source():
    """A 90 % crop's Fourier row lies near its source's zoomed-centre row: among the 5
    nearest of 3,000 images for most crops, where the plain Fourier rows miss most."""
    rng = np.random.default_rng(2)
    images = _fashion(3000)
    sources = rng.choice(len(images), 40, replace=False)
    crops = AlignedImageView()(np.stack([_crop(images[s], rng) for s in sources])).images()
    fourier, zoomed = crop_candidate_features(AlignedImageView()(images).images())[0]
    crop_fourier = crop_candidate_features(crops)[0][0]
    assert fourier.shape == zoomed.shape == (3000, crop_fourier.shape[1])
    np.testing.assert_allclose(np.linalg.norm(zoomed, axis=1), 1.0, atol=1e-5)

    def share_in_top5(query: np.ndarray, targets: np.ndarray, truth: np.ndarray) -> float:
        sim = query @ targets.T
        rank = (sim > sim[np.arange(len(query)), truth][:, None]).sum(axis=1)
        return float(np.mean(rank < 5))

    zoomed_share = share_in_top5(crop_fourier, zoomed, sources)
    plain_share = share_in_top5(crop_fourier, fourier, sources)
    assert zoomed_share >= 0.8 and zoomed_share > plain_share + 0.3, (zoomed_share, plain_share)
    # the other way round (the crop is the reference image): the source's zoomed row among
    # the Fourier rows of every image and crop
    both = np.concatenate([fourier, crop_fourier])
    assert share_in_top5(zoomed[sources], both, 3000 + np.arange(40)) >= 0.8


def test_indexed_aligned_distances_match_pair_by_pair_with_repeated_images():
    """Each image's share is computed once per image and block; the distances are those of
    :func:`aligned_distances` on the gathered pairs (repeats, self-pairs and a flat image)."""
    rng = np.random.default_rng(1)
    images = AlignedImageView()(_fashion(60)).images()
    images[7] = 0.5  # constant
    i = np.concatenate([rng.integers(0, 20, 700), [3, 7]])
    j = np.concatenate([rng.integers(10, 60, 700), [3, 12]])
    expected = aligned_distances(images[i], images[j])
    np.testing.assert_allclose(indexed_aligned_distances(images, i, j), expected, atol=1e-4)
    assert expected[-2] < 1e-3 and np.isclose(expected[-1], np.sqrt(2), atol=1e-3)
    assert indexed_aligned_distances(images, i[:0], j[:0]).shape == (0,)


@needs_fashion
def test_aligned_distances_do_not_depend_on_tiles_or_the_other_pairs(monkeypatch):
    """The store of ``i`` images in tiles and the chunks of ``j`` images change no bit: each
    pair's distance is its own (one tile per image and one ``j`` per chunk, or one tile and
    chunk for all; pairs in any order and company)."""
    from neardup.views import _alignment

    rng = np.random.default_rng(3)
    images = AlignedImageView()(_fashion(80)).images()
    i, j = rng.integers(0, 30, 900), rng.integers(20, 80, 900)
    whole = indexed_aligned_distances(images, i, j)
    monkeypatch.setattr(_alignment, "_STORE_BYTES", 1)
    monkeypatch.setattr(_alignment, "_GROUP_CHUNK", 1)
    np.testing.assert_array_equal(indexed_aligned_distances(images, i, j), whole)
    order = rng.permutation(len(i))[:300]
    np.testing.assert_array_equal(
        indexed_aligned_distances(images, i[order], j[order]), whole[order]
    )
    unsigned = indexed_aligned_distances(images, i, j, signed=False, symmetric=False)
    monkeypatch.undo()
    assert np.array_equal(
        indexed_aligned_distances(images, i, j, signed=False, symmetric=False), unsigned
    )


@needs_fashion
def test_candidate_features_made_in_chunks_are_those_of_the_whole_batch(monkeypatch):
    """Candidate and crop features are made a chunk of images at a time, with the same values
    as in one batch (each image's features are its own); search_features gives both."""
    from neardup.views import _aligned, search_features

    images = AlignedImageView()(_fashion(300)).images()

    def flat(plain: list[np.ndarray], crops: list[tuple[np.ndarray, np.ndarray]]) -> list:
        assert len(plain) == 3 and len(crops) == 2
        return plain + [rows for pair in crops for rows in pair]

    whole = flat(candidate_features(images), crop_candidate_features(images))
    monkeypatch.setattr(_aligned, "_CHUNK", 64)
    chunked = flat(candidate_features(images), crop_candidate_features(images))
    for got in (chunked, flat(*search_features(images))):
        for rows, expected in zip(got, whole):
            np.testing.assert_array_equal(rows, expected)


def test_aligned_distance_of_constant_or_tiny_thumbnails():
    flat = np.ones((2, 16, 16, 1), np.float32)
    noise = np.random.default_rng(0).normal(size=(2, 16, 16, 1)).astype(np.float32)
    distance = aligned_distances(flat, noise)
    assert np.isfinite(distance).all() and np.allclose(distance, np.sqrt(2), atol=1e-3)
    with pytest.raises(ValueError, match="too small"):
        aligned_distances(np.zeros((1, 4, 4, 1)), np.zeros((1, 4, 4, 1)))


def test_image_rows_know_their_shape():
    digits = np.random.default_rng(0).integers(0, 255, size=(5, 28, 28), dtype=np.uint8)
    rows = AlignedImageView()(digits)
    assert isinstance(rows, ImageRows) and rows.shape == (5, 784) and rows.side == 28
    assert rows[1:3].side == 28 and rows.images().shape == (5, 28, 28, 1)
    plain = np.concatenate([rows, rows])  # what an integration collects batch by batch
    again = as_image_rows(plain)
    assert (again.side, again.channels) == (28, 1)
    colour = AlignedImageView()(np.zeros((2, 40, 40, 3), np.uint8))
    assert (colour.side, colour.channels) == (32, 3)  # larger images: 32x32 thumbnails
    assert (as_image_rows(np.asarray(colour)).side, as_image_rows(np.asarray(colour)).channels) == (
        32,
        3,
    )
    assert AlignedImageView()(np.zeros((2, 8, 8))).side == 16  # small images: at least 16
    # ... a whole multiple of the source side, each source pixel over whole thumbnail pixels
    assert [AlignedImageView().side_for(np.zeros((1, s, s))) for s in (5, 12, 15)] == [20, 24, 30]
    assert [f.shape[0] for f in candidate_features(rows.images())] == [5, 5, 5]


def test_bad_aligned_input_gets_clear_errors():
    with pytest.raises(NeardupInputError, match="side must be None or an int"):
        AlignedImageView(side=8)
    with pytest.raises(NeardupInputError, match="3 \\* side \\* side"):
        as_image_rows(np.zeros((3, 50)))
    small = AlignedImageView(side=16)(np.zeros((3, 16, 16)))
    large = AlignedImageView(side=20)(np.zeros((3, 16, 16)))
    with pytest.raises(NeardupInputError, match="same thumbnail size"):
        find_duplicates({"train": {"image": small}, "test": {"image": large}})


@needs_fashion
def test_shifted_and_cropped_copies_found_by_find_duplicates_defaults():
    rng = np.random.default_rng(3)
    images = _fashion(4600)
    train, test = images[:4000], images[4000:].copy()
    slots = rng.choice(len(test), 30, replace=False)
    sources = rng.choice(len(train), 30, replace=False)
    kind_of = {}
    for n, (slot, source) in enumerate(zip(slots, sources)):
        kind = ("shift", "crop", "exact")[n // 10]
        test[slot] = {"shift": _shift, "crop": _crop, "exact": lambda x, r: x}[kind](
            train[source], rng
        )
        kind_of[int(slot)] = (kind, int(source))
    view = AlignedImageView()
    result = find_duplicates({"train": view(train), "test": view(test)})
    assert list(result.views) == ["image", "image:aligned"]
    leak = result.leakage["test"]
    flagged = dict(zip(leak.positions, leak.nearest_positions))
    found = {
        k: sum(flagged.get(s) == src for s, (kk, src) in kind_of.items() if kk == k)
        for k in ("shift", "crop", "exact")
    }
    assert found["exact"] == 10 and found["shift"] == 10 and found["crop"] >= 8, found
    shifted = [s for s, (k, _) in kind_of.items() if k == "shift"]
    by_view = dict(zip(leak.positions, leak.found_by))
    assert all(by_view[s] == ["image:aligned"] for s in shifted)  # the 8x8 view misses them
    assert "intrinsic dimension" in result.views["image:aligned"].threshold.reason
    extra = [p for p in flagged if p not in kind_of]
    assert len(extra) <= 3, extra  # natural look-alikes (the benchmark checks each one)


@needs_fashion
def test_crop_searches_add_candidates_without_moving_the_cut():
    """The threshold is read from the candidate views' lists alone: the crop searches add
    candidates (on 60,000 reference images they bring in crops the candidate views miss) but
    leave the cut where it was, so no pair found without them is lost."""
    from neardup._aligned_run import aligned_run

    rng = np.random.default_rng(6)
    images = _fashion(1200)
    train, test = images[:1000], images[1000:].copy()
    slots = rng.choice(len(test), 10, replace=False)
    sources = rng.choice(len(train), 10, replace=False)
    for slot, source in zip(slots, sources):
        test[slot] = _crop(train[source], rng)
    view = AlignedImageView()
    parts = [view(train), view(test)]
    split = np.repeat([0, 1], [1000, 200])
    without = aligned_run(parts, split, 0, crop_candidates=0)
    with_crops = aligned_run(parts, split, 0)
    assert with_crops.threshold.value == without.threshold.value
    assert with_crops.settings["crop_candidates"] == 5

    def pairs(run) -> set[tuple[int, int]]:
        return set(zip(run.pairs.i.tolist(), run.pairs.j.tolist()))

    assert pairs(without) <= pairs(with_crops)  # nothing lost, the cut unchanged
    planted = {tuple(sorted((int(s), 1000 + int(t)))) for s, t in zip(sources, slots)}
    assert planted <= {tuple(sorted(pair)) for pair in pairs(with_crops)}


@needs_fashion
def test_crops_of_pictures_whose_contrast_is_only_in_colour_are_found():
    """Each picture painted in two colours of equal channel mean (its grey mean is flat): the
    aligned view matches each image's principal colour axis, so its crops are still found."""
    rng = np.random.default_rng(4)
    grey = _fashion(2300)
    fg = rng.uniform(40, 215, size=(len(grey), 1, 1, 3))
    bg = fg[..., [1, 2, 0]]  # the same channel mean: no contrast in the channel mean
    shade = grey[..., None] / 255.0
    images = np.rint(shade * fg + (1 - shade) * bg).astype(np.uint8)
    assert np.ptp(images.mean(axis=-1), axis=(1, 2)).max() <= 1.0
    train, test = images[:2000], images[2000:].copy()
    slots = rng.choice(len(test), 10, replace=False)
    sources = rng.choice(len(train), 10, replace=False)
    for slot, source in zip(slots, sources):
        test[slot] = _crop(train[source], rng)
    view = AlignedImageView()
    result = find_duplicates({"train": view(train), "test": view(test)})
    leak = result.views["image:aligned"].leakage["test"]
    flagged = dict(zip(leak.positions, leak.nearest_positions))
    found = sum(flagged.get(int(slot)) == int(source) for slot, source in zip(slots, sources))
    assert found >= 8, found


@needs_fashion
def test_color_candidate_rows_tell_a_copy_from_its_source_s_recolored_twins():
    """Colour images also get candidates from colour thumbnails: a shifted or cropped copy's
    nearest colour row is its source, not the same grey picture painted in other colours
    (which the grey candidate views cannot tell apart from the source)."""
    rng = np.random.default_rng(7)
    pictures = np.repeat(_fashion(60), 5, axis=0)  # each grey picture painted five times
    fg = rng.uniform(0, 255, size=(len(pictures), 1, 1, 3))
    bg = rng.uniform(0, 255, size=(len(pictures), 1, 1, 3))
    shade = pictures[..., None] / 255.0
    images = np.rint(shade * fg + (1 - shade) * bg).astype(np.uint8)
    sources = 5 * np.arange(60) + rng.integers(0, 5, size=60)
    copies = []
    for n, source in enumerate(sources):
        copies.append((_shift if n % 2 else _crop)(images[source], rng))
    view = AlignedImageView()
    targets = color_candidate_features(view(images).images())
    queries = color_candidate_features(view(np.stack(copies)).images())
    assert targets.shape == (300, 192)
    np.testing.assert_allclose(np.linalg.norm(targets, axis=1), 1.0, rtol=1e-5)
    nearest = np.argmax(queries @ targets.T, axis=1)
    assert np.mean(nearest == sources) >= 0.95
    assert np.all(nearest // 5 == sources // 5)  # at worst a twin of the same picture


def _painted(grey: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """``(N, 28, 28, 3)`` uint8: each grey picture painted in its own random fore- and
    background colour (as the quality benchmark colourises Fashion-MNIST)."""
    fg = rng.uniform(0, 255, size=(len(grey), 1, 1, 3))
    bg = rng.uniform(0, 255, size=(len(grey), 1, 1, 3))
    g = grey[..., None] / 255.0
    return np.rint(g * fg + (1 - g) * bg).astype(np.uint8)


@needs_fashion
def test_recolored_copies_are_found_in_the_colour_blind_views():
    """A copy whose colours were changed wholesale (the picture painted along another colour
    axis, channels swapped RGB <-> BGR, converted to grey) keeps its shape, so the aligned
    and luma views find it although its colour axis turned (such pairs need
    ``RECOLORED_REACH`` of the cut, which they meet); shifted copies with jittered colours
    keep their axis and are found too."""
    from neardup._aligned_run import COLOR_AXIS_AGREEMENT, RECOLORED_REACH

    rng = np.random.default_rng(8)
    pictures = _fashion(1100).astype(np.float64)
    grey = pictures[..., None] / 255.0
    images = _painted(pictures, rng)
    images[:10] = np.rint(grey[:10] * (200, 60, 60) + (1 - grey[:10]) * 60)  # red on grey
    train, test = images[:1000], images[1000:].copy()
    green = np.rint(grey[:10] * (60, 200, 60) + (1 - grey[:10]) * 60).astype(np.uint8)
    for k in range(10):  # the red pictures painted green (axes at right angles), shifted
        test[k] = _shift(green[k], rng)
    for k in range(10, 20):  # channels swapped
        test[k] = train[k][..., ::-1]
    for k in range(20, 30):  # converted to grey (Rec. 601 luma in all three channels)
        test[k] = np.rint(train[k] @ np.array([0.299, 0.587, 0.114]))[..., None]
    for k in range(30, 40):  # shifted copies of other pictures, colours jittered
        gains = rng.uniform(0.9, 1.1, size=3)
        test[k] = np.clip(np.rint(_shift(train[k], rng) * gains), 0, 255).astype(np.uint8)
    assert 0.0 < COLOR_AXIS_AGREEMENT < 1.0 and 0.0 < RECOLORED_REACH < 1.0
    view = AlignedImageView()
    result = find_duplicates({"train": view(train), "test": view(test)})
    leak = result.leakage["test"]
    flagged = dict(zip(leak.positions, leak.nearest_positions))
    assert all(flagged.get(k) == k for k in range(10)), flagged  # painted green, shifted
    assert sum(flagged.get(k) == k for k in range(10, 20)) >= 9, flagged  # BGR
    assert sum(flagged.get(k) == k for k in range(20, 30)) >= 9, flagged  # grey
    assert sum(flagged.get(k) == k for k in range(30, 40)) >= 9, flagged  # jittered


@needs_fashion
def test_look_alikes_in_other_colours_count_only_within_the_recolored_reach(monkeypatch):
    """Colourised Fashion-MNIST: the colour-blind luma view puts different trousers painted
    in other colours (their principal colour axes disagree) within its cut. The combined
    verdict keeps such a re-coloured pair only within ``RECOLORED_REACH`` of the cut, where
    re-coloured copies lie, so these look-alikes stay out of the duplicate sets
    (``settings["color_gate"]`` counts them); without the rule (a reach of 1) they join."""
    import neardup._aligned_run as aligned_run
    import neardup._multiview as multiview

    grey = _fashion(12000)
    images = _painted(grey.astype(np.float64), np.random.default_rng(0))
    view = AlignedImageView()
    data = {"train": view(images[:10000]), "test": view(images[10000:])}

    def members(result) -> set[tuple[str, int]]:
        return {m for c in result.clusters for m in zip(c.splits, c.positions)}

    result = find_duplicates(data)
    assert result.settings["color_gate"]["image-luma"] >= 1
    monkeypatch.setattr(aligned_run, "RECOLORED_REACH", 1.0)
    monkeypatch.setattr(multiview, "RECOLORED_REACH", 1.0)
    without = find_duplicates(data)
    assert without.settings["color_gate"]["image-luma"] == 0
    extra = members(without) - members(result)
    assert extra
    # an independent check: they are different photographs (grey pictures that differ by
    # more than 50 grey levels somewhere from every other member of their set)
    for c in without.clusters:
        rows = [p + (10000 if s == "test" else 0) for s, p in zip(c.splits, c.positions)]
        if not set(zip(c.splits, c.positions)) & extra:
            continue
        for a in rows:
            differs = [np.abs(grey[a].astype(int) - grey[b]).max() > 50 for b in rows if b != a]
            assert all(differs), rows


@needs_fashion
def test_pictures_whose_colour_casts_point_apart_are_re_coloured_pairs():
    """One shape painted twice with the same contrast direction (so the principal colour
    axes agree) on grounds of opposite hues (green, magenta) is a re-coloured pair: its casts
    point apart. Copies keep their cast (noise, colour jitter), a greyscale copy has none:
    neither is re-coloured."""
    from neardup._aligned_run import aligned_run

    grey = _fashion(60).astype(np.float64)[..., None] / 255.0
    rng = np.random.default_rng(0)
    contrast = np.array([60.0, 20.0, 70.0])  # foreground minus ground, the same everywhere
    green, magenta = np.array([60.0, 190.0, 30.0]), np.array([180.0, 50.0, 150.0])

    def paint(g: np.ndarray, ground: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(ground + g * contrast), 0, 255).astype(np.uint8)

    source = paint(grey[:20], green)
    copies = {
        "other ground": paint(grey[:20], magenta),
        "noise": np.clip(np.rint(source + rng.normal(0, 4, source.shape)), 0, 255),
        "jitter": np.clip(np.rint(source * np.array([1.08, 0.95, 1.05])), 0, 255),
        "greyscale": np.repeat(source.mean(axis=-1, keepdims=True), 3, axis=-1),
    }
    view = AlignedImageView()
    parts = [view(source), *(view(c.astype(np.uint8)) for c in copies.values())]
    split = np.repeat(np.arange(len(parts)), 20)
    run = aligned_run(parts, split, 0, crop_candidates=0)
    agree = {
        name: run.color_axes_agree(np.arange(20), np.arange(20) + 20 * (k + 1))
        for k, name in enumerate(copies)
    }
    assert not agree["other ground"].any()
    assert agree["noise"].all() and agree["jitter"].all() and agree["greyscale"].all()


@needs_fashion
def test_faint_pictures_of_one_hue_need_the_colour_thumbnail_in_the_ycbcr_view(monkeypatch):
    """The YCbCr view keeps a quarter of each picture's colour cast, so faint pictures of one
    hue (a few grey levels of shape on a red ground) collapse together in it whatever their
    shapes. A pair the YCbCr view alone finds counts only within ``YCBCR_THUMBNAIL_REACH`` of
    the colour thumbnail's threshold: beyond it, the look-alikes are turned away
    (``settings["color_gate"]`` counts them), and noisy copies of faint pictures, close in
    the thumbnail too, stay found. The reach is set here between the two groups of this small
    set; its default (6) comes from the full-scale benchmark (benchmarks/README.md)."""
    import neardup._multiview as multiview

    grey = _fashion(5000).astype(np.float64)
    rng = np.random.default_rng(0)
    images = _painted(grey, rng)
    train, test = images[:4000], images[4000:].copy()

    def faint(g: np.ndarray, fg: np.ndarray, bg: np.ndarray) -> np.ndarray:
        g = g[..., None] / 255.0
        return np.rint(g * fg + (1 - g) * bg).astype(np.uint8)

    red, pink = np.array([210.0, 20.0, 20.0]), np.array([240.0, 80.0, 85.0])
    alike, copies = {}, {}
    for k in range(10):  # test row p and train row q: one faint red, two different shapes
        p, q, lift = 10 + k, 100 + k, rng.uniform(-20, 20)
        train[q] = faint(grey[q], red + 6 + lift, red + lift)
        test[p] = faint(grey[4000 + p], red + 10 + lift, red + 4 + lift)
        alike[p] = q
    for k in range(10):  # noisy copies of faint pink pictures
        p, q = 30 + k, 200 + k
        train[q] = faint(grey[q], pink + 12, pink)
        noisy = train[q] + rng.normal(0, 1.5, train[q].shape)
        test[p] = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
        copies[p] = q
    view = AlignedImageView()
    data = {"train": view(train), "test": view(test)}

    def flagged(result) -> dict[int, tuple[list[str], float]]:
        leak, cut = result.leakage["test"], result.views["image"].threshold.value
        return {
            p: (leak.found_by[k], leak.view_distances["image"][k] / cut)
            for k, p in enumerate(leak.positions)
        }

    monkeypatch.setattr(multiview, "YCBCR_THUMBNAIL_REACH", np.inf)
    before = flagged(find_duplicates(data))
    ycbcr_only = {p: far for p, (by, far) in before.items() if p in alike and by == ["image-ycbcr"]}
    assert len(ycbcr_only) >= 3, before  # the look-alikes the YCbCr view alone puts together
    assert all(p in before for p in copies)
    reach = min(ycbcr_only.values()) - 0.01
    copy_reach = [far for p, (by, far) in before.items() if p in copies and by == ["image-ycbcr"]]
    assert all(far < reach for far in copy_reach)  # the copies lie nearer in the thumbnail

    monkeypatch.setattr(multiview, "YCBCR_THUMBNAIL_REACH", reach)
    result = find_duplicates(data)
    after = flagged(result)
    assert not set(ycbcr_only) & set(after)
    assert all(p in after for p in copies)
    assert result.settings["color_gate"]["image-ycbcr"] >= len(ycbcr_only)


def test_disjoint_digits_flag_nothing_in_the_aligned_view():
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(0)
    images = np.rint(load_digits().images * 255 / 16).astype(np.uint8)
    order = rng.permutation(len(images))
    view = AlignedImageView()
    result = find_duplicates(
        {
            "train": {"image": view(images[order[:1200]])},
            "test": {"image": view(images[order[1200:]])},
        }
    )
    assert result.leakage["test"].count == 0
    assert result.views["image:aligned"].leakage["test"].count == 0


def _digits() -> np.ndarray:
    from sklearn.datasets import load_digits

    return np.rint(load_digits().images * 255 / 16).astype(np.uint8)


def _shift_by(x: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``x`` moved by ``(dy, dx)`` pixels, its edge repeated into the gap (as the benchmark)."""
    padded = np.pad(x, 2, mode="edge")
    return padded[2 - dy : 2 - dy + x.shape[0], 2 - dx : 2 - dx + x.shape[1]]


def test_small_thumbnails_are_taken_back_to_their_source_pixels():
    digits = AlignedImageView()(_digits()[:50]).images()  # 8x8 blown up to 16x16
    assert digits.shape[1] == 16 and source_factor(digits) == 2
    assert np.allclose(np.repeat(np.repeat(source_images(digits, 2), 2, 1), 2, 2), digits)
    noise = np.random.default_rng(0).integers(0, 255, (4, 28, 28), dtype=np.uint8)
    assert source_factor(AlignedImageView()(noise).images()) == 1
    assert source_factor(AlignedImageView()(noise[:, :16, :16]).images()) == 1  # 16 px: as is
    assert source_factor(AlignedImageView()(noise[:, :4, :4]).images()) == 4
    assert [shift_reach(s) for s in (4, 8, 15)] == [1, 2, 2]


def test_overlap_distance_matches_a_two_pixel_shift_of_an_8x8_digit_exactly():
    images = _digits()[:40]
    copies = np.stack([_shift_by(x, 2 * (n % 2) - 1, -2) for n, x in enumerate(images)])
    source = source_images(AlignedImageView()(np.concatenate([images, copies])).images(), 2)
    grey = source.mean(axis=-1, keepdims=True)
    i, j = np.arange(40), np.arange(40) + 40
    shifted = overlap_distances(grey, i, j, reach=2)
    assert np.all(shifted < 1e-3), shifted
    assert np.allclose(shifted, overlap_distances(grey, j, i, reach=2), atol=1e-6)  # symmetric
    assert np.all(overlap_distances(grey, i, j, reach=1) > 0.3)  # 1 px is not enough
    others = overlap_distances(grey, i[:-1], i[1:], reach=2)  # different digits stay apart
    assert np.all(others > 0.1)


def test_two_pixel_shifts_of_digits_found_and_the_disjoint_control_stays_silent():
    """Issue 12's digits row: 1-2 px shifts of 8x8 digits (a quarter of the side) are found by
    the aligned view with the defaults; the disjoint-digits control above flags nothing."""
    rng = np.random.default_rng(0)
    images = _digits()
    order = rng.permutation(len(images))
    train, test = images[order[:1200]], images[order[1200:]].copy()
    slots = rng.choice(len(test), 12, replace=False)
    sources = rng.choice(len(train), 12, replace=False)
    offsets = [(2, 2), (-2, 1), (1, -2), (-2, -2)] * 3
    for slot, source, (dy, dx) in zip(slots, sources, offsets):
        test[slot] = _shift_by(train[source], dy, dx)
    view = AlignedImageView()
    result = find_duplicates({"train": {"image": view(train)}, "test": {"image": view(test)}})
    leak = result.leakage["test"]
    nearest = dict(zip(leak.positions, leak.nearest_positions))
    assert all(nearest.get(int(s)) == int(t) for s, t in zip(slots, sources)), nearest
    assert set(nearest) == {int(s) for s in slots}  # nothing else flagged
    assert "2 source px of 8x8" in str(result.views["image:aligned"].settings)


@needs_fashion
def test_one_split_searched_against_itself_finds_shifted_and_cropped_copies():
    """No reference split: every row is a query, and each unordered candidate pair is scored
    once (as ``(lower row, higher row)``), so both rows of a pair list the same distance."""
    from neardup._aligned_run import aligned_run

    rng = np.random.default_rng(5)
    images = _fashion(500)
    sources = rng.choice(490, 10, replace=False)
    copies = [(_shift if n < 5 else _crop)(images[s], rng) for n, s in enumerate(sources)]
    rows = AlignedImageView()(np.concatenate([images[:490], np.stack(copies)]))
    run = aligned_run([rows], np.zeros(len(rows), dtype=np.int64), None)
    close = set(zip(run.pairs.i.tolist(), run.pairs.j.tolist()))
    found = [(s, 490 + n) in close or (490 + n, s) in close for n, s in enumerate(sources)]
    assert sum(found[:5]) == 5 and sum(found[5:]) >= 4, found
    graph = run.graph
    listed = {
        (int(a), int(b)): float(d)
        for a, (near, dist) in enumerate(zip(graph.indices, graph.distances))
        for b, d in zip(near, dist)
        if b >= 0
    }
    mutual = [(a, b) for a, b in listed if a < b and (b, a) in listed]
    assert mutual and all(listed[a, b] == listed[b, a] for a, b in mutual)
    a, b = np.array(mutual[:50]).T
    expected = aligned_distances(rows.images()[a].mean(-1, keepdims=True), rows.images()[b])
    assert np.allclose([listed[p] for p in mutual[:50]], expected, atol=1e-6)


def test_shift_candidates_searched_shift_by_shift_match_the_brute_force_ones(monkeypatch):
    """Above ``_EXACT_SHIFT_PAIRS`` the shift candidates come from one search per shift,
    merged by best correlation: the same rows as the brute-force best shift (digits)."""
    from neardup import _aligned_run

    images = AlignedImageView()(_digits()[:600]).images().mean(axis=-1, keepdims=True)
    source = source_images(images, source_factor(images))
    query, target = np.arange(400, 600), np.arange(400)
    exact = _aligned_run._shift_candidates(source, query, target, 10, 2)
    monkeypatch.setattr(_aligned_run, "_EXACT_SHIFT_PAIRS", 0)
    merged = _aligned_run._shift_candidates(source, query, target, 10, 2)
    assert exact.shape == merged.shape == (200, 10) and np.all(exact >= 0)
    same = [set(a) == set(b) for a, b in zip(exact.tolist(), merged.tolist())]
    assert np.mean(same) >= 0.98, np.mean(same)
    everyone = np.arange(600)  # one split searched against itself: no row is its own candidate
    for limit in (0, 10**9):
        monkeypatch.setattr(_aligned_run, "_EXACT_SHIFT_PAIRS", limit)
        found = _aligned_run._shift_candidates(source, everyone, everyone, 10, 2)
        assert not np.any(found == everyone[:, None]) and np.all(found >= 0)


def test_unsigned_aligned_distance_matches_an_image_and_its_negative():
    """``signed=False`` (colour images on their principal colour axis, whose sign is
    arbitrary): an image and its negative, shifted, are the same picture; signed, opposite."""
    rng = np.random.default_rng(3)
    a = _fashion(4).astype(np.float32)[..., None]
    b = -np.roll(a, 1, axis=2) + rng.normal(0, 1, a.shape).astype(np.float32)
    assert (aligned_distances(a, b) > 1.5).all()
    assert (aligned_distances(a, b, signed=False) < 0.15).all()
    other = a[[1, 2, 3, 0]]
    assert (aligned_distances(a, other, signed=False) > 0.3).all()


@needs_fashion
def test_a_colour_picture_and_its_noisy_copy_project_on_one_orientation():
    """Fashion-MNIST pictures painted in two colours of nearly one brightness (a faint luma
    contrast whose sign noise can flip) and their noisy copies: the aligned view's grey
    projection of each copy correlates positively with its source's (the object against its
    ground orients both; by brightness, 4 of these 400 copies came out flipped)."""
    from neardup._aligned_run import _grey

    rng = np.random.default_rng(5)
    grey = _fashion(400)
    fg = rng.uniform(60, 195, size=(len(grey), 1, 1, 3))
    sign = rng.choice([-1.0, 1.0], size=(len(grey), 1, 1, 1))
    tilt = sign * rng.uniform(8, 30, (len(grey), 1, 1, 1))
    bg = fg[..., [1, 2, 0]] + tilt  # about one brightness: a faint luma contrast either way
    shade = grey[..., None] / 255.0
    images = np.clip(np.rint(shade * fg + (1 - shade) * bg), 0, 255).astype(np.uint8)
    noisy = np.clip(np.rint(images + rng.normal(0, 8, images.shape)), 0, 255).astype(np.uint8)
    view = AlignedImageView()
    a = _grey(view(images).images())[0].reshape(len(grey), -1)
    b = _grey(view(noisy).images())[0].reshape(len(grey), -1)
    agree = np.einsum("nd,nd->n", a, b) > 0
    assert agree.all(), np.flatnonzero(~agree)
