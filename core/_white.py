"""White residuals: noisy copies beyond the cut, told from look-alikes by their difference.

Pixel noise (sensor noise, Gaussian noise added by augmentation) moves a faint picture's
standardised thumbnail as far from its source as natural look-alikes lie, so no cut on the
thumbnail distance separates them. Their *difference* does: a noisy copy minus its source
(after the best gain per channel) is the noise itself, white, with almost no correlation
between neighbouring pixels, while two different pictures differ by picture structure,
which is smooth at the pixel scale (its neighbouring pixels correlate strongly).

:func:`residual_whiteness` measures that on full-resolution thumbnails: the largest
absolute autocorrelation, at lags 1 and 2 along rows and columns, of the per-channel
least-squares residual ``b - gain * a`` (means removed). A pair is *white* when it is at
most :func:`white_level` and the pair lies within :data:`WHITE_REACH` of the view's cut.
Two unrelated pictures of white noise differ by white noise too; so the gains must also
explain at least :data:`WHITE_EXPLAINED` of ``b``'s variance (``b`` carries ``a``'s
picture), or the pair is not measured.

Measured on colourised Fashion-MNIST 20,000 + 5,000 (``benchmarks/bench_quality.py --only
colour``, seeds 0 / 1; each test row and its nearest train row in the colour and YCbCr 8x8
views, between 1 and 3 cuts away): every noisy copy (sigma 8/255) at most 0.046, every
unplanted test row at least 0.163 / 0.165 (colour-jitter copies from 0.10, JPEG copies
from 0.32: their residuals are smooth). 0.08 lies between them on a log scale. On the
planting of ``--only noise,colour`` (seed 1) a patterned shirt against a plain one (not a
copy) came to 0.0786, so the level is now :func:`white_level`, 0.074 at 28 x 28 x 3 and
scaled with the residual's size (:data:`WHITE_Z`). The gains
of every noisy copy explain at least 16 % of its variance (correlation 0.40 and up); of two
unrelated 28x28 colour noise images, about 0.1 %.
"""

from __future__ import annotations

import numpy as np

__all__ = ["WHITE_EXPLAINED", "WHITE_REACH", "WHITE_Z", "residual_whiteness", "white_level"]

#: a pair is white when its residual's largest neighbour autocorrelation is at most this many
#: standard errors of an autocorrelation of white noise (``1 / sqrt(R * R * C)``): 0.074 for
#: 28 x 28 x 3 residuals (see :func:`white_level`). Between the whitest look-alike measured,
#: 3.81 (a patterned shirt against a plain one, 0.0786) and the least white of 300 noisy
#: copies of colourised Fashion-MNIST pictures, 3.46 (0.0714, ``tests/test_white.py``).
WHITE_Z = 3.6
#: ... and the pair lies within this many cuts of the view
WHITE_REACH = 3.0
#: ... and the gains explain at least this share of the copy's variance
WHITE_EXPLAINED = 0.05
_LAGS = (1, 2)
_PAIR_BLOCK = 1024


def white_level(size: int) -> float:
    """The largest whiteness of a white pair whose residuals hold ``size`` values (``R * R *
    C``): ``WHITE_Z / sqrt(size)``. White noise's autocorrelations spread as
    ``1 / sqrt(size)``, so a fixed level would miss noisy copies of small thumbnails (16 x 16
    x 3: 0.130) and pass look-alikes of large ones; the largest of the 8 measured exceeds 3.6
    standard errors for about 0.3 % of white residuals."""
    return WHITE_Z / float(np.sqrt(max(int(size), 1)))


def residual_whiteness(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(P,)`` the largest ``|autocorrelation|`` at lags 1 and 2 (rows and columns) of the
    residual ``b - gain * a`` of each pair of ``(P, R, R, C)`` thumbnails, with the means
    and the least-squares ``gain`` per channel and pair (``R >= 3``).

    0 for white noise, near 1 for a smooth residual; ``inf`` where the residual is zero (an
    exact copy up to gain: nothing to measure, and the cut finds it) or where the gains
    explain less than :data:`WHITE_EXPLAINED` of ``b``'s variance (``b`` is no copy of
    ``a``, whatever its residual looks like).
    """
    a = np.asarray(a)
    b = np.asarray(b)
    out = np.empty(len(a))
    for start in range(0, len(a), _PAIR_BLOCK):
        x = a[start : start + _PAIR_BLOCK].astype(np.float64)
        y = b[start : start + _PAIR_BLOCK].astype(np.float64)
        x -= x.mean(axis=(1, 2), keepdims=True)
        y -= y.mean(axis=(1, 2), keepdims=True)
        gain = (x * y).sum(axis=(1, 2), keepdims=True) / np.maximum(
            (x * x).sum(axis=(1, 2), keepdims=True), 1e-300
        )
        e = y - gain * x
        energy = (e * e).sum(axis=(1, 2, 3))
        worst = np.zeros(len(e))
        for lag in _LAGS:
            rows = np.abs((e[:, lag:] * e[:, :-lag]).sum(axis=(1, 2, 3)))
            cols = np.abs((e[:, :, lag:] * e[:, :, :-lag]).sum(axis=(1, 2, 3)))
            np.maximum(worst, np.maximum(rows, cols), out=worst)
        total = np.maximum((y * y).sum(axis=(1, 2, 3)), 1e-300)
        flat = (energy <= 1e-12 * total) | (energy > (1.0 - WHITE_EXPLAINED) * total)
        out[start : start + len(e)] = np.where(flat, np.inf, worst / np.where(flat, 1.0, energy))
    return out
