"""Whole-pixel shifts of small images: the overlap correlation at the source resolution.

:class:`AlignedImageView` blows images smaller than 16 px up to a whole multiple of their side
from 16 px on by box filtering, which repeats each source pixel over ``f x f`` thumbnail
pixels (an 8x8 digit: 16x16, 2x2 each). The aligned distance
(:func:`indexed_aligned_distances`) searches shifts within a reach in *thumbnail* pixels on a
fixed central region: about one source pixel of an 8x8 image, so a 2 px shift of a digit (a
quarter of its side) stays out of reach, and the central region left at a wider reach (4x4
source pixels) would bring every digit of a class together.

Here the thumbnails are taken back to their source grid (:func:`source_factor`,
:func:`source_images`) and each pair is compared, for every whole-pixel shift within
:func:`shift_reach` source pixels, on the region where the two images overlap (Pearson
correlation over the overlap; the pixels a shift pushes off the edge are left out). A 2 px shift
of a digit overlaps its source on 6x6 pixels and matches there exactly. Measured on scikit-learn
digits (1,200 train / 597 test, seed 0 of ``benchmarks/bench_quality.py``): shifted copies at
distance 0, natural test->train nearest distances from 0.108 (1 % quantile 0.171, median 0.33),
much as at a reach of one pixel (from 0.108, median 0.335).
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "SHIFT_REACH",
    "overlap_distances",
    "shift_crops",
    "shift_offsets",
    "shift_reach",
    "source_factor",
    "source_images",
    "unit_rows",
]

#: largest shift tried, in source pixels, each way on each axis
SHIFT_REACH = 2
#: the overlap of a shift keeps at least this share of the side
_MIN_OVERLAP = 0.75
_PAIR_BLOCK = 65_536


def source_factor(images: np.ndarray, *, largest_source: int = 15) -> int:
    """Thumbnail pixels per source pixel of ``(N, R, R, C)`` thumbnails (1: not blown up).

    The largest ``f`` dividing ``R`` with ``4 <= R / f <= largest_source`` such that every
    thumbnail is constant on its ``f x f`` blocks (up to float32 rounding): what box filtering
    a ``R / f`` px image up to ``R`` px gives (an 8x8 digit in a 16x16 thumbnail: 2).
    """
    if not len(images):
        return 1
    side = images.shape[1]
    peak = float(np.abs(images).max()) or 1.0
    for factor in range(side // 2, 1, -1):
        if side % factor or not 4 <= side // factor <= largest_source:
            continue
        # a few images first: most thumbnails are not blown up, and this rules them out cheaply
        if _blocky(images[:16], factor, peak) and _blocky(images, factor, peak):
            return factor
    return 1


def _blocky(images: np.ndarray, factor: int, peak: float) -> bool:
    """Whether every image of ``images`` is constant on its ``factor x factor`` blocks."""
    back = np.repeat(np.repeat(source_images(images, factor), factor, axis=1), factor, axis=2)
    return float(np.abs(back - images).max()) <= 1e-5 * peak


def source_images(images: np.ndarray, factor: int) -> np.ndarray:
    """``(N, R / f, R / f, C)``: each ``f x f`` block of ``(N, R, R, C)`` thumbnails averaged."""
    n, side, _, channels = images.shape
    small = side // factor
    blocks = images.reshape(n, small, factor, small, factor, channels)
    return blocks.mean(axis=(2, 4), dtype=np.float64).astype(np.float32)


def shift_reach(side: int) -> int:
    """Shifts tried on a ``side`` px source: :data:`SHIFT_REACH` px, fewer where the overlap
    would fall below three quarters of the side (a 4x4 image: 1 px)."""
    return int(max(0, min(SHIFT_REACH, np.floor(side * (1.0 - _MIN_OVERLAP)))))


def shift_offsets(reach: int) -> list[tuple[int, int]]:
    """The ``(2 reach + 1) ** 2`` whole-pixel offsets ``(dy, dx)``, ``(0, 0)`` first."""
    steps = range(-reach, reach + 1)
    return sorted(((dy, dx) for dy in steps for dx in steps), key=lambda o: (o != (0, 0), o))


def shift_crops(images: np.ndarray, dy: int, dx: int) -> tuple[np.ndarray, np.ndarray]:
    """The overlap of ``(N, S, S, C)`` images with themselves moved by ``(dy, dx)``, as
    ``(N, n)`` rows centred and of unit length (0 where constant): ``first[p]`` is image ``p``'s
    pixels ``(y, x)``, ``second[p]`` its pixels ``(y + dy, x + dx)``, over every ``(y, x)``
    where both exist. ``first[a] @ second[b]`` is the Pearson correlation of ``a`` and ``b``
    shifted by ``(dy, dx)`` on their overlap."""
    return _first_crops(images, dy, dx), _first_crops(images, -dy, -dx)


def _first_crops(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``shift_crops(images, dy, dx)[0]``; the second is ``_first_crops(images, -dy, -dx)``."""
    side = images.shape[1]
    return unit_rows(images[:, max(-dy, 0) : side - max(dy, 0), max(-dx, 0) : side - max(dx, 0)])


def unit_rows(crops: np.ndarray) -> np.ndarray:
    """``(N, n)`` float32 rows of ``(N, ...)`` arrays, each centred and of unit length (0 where
    constant): their products are Pearson correlations."""
    rows = crops.reshape(len(crops), -1).astype(np.float32)
    rows -= rows.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(rows, axis=1, keepdims=True)
    peak = np.abs(crops.reshape(len(crops), -1)).max(axis=1, keepdims=True)
    flat = norm <= 1e-5 * np.maximum(peak, 1e-30) * np.sqrt(rows.shape[1])
    rows /= np.where(flat, np.inf, norm)  # a constant overlap: zeros (correlation 0)
    return rows


def overlap_distances(
    images: np.ndarray, i: np.ndarray, j: np.ndarray, *, reach: int
) -> np.ndarray:
    """Best overlap correlation distance of the pairs ``(images[i[p]], images[j[p]])``.

    Parameters
    ----------
    images:
        ``(N, S, S, C)`` images at their source resolution (:func:`source_images`).
    i, j:
        ``(P,)`` row numbers of the pairs.
    reach:
        Largest whole-pixel shift tried each way on each axis (:func:`shift_reach`).

    Returns
    -------
    np.ndarray
        ``(P,)`` float32 ``sqrt(2 - 2 r)``, ``r`` the best Pearson correlation over the shifts
        of ``images[j[p]]`` against ``images[i[p]]`` on their overlap: 0 for a shifted copy,
        about ``sqrt(2)`` for unrelated images; a constant overlap gives correlation 0.
        Symmetric in the pair (a shift one way is the opposite shift the other way).
    """
    rows, i = np.unique(np.asarray(i, dtype=np.int64), return_inverse=True)
    cols, j = np.unique(np.asarray(j, dtype=np.int64), return_inverse=True)
    i, j = i.ravel(), j.ravel()
    best = np.full(len(i), -1.0, dtype=np.float32)
    for dy, dx in shift_offsets(reach) if len(i) else ():
        first, second = _first_crops(images[rows], dy, dx), _first_crops(images[cols], -dy, -dx)
        for start in range(0, len(i), _PAIR_BLOCK):
            block = slice(start, start + _PAIR_BLOCK)
            corr = np.einsum("pn,pn->p", first[i[block]], second[j[block]])
            np.maximum(best[block], corr, out=best[block])
    return np.sqrt(np.maximum(2.0 - 2.0 * best, 0.0)).astype(np.float32)
