"""Results as plain data and their presentations: JSON, summary text, HTML, thumbnails."""

from ._html import render_html
from ._result import SCHEMA_VERSION, DuplicateSet, DuplicatesResult, Leakage, to_plain
from ._thumbnails import SampleSource, encode_png, to_image_array

__all__ = [
    "SCHEMA_VERSION",
    "DuplicateSet",
    "DuplicatesResult",
    "Leakage",
    "SampleSource",
    "encode_png",
    "render_html",
    "to_image_array",
    "to_plain",
]
