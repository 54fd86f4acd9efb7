"""``TextView``: hashed character n-grams of case-, punctuation- and markup-normalised text."""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._errors import NeardupInputError

__all__ = ["TextView", "normalize_text"]

_TAG = re.compile(r"<[^>]{0,200}>")
_NOT_WORD = re.compile(r"[\W_]+", re.UNICODE)
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing (odd 64-bit constant)
_STEP = np.uint64(0x100000001B3)  # FNV-1a prime: mixes each next code point into the hash


def normalize_text(text: str) -> str:
    """Case-folded words separated by single spaces: markup, entities, punctuation removed.

    ``"<p>Hello,&nbsp;WORLD!</p>"`` -> ``"hello world"``. Unicode is NFKC-normalised first
    (full-width and compatibility characters become their plain forms).
    """
    text = html.unescape(_TAG.sub(" ", text))
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_NOT_WORD.sub(" ", text).split())


def _gram_hashes(codes: np.ndarray, n: int) -> np.ndarray:
    """Stable 64-bit hashes of every length-``n`` window of ``codes`` (uint64 arithmetic)."""
    h = np.zeros(len(codes) - n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            h = (h ^ codes[j : j + len(h)]) * _STEP
        return h * _MULTIPLIER


@dataclass(frozen=True)
class TextView:
    """Hashed character n-gram counts of each normalised text, as one float32 row.

    Each text is normalised by :func:`normalize_text` (case, punctuation, markup, entities and
    whitespace removed), padded with a space at both ends, cut into overlapping character
    ``ngram``-grams, and each gram is hashed (a stable hash: the same on every machine and run)
    into one of ``dim`` signed buckets; the counts are square-rooted so that long texts are not
    dominated by their most frequent grams. Copies that differ only in case, punctuation,
    whitespace or markup get identical rows; a dropped word or a couple of typos moves a row
    a little; different texts share few grams.

    Parameters
    ----------
    ngram:
        Characters per gram (4 by default, measured in the README's "Views and thresholds").
    dim:
        Hash buckets (row length).

    Call it on a sequence of strings: ``TextView()(texts) -> (N, dim) float32``. An empty text
    (after normalisation) gives a row of zeros.
    """

    ngram: int = 4
    dim: int = 1024

    def __post_init__(self) -> None:
        for name, value, low, high in (("ngram", self.ngram, 1, 16), ("dim", self.dim, 2, 1 << 20)):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, np.integer))
                or not (low <= value <= high)
            ):
                raise NeardupInputError(
                    f"TextView {name} must be an int in [{low}, {high}], got {value!r}."
                )

    @property
    def name(self) -> str:
        """A short description used as the default view name."""
        return f"text{self.ngram}"

    def __call__(self, texts: Iterable[Any]) -> np.ndarray:
        if isinstance(texts, (str, bytes)):
            raise NeardupInputError(
                "TextView takes a sequence of texts, got one string; wrap it in a list."
            )
        try:
            texts = list(texts)
        except TypeError:
            raise NeardupInputError(
                f"TextView takes a sequence of strings, got {type(texts).__name__}."
            ) from None
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            if isinstance(text, bytes):
                text = text.decode("utf-8", errors="replace")
            if not isinstance(text, str):
                raise NeardupInputError(
                    f"TextView: text {row} is a {type(text).__name__}, not a string."
                )
            out[row] = self._row(text)
        return out

    def _row(self, text: str) -> np.ndarray:
        normalized = normalize_text(text)
        if not normalized:
            return np.zeros(self.dim, dtype=np.float32)
        padded = f" {normalized} "
        codes = np.frombuffer(padded.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
        if len(codes) < self.ngram:
            codes = np.concatenate([codes, np.full(self.ngram - len(codes), 32, np.uint64)])
        hashes = _gram_hashes(codes, self.ngram)
        buckets = (hashes >> np.uint64(33)) % np.uint64(self.dim)
        signs = np.where((hashes >> np.uint64(7)) & np.uint64(1), 1.0, -1.0)
        counts = np.bincount(buckets.astype(np.int64), weights=signs, minlength=self.dim)
        return (np.sign(counts) * np.sqrt(np.abs(counts))).astype(np.float32)
