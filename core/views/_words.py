"""The word check of a text pair: is one text the other with a few words dropped or added?

A character n-gram view (:class:`~neardup.views.TextView`) cannot tell a copy with a word
dropped from a templated sentence with a word *replaced*: both share most of their n-grams.
Documentation and web text are full of such templates ("Outputs the number in base 8." /
"... base 10."; "Return True if all characters are decimal" / "... alphabetic"), and the
n-gram distance of a template pair is the same as that of a copy with a word dropped. The
words of the two texts tell them apart. :func:`word_edits` aligns the normalised words of two
texts (longest matching blocks, :class:`difflib.SequenceMatcher` on word lists) and counts

- *replaced* words: words that differ on both sides (a template filled in differently, or
  words moved): the smaller of the two texts' counts of words the other does not hold;
- *changed* words: the larger of those two counts, plus misspelt words.

Words are aligned one by one, but every run of words that differ counts the whitespace
*tokens* it touches, and shares are of the longer text's tokens: the texts come as
:func:`~neardup.views.grouped_words`, whose tokens keep together the words of a URL, a path
or a call (``"http-x-org-a"``), so that such a token dropped or changed is one edit, as it
was for its writer, not five. Measured on 48,000 + 12,000 real sentences
(``bench_quality.py --only text-scale``, seeds 0 and 1): the 3 planted copies with a word
dropped that the word check had turned away are found, and the one false alarm of the
duplicate-free controls (one footer behind two sign-offs: 1 word of 23 replaced, but of 14
tokens) is turned away. On SpamAssassin (``--only spam``) 702 mails outside the identical
groups sit in sets as confirmed near-duplicates, against 679 with words alone; counting words
in the runs but tokens in the shares had lost mails whose replaced URLs counted every word
(662). In scripts written without spaces between words (Chinese, Japanese, Thai, ...) each
character is a word and a token (:data:`_UNSPACED`).

A replaced run of up to :data:`TYPO_WORDS` words whose characters mostly agree with its
counterpart (:data:`TYPO_RATIO`: a typo, or a word split in two) counts as changed, not
replaced. Pairs whose word counts alone already differ by more than :data:`CHANGED_SHARE`
(over the most words one token holds) are settled without aligning them (``replaced`` is
then -1: not counted); texts of more than :data:`ALIGN_WORDS` words together are compared
as word multisets (word order and typos not checked: ``replaced`` and ``changed`` are the
smaller and the larger count of words that one text holds and the other does not). The pair
passes (:attr:`WordEdits.related`) when at most one word in :data:`WORDS_PER_REPLACED` is replaced
(none below that many tokens) and at most :data:`CHANGED_SHARE` of the longer text's tokens
changed.

A pair that passes the stricter test, :attr:`WordEdits.confirmed` (no word replaced at all:
the shorter text is the longer with a few words dropped, added or misspelt), may lie up to
:data:`WORD_REACH` times the view's threshold apart. A dropped word moves a short sentence
far in n-grams ("This is NOT pie in the sky" without "the" lies 1.25 cuts away on 60,000
sentences), while the natural neighbours the threshold guards against (templates, reordered
clauses, replies) replace words.

Measured on pydoc sentences (``benchmarks/bench_quality_integrations.py --only datasets``):
every planted copy (case, punctuation, HTML, one word dropped, a word dropped and the
punctuation removed) passes, with at most 2 of 10 words changed and none replaced; the
templated and reordered sentences that the n-gram view puts within its threshold do not.
"""

from __future__ import annotations

import difflib
import re
from collections import Counter
from dataclasses import dataclass

from .._errors import NeardupInputError
from ._text import TOKEN_JOINER

#: a character of a script written without spaces between its words (Han ideographs,
#: Japanese kana, Thai, Lao, Myanmar, Khmer): the word check counts each as a word and a
#: token. Without this a Chinese sentence was one "word", and any edit changed all of it: on
#: 20,000 + 5,000 of Debian's Chinese program messages (``bench_quality.py --only
#: text-cjk``) copies with one character dropped were found at 0.15, with a character
#: dropped and the punctuation removed at 0.20.
_UNSPACED = re.compile(
    "([\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u31f0-\u31ff"
    "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f])"
)

