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
