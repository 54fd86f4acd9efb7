"""``Transform`` (PCA, then the normalisation): fitted and applied block by block, one map."""

from __future__ import annotations

import numpy as np
import pytest

import neardup
from neardup._transform import Transform
from neardup.search import Rows


@pytest.mark.parametrize(("normalize", "reduce"), [("row", None), ("column", 12), (None, 12)])
def test_blockwise_fit_matches_numpy_on_stacked_splits(digits, normalize, reduce):
    images, _ = digits
    x = images.reshape(len(images), -1).astype(np.float64)
    arrays = [x[:1000], x[1000:]]  # two splits, fitted together
    transform = Transform.fit(
        arrays, normalize=normalize, reduce=None if reduce is None else neardup.PCA(reduce)
    )
    expected = x
    if reduce is not None:
        centered = x - x.mean(axis=0)
        _, _, vt = np.linalg.svd(centered, full_matrices=False)
        expected = centered @ vt[:reduce].T
        # components agree up to sign: compare absolute projections
        got = transform.reducer.transform(x).astype(np.float64)
        np.testing.assert_allclose(np.abs(got), np.abs(expected), atol=2e-4)
        expected = got
    if normalize == "column":
        norms = np.linalg.norm(expected, axis=0)
        expected = expected / np.where(norms == 0, 1, norms)
    elif normalize == "row":
        expected = expected / np.linalg.norm(expected, axis=1, keepdims=True)
    assert transform.dim == (64 if reduce is None else reduce)
    np.testing.assert_allclose(transform.apply_all(arrays), expected, atol=1e-5)
    # into a given array (the reference index's populated map): the same values, that array
    out = np.full((len(x), transform.dim), np.nan, dtype=np.float32)
    assert transform.apply_all(arrays, out=out) is out
    np.testing.assert_array_equal(out, transform.apply_all(arrays))
    with pytest.raises(ValueError, match="float32"):
        transform.apply_all(arrays, out=out[1:])
    # applied per block = applied at once (up to float32 matrix-product rounding with PCA);
    # the input is never modified
    before = x.copy()
    np.testing.assert_allclose(
        np.concatenate([transform.apply(x[:7]), transform.apply(x[7:])]),
        transform.apply(x),
        atol=1e-6,
    )
    np.testing.assert_array_equal(x, before)


def test_rows_stream_without_pca_and_materialise_with_it(digits):
    images, _ = digits
    x = images.reshape(len(images), -1)
    plain = Transform.fit([x], normalize="row")
    streamed = Rows.transformed([x], plain)
    assert streamed._matrix is None  # nothing stacked until asked
    np.testing.assert_array_equal(streamed.matrix(), plain.apply(x))
    reduced = Transform.fit([x], normalize="row", reduce=neardup.PCA(8))
    rows = Rows.transformed([x], reduced)
    assert rows.shape == (len(x), 8)
    np.testing.assert_array_equal(rows.matrix(), reduced.apply(x))


def test_a_pca_keeping_every_dimension_is_no_pca(digits):
    images, _ = digits
    x = images.reshape(len(images), -1)
    transform = Transform.fit([x], normalize="column", reduce=neardup.PCA(64))
    assert transform.reducer is None and transform.dim == 64
    assert set(transform.arrays()) == {"column_norms"}


def test_stored_arrays_round_trip(digits):
    images, _ = digits
    x = images.reshape(len(images), -1)
    transform = Transform.fit([x], normalize="column", reduce=neardup.PCA(10))
    again = Transform.from_arrays(transform.arrays(), 64, "column")
    np.testing.assert_array_equal(again.apply(x), transform.apply(x))