__all__ = [
    "ALIGN_WORDS",
    "CHANGED_SHARE",
    "TYPO_RATIO",
    "TYPO_WORDS",
    "WORDS_PER_REPLACED",
    "WORD_REACH",
    "WordEdits",
    "word_edits",
]

#: at most one replaced word per this many words of the longer text (none in shorter texts)
WORDS_PER_REPLACED = 20
#: at most this share of the longer text's words may change (dropped, added, misspelt)
CHANGED_SHARE = 0.2
#: a replaced word (run of words) whose characters agree this much is a typo, not a new word
TYPO_RATIO = 0.75
#: ... within runs of at most this many words (a typo is a word-level slip)
TYPO_WORDS = 3
#: a pair whose words confirm it (:attr:`WordEdits.confirmed`) is close within this many of
#: the view's thresholds. Measured on 48,000 + 12,000 real sentences (``bench_quality.py
#: --only text-scale``, seeds 0 and 1): the planted copies with a word dropped that the cut
#: missed lay at 1.02-1.29 cuts; 1.3 to 1.6 added no planted copy; every confirmed pair of
#: the duplicate-free control up to 1.6 cuts was a natural near-duplicate (difflib's check).
WORD_REACH = 1.3
#: texts with more words than this together are compared as word multisets (aligning two
#: long e-mails word by word took seconds each on SpamAssassin)
ALIGN_WORDS = 1000


@dataclass(frozen=True)
class WordEdits:
    """How two normalised texts differ, word by word (see the module docstring).

    ``words``: tokens of the longer text (its words where compared as word multisets);
    ``replaced``: words that differ on both sides (the smaller of the two texts' counts of
    words the other does not hold); ``changed``: the larger of those counts plus misspelt
    words. Each run of differing words counts the tokens it touches.
    """

    words: int
    replaced: int
    changed: int

    @property
    def related(self) -> bool:
        """Whether the texts are near-duplicates by their words: few words replaced
        (``replaced <= words // WORDS_PER_REPLACED``) and few changed
        (``changed <= CHANGED_SHARE * words``)."""
        return (
            self.replaced <= self.words // WORDS_PER_REPLACED
            and self.changed <= CHANGED_SHARE * self.words
        )

    @property
    def confirmed(self) -> bool:
        """Whether the words alone make the texts copies: none replaced (the shorter is the
        longer with words dropped, added or misspelt) and at most :data:`CHANGED_SHARE` of
        them changed. Such a pair counts within :data:`WORD_REACH` of the view's threshold."""
        return self.replaced == 0 and self.changed <= CHANGED_SHARE * self.words


