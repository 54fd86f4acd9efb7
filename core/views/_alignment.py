"""Aligned distance between two thumbnails: the best match over small shifts and scales.

A 1-2 pixel shift or a 90 % crop resized back moves every pixel, so the copy lies far from its
source in any fixed-grid view. Re-sampling one image of a pair over a grid of shifts (whole
pixels at scale 1, half pixels at scale 0.9) and keeping the best correlation on the central
region undoes that: shifted copies match exactly, crops nearly (Fashion-MNIST: 95 % of 90 %
crops within 0.085 while 99 % of natural nearest neighbours lie beyond 0.126), while different
images stay apart.

The maths, for a pair ``(a, b)`` of ``(R, R, C)`` thumbnails and one scale ``s``: ``b`` is
sampled at rows ``c + (u - c) s + dy`` and columns ``c + (v - c) s + dx`` (linear interpolation,
``u, v`` over the central ``r x r`` region, ``dy, dx`` over the offsets), giving ``Z(dy, dx)``;
the score is the Pearson correlation of ``Z`` with ``a``'s central region. Both interpolations
are separable, so the numerators for all ``T x T`` offsets are one small matrix product per pair
(rows of ``b`` sampled, columns of ``a`` spread back), and the variances of ``Z`` come from the
banded Gram matrix of the column interpolation (no ``Z`` is ever formed).
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

__all__ = ["DEFAULT_SCALES", "aligned_distances"]

#: scales tried: same size, and a 90 % crop (one image zoomed in by 1 / 0.9; both ways round)
DEFAULT_SCALES = (1.0, 0.9)
_PAIR_BLOCK = 512


def _sampling(side: int, margin: int, scale: float, offsets: np.ndarray) -> np.ndarray:
    """``(T, r, R)`` linear-interpolation weights: output ``u`` of offset ``t`` reads the input
    at ``c + (u - c) * scale + offsets[t]`` (clamped to the image), ``u`` in ``[m, R - m)``."""
    centre = (side - 1) / 2.0
    out_pos = np.arange(margin, side - margin)
    source = centre + (out_pos[None, :] - centre) * scale + offsets[:, None]
    source = np.clip(source, 0.0, side - 1.0)
    low = np.floor(source).astype(np.int64)
    high = np.minimum(low + 1, side - 1)
    frac = source - low
    weights = np.zeros((*source.shape, side), dtype=np.float64)
    t_idx, u_idx = np.indices(source.shape)
    np.add.at(weights, (t_idx, u_idx, low), 1.0 - frac)
    np.add.at(weights, (t_idx, u_idx, high), frac)
    return weights.astype(np.float32)


def aligned_distances(
    a: np.ndarray,
    b: np.ndarray,
    *,
    reach: float = 2.0,
    step: float = 0.5,
    scales: tuple[float, ...] = DEFAULT_SCALES,
    symmetric: bool = True,
) -> np.ndarray:
    """Best-match correlation distance of each pair ``(a[p], b[p])`` over shifts and scales.

    Parameters
    ----------
    a, b:
        ``(P, R, R, C)`` thumbnails (any real values; each pair is compared on ``a``'s central
        ``(R - 2m) x (R - 2m)`` region, ``m = ceil(reach)``).
    reach:
        Largest shift tried, in thumbnail pixels, each way and on each axis.
    step:
        Shift grid step in thumbnail pixels for the scales other than 1 (0.5: half-pixel
        shifts within ``reach - 0.5``); at scale 1 whole-pixel shifts are tried.
    scales:
        Scales of ``b`` tried (``0.9``: ``b`` zoomed in, as a 90 % crop of it resized back).
    symmetric:
        Also try ``a`` zoomed in against ``b``'s central region at every scale other than 1,
        so the distance is the same whichever image of the pair is the crop.

    Returns
    -------
    np.ndarray
        ``(P,)`` float32 ``sqrt(2 - 2 r)`` with ``r`` the best Pearson correlation: 0 for an
        exact (shifted) copy, about ``sqrt(2)`` for unrelated images; a constant region gives
        correlation 0.
    """
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    pairs, side, _, channels = a.shape
    margin = int(np.ceil(reach))
    inner = side - 2 * margin
    if inner < 2:
        raise ValueError(f"thumbnails of side {side} are too small for reach {reach}")
    n = inner * inner * channels
    samplers = [_Sampler(_sampling(side, margin, s, _offsets(s, reach, step))) for s in scales]
    zooms = [z for s, z in zip(scales, samplers) if s != 1.0] if symmetric else []
    out = np.empty(pairs, dtype=np.float32)
    for start in range(0, pairs, _PAIR_BLOCK):
        stop = min(pairs, start + _PAIR_BLOCK)
        out[start:stop] = _block(a[start:stop], b[start:stop], samplers, margin, n)
        if zooms:
            back = _block(b[start:stop], a[start:stop], zooms, margin, n)
            np.minimum(out[start:stop], back, out=out[start:stop])
    return out


def _offsets(scale: float, reach: float, step: float) -> np.ndarray:
    """Shifts tried at ``scale``: whole pixels at scale 1 (a shifted copy lands exactly on the
    grid), sub-pixel steps within ``reach - 0.5`` otherwise (a crop's offset is fractional)."""
    if scale == 1.0:
        return np.arange(-np.floor(reach), np.floor(reach) + 1e-9, 1.0)
    return np.arange(-(reach - 0.5), reach - 0.5 + 1e-9, step)


class _Sampler:
    """One scale's interpolation weights ``(T, r, R)`` and the sparse forms the products use
    (two non-zeros per output position: a dense product would be ~14x the work at R = 28)."""

    def __init__(self, weights: np.ndarray) -> None:
        _, inner, side = weights.shape
        self.weights = weights
        self.rows = sparse.csr_matrix(weights.reshape(-1, side))  # (T*r, R)
        # (T*R, r): spread a's columns j back onto b's columns l, per offset
        self.spread = sparse.csr_matrix(weights.transpose(0, 2, 1).reshape(-1, inner))
        self.col_sum = weights.sum(axis=1)  # (T, R)
        self.gram0 = (weights * weights).sum(axis=1)  # (T, R): diagonal of W^T W
        self.gram1 = (weights[:, :, :-1] * weights[:, :, 1:]).sum(axis=1)  # (T, R - 1)


def _block(
    a: np.ndarray, b: np.ndarray, samplers: list[_Sampler], margin: int, n: int
) -> np.ndarray:
    p, side, _, channels = a.shape
    inner = side - 2 * margin
    centre = a[:, margin : side - margin, margin : side - margin, :].reshape(p, n)
    centre = centre - centre.mean(axis=1, keepdims=True)
    centre /= np.maximum(np.linalg.norm(centre, axis=1, keepdims=True), 1e-12)
    centre = centre.reshape(p, inner, inner, channels)
    # b as (R, p * R * C): one matrix product samples the rows of every pair at once
    b_rows = np.ascontiguousarray(b.transpose(1, 0, 2, 3)).reshape(side, -1)
    # a's centre as (r, p * r * C): its columns j first
    a_cols = np.ascontiguousarray(centre.transpose(2, 0, 1, 3)).reshape(inner, -1)
    best = np.full(p, -np.inf, dtype=np.float32)
    for sampler in samplers:
        count = len(sampler.weights)
        # q[p, ty, i, l, c] = sum_k W[ty, i, k] b[p, k, l, c]
        q = np.asarray(sampler.rows @ b_rows).reshape(count, inner, p, side, channels)
        q = np.ascontiguousarray(q.transpose(2, 0, 1, 3, 4))
        # v[p, tx, i, l, c] = sum_j a[p, i, j, c] W[tx, j, l]
        v = np.asarray(sampler.spread @ a_cols).reshape(count, side, p, inner, channels)
        v = np.ascontiguousarray(v.transpose(2, 0, 3, 1, 4)).reshape(p, count, -1)
        numerator = np.matmul(q.reshape(p, count, -1), v.transpose(0, 2, 1))
        # sums of Z = q W^T over (j, i, c): column sums of W; squares: W^T W is banded (|l-l'|<=1)
        q_lines = q.sum(axis=(2, 4))  # (p, T, R): sum over i and c
        total = q_lines @ sampler.col_sum.T  # (p, Ty, Tx)
        sq0 = np.einsum("ptilc,ptilc->ptl", q, q)  # (p, T, R)
        sq1 = np.einsum("ptilc,ptilc->ptl", q[..., :-1, :], q[..., 1:, :])  # (p, T, R - 1)
        squares = sq0 @ sampler.gram0.T + 2.0 * (sq1 @ sampler.gram1.T)
        spread = squares - total * total / n
        corr = numerator / np.sqrt(np.maximum(spread, 1e-12))
        corr[spread <= 1e-9 * np.maximum(squares, 1e-30)] = 0.0
        best = np.maximum(best, corr.reshape(p, -1).max(axis=1))
    return np.sqrt(np.maximum(2.0 - 2.0 * best, 0.0)).astype(np.float32)
