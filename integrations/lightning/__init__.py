"""PyTorch Lightning integration: :class:`DuplicatesCallback` (see ``_callback``).

Split by concern: ``_callback`` (the hooks a Trainer calls), ``_hooks`` (forward hooks on the
chosen layers), ``_data`` (batches, labels, sample order) and ``_ddp`` (gathering rows across
ranks).
"""

from ._callback import DuplicatesCallback

__all__ = ["DuplicatesCallback"]
