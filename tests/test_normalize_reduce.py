"""Normalisation and the streamed PCA."""

from __future__ import annotations

import numpy as np
import pytest

from neardup import PCA, NeardupInputError, find_duplicates
from neardup._normalize import normalize_inplace


def test_column_normalization_leaves_zero_columns_finite():
    x = np.array([[1.0, 0.0, 3.0], [2.0, 0.0, 4.0]], dtype=np.float32)
    out = normalize_inplace(x.copy(), "column")
    assert np.isfinite(out).all()
    np.testing.assert_allclose(np.linalg.norm(out, axis=0), [1.0, 0.0, 1.0], rtol=1e-6)


def test_row_normalization_unit_rows_and_zero_rows_kept():
    x = np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32)
    out = normalize_inplace(x.copy(), "row")
    np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 0.0]], rtol=1e-6)


def test_none_keeps_values():
    x = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    np.testing.assert_array_equal(normalize_inplace(x.copy(), None), x)


def test_pca_matches_svd():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(500, 12)) @ rng.normal(size=(12, 12))
    pca = PCA(4).fit(x.astype(np.float32))
    centered = x - x.mean(0)
    _, s, vt = np.linalg.svd(centered, full_matrices=False)
    # same subspace and variances (signs may differ)
    np.testing.assert_allclose(np.abs(pca.components_ @ vt[:4].T), np.eye(4), atol=1e-6)
    np.testing.assert_allclose(pca.explained_variance_ratio_, (s**2 / (s**2).sum())[:4], rtol=1e-6)
    projected = pca.transform(x)
    np.testing.assert_allclose(np.abs(projected), np.abs(centered @ vt[:4].T), rtol=1e-3, atol=1e-3)


def test_pca_streamed_equals_whole():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 6)).astype(np.float32)
    whole = PCA(3).fit(x)
    streamed = PCA(3)
    for start in range(0, 300, 64):
        streamed.partial_fit(x[start : start + 64])
    np.testing.assert_allclose(streamed.transform(x), whole.transform(x), rtol=1e-5, atol=1e-5)


def test_reduce_int_or_pca_object_give_same_result():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(400, 30)).astype(np.float32)
    x[300:310] = x[:10] + 1e-3
    a = find_duplicates(x, reduce=8)
    b = find_duplicates(x, reduce=PCA(8))
    assert a.settings["dim"] == b.settings["dim"] == 8
    assert [c.ids for c in a.clusters] == [c.ids for c in b.clusters]
    assert len(a.clusters) == 10


def test_pca_rejects_bad_components():
    with pytest.raises(NeardupInputError, match="positive int"):
        PCA(2.5)
    with pytest.raises(NeardupInputError, match=">= 1"):
        PCA(0)
