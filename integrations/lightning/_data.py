"""Batches and sample identity for the Lightning callback.

- :func:`sample_order`: the dataset index of every sample an eval dataloader will yield, from
  its (deterministic) sampler, so each activation row carries its dataset index.
- :func:`sharded_loader`: a sequential copy of a map-style loader covering this rank's
  share of the dataset (for the explicit eval-mode pass over the training data).
- :func:`default_forward` / :func:`default_labels` / :func:`default_input`: how a batch is
  fed, labelled, and what the input view reads.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch.utils.data import (
    DataLoader,
    IterableDataset,
    RandomSampler,
    SubsetRandomSampler,
    WeightedRandomSampler,
)

__all__ = [
    "LABEL_KEYS",
    "default_forward",
    "default_input",
    "default_labels",
    "is_map_style",
    "sample_order",
    "sharded_loader",
]

LABEL_KEYS = ("label", "labels", "y", "target", "targets")
_INPUT_KEYS = ("x", "input", "inputs", "image", "images", "pixel_values", "input_ids")
_RANDOM = (RandomSampler, SubsetRandomSampler, WeightedRandomSampler)


def is_map_style(loader: Any) -> bool:
    return isinstance(loader, DataLoader) and not isinstance(loader.dataset, IterableDataset)


def _innermost_sampler(loader: DataLoader) -> Any:
    sampler = loader.sampler
    # Lightning's DistributedSamplerWrapper keeps the user's sampler inside
    inner = getattr(getattr(sampler, "dataset", None), "_sampler", None)
    return inner if inner is not None else sampler


def sample_order(loader: Any) -> tuple[np.ndarray | None, str | None]:
    """Dataset indices in the order ``loader`` yields its samples, or ``(None, why)``.

    Re-iterates the sampler, which is only valid for deterministic samplers (sequential,
    DistributedSampler, a fixed list); random samplers would draw a different order.
    """
    if not isinstance(loader, DataLoader):
        return None, f"the dataloader is a {type(loader).__name__}, not a torch DataLoader"
    if isinstance(loader.dataset, IterableDataset):
        return None, "its dataset is an IterableDataset (no indices)"
    sampler = _innermost_sampler(loader)
    if isinstance(sampler, _RANDOM):
        return None, f"its sampler is a {type(sampler).__name__} (a new random order each pass)"
    # sequential samplers, DistributedSampler (seeded per epoch, even when shuffling) and
    # fixed lists give the same order on every pass
    source = loader.batch_sampler if loader.batch_sampler is not None else loader.sampler
    if loader.batch_sampler is not None:
        flat = itertools.chain.from_iterable(source)
    else:
        flat = iter(source)
    order = np.fromiter(flat, dtype=np.int64)
    return order, None


def sharded_loader(loader: DataLoader, rank: int, world: int) -> DataLoader:
    """A sequential, unshuffled copy of ``loader`` over samples ``rank, rank + world, ...``.

    Keeps the dataset, collate function and workers; the batch size is the loader's (or its
    batch sampler's). The indices are exposed as ``loader.sampler`` (a plain list).
    """
    batch_size = loader.batch_size or getattr(loader.batch_sampler, "batch_size", None) or 32
    indices = list(range(rank, len(loader.dataset), world))
    return DataLoader(
        loader.dataset,
        batch_size=batch_size,
        sampler=indices,
        num_workers=loader.num_workers,
        collate_fn=loader.collate_fn,
        pin_memory=loader.pin_memory,
        worker_init_fn=loader.worker_init_fn,
        multiprocessing_context=loader.multiprocessing_context if loader.num_workers else None,
    )


def default_forward(module: torch.nn.Module, batch: Any) -> Any:
    """Call the model on a batch: ``x`` of an ``(x, y, ...)`` tuple, a dict, or a tensor."""
    if isinstance(batch, torch.Tensor):
        return module(batch)
    if isinstance(batch, (tuple, list)) and batch:
        return module(batch[0])
    if isinstance(batch, Mapping):
        for key in _INPUT_KEYS:
            if key in batch and key != "input_ids":
                return module(batch[key])
        return module(**{k: v for k, v in batch.items() if k not in LABEL_KEYS})
    raise TypeError(
        f"neardup cannot feed a batch of type {type(batch).__name__} to the model; pass "
        "forward_fn=lambda module, batch: module(...)."
    )


def default_input(batch: Any) -> Any:
    """The inputs of a batch, as the model receives them: ``x`` of ``(x, y, ...)``, a dict's
    input entry (``"image"``, ``"pixel_values"``, ``"text"``, ...), or the batch itself."""
    if isinstance(batch, (tuple, list)) and batch:
        return batch[0]
    if isinstance(batch, Mapping):
        for key in (*_INPUT_KEYS, "text", "texts"):
            if key in batch and key != "input_ids":
                return batch[key]
        return None
    return batch


def default_labels(batch: Any) -> Any:
    """``y`` of an ``(x, y, ...)`` tuple or a dict's label key, when it is one int per sample."""
    label = None
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        label = batch[1]
    elif isinstance(batch, Mapping):
        label = next((batch[k] for k in LABEL_KEYS if k in batch), None)
    if isinstance(label, torch.Tensor) and label.ndim == 1 and not label.is_floating_point():
        return label
    return None
