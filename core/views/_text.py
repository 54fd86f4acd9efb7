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

__all__ = [
    "TOKEN_JOINER",
    "TextRows",
    "TextView",
    "as_text_rows",
    "gram_sets",
    "grouped_words",
    "markup_words",
    "normalize_text",
]

_TAG = re.compile(r"<[^>]{0,200}>")
_NOT_WORD = re.compile(r"[\W_]+", re.UNICODE)
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)  # Fibonacci hashing (odd 64-bit constant)
_STEP = np.uint64(0x100000001B3)  # FNV-1a prime: mixes each next code point into the hash
#: joins the words of one whitespace token in :func:`grouped_words` (never inside a word)
TOKEN_JOINER = "-"
_INNER_PUNCTUATION = re.compile(r"(?:[^\w\s]|_)+")  # non-word characters but whitespace


def normalize_text(text: str) -> str:
    """Case-folded words separated by single spaces: markup, entities, punctuation removed.

    ``"<p>Hello,&nbsp;WORLD!</p>"`` -> ``"hello world"``. Unicode is NFKC-normalised first
    (full-width and compatibility characters become their plain forms).
    """
    return _words_of_folded(_folded(text))


def _folded(text: str) -> str:
    """``text`` with its tags made spaces and its entities unescaped, NFKC-normalised and
    case-folded: what :func:`normalize_text` and :func:`grouped_words` split into words."""
    return unicodedata.normalize("NFKC", html.unescape(_TAG.sub(" ", text))).casefold()


def _words_of_folded(folded: str) -> str:
    """The words of a :func:`_folded` text, separated by single spaces."""
    return " ".join(_NOT_WORD.sub(" ", folded).split())


def _grouped_of_folded(folded: str) -> str:
    """The words of a :func:`_folded` text, those of one whitespace token joined by
    :data:`TOKEN_JOINER`: each punctuation run becomes one joiner, then joiners next to a
    space or an end go (C-level passes over the whole text: a long mail has thousands of
    tokens)."""
    joined = " ".join(_INNER_PUNCTUATION.sub(TOKEN_JOINER, folded).split())
    edges = joined.replace(" " + TOKEN_JOINER, " ").replace(TOKEN_JOINER + " ", " ")
    return " ".join(edges.split()).strip(TOKEN_JOINER)


def grouped_words(text: str) -> str:
    """The words of :func:`normalize_text`, grouped by the whitespace token they came from:
    the words of one token joined by :data:`TOKEN_JOINER`.

    ``"See http://x.org/a now"`` -> ``"see http-x-org-a now"`` (``.replace("-", " ")`` gives
    the normalised text back). :func:`~neardup.views.word_edits` counts a dropped token as
    one edit however many words it holds: a URL, a path or ``screen.window_width()`` dropped
    from a sentence is one word dropped for its writer, and five or three for the normalised
    words (measured on 48,000 + 12,000 real sentences, ``bench_quality.py --only
    text-scale``: the 3 planted copies with a word dropped that the word check turned away).
    """
    return _grouped_of_folded(_folded(text))


def markup_words(text: str) -> str:
    """The words of ``text`` with its markup and entities kept as words: case-folded, every
    run of non-word characters one space (Unicode NFKC-normalised first).

    ``'<a href="x.html">Hi</a> &amp;'`` -> ``"a href x html hi a amp"``: what is left of a
    text with markup once its punctuation is removed, which :func:`normalize_text` can no
    longer tell from words. For a text without markup or entities it is its normalised text.
    """
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_NOT_WORD.sub(" ", text).split())


