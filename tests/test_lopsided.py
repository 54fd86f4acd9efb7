"""Lopsided neighbourhoods (``neardup._lopsided``): the test's calibration and its route in
the colour and YCbCr thumbnail views of colour images (real Fashion-MNIST, colourised)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from neardup import find_duplicates
from neardup._auto_threshold import intrinsic_dimension
from neardup._lopsided import (
    lopsided_chance,
    lopsided_level,
    lopsided_rows,
    lopsided_scores,
)
from neardup.views import AlignedImageView

FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")


def _sorted_knn(x: np.ndarray, k: int) -> np.ndarray:
    """``(N, k)`` exact Euclidean distances to each row's k nearest other rows."""
    sq = (x * x).sum(axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), 0.0)
    np.fill_diagonal(d2, np.inf)
    return np.sqrt(np.sort(np.partition(d2, k, axis=1)[:, :k], axis=1))


def test_natural_rows_are_lopsided_as_often_as_the_power_law_says():
    """Uniform points in a 6-dimensional cube (no copies): ``(k - 1) (d1 / dk) ** m <= c``
    for about a share ``c`` of the rows, so a budget of ``b`` expected rows flags about ``b``
    and the default budget (0.05) none."""
    x = np.random.default_rng(0).uniform(size=(4000, 6))
    distances = _sorted_knn(x, 10)
    dimension = intrinsic_dimension(distances)
    assert 5.0 < dimension < 7.0
    chance = lopsided_chance(distances, dimension)
    flagged = int((chance <= lopsided_level(len(x), 40.0)).sum())
    assert 15 <= flagged <= 100, flagged
    assert not (chance <= lopsided_level(len(x))).any()


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
