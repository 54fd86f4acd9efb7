"""Gathering collected rows to rank 0 under torch.distributed (DDP), uneven shards included.

Every rank calls :func:`gather_rows` with the same (split, layer) keys in the same order;
sizes are exchanged first, each rank pads to the largest shard, rank 0 trims the padding
(torchmetrics' ``gather_all_tensors`` pattern), so uneven shards never hang.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.distributed as dist

__all__ = ["dedupe_by_id", "distributed", "gather_rows"]


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def _gather_padded(array: np.ndarray, device: torch.device) -> list[np.ndarray]:
    """All-gather a ``(n, ...)`` array whose ``n`` differs per rank; returns one per rank."""
    world = dist.get_world_size()
    tensor = torch.from_numpy(np.ascontiguousarray(array)).to(device)
    size = torch.tensor([tensor.shape[0]], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    counts = [int(s.item()) for s in sizes]
    longest = max(counts)
    if tensor.shape[0] < longest:
        pad = torch.zeros((longest - tensor.shape[0], *tensor.shape[1:]), dtype=tensor.dtype)
        tensor = torch.cat([tensor, pad.to(device)])
    parts = [torch.empty_like(tensor) for _ in range(world)]
    dist.all_gather(parts, tensor)
    return [p[:n].cpu().numpy() for p, n in zip(parts, counts)]


def gather_rows(
    values: np.ndarray,
    ids: np.ndarray,
    labels: np.ndarray | None,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Concatenate every rank's ``(values, ids, labels)``; all ranks get the same arrays.

    ``values``: ``(n, d)`` float32 (``d`` must agree across ranks); ids and labels: ``(n,)``
    integers. Labels are gathered only when every rank has them.
    """
    # one tiny round first so that a rank without rows (d unknown) or without labels still
    # takes part in exactly the same collectives as the others
    meta = torch.tensor(
        [values.shape[1] if values.size else -1, 0 if labels is None else 1],
        dtype=torch.int64,
        device=device,
    )
    metas = [torch.zeros_like(meta) for _ in range(dist.get_world_size())]
    dist.all_gather(metas, meta)
    dims = {int(m[0]) for m in metas} - {-1}
    if len(dims) > 1:
        raise RuntimeError(f"neardup: ranks collected different feature sizes {sorted(dims)}.")
    dim = dims.pop() if dims else 0
    all_labels = all(int(m[1]) for m in metas)
    values = values.reshape(-1, dim) if values.size == 0 else values
    out_values = np.concatenate(_gather_padded(values.astype(np.float32), device))
    out_ids = np.concatenate(_gather_padded(ids.astype(np.int64), device))
    out_labels = None
    if all_labels:
        out_labels = np.concatenate(_gather_padded(np.asarray(labels).astype(np.int64), device))
    return out_values, out_ids, out_labels


def dedupe_by_id(
    values: np.ndarray, ids: np.ndarray, labels: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Keep one row per dataset index, sorted by index (drops DistributedSampler padding).

    Sorting makes the row order independent of how the samples were sharded, so a
    multi-process run analyses exactly the rows of a one-process run, in the same order.
    """
    unique, first = np.unique(ids, return_index=True)
    if len(unique) == len(ids) and np.all(ids[:-1] <= ids[1:]):
        return values, ids, labels
    return values[first], unique, None if labels is None else labels[first]
