"""Lopsided neighbourhoods (``neardup._lopsided``): the test's calibration and its route in
the colour and YCbCr thumbnail views of colour images (real Fashion-MNIST, colourised)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from neardup import find_duplicates
from neardup._lopsided import (
    lopsided_chance,
    lopsided_level,
    lopsided_rows,
    lopsided_scores,
)
from neardup.views import AlignedImageView

FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


def test_natural_rows_are_lopsided_as_often_as_the_power_law_says(uniform_cube_neighbors):
    """Uniform points in a 6-dimensional cube (no copies): ``(k - 1) (d1 / dk) ** m <= c``
    for about a share ``c`` of the rows, so a budget of ``b`` expected rows flags about ``b``
    and the default budget (0.05) none."""
    distances, dimension = uniform_cube_neighbors
    assert 5.0 < dimension < 7.0
    chance = lopsided_chance(distances, dimension)
    flagged = int((chance <= lopsided_level(len(distances), 40.0)).sum())
    assert 15 <= flagged <= 100, flagged
    assert not (chance <= lopsided_level(len(distances))).any()


def test_lopsided_chance_scores_and_rows_on_small_cases():
    distances = np.array(
        [[0.1, 0.5, 1.0], [0.5, 0.9, 1.0], [0.0, 0.0, 0.0], [0.1, 0.2, np.inf], [0.0, 1.0, 2.0]]
    )
    chance = lopsided_chance(distances, 2.0)
    assert chance[0] == pytest.approx(2 * 0.1**2) and chance[1] == pytest.approx(2 * 0.25)
    assert np.isinf(chance[2]) and np.isinf(chance[3])  # k-th distance 0; a missing one
    assert chance[4] == 0.0  # an exact copy with distinct neighbours
    assert np.isinf(lopsided_chance(distances, float("nan"))).all()
    level = 2 * 0.2**2  # d1 / dk up to 0.2 is lopsided
    assert lopsided_scores(distances, 2.0, level)[0] == pytest.approx(0.5)
    assert lopsided_rows(distances, 2.0, 0.06, level).tolist() == [True, False] + [False] * 2 + [
        True
    ]
    assert not lopsided_rows(distances, 2.0, 0.04, level)[0]  # d1 beyond 2 cuts
    assert not lopsided_rows(distances, 2.0, 0.0, level).any()  # a zero cut: exact copies only
    assert lopsided_level(5000) == pytest.approx(1e-5) and lopsided_level(0) == 0.0
    # never looser than at least_rows query rows; stricter above them
    assert lopsided_level(597, least_rows=5000) == pytest.approx(1e-5)
    assert lopsided_level(20000, least_rows=5000) == pytest.approx(2.5e-6)


def _colourised(n: int, rng: np.random.Generator) -> np.ndarray:
    """The first ``n`` Fashion-MNIST pictures, each painted with its own random foreground
    and background colour (as ``benchmarks/bench_quality.py`` paints them)."""
    with gzip.open(FASHION) as fh:
        grey = np.frombuffer(fh.read(16 + n * 784), np.uint8, offset=16).reshape(-1, 28, 28)
    fg = rng.uniform(0, 255, size=(n, 1, 1, 3))
    bg = rng.uniform(0, 255, size=(n, 1, 1, 3))
    shade = grey[..., None] / 255.0
    return np.rint(shade * fg + (1 - shade) * bg).astype(np.uint8)


def _jpeg(x: np.ndarray) -> np.ndarray:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(x).save(buffer, "JPEG", quality=75)
    return np.asarray(Image.open(buffer))


def _found(result, view: str, sources: np.ndarray) -> tuple[int, int, int]:
    """Noisy copies (test rows 0-39) and JPEG copies (40-79) of ``sources`` that ``view``
    (or the combined verdict, ``view=None``) flags with their source, and unplanted rows
    it flags."""
    leak = result.leakage["test"] if view is None else result.views[view].leakage["test"]
    flagged = dict(zip(leak.positions, leak.nearest_positions))
    hits = [flagged.get(p) == int(sources[p]) for p in range(80)]
    return sum(hits[:40]), sum(hits[40:]), sum(p >= 80 for p in flagged)


@pytest.mark.skipif(not FASHION.exists(), reason="make system-deps installs Fashion-MNIST")
def test_noisy_and_jpeg_copies_of_colour_pictures_beyond_the_cut_are_found(monkeypatch):
    """Colourised Fashion-MNIST, 4,000 + 2,000, with 40 noisy (sigma 8/255) and 40 JPEG (q75)
    copies of random train pictures: several lie beyond the colour and YCbCr views' cuts.
    The lopsided route (YCbCr view only) finds more of them, the white-residual route (both
    views) the remaining noisy ones, and neither flags an unplanted row in those views."""
    from neardup import _lopsided_run

    rng = np.random.default_rng(0)
    images = _colourised(6000, rng)
    train, test = images[:4000], images[4000:].copy()
    sources = rng.choice(len(train), 80, replace=False)
    noise = rng.normal(0, 8, (40, 28, 28, 3))
    test[:40] = np.clip(np.rint(train[sources[:40]] + noise), 0, 255).astype(np.uint8)
    test[40:80] = np.stack([_jpeg(x) for x in train[sources[40:]]])
    view = AlignedImageView()
    data = {"train": view(train), "test": view(test)}
    result = find_duplicates(data)
    with monkeypatch.context() as patch:
        patch.setattr(_lopsided_run, "residual_whiteness", lambda a, b: np.full(len(a), np.inf))
        lopsided = find_duplicates(data)
        patch.setattr(_lopsided_run, "lopsided_level", lambda rows, **_: 0.0)
        plain = find_duplicates(data)
    for name in ("image", "image-ycbcr"):
        before, route = _found(plain, name, sources), _found(lopsided, name, sources)
        if name == "image-ycbcr":
            assert route[0] + route[1] > before[0] + before[1], (name, before, route)
        else:  # the colour thumbnail takes the white route alone
            assert route == before, (name, before, route)
        assert route[2] == before[2] == _found(result, name, sources)[2] == 0
    assert _found(result, None, sources)[0] == 40  # every noisy copy, white or lopsided
    assert _found(plain, None, sources)[0] < 40
    assert "white pairs beyond the cut kept" in result.views["image"].threshold.reason
    assert "lopsided pairs beyond the cut kept" in result.views["image-ycbcr"].threshold.reason
    assert "lopsided pairs" not in result.views["image"].threshold.reason
