"""Keras 3 integration: :class:`DuplicatesCallback` (see ``_callback``).

Split by concern: ``_callback`` (the hooks ``fit`` calls), ``_graph`` (the feature model over
the chosen layers) and ``_data`` (the splits the callback is given).
"""

from ._callback import DEFAULT_REPORT_DIR, DuplicatesCallback

__all__ = ["DEFAULT_REPORT_DIR", "DuplicatesCallback"]
