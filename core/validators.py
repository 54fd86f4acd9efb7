"""Public option validators shared by the core and the framework integrations.

Each ``check_*`` / ``as_*`` function returns the cleaned value or raises
:class:`~neardup.NeardupInputError` naming the option, the value received and the fix.
"""

from ._collector import check_memory_budget, check_spill_dir
from ._errors import closest_names
from ._normalize import check_normalize
from ._reduce import as_reducer
from ._threshold import as_strategy
from .search import BACKENDS

__all__ = [
    "BACKENDS",
    "as_reducer",
    "as_strategy",
    "check_memory_budget",
    "check_normalize",
    "check_spill_dir",
    "closest_names",
]
