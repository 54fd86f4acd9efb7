"""Input views: turn raw samples (images, texts) into vectors where near-duplicates are close.

A *view* is one way to turn a sample into a vector. A model layer is one view; the views here
look at the input itself, in pure numpy, so re-encoded, shifted, re-lit or re-punctuated copies
land next to each other even where a trained layer pulls a whole class together:

- :class:`ImageView`: a small standardised thumbnail of each image; ``ImageView().views(images)``
  gives colour images three views: the colour thumbnail, its luma, and its YCbCr thumbnail
  (half-resolution chroma, which survives JPEG).
- :class:`AlignedImageView`: full-resolution thumbnails (:class:`ImageRows`) that
  :func:`neardup.find_duplicates` analyses as the 8x8 thumbnail view (plus its luma and YCbCr
  views for colour images) and an *aligned* view, which re-scores candidate pairs over small
  shifts and scales (1-2 px shifts, 90 % crops).
- :class:`TextView`: hashed character n-grams of the text after case, punctuation, markup and
  whitespace are normalised away, as :class:`TextRows` that keep the normalised texts:
  :func:`neardup.find_duplicates` checks the words of every pair they put within their
  threshold (:func:`word_edits`: words dropped or misspelt, not replaced; a dropped token of
  several words, such as a URL, counts once: :func:`grouped_words`), and takes pairs whose
  words only were dropped, added or misspelt up to :data:`WORD_REACH` thresholds.

All are plain callables ``view(samples) -> (N, d) float32``; pass their output to
:func:`neardup.find_duplicates` as one view among others::

    neardup.find_duplicates({
        "train": {"pixels": ImageView()(train_images), "layer": train_activations},
        "test": {"pixels": ImageView()(test_images), "layer": test_activations},
    })
"""

from ._aligned import (
    CROP_SCALE,
    AlignedImageView,
    ImageRows,
    as_image_rows,
    candidate_features,
    color_candidate_features,
    crop_candidate_features,
    search_features,
)
from ._alignment import DEFAULT_SCALES, aligned_distances, indexed_aligned_distances
from ._image import ImageView
from ._shift import (
    SHIFT_REACH,
    overlap_distances,
    shift_crops,
    shift_offsets,
    shift_reach,
    source_factor,
    source_images,
)
from ._small_crops import (
    CROP_OFFSETS,
    CROP_SCALES,
    SEARCH_OFFSETS,
    crop_distances,
    crop_samplers,
    zoomed_pairs,
)
from ._text import (
    TOKEN_JOINER,
    TextRows,
    TextView,
    as_text_rows,
    gram_sets,
    grouped_words,
    markup_words,
    normalize_text,
)
from ._words import WORD_REACH, WordEdits, word_edits

__all__ = [
    "CROP_OFFSETS",
    "CROP_SCALE",
    "CROP_SCALES",
    "DEFAULT_SCALES",
    "SEARCH_OFFSETS",
    "SHIFT_REACH",
    "TOKEN_JOINER",
    "WORD_REACH",
    "AlignedImageView",
    "ImageRows",
    "ImageView",
    "TextRows",
    "TextView",
    "WordEdits",
    "aligned_distances",
    "as_image_rows",
    "as_text_rows",
    "candidate_features",
    "color_candidate_features",
    "crop_candidate_features",
    "crop_distances",
    "crop_samplers",
    "gram_sets",
    "grouped_words",
    "indexed_aligned_distances",
    "markup_words",
    "normalize_text",
    "overlap_distances",
    "search_features",
    "shift_crops",
    "shift_offsets",
    "shift_reach",
    "source_factor",
    "source_images",
    "word_edits",
    "zoomed_pairs",
]
