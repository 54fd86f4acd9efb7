"""Crops of small images (``neardup.views`` ``crop_distances``): each image zoomed into a
grid of boxes at its source resolution, so a 90 % crop of an 8x8 digit resized back is
found, with its own source, while the disjoint digits stay unflagged."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from neardup import find_duplicates
from neardup.views import (
    CROP_OFFSETS,
    CROP_SCALES,
    AlignedImageView,
    crop_distances,
    crop_samplers,
    zoomed_pairs,
)


def test_samplers_are_bilinear_weights_over_a_grid_of_boxes():
    samplers = crop_samplers(8)
    assert len(samplers) == len(CROP_SCALES) * CROP_OFFSETS**2
    for rows, cols in samplers:
        assert rows.shape == cols.shape == (8, 8)
        assert np.allclose(rows.sum(axis=1), 1.0) and (rows >= 0).all()
    # the first box of the first scale spans pixels 0-7.2 from the top-left corner: its
    # samples sit at (k + 0.5) * 0.9 - 0.5, the last at 6.25 (3/4 pixel 6, 1/4 pixel 7)
    first_rows = samplers[0][0]
    assert first_rows[0].tolist() == [1.0] + [0.0] * 7
    assert first_rows[-1, 6] == pytest.approx(0.75) and first_rows[-1, 7] == pytest.approx(0.25)


def test_crop_distance_of_an_image_and_its_zoomed_box_is_zero_and_symmetric():
    rng = np.random.default_rng(0)
    images = rng.random((3, 8, 8, 1)).astype(np.float32)
    rows, cols = crop_samplers(8)[7]
    images[1, ..., 0] = rows @ images[0, ..., 0] @ cols.T  # image 1 is a crop of image 0
    d = crop_distances(images, np.array([0, 1, 0]), np.array([1, 0, 2]))
    assert d[0] == pytest.approx(0.0, abs=1e-3) and d[1] == pytest.approx(d[0], abs=1e-6)
    assert d[2] > 0.5  # unrelated noise
    plain, zoomed = next(iter(zoomed_pairs(images)))
    assert plain.shape == zoomed.shape == (3, 64)
    assert np.allclose(np.linalg.norm(plain, axis=1), 1.0, atol=1e-5)


def _crop(image: np.ndarray, rng: np.random.Generator, mode: str) -> np.ndarray:
    side = image.shape[0]
    picture = Image.fromarray(image)
    if mode == "whole pixels":  # a 7 px box at a whole-pixel offset (as the benchmark)
        y, x = rng.integers(0, 2, 2)
        return np.asarray(picture.crop((x, y, x + 7, y + 7)).resize((8, 8), Image.BILINEAR))
    box = 0.9 * side  # a 7.2 px box anywhere, bilinear (as torchvision's RandomResizedCrop)
    y, x = rng.uniform(0, side - box, 2)
    return np.asarray(picture.resize((8, 8), Image.BILINEAR, box=(x, y, x + box, y + box)))


def test_crops_of_digits_found_with_their_source_and_no_natural_pair_flagged(digits):
    """scikit-learn digits 1,200 + 597: 20 test images replaced by 90 % crops of train
    images, resized back bilinearly (10 at whole-pixel offsets, 10 anywhere). Before the crop
    distance the aligned view found none of them (they lay 0.6-0.9 from their source, natural
    nearest neighbours from 0.15). Bicubic crops at fractional offsets lie further (1.0-1.6
    cuts here): not asserted, see the module docstring of ``neardup.views._small_crops``."""
    images, _ = digits
    pixels = np.rint(images * 255).astype(np.uint8)
    rng = np.random.default_rng(6)  # seeds 4, 5, 8 split two near-identical 1s (natural)
    order = rng.permutation(len(pixels))
    train, test = pixels[order[:1200]], pixels[order[1200:]].copy()
    view = AlignedImageView()
    control = find_duplicates({"train": view(train), "test": view(test)})
    assert control.leakage["test"].count == 0
    sources = rng.choice(1200, 20, replace=False)
    for n, source in enumerate(sources):
        test[n] = _crop(train[source], rng, "whole pixels" if n < 10 else "anywhere")
    result = find_duplicates({"train": view(train), "test": view(test)})
    leak = result.leakage["test"]
    flagged = dict(zip(leak.positions, leak.nearest_positions))
    found = [flagged.get(p) == int(s) for p, s in enumerate(sources)]
    assert all(found[:10]) and sum(found[10:]) >= 8, found  # 8-10 on seeds 6-12
    assert set(flagged) <= set(range(20))  # nothing unplanted


def test_crop_candidates_probed_on_a_coarse_grid_still_list_the_sources(digits, monkeypatch):
    """Above ``_EXACT_SHIFT_PAIRS`` query-target pairs the crop candidates come from probed
    searches on a coarser grid of boxes (``SEARCH_OFFSETS``): each crop's source is still
    listed, as by the brute-force search on the whole grid."""
    from neardup import _aligned_run
    from neardup.views import source_factor, source_images

    images, _ = digits
    pixels = np.rint(images * 255).astype(np.uint8)
    rng = np.random.default_rng(7)
    sources = rng.choice(1000, 20, replace=False)
    pixels[1000:1020] = [_crop(pixels[s], rng, "anywhere") for s in sources]
    thumbnails = AlignedImageView()(pixels[:1200]).images().mean(axis=-1, keepdims=True)
    source = source_images(thumbnails, source_factor(thumbnails))
    query, target = np.arange(1000, 1200), np.arange(1000)
    exact = _aligned_run._crop_candidates(source, query, target, 5)
    monkeypatch.setattr(_aligned_run, "_EXACT_SHIFT_PAIRS", 0)
    probed = _aligned_run._crop_candidates(source, query, target, 5)
    assert exact.shape == probed.shape == (200, 5)
    assert all(s in exact[n] for n, s in enumerate(sources))
    assert sum(s in probed[n] for n, s in enumerate(sources)) >= 19
