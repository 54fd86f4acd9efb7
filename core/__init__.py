"""neardup: near-duplicate samples and train/test leakage from intermediate-layer activations.

>>> import numpy as np, neardup
>>> rng = np.random.default_rng(0)
>>> train = rng.normal(size=(500, 32)).astype("float32")
>>> test = np.concatenate([train[:5] + 0.01, rng.normal(size=(95, 32))]).astype("float32")
>>> result = neardup.find_duplicates({"train": train, "test": test})
>>> result.leakage["test"].count
5
"""

from ._collector import ActivationCollector
from ._errors import LeakageError, NeardupInputError
from ._pipeline import analyze_layers, find_duplicates, find_duplicates_by_layer
from ._reduce import PCA
from ._threshold import (
    Cosine,
    Distance,
    Percentile,
    Relative,
    ResolvedThreshold,
    Slope,
    ThresholdStrategy,
)
from .compat.dnikit import Duplicates
from .index import ReferenceIndex
from .report import DuplicateSet, DuplicatesResult, Leakage

__version__ = "0.1.0"

__all__ = [
    "PCA",
    "ActivationCollector",
    "Cosine",
    "Distance",
    "DuplicateSet",
    "Duplicates",
    "DuplicatesResult",
    "Leakage",
    "LeakageError",
    "NeardupInputError",
    "Percentile",
    "ReferenceIndex",
    "Relative",
    "ResolvedThreshold",
    "Slope",
    "ThresholdStrategy",
    "__version__",
    "analyze_layers",
    "find_duplicates",
    "find_duplicates_by_layer",
]
