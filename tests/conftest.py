"""Shared fixtures: real scikit-learn digits with planted near-duplicates; pydoc sentences
with a templated pair and a dropped-word copy; the nearest-neighbour distances of uniform
points (no copies) that calibrate the lone and lopsided routes."""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np
import pytest

# The in-process Keras tests (tests/integrations/test_keras.py, the datasets hook's Keras
# embedder) train on TensorFlow, whatever KERAS_BACKEND the shell exports: Keras reads it once,
# at its first import. The other backends run in their own subprocesses
# (tests/integrations/test_keras_backends.py), which set it themselves.
os.environ["KERAS_BACKEND"] = "tensorflow"


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


class TemplateCorpus(NamedTuple):
    """pydoc sentences split into train and test, with one templated pair across them and one
    test copy of ``train[5]`` with its third word dropped."""

    train: list[str]
    test: list[str]
    templated: int  # test position of "str.isdecimal() ..." (train has "str.isalpha() ...")
    copied: int  # test position of the dropped-word copy of train[5]


def pydoc_sentences() -> list[str]:
    """Python's own documentation topics (``pydoc_data``), as distinct sentences of 6-40
    words."""
    import pydoc_data.topics as topics
    import re

    text = re.sub(r"\s+", " ", " ".join(topics.topics.values()))
    sentences = dict.fromkeys(re.split(r"(?<=[.!?])\s+", text))
    return [s for s in sentences if 6 <= len(s.split()) <= 40]


@pytest.fixture(scope="session")
def template_corpus() -> TemplateCorpus:
    """pydoc's own template pair ("str.isalpha() Return ... alphabetic" / "str.isdecimal()
    Return ... decimal characters") lies within the text view's threshold like a copy with a
    word dropped: 801 train and 302 test sentences holding both."""
    sentences = pydoc_sentences()
    template = [s for s in sentences if s.startswith(("str.isalpha()", "str.isdecimal()"))]
    assert len(template) == 2
    rest = [s for s in sentences if not s.startswith("str.is")]
    order = np.random.default_rng(0).permutation(len(rest))
    train = [rest[i] for i in order[:800]] + [template[0]]
    dropped = " ".join(w for n, w in enumerate(train[5].split()) if n != 2)
    test = [rest[i] for i in order[800:1100]] + [template[1], dropped]
    return TemplateCorpus(train, test, len(test) - 2, len(test) - 1)


@pytest.fixture(scope="session")
def uniform_cube_neighbors() -> tuple[np.ndarray, float]:
    """4,000 uniform points in a 6-dimensional cube (no copies): ``(4000, 10)`` exact
    Euclidean distances to each point's 10 nearest others, sorted, and their intrinsic
    dimension as ``Auto`` measures it (the calibration data of the lone and lopsided tests)."""
    from neardup._auto_threshold import intrinsic_dimension

    x = np.random.default_rng(0).uniform(size=(4000, 6))
    sq = (x * x).sum(axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), 0.0)
    np.fill_diagonal(d2, np.inf)
    distances = np.sqrt(np.sort(np.partition(d2, 10, axis=1)[:, :10], axis=1))
    return distances, intrinsic_dimension(distances)