def _gram_hashes(codes: np.ndarray, n: int) -> np.ndarray:
    """Stable 64-bit hashes of every length-``n`` window of ``codes`` (uint64 arithmetic)."""
    h = np.zeros(len(codes) - n + 1, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(n):
            h = (h ^ codes[j : j + len(h)]) * _STEP
        return h * _MULTIPLIER


class TextRows(np.ndarray):
    """``(N, dim)`` float32 n-gram rows that keep their normalised texts (``texts``), the
    gram length of the view that made them (``ngram``; ``None`` when unknown) and, for texts
    with markup or entities, their :func:`markup_words` (``markup``: ``""`` for a text
    without, whose markup words are its normalised text; ``None`` when unknown) and, for texts
    with a token of several words, their :func:`grouped_words` (``grouped``: ``""`` for a text
    without, whose grouped words are its normalised text; ``None`` when unknown).

    Made by :class:`TextView` (or :func:`as_text_rows` from rows collected chunk by chunk).
    :func:`neardup.find_duplicates` reads ``texts`` to check the words of every pair the rows
    put within their threshold (:func:`neardup.views.word_edits`, on ``grouped`` where
    known): a templated sentence with a word replaced is not a copy with a word dropped,
    though both are as close in n-grams. Any array derived from the rows (a slice,
    ``astype``, ``np.concatenate``) is plain rows without texts (``texts`` is None): wrap it
    again with :func:`as_text_rows`.
    """

    texts: tuple[str, ...] | None
    ngram: int | None
    markup: tuple[str, ...] | None
    grouped: tuple[str, ...] | None

    def __array_finalize__(self, obj: Any) -> None:
        self.texts = None  # a derived array may hold other rows: its texts are unknown
        self.ngram = None
        self.markup = None
        self.grouped = None


def as_text_rows(
    rows: Any,
    texts: Iterable[str],
    ngram: int | None = None,
    markup: Iterable[str] | None = None,
    grouped: Iterable[str] | None = None,
) -> TextRows:
    """``(N, d)`` rows with their ``N`` normalised texts as :class:`TextRows` (``ngram``: the
    gram length of the :class:`TextView` that made them, which lets
    :func:`neardup.find_duplicates` find their close pairs from the texts' grams at scale;
    ``markup``: the ``N`` texts' :func:`markup_words`, ``""`` for a text without markup, which
    lets it find copies whose markup lost its punctuation; ``grouped``: the ``N`` texts'
    :func:`grouped_words`, ``""`` for a text without a token of several words, which lets the
    word check count a dropped URL as one word)."""
    texts = tuple(texts)
    marked = _per_text(markup, len(texts), "markup")
    grouped_texts = _per_text(grouped, len(texts), "grouped")
    array = np.ascontiguousarray(rows, dtype=np.float32)
    if array.ndim != 2 or len(array) != len(texts):
        raise NeardupInputError(
            f"text rows must be (N, d) with one text per row, got shape {array.shape} and "
            f"{len(texts)} texts."
        )
    if not all(isinstance(t, str) for t in texts):
        raise NeardupInputError("as_text_rows takes the normalised texts as strings.")
    out = array.view(TextRows)
    out.texts = texts
    out.ngram = ngram
    out.markup = marked
    out.grouped = grouped_texts
    return out


def _per_text(values: Iterable[str] | None, n: int, what: str) -> tuple[str, ...] | None:
    """``values`` as a tuple of ``n`` strings (``None`` stays ``None``), or a clear error."""
    if values is None:
        return None
    out = tuple(values)
    if len(out) != n or not all(isinstance(t, str) for t in out):
        raise NeardupInputError(
            f"as_text_rows takes one {what} string per text ({n}), got {len(out)} values."
        )
    return out


def _padded_codes(normalized: str, n: int) -> np.ndarray:
    """The code points of `` normalized `` (uint64), padded with spaces to at least ``n``."""
    codes = np.frombuffer(f" {normalized} ".encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    if len(codes) < n:
        codes = np.concatenate([codes, np.full(n - len(codes), 32, np.uint64)])
    return codes


def gram_sets(texts: Iterable[str], ngram: int) -> tuple[np.ndarray, np.ndarray]:
    """The distinct ``ngram``-gram hashes of each normalised text, as :class:`TextView` cuts
    them: ``(owner, grams)``, ``(E,)`` int64 text positions (ascending) and ``(E,)`` uint64
    hashes. An empty text has no grams."""
    owners, grams = [np.zeros(0, np.int64)], [np.zeros(0, np.uint64)]
    for position, normalized in enumerate(texts):
        if normalized:
            hashes = np.unique(_gram_hashes(_padded_codes(normalized, ngram), ngram))
            owners.append(np.full(len(hashes), position, dtype=np.int64))
            grams.append(hashes)
    return np.concatenate(owners), np.concatenate(grams)


def _strings(texts: Iterable[Any]) -> list[str]:
    """``texts`` as a list of strings (bytes decoded as UTF-8), or a clear error."""
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
    out = []
    for row, text in enumerate(texts):
        if isinstance(text, bytes):
            text = text.decode("utf-8", errors="replace")
        if not isinstance(text, str):
            raise NeardupInputError(
                f"TextView: text {row} is a {type(text).__name__}, not a string."
            )
        out.append(text)
    return out


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
        Characters per gram (4 by default).
    dim:
        Hash buckets (row length).

    Call it on a sequence of strings: ``TextView()(texts) -> (N, dim) float32``
    :class:`TextRows`, which keep the normalised texts for the word check of
    :func:`neardup.find_duplicates` (a pair within the threshold whose words were replaced,
    not dropped or misspelt, is not a near-duplicate: :func:`neardup.views.word_edits`), and
    the :func:`markup_words` of texts with markup (a copy whose punctuation was removed keeps
    the tags' words, which it compares them with). An empty text (after normalisation)
    gives a row of zeros.
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

    def __call__(self, texts: Iterable[Any]) -> TextRows:
        strings = _strings(texts)
        out = np.zeros((len(strings), self.dim), dtype=np.float32)
        normalized, markup, grouped = [], [], []
        for row, text in enumerate(strings):
            # the normalised text is the grouped words joined by spaces (one pass fewer)
            tokens = _grouped_of_folded(_folded(text))
            normalized.append(tokens.replace(TOKEN_JOINER, " "))
            words = markup_words(text)
            markup.append("" if words == normalized[-1] else words)
            grouped.append(tokens if TOKEN_JOINER in tokens else "")
            out[row] = self._row(normalized[-1])
        return as_text_rows(out, normalized, self.ngram, markup, grouped)

    def rows(self, texts: Iterable[Any]) -> np.ndarray:
        """``(N, dim)`` float32 rows of ``texts``, as :meth:`__call__` makes them, without the
        normalised texts, markup and grouped words it keeps beside them (for a caller that
        only compares the rows: the markup route's rows of markup words)."""
        strings = _strings(texts)
        out = np.zeros((len(strings), self.dim), dtype=np.float32)
        for row, text in enumerate(strings):
            out[row] = self._row(normalize_text(text))
        return out

    def _row(self, normalized: str) -> np.ndarray:
        if not normalized:
            return np.zeros(self.dim, dtype=np.float32)
        hashes = _gram_hashes(_padded_codes(normalized, self.ngram), self.ngram)
        buckets = (hashes >> np.uint64(33)) % np.uint64(self.dim)
        signs = np.where((hashes >> np.uint64(7)) & np.uint64(1), 1.0, -1.0)
        counts = np.bincount(buckets.astype(np.int64), weights=signs, minlength=self.dim)
        return (np.sign(counts) * np.sqrt(np.abs(counts))).astype(np.float32)
