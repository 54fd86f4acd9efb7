"""Crops of small images: each image zoomed in on a grid of boxes, at its source resolution.

A 90 % crop of an 8x8 digit, resized back to 8x8, keeps 7.2 of its 8 pixels a side and
blurs them: no whole-pixel shift matches it to its source (:func:`overlap_distances`; on
scikit-learn digits such crops lay 0.6-0.9 from their source where natural nearest
neighbours start at 0.15), and the thumbnail's half-pixel crop search works on pixels that
are blown-up copies of source pixels. Here each image is instead *zoomed in* at its source
resolution: bilinear samples of a box of :data:`CROP_SCALES` times its side, at
:data:`CROP_OFFSETS` x :data:`CROP_OFFSETS` positions spread over the image (the box's
corners from 0 to the side minus the box), resized back to the full side. A crop of image
``a`` lies close to one of ``a``'s zoomed boxes, so a pair's *crop distance* is
``sqrt(2 - 2 r)`` for the best Pearson correlation ``r`` of either image against the other's
zoomed boxes.

Measured on scikit-learn digits (1,200 train / 597 test; crops of 30 train images): 90 %
crops at fractional positions (Pillow's bilinear resize of a 7.2 px box) lie 0.08 (median)
to 0.13 from their source, 7 px crops resized bicubically 0.10-0.13, while the natural test
rows' nearest train rows stay at 0.150 and more (the zoomed boxes bring no natural pair
closer: minimum, 0.1 % and 1 % quantiles unchanged). ``Auto`` cuts the aligned view of
digits at 0.09-0.12, below the natural minimum: bilinear crops are found (8-10 of 10 at
fractional positions, all at whole-pixel ones), bicubic ones at fractional positions mostly
not (1.0-1.6 cuts). On Fashion-MNIST box-filtered to 10x10 the benchmark's crops lie at
0.013 (median); at 12x12 (natural look-alikes from 0.076) 24 of 30 are found.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from ._shift import unit_rows

__all__ = [
    "CROP_OFFSETS",
    "CROP_SCALES",
    "SEARCH_OFFSETS",
    "crop_distances",
    "crop_samplers",
    "zoomed_pairs",
    "zoomed_rows",
]

#: the zoomed box's side, as a share of the image side
CROP_SCALES = (0.9, 0.875)
#: box positions per axis, spread evenly from the top-left to the bottom-right corner
CROP_OFFSETS = 5
#: box positions per axis of the candidate search when it is probed (many images): a coarser
#: grid, 36 searches instead of 100 (the pairs it lists are scored on the whole grid)
SEARCH_OFFSETS = 3
_PAIR_BLOCK = 16_384


def _box_sampler(side: int, start: float, size: float) -> np.ndarray:
    """``(side, side)`` bilinear weights taking one axis' box ``[start, start + size)`` (in
    source pixels) to ``side`` samples at pixel centres (as Pillow's bilinear resize)."""
    out = np.zeros((side, side))
    position = start + (np.arange(side) + 0.5) * size / side - 0.5
    position = np.clip(position, 0.0, side - 1.0)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, side - 1)
    weight = position - low
    rows = np.arange(side)
    np.add.at(out, (rows, low), 1.0 - weight)
    np.add.at(out, (rows, high), weight)
    return out


def crop_samplers(side: int, offsets: int = CROP_OFFSETS) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every zoomed box of a ``side`` px image as ``(rows, cols)`` weights ``(side, side)``
    each: ``rows @ image @ cols.T`` is the box resized back to ``side``; ``len(CROP_SCALES) *
    offsets ** 2`` boxes."""
    out = []
    for scale in CROP_SCALES:
        size = scale * side
        starts = np.linspace(0.0, side - size, offsets)
        axes = [_box_sampler(side, float(start), size) for start in starts]
        out += [(rows, cols) for rows in axes for cols in axes]
    return out


def zoomed_rows(source: np.ndarray, sampler: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """``(N, S * S * C)`` unit rows of ``(N, S, S, C)`` images zoomed into one box of
    :func:`crop_samplers` (centred, unit length: their products are correlations)."""
    rows, cols = (w.astype(np.float32) for w in sampler)
    zoomed = np.einsum("yi,nijc,xj->nyxc", rows, source.astype(np.float32), cols, optimize=True)
    return unit_rows(zoomed)


def zoomed_pairs(
    source: np.ndarray, offsets: int = CROP_OFFSETS
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """For each zoomed box (:func:`crop_samplers` with ``offsets`` positions per axis),
    ``(plain, zoomed)`` unit rows of every image: ``plain[a] @ zoomed[b]`` is the correlation
    of image ``a`` with that box of image ``b``."""
    plain = unit_rows(source)
    for sampler in crop_samplers(source.shape[1], offsets):
        yield plain, zoomed_rows(source, sampler)


def crop_distances(source: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """``(P,)`` float32 crop distance of the pairs ``(source[i[p]], source[j[p]])``: ``sqrt(2
    - 2 r)``, ``r`` the best correlation of either image against the other's zoomed boxes
    (``source`` ``(N, S, S, C)``, small images at their source resolution). Symmetric."""
    i, j = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)
    best = np.full(len(i), -1.0, dtype=np.float32)
    if not len(i):
        return best
    rows = np.unique(np.concatenate([i, j]))
    at_i, at_j = np.searchsorted(rows, i), np.searchsorted(rows, j)
    images = source[rows]
    plain = unit_rows(images)
    for sampler in crop_samplers(source.shape[1]):
        zoomed = zoomed_rows(images, sampler)
        for start in range(0, len(i), _PAIR_BLOCK):
            block = slice(start, start + _PAIR_BLOCK)
            a, b = at_i[block], at_j[block]
            corr = np.maximum(
                np.einsum("pn,pn->p", plain[a], zoomed[b]),
                np.einsum("pn,pn->p", zoomed[a], plain[b]),
            )
            np.maximum(best[block], corr, out=best[block])
    return np.sqrt(np.maximum(2.0 - 2.0 * best, 0.0)).astype(np.float32)
