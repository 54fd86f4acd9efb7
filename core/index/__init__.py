"""A stored reference index: fit the transform on reference data, save it, score new data."""

from ._reference import FORMAT_VERSION, ReferenceIndex

__all__ = ["FORMAT_VERSION", "ReferenceIndex"]
