"""Hugging Face ``datasets`` integration: activations as a column, leakage across a DatasetDict.

Split by concern: ``_hook`` (the ``Dataset.map`` hook and how ``datasets`` caches it),
``_embedder`` (:class:`TransformerEmbedder`), ``_image`` (:class:`ImageEmbedder`),
``_weights`` (weight hashes that tie a hook's cache identity to its model), ``_arrow``
(vector and label columns read as numpy through Arrow), ``_analysis`` (:func:`find_leakage`),
``_annotate`` (:func:`annotate`, :func:`drop_leaked`) and ``_stream`` (streaming
``IterableDataset`` splits read once into Arrow in memory).
"""

# _hook first: it checks that ``datasets`` is installed and names the extra when it is not
from ._hook import ActivationHook, vector_feature  # isort: skip
from ._analysis import find_leakage
from ._annotate import annotate, drop_leaked
from ._embedder import POOLING_CHOICES, TransformerEmbedder
from ._image import ImageEmbedder

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
