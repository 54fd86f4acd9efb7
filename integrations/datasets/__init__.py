"""Hugging Face ``datasets`` integration: activations as a column, leakage across a DatasetDict.

See ``_hook`` for how an :class:`ActivationHook` is identified in ``datasets``' cache;
``_embedder`` holds :class:`TransformerEmbedder`, ``_image`` :class:`ImageEmbedder` and
``_weights`` the weight hashing that ties a hook's cache identity to its model.
"""

# _hook checks that ``datasets`` is installed before anything else is imported
from ._hook import (
    POOLING_CHOICES,
    ActivationHook,
    ImageEmbedder,
    TransformerEmbedder,
    annotate,
    drop_leaked,
    find_leakage,
    vector_feature,
)

__all__ = [
    "POOLING_CHOICES",
    "ActivationHook",
    "ImageEmbedder",
    "TransformerEmbedder",
    "annotate",
    "drop_leaked",
    "find_leakage",
    "vector_feature",
]
