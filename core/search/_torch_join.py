"""The in-cell screen of :func:`~neardup.search.join_cell` in torch, on the rows' own device.

Used when the rows are torch tensors (CUDA activations in the Lightning case) or when a torch
``device`` is asked for. torch is imported through :mod:`importlib` only when this runs, so
``import neardup`` loads no framework.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

__all__ = ["is_torch_tensor", "torch_join"]

#: bytes of candidate rows gathered at once to measure their exact distances.
_VERIFY_BYTES = 64 << 20


def is_torch_tensor(x: Any) -> bool:
    """True when ``x`` is a torch object (checked by its module, without importing torch)."""
    return type(x).__module__.split(".")[0] == "torch"


def torch_join(
    rows: Any,
    verify: Any,
    *,
    threshold: float,
    slack: float,
    block_size: int,
    n_primary: int,
    device: str | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate pairs of one cell and their exact distances, computed in torch.

    Parameters
    ----------
    rows:
        ``(m, d)`` float32 rows: a torch tensor (its device is used) or a numpy array.
    verify:
        ``None``, or ``(m, D)`` full-width rows whose distances decide (``rows`` being their
        orthonormal projection).
    threshold:
        Distance of the join.
    slack:
        Relative float32 slack of the product screen (times the largest squared row norm).
    block_size:
        Rows per matrix product.
    n_primary:
        Only pairs with at least one of the first ``n_primary`` rows.
    device:
        Torch device name, or ``None`` for the tensor's own device (CPU for numpy rows).

    Returns
    -------
    a, b : (p,) int64
        Local row indices of the candidates, ``a < b`` and ``a < n_primary``.
    distance : (p,) float32
        Exact distances (float32 differences, float64 sums), to be compared with the threshold.
    """
    torch = importlib.import_module("torch")
    x = rows if is_torch_tensor(rows) else torch.from_numpy(np.ascontiguousarray(rows, np.float32))
    x = x.to(device=device or x.device, dtype=torch.float32)
    sq = (x.double() * x.double()).sum(dim=1).float()
    limit = float(np.float32(threshold) ** 2) + slack * float(sq.max()) + 1e-12
    found_a, found_b = [], []
    for start in range(0, n_primary, block_size):
        stop = min(n_primary, start + block_size)
        d2 = x[start:stop] @ x[start:].T
        d2.mul_(-2.0).add_(sq[None, start:]).add_(sq[start:stop, None])
        a, b = torch.nonzero(d2 <= limit, as_tuple=True)
        upper = b > a
        found_a.append(a[upper] + start)
        found_b.append(b[upper] + start)
    a = torch.cat(found_a)
    b = torch.cat(found_b)
    if verify is not None:
        source = (
            verify if is_torch_tensor(verify) else torch.from_numpy(np.asarray(verify, np.float32))
        )
        x = source.to(device=x.device, dtype=torch.float32)
    step = max(1, _VERIFY_BYTES // (4 * x.shape[1]))  # bounded memory for wide rows
    parts = []
    for start in range(0, len(a), step):
        diff = (x[a[start : start + step]] - x[b[start : start + step]]).double()
        parts.append(torch.sqrt((diff * diff).sum(dim=1)).float().cpu().numpy())
    dist = np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)
    return a.cpu().numpy().astype(np.int64), b.cpu().numpy().astype(np.int64), dist
