"""Positions of the true entries of a 2-D mask, fast.

``np.nonzero`` on a 2-D boolean array walks it element by element with a multi-index
iterator: measured 50 ms on a ``(500, 16384)`` mask, against 3 ms for ``np.flatnonzero`` of
the same mask followed by a ``divmod`` of the (few) hits. The engine's screens produce such
masks for every block of rows, so they all go through :func:`true_positions`.
"""

from __future__ import annotations

import numpy as np

__all__ = ["true_positions"]


def true_positions(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(rows, cols)`` int64 of the true entries of a 2-D ``mask``, in row-major order
    (what ``np.nonzero(mask)`` returns)."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"true_positions takes a 2-D mask, got {mask.ndim} dimensions")
    flat = np.flatnonzero(mask)
    if mask.shape[1] == 0:
        return flat, flat.copy()
    return np.divmod(flat, mask.shape[1])
