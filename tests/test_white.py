"""White residuals (``neardup._white``): a noisy copy differs from its source by white noise,
a look-alike by smooth picture structure (real Fashion-MNIST)."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from neardup._white import residual_whiteness, white_level

FASHION = Path("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz")
LEVEL_28 = white_level(28 * 28 * 3)  # the level of 28 x 28 colour residuals


def test_white_noise_is_white_and_a_smooth_difference_is_not():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(50, 28, 28, 3))
    noisy = 3.0 * a + 5.0 + rng.normal(size=a.shape)  # gain, offset and white noise
    assert (residual_whiteness(a, noisy) <= LEVEL_28).all()
    ramp = np.linspace(-1, 1, 28)[None, :, None, None] * rng.normal(size=(50, 1, 1, 3))
    assert (residual_whiteness(a, a + ramp) > 0.5).all()  # a smooth difference
    assert np.isinf(residual_whiteness(a[:2], 2.0 * a[:2])).all()  # nothing left to measure
    other = rng.normal(size=a.shape)  # unrelated noise: a white difference, but no copy
    assert np.isinf(residual_whiteness(a, other)).all()


@pytest.mark.skipif(not FASHION.exists(), reason="make system-deps installs Fashion-MNIST")
def test_noisy_copies_are_white_against_their_source_and_look_alikes_are_not():
    """300 of 3,000 Fashion-MNIST pictures, each painted in its own two random colours (as
    ``benchmarks/bench_quality.py`` paints them), against its noisy copy (sigma 8/255) and
    against its nearest other picture (a look-alike of the same kind and colours)."""
    with gzip.open(FASHION) as fh:
        grey = np.frombuffer(fh.read(16 + 3000 * 784), np.uint8, offset=16).reshape(-1, 28, 28)
    rng = np.random.default_rng(1)
    shade = grey[..., None] / 255.0
    fg, bg = rng.uniform(0, 255, (2, len(grey), 1, 1, 3))
    x = np.rint(shade * fg + (1 - shade) * bg)
    pick = rng.choice(len(x), 300, replace=False)
    noisy = np.clip(np.rint(x[pick] + rng.normal(0, 8, x[pick].shape)), 0, 255)
    assert (residual_whiteness(x[pick], noisy) <= LEVEL_28).all()
    flat = x.reshape(len(x), -1)
    flat = (flat - flat.mean(1, keepdims=True)) / np.maximum(flat.std(1, keepdims=True), 1e-9)
    similarity = flat[pick] @ flat.T
    similarity[np.arange(300), pick] = -np.inf
    nearest = similarity.argmax(axis=1)
    assert (residual_whiteness(x[pick], x[nearest]) > LEVEL_28).all()


def test_the_white_level_follows_the_residual_size():
    """White noise's autocorrelations spread as 1 / sqrt(size): noisy copies of 16 x 16 colour
    thumbnails pass the level of their own size, while the level of 28 x 28 ones (0.074)
    would miss many of them."""
    rng = np.random.default_rng(2)
    a = rng.normal(size=(400, 16, 16, 3))
    whiteness = residual_whiteness(a, 2.0 * a + rng.normal(size=a.shape))
    assert (whiteness <= white_level(16 * 16 * 3)).mean() >= 0.99
    assert (whiteness <= LEVEL_28).mean() < 0.9
    assert 0.073 < LEVEL_28 < 0.075
