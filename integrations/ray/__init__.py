"""Ray integration: the cell engine on a Ray cluster (``pip install "neardup[ray]"``).

- :class:`RayExecutor` runs each cell's exact join as one Ray task (rows through the object
  store, worker deaths retried by Ray's task retries); plug it into
  ``neardup.Cells(executor=RayExecutor())`` or let :func:`find_duplicates` do it.
- :func:`find_duplicates` reads a Ray Dataset, ``.npy``/Parquet shards or a Hugging Face
  dataset on Ray (optionally embedding raw samples with ``map_batches``) and returns the
  same :class:`neardup.DuplicatesResult` as :func:`neardup.find_duplicates`.
- :class:`ShardedReference` builds a reference split as saved ``ReferenceIndex`` shards (one
  Ray task per shard) and scores new data against all of them (one task per shard and
  batch), merged into the :class:`neardup.Leakage` one index gives.
"""

from .._common import missing_framework

try:
    import ray.data  # noqa: F401  (checks the extra is installed before anything else)
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise missing_framework("neardup.integrations.ray", "ray", err) from err

from ._executor import RayExecutor
from ._reference import ShardedReference
from ._run import find_duplicates, ray_backend, read_vectors
from ._sources import SplitArrays

__all__ = [
    "RayExecutor",
    "ShardedReference",
    "SplitArrays",
    "find_duplicates",
    "ray_backend",
    "read_vectors",
]
