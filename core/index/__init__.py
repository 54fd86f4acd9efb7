"""A stored reference index: fit the transform on reference data, save it, score new data.

``_reference`` holds :class:`ReferenceIndex` (build, score, save, load); ``_storage`` the
on-disk format (file names, ``meta.json``, atomic writes).
"""

from ._reference import ReferenceIndex
from ._storage import FORMAT_VERSION

__all__ = ["FORMAT_VERSION", "ReferenceIndex"]
