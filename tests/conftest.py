"""Shared fixtures: real scikit-learn digits with planted near-duplicates."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's 1,797 real 8x8 digit images, as float32 in [0, 1]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images / 16.0).astype(np.float32), d.target.astype(np.int64)


@pytest.fixture(scope="session")
def colour_digits(digits):
    """Digits painted with random colours, 10 test images replaced by colour-jittered copies.

    Returns ``(train (1200, 8, 8, 3) uint8, test (597, 8, 8, 3) uint8, planted {test position:
    train position})``; jitter = per-channel gains 0.9-1.1 and saturation 0.8-1.2.
    """
    images = digits[0]
    rng = np.random.default_rng(5)
    fg = rng.uniform(0, 255, size=(len(images), 1, 1, 3))
    bg = rng.uniform(0, 255, size=(len(images), 1, 1, 3))
    g = images[..., None].astype(np.float64)
    rgb = np.rint(g * fg + (1 - g) * bg).astype(np.uint8)
    train, test = rgb[:1200], rgb[1200:].copy()
    slots = rng.choice(len(test), 10, replace=False)
    sources = rng.choice(len(train), 10, replace=False)
    for slot, source in zip(slots, sources):
        v = train[source].astype(np.float64) * rng.uniform(0.9, 1.1, size=3)
        grey = v.mean(axis=-1, keepdims=True)
        v = grey + (v - grey) * rng.uniform(0.8, 1.2)
        test[slot] = np.clip(np.rint(v), 0, 255).astype(np.uint8)
    return train, test, dict(zip(slots.tolist(), sources.tolist()))