def word_edits(a: str, b: str) -> WordEdits:
    """The word edits that turn text ``a`` into text ``b``.

    Both texts are compared as they are: whitespace separates *tokens*, and a token may hold
    several words joined by :data:`~neardup.views.TOKEN_JOINER` (``"-"``). Pass texts in
    :func:`~neardup.views.grouped_words` form (or normalised by
    :func:`~neardup.views.normalize_text`, one word a token), as :class:`TextRows` hold them,
    so that case, punctuation and markup do not count as edits. Words are aligned one by one;
    each run that differs counts the tokens it touches (a URL or ``screen.window_width()``
    dropped is one changed token, not its five or three words), and ``words`` counts the
    longer text's tokens.
    """
    if not isinstance(a, str) or not isinstance(b, str):
        raise NeardupInputError(
            f"word_edits compares two strings, got {type(a).__name__} and {type(b).__name__}."
        )
    wa, counts_a = _words_of(a)
    wb, counts_b = _words_of(b)
    words = max(len(counts_a), len(counts_b))
    if wa == wb:
        return WordEdits(words=words, replaced=0, changed=0)
    # the aligned differences hold at least the multiset differences, in at least as many
    # tokens as the fewest that hold that many words: a cheap bound that settles most
    # unrelated pairs (long e-mails) without aligning them
    missing_a, missing_b = Counter(wa) - Counter(wb), Counter(wb) - Counter(wa)
    lacking_a, lacking_b = sum(missing_a.values()), sum(missing_b.values())
    only = sorted((lacking_a, lacking_b))
    bound = max(_fewest_tokens(lacking_a, counts_a), _fewest_tokens(lacking_b, counts_b))
    if bound > CHANGED_SHARE * words:
        return WordEdits(words=words, replaced=-1, changed=bound)
    if len(wa) + len(wb) > ALIGN_WORDS:  # long texts: as word multisets (order not checked)
        return WordEdits(words=max(len(wa), len(wb)), replaced=only[0], changed=only[1])
    # the tokens each side's differing runs touch, a token touched by several runs once
    owner_a, owner_b = _owners(counts_a), _owners(counts_b)
    touched_a: set[int] = set()
    touched_b: set[int] = set()
    typo_a: set[int] = set()
    typo_b: set[int] = set()
    matcher = difflib.SequenceMatcher(None, wa, wb, autojunk=False)
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        if op == "equal":
            continue
        typo = op == "replace" and _typo(wa[i1:i2], wb[j1:j2])
        (typo_a if typo else touched_a).update(owner_a[i1:i2])
        (typo_b if typo else touched_b).update(owner_b[j1:j2])
    only_a, only_b = len(touched_a), len(touched_b)
    typos = max(len(typo_a - touched_a), len(typo_b - touched_b))
    return WordEdits(
        words=words,
        replaced=min(only_a, only_b),
        changed=max(only_a, only_b) + typos,
    )


def _words_of(text: str) -> tuple[list[str], list[int]]:
    """The words of ``text`` in order, and how many words each of its tokens holds, in order:
    its whitespace tokens, except that every character of a script written without spaces
    (:data:`_UNSPACED`) is a word and a token of its own (the words between two such
    characters are a token of their own too)."""
    if _UNSPACED.search(text) is None:
        if TOKEN_JOINER not in text:  # one word a token (most texts): no Python loop
            words = text.split()
            return words, [1] * len(words)
        tokens = text.split()
        return text.replace(TOKEN_JOINER, " ").split(), [t.count(TOKEN_JOINER) + 1 for t in tokens]
    words: list[str] = []
    counts: list[int] = []
    for token in text.split():
        run = 0  # words of the current token since the last unspaced character
        for word in token.split(TOKEN_JOINER):
            # split on the unspaced characters, kept: [run, character, run, character, ...]
            for n, piece in enumerate(_UNSPACED.split(word)):
                if n % 2:  # one unspaced character: its own word and token
                    if run:
                        counts.append(run)
                        run = 0
                    words.append(piece)
                    counts.append(1)
                elif piece:
                    words.append(piece)
                    run += 1
        if run:
            counts.append(run)
    return words, counts


def _fewest_tokens(words: int, counts: list[int]) -> int:
    """The fewest tokens (of word ``counts``) that hold ``words`` words between them: a lower
    bound on the tokens that ``words`` unmatched words touch."""
    if words <= 0:
        return 0
    held = 0
    for tokens, count in enumerate(sorted(counts, reverse=True), start=1):
        held += count
        if held >= words:
            return tokens
    return len(counts)


def _owners(counts: list[int]) -> list[int]:
    """For each word, the position of its token, from the tokens' word ``counts``."""
    return [token for token, count in enumerate(counts) for _ in range(count)]


def _typo(a: list[str], b: list[str]) -> bool:
    """Whether two short runs of words (at most :data:`TYPO_WORDS` each) are the same words
    misspelt, or split or joined differently."""
    if len(a) > TYPO_WORDS or len(b) > TYPO_WORDS:
        return False
    left, right = " ".join(a), " ".join(b)
    return difflib.SequenceMatcher(None, left, right, autojunk=False).ratio() >= TYPO_RATIO
