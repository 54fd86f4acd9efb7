"""Text rows at scale: close pairs from the texts' n-grams (MinHash candidates measured in the
view) are the view's own close pairs, on real docstring sentences with planted edits."""

from __future__ import annotations

import ast
import re
import sysconfig
from pathlib import Path

import numpy as np
import pytest

import neardup._text_join as text_join
from neardup import Cells, find_duplicates
from neardup._text_join import min_jaccard_for, text_source
from neardup.search import Rows
from neardup.views import TextView, as_text_rows

_SKIPPED = {"site-packages", "dist-packages", "test", "tests", "idlelib"}


@pytest.fixture(scope="module")
def sentences() -> list[str]:
    """Distinct sentences of the standard library's docstrings (~14,700; parsed, not run)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    found: dict[str, str] = {}
    for path in sorted(root.rglob("*.py")):
        if _SKIPPED & set(path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)):
                text = " ".join((ast.get_docstring(node) or "").split())
                for sentence in re.split(r"(?<=[.!?])\s+", text):
                    if 6 <= len(sentence.split()) <= 40:
                        found.setdefault(re.sub(r"\W+", " ", sentence.lower()).strip(), sentence)
    return sorted(found.values())


def _planted(sentences: list[str], n_train: int, n_test: int, seed: int = 0):
    """Train and test sentences, 60 test sentences replaced by edited train sentences."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(sentences))
    train = [sentences[i] for i in order[:n_train]]
    test = [sentences[i] for i in order[n_train : n_train + n_test]]
    slots = rng.choice(n_test, 60, replace=False)
    sources = rng.choice(n_train, 60, replace=False)
    for k, (slot, source) in enumerate(zip(slots, sources)):
        words = train[source].split()
        if k % 3 == 0:
            test[slot] = train[source].upper()
        elif k % 3 == 1:
            test[slot] = re.sub(r"[^\w\s]", "", train[source])
        else:
            del words[len(words) // 2]
            test[slot] = " ".join(words)
    return train, test, dict(zip(slots.tolist(), sources.tolist()))


def _brute_pairs(x: np.ndarray, threshold: float) -> set[tuple[int, int]]:
    pairs = set()
    for start in range(0, len(x), 1024):
        d2 = np.maximum(2.0 - 2.0 * (x[start : start + 1024] @ x.T), 0.0)
        a, b = np.nonzero(d2 <= threshold * threshold * 1.001)
        for i, j in zip((a + start).tolist(), b.tolist()):
            if i < j and np.linalg.norm(x[i] - x[j]) <= threshold:
                pairs.add((i, j))
    return pairs


def test_ngram_join_finds_every_close_pair_of_real_sentences(sentences):
    train, test, _ = _planted(sentences, 6000, 2000)
    rows = TextView()(train + test)
    x = np.asarray(rows) / np.linalg.norm(rows, axis=1, keepdims=True)
    threshold = 0.6  # about where Auto cuts on these sentences (0.59 on all 14,518)
    expected = _brute_pairs(x, threshold)
    join = text_join.text_join(Rows.from_matrix(x), text_source([rows]), threshold, seed=0)
    pairs, info = join.pairs, join.info
    assert set(zip(pairs.i.tolist(), pairs.j.tolist())) == expected
    assert len(expected) >= 80  # the 60 planted copies and the corpus' own near-duplicates
    want = np.linalg.norm(x[pairs.i] - x[pairs.j], axis=1)
    np.testing.assert_allclose(pairs.distance, want, rtol=1e-5, atol=1e-6)
    assert info["bands"] * info["band_rows"] <= 240 and info["candidates"] < 20 * len(x)


def test_minimum_jaccard_bound_holds_for_real_close_pairs(sentences):
    from neardup.views import gram_sets

    rows = TextView()(sentences[:8000])
    x = np.asarray(rows) / np.linalg.norm(rows, axis=1, keepdims=True)
    owner, grams = gram_sets(rows.texts, 4)
    sets = np.split(grams, np.searchsorted(owner, np.arange(1, len(x))))
    close = _brute_pairs(x, 0.6)
    assert len(close) >= 20
    for i, j in close:
        shared = len(np.intersect1d(sets[i], sets[j]))
        jaccard = shared / (len(sets[i]) + len(sets[j]) - shared)
        assert jaccard >= min_jaccard_for(np.linalg.norm(x[i] - x[j])), (i, j)


def test_find_duplicates_takes_the_ngram_join_at_scale_with_the_exact_verdict(
    sentences, monkeypatch
):
    train, test, planted = _planted(sentences, 3000, 1000, seed=1)
    data = {"train": {"text": TextView()(train)}, "test": {"text": TextView()(test)}}
    exact = find_duplicates(data, backend=Cells(margin=0.5))  # below TEXT_JOIN_ROWS: cells
    assert "text_join" not in exact.views["text"].settings
    monkeypatch.setattr(text_join, "TEXT_JOIN_ROWS", 2000)
    result = find_duplicates(data)
    assert result.views["text"].settings["text_join"]["candidates"] > 0
    leak, want = result.leakage["test"], exact.leakage["test"]
    assert (leak.positions, leak.nearest_positions) == (want.positions, want.nearest_positions)
    np.testing.assert_allclose(leak.distances, want.distances, rtol=1e-6)
    assert [c.positions for c in result.clusters] == [c.positions for c in exact.clusters]
    found = dict(zip(leak.positions, leak.nearest_positions))
    assert sum(found.get(p) == s for p, s in planted.items()) >= 57  # of 60 planted


def test_ngram_join_only_where_it_holds(sentences, monkeypatch):
    monkeypatch.setattr(text_join, "TEXT_JOIN_ROWS", 1000)
    rows = TextView()(sentences[:1500])
    used = lambda result: "text_join" in result.views["text"].settings  # noqa: E731
    assert used(find_duplicates({"data": {"text": rows}}))
    assert not used(find_duplicates({"data": {"text": rows}}, backend=Cells(margin=0.3)))
    assert not used(find_duplicates({"data": {"text": rows}}, normalize=None))
    assert not used(find_duplicates({"data": {"text": rows}}, reduce=32))
    unknown = as_text_rows(np.asarray(rows), rows.texts)  # no gram length: cells
    assert not used(find_duplicates({"data": {"text": unknown}}))
    assert text_source([rows, TextView(ngram=3)(["a b c"])]) is None  # mixed gram lengths


def test_ngram_join_lists_the_markup_route_in_the_same_pass(sentences, monkeypatch):
    """At scale the join hashes the markup words of texts with markup as extra rows: a copy
    whose markup lost its punctuation is found as on small data, also when its source's
    row is an exact copy of another text with other markup (the join takes one of them)."""
    monkeypatch.setattr(text_join, "TEXT_JOIN_ROWS", 1000)
    link = '<a href="http://topsitez.us/category-tab.htm?id=713164&d=jmason.org">{}</a>.'
    shown = "Or you can see it on our website by clicking your listing"
    sources = [shown + ".", shown.replace("your listing", link.format("your listing"))]
    copy = " ".join(re.sub(r"[^\w\s]", " ", sources[1]).split())
    train, test = [*sentences[:1200], *sources], [*sentences[1200:1500], copy]
    view = TextView()
    data = {"train": {"text": view(train)}, "test": {"text": view(test)}}
    assert data["train"]["text"].texts[-1] == data["train"]["text"].texts[-2]  # one row
    result = find_duplicates(data)
    assert result.views["text"].settings["text_join"]["markup_candidates"] >= 1
    leak = result.leakage["test"]
    assert dict(zip(leak.positions, leak.nearest_positions)).get(len(test) - 1) == len(train) - 1
