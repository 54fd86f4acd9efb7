"""Input views: ImageView thumbnails and TextView n-grams (pure numpy, no framework)."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neardup import NeardupInputError, find_duplicates
from neardup.views import ImageView, TextRows, TextView, WordEdits, as_text_rows, word_edits
from neardup.views._text import normalize_text


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    return np.rint(load_digits().images * 255 / 16).astype(np.uint8)


def test_image_view_shapes_layouts_and_mixed_sizes(digits):
    view = ImageView()
    assert view(digits[:5]).shape == (5, 64)
    assert view(digits[:5]).dtype == np.float32
    rgb = np.repeat(digits[:5, :, :, None], 3, axis=-1)
    assert view(rgb).shape == (5, 192)
    chw = np.moveaxis(rgb, -1, 1)
    np.testing.assert_allclose(view(chw), view(rgb), atol=1e-6)
    mixed = view([digits[0], np.zeros((30, 20)), rgb[1]])  # grey + colour: colour kept
    assert mixed.shape == (3, 192)
    assert not mixed[1].any()  # a constant image: all zeros
    assert ImageView(color=False)(rgb).shape == (5, 64)
    assert ImageView(size=4)(digits[:2]).shape == (2, 16)


def test_image_view_is_invariant_to_brightness_and_contrast(digits):
    view = ImageView()
    base = digits[:50].astype(np.float64)
    brighter = view(np.clip(base * 0.85, 0, 255))
    contrast = view((base - base.mean()) * 0.8 + base.mean())
    original = view(base)
    np.testing.assert_allclose(brighter, original, atol=1e-4)
    np.testing.assert_allclose(contrast, original, atol=1e-4)
    assert _cos(original[0], original[1]) < 0.99  # different digits stay apart


def test_image_view_rejects_bad_input_with_a_fix():
    with pytest.raises(NeardupInputError, match="reshape"):
        ImageView()(np.zeros((4, 784)))
    with pytest.raises(NeardupInputError, match="channels"):
        ImageView()(np.zeros((4, 8, 8, 5)))
    with pytest.raises(NeardupInputError, match="image 1 has NaN"):
        ImageView()(np.stack([np.zeros((8, 8)), np.full((8, 8), np.nan)]))
    with pytest.raises(NeardupInputError, match="size"):
        ImageView(size=0)
    with pytest.raises(NeardupInputError, match="string"):
        ImageView()("a.png")


def test_normalize_text_removes_case_punctuation_markup_whitespace():
    assert normalize_text("<p>Hello,&nbsp;WORLD!</p>\n  Again") == "hello world again"
    assert normalize_text("Ｆｕｌｌ-width") == "full width"


def test_text_view_identical_after_normalisation_and_close_after_a_dropped_word():
    view = TextView()
    a = "The quick brown fox jumps over the lazy dog near the river bank."
    rows = view(
        [
            a,
            a.upper(),
            "<b>the quick, brown fox</b> jumps over the lazy dog near the river bank",
            "The quick brown fox jumps over the dog near the river bank.",
            "A completely different sentence about parsing Python source files.",
        ]
    )
    np.testing.assert_allclose(rows[1], rows[0])
    np.testing.assert_allclose(rows[2], rows[0])
    assert _cos(rows[0], rows[3]) > 0.85
    assert _cos(rows[0], rows[4]) < 0.5


def test_text_view_is_stable_across_processes():
    import subprocess
    import sys

    code = (
        "from neardup.views import TextView; print(TextView(dim=64)(['stable hash'])[0].tolist())"
    )
    outs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            env={"PYTHONHASHSEED": seed, "PATH": ""},
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert len(outs) == 1


def test_text_view_rejects_bad_input():
    with pytest.raises(NeardupInputError, match="wrap it in a list"):
        TextView()("one string")
    with pytest.raises(NeardupInputError, match="text 1 is a int"):
        TextView()(["ok", 3])
    with pytest.raises(NeardupInputError, match="ngram"):
        TextView(ngram=0)
    assert not TextView()(["", "!!!"]).any()


@settings(max_examples=30, deadline=None)
@given(st.text(min_size=1, max_size=60))
def test_text_view_property_case_and_punctuation_never_matter(text):
    view = TextView(dim=128)
    variant = "  " + text.upper().replace(" ", " , ") + "!"
    if normalize_text(variant) == normalize_text(text):
        np.testing.assert_allclose(view([variant])[0], view([text])[0])


def test_image_view_luma_and_the_colour_and_luma_views(digits):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(6, 16, 16, 3)).astype(np.uint8)
    luma = ImageView(color="luma")(rgb)
    weighted = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])  # Rec. 601
    np.testing.assert_allclose(luma, ImageView(color=False)(weighted), atol=1e-5)
    assert not np.allclose(luma, ImageView(color=False)(rgb), atol=1e-3)  # not the plain mean
    views = ImageView().views(rgb)
    assert list(views) == ["image8", "image8-luma", "image8-ycbcr"]
    # the colour view's cast is capped at the structure, which it is far below here
    np.testing.assert_allclose(views["image8"], ImageView()(rgb), atol=1e-5)
    np.testing.assert_array_equal(views["image8-luma"], luma)
    np.testing.assert_array_equal(views["image8-ycbcr"], ImageView(color="ycbcr")(rgb))
    grey = ImageView().views(digits[:4])  # grey images: one view, the grey thumbnail
    assert list(grey) == ["image8"] and grey["image8"].shape == (4, 64)
    np.testing.assert_array_equal(ImageView(color="luma")(digits[:4]), grey["image8"])
    assert list(ImageView(color=False).views(rgb)) == ["image8"]


def test_image_view_ycbcr_keeps_luma_and_half_resolution_chroma():
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, size=(5, 16, 16, 3)).astype(np.float64)
    rows = ImageView(color="ycbcr")(rgb)
    assert rows.shape == (5, 64 + 2 * 16) and rows.dtype == np.float32
    np.testing.assert_allclose(rows.std(axis=1), 1.0, atol=1e-5)
    # the luma part is the luma thumbnail (up to scale); the chroma parts are 4x4 box averages
    # of the chroma blurred by a Gaussian of 0.2 chroma cells (0.8 px here)
    from scipy.ndimage import gaussian_filter

    luma = ImageView(color="luma")(rgb)
    scale = np.linalg.norm(rows[:, :64], axis=1) / np.linalg.norm(luma, axis=1)
    np.testing.assert_allclose(rows[:, :64], luma * scale[:, None], atol=1e-4)
    cb = gaussian_filter(rgb @ np.array([-0.168736, -0.331264, 0.5]), (0, 0.8, 0.8), mode="nearest")
    blocks = cb.reshape(5, 4, 4, 4, 4).mean(axis=(2, 4))
    blocks -= 0.75 * blocks.mean(axis=(1, 2), keepdims=True)  # a quarter of the cast is kept
    chroma = rows[:, 64:].reshape(5, 4, 4, 2)[..., 0]
    ratio = chroma.reshape(5, -1) / blocks.reshape(5, -1)
    np.testing.assert_allclose(ratio, ratio[:, :1] * np.ones((1, 16)), rtol=1e-3)
    # grey images have no chroma; brightness and contrast changes leave the rows unchanged
    grey = ImageView(color="ycbcr")(rgb[..., :1])
    np.testing.assert_allclose(grey[:, 64:], 0.0, atol=1e-6)
    np.testing.assert_allclose(ImageView(color="ycbcr")(rgb * 0.8 + 10), rows, atol=1e-4)
    with pytest.raises(NeardupInputError, match="align=True works with color"):
        ImageView(color="ycbcr", align=True)
    assert ImageView(color="ycbcr")(np.zeros((0, 8, 8, 3))).shape == (0, 96)


def test_image_view_color_cast_weight():
    rng = np.random.default_rng(1)
    structure = rng.random((4, 12, 12, 1))
    casts = rng.uniform(0, 200, size=(4, 1, 1, 3))
    images = structure * 40 + casts  # the same structure in each channel, over a colour cast
    whole = ImageView(color_cast=1.0)(images)
    none = ImageView(color_cast=0.0)(images)
    # without the cast every channel holds the standardised structure; with it the cast
    # (a constant per channel) takes most of the row
    np.testing.assert_allclose(none.reshape(4, 8, 8, 3)[..., 0], none.reshape(4, 8, 8, 3)[..., 2])
    assert np.abs(whole.reshape(4, 64, 3).mean(axis=1)).max() > 0.5
    assert np.abs(none.reshape(4, 64, 3).mean(axis=1)).max() < 1e-5
    default = ImageView()(images).reshape(4, 64, 3).mean(axis=1)
    assert 0 < np.abs(default).max() < np.abs(whole.reshape(4, 64, 3).mean(axis=1)).max()


def test_image_view_caps_a_strong_colour_cast_at_the_structure():
    """Two different faint objects (a contrast of 2 levels) on one strong colour: a quarter of
    the cast is still most of each standardised row and brings them together; capped at the
    structure (the colour view of ``views``), the cast holds at most half of each row and
    the two stay apart."""
    rng = np.random.default_rng(2)
    shapes = np.zeros((2, 16, 16, 1))
    shapes[0, 4:12, 6:10] = 1.0  # a bar
    shapes[1, 6:10, 2:14] = 1.0  # a crossbar
    colour = np.array([200.0, 40.0, 90.0])
    images = shapes * 2.0 + colour + rng.normal(0, 0.01, (2, 16, 16, 3))
    rows = ImageView().views(images)["image8"].reshape(2, 64, 3)
    cast = (rows.mean(axis=1) ** 2).sum(axis=1) * 64  # of 192, the row's sum of squares
    assert (cast <= 96.0 + 1e-3).all(), cast
    a, b = rows.reshape(2, -1)
    assert _cos(a, b) < 0.8
    plain = ImageView()(images)  # the view itself: the quarter cast, uncapped
    assert _cos(plain[0], plain[1]) > 0.99


def test_image_view_rejects_bad_color_options():
    with pytest.raises(
        NeardupInputError, match="color must be True, False, 'auto', 'luma' or 'ycbcr'"
    ):
        ImageView(color="gray")
    with pytest.raises(NeardupInputError, match=r"color_cast must be a number in \[0, 1\]"):
        ImageView(color_cast=2)


@pytest.mark.parametrize("shape", [(0, 8, 8), (0, 8, 8, 3), (0, 3, 8, 8)])
def test_image_view_of_no_images_is_zero_rows_of_the_view_width(shape):
    """An empty batch gives ``(0, d)`` rows of the width non-empty images would get."""
    view = ImageView(size=8)
    rows = view(np.zeros(shape, dtype=np.float32))
    grey_or_colour = ImageView(size=8)(np.zeros((1, *shape[1:]), dtype=np.float32))
    assert rows.shape == (0, grey_or_colour.shape[1])
    assert rows.dtype == np.float32
    for name, view_rows in view.views(np.zeros(shape, dtype=np.float32)).items():
        assert view_rows.shape[0] == 0, name


def test_word_edits_tell_a_dropped_word_from_a_replaced_one():
    base = normalize_text("Outputs the number in base 8, padded with zeros on the left.")
    dropped = normalize_text("Outputs the number in base 8, padded with zeros on the.")
    templated = normalize_text("Outputs the number in base 10, padded with zeros on the left.")
    typo = normalize_text("Outputs the numbr in base 8, padded with zeros on the left.")
    assert word_edits(base, dropped) == WordEdits(words=12, replaced=0, changed=1)
    assert word_edits(base, templated) == WordEdits(words=12, replaced=1, changed=1)
    assert word_edits(base, typo) == WordEdits(words=12, replaced=0, changed=1)
    assert word_edits(base, dropped).related and word_edits(base, typo).related
    assert not word_edits(base, templated).related  # "8" -> "10": a template, not a copy
    reordered = ("return the string itself followed by two empty strings",
                 "return two empty strings followed by the string itself")  # fmt: skip
    assert not word_edits(*reordered).related
    clause = ("converted to a common type and the result is of that type",
              "converted to a common type")  # fmt: skip
    assert word_edits(*clause).changed == 7 and word_edits(*clause).words == 12
    assert not word_edits(*clause).related  # more than a fifth of the words dropped
    plural = word_edits("return the list of items", "return the lists of items")
    assert plural == WordEdits(words=5, replaced=0, changed=1) and plural.related
    # long texts may differ in one replaced word per 20 (names, dates in e-mails)
    long = " ".join(f"word{n}" for n in range(40))
    assert word_edits(long, long.replace("word7", "other")).related
    with pytest.raises(NeardupInputError, match="two strings"):
        word_edits("a", None)


def test_text_rows_turn_a_templated_pair_away_and_keep_a_dropped_word_copy(template_corpus):
    """pydoc's own template pair ("str.isalpha() Return ... alphabetic" / "str.isdecimal()
    Return ... decimal characters") lies within the text view's threshold like a copy with a
    word dropped; the words of TextRows tell them apart."""
    train, test, templated, copied = template_corpus
    dropped = test[copied]
    view = TextView()
    rows = {"train": view(train), "test": view(test)}
    assert isinstance(rows["test"], TextRows) and rows["test"].texts[-1] == normalize_text(dropped)
    plain = find_duplicates({s: {"text": np.asarray(r)} for s, r in rows.items()})
    flagged = dict(zip(plain.leakage["test"].positions, plain.leakage["test"].nearest_positions))
    assert flagged[templated] == len(train) - 1 and flagged[copied] == 5  # vectors alone
    checked = find_duplicates({s: {"text": r} for s, r in rows.items()})
    leak = checked.leakage["test"]
    found = dict(zip(leak.positions, leak.found_by))
    assert templated not in found
    assert found[copied] == ["text"] and leak.nearest_positions[leak.positions.index(copied)] == 5
    assert checked.settings["word_check"]["text"] >= 1
    assert set(found) < set(flagged)


def test_word_edits_confirm_only_pairs_without_replaced_words():
    """``confirmed``: the stricter test a pair beyond the cut must pass (WORD_REACH)."""
    assert word_edits("this is not pie in the sky", "this is not pie in sky").confirmed
    assert word_edits("return the list of items", "return the lists of items").confirmed  # typo
    assert not word_edits("outputs the number in base 8", "outputs the number in base 10").confirmed
    long = " ".join(f"word{n}" for n in range(40))
    replaced = word_edits(long, long.replace("word7", "other"))
    assert replaced.related and not replaced.confirmed  # allowed within the cut, not beyond
    clause = word_edits("converted to a common type and the result is of that type", "converted")
    assert not clause.confirmed  # more than a fifth of the words dropped


def test_text_rows_take_a_dropped_word_copy_beyond_the_cut_within_the_word_reach(
    template_corpus,
):
    """A copy with a word dropped that lies a little beyond the view's cut is found through
    its words (up to WORD_REACH cuts; rows without their texts keep the plain cut); the
    templated pair is not, whatever its place within the reach."""
    from neardup import Distance
    from neardup.views import WORD_REACH

    train, test, templated, copied = template_corpus
    view = TextView()
    rows = {"train": view(train), "test": view(test)}
    unit = {s: r / np.linalg.norm(r, axis=1, keepdims=True) for s, r in rows.items()}
    gap = float(np.linalg.norm(unit["test"][copied] - unit["train"][5]))
    template_gap = float(np.linalg.norm(unit["test"][templated] - unit["train"][-1]))
    beyond = 0.5 + 0.5 * WORD_REACH  # a pair at this many cuts: beyond the cut, within reach
    texts = {s: {"text": r} for s, r in rows.items()}
    plain = {s: {"text": np.asarray(r)} for s, r in rows.items()}
    checked = find_duplicates(texts, threshold=Distance(gap / beyond))
    leak = checked.leakage["test"]
    assert dict(zip(leak.positions, leak.nearest_positions)).get(copied) == 5
    within = leak.distances[leak.positions.index(copied)]
    assert within == pytest.approx(beyond / WORD_REACH, rel=1e-4)  # in the reach's units
    assert (
        copied
        not in find_duplicates(plain, threshold=Distance(gap / beyond)).leakage["test"].positions
    )
    checked = find_duplicates(texts, threshold=Distance(template_gap / beyond))
    assert templated not in checked.leakage["test"].positions


_TOKEN_CHARACTERS = list("ab-_.,:/ \n\tÉé<>&;()'\"xyz09\u00a0\uff21")


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(_TOKEN_CHARACTERS), max_size=40))
def test_grouped_words_are_the_normalised_words_grouped_by_token(text):
    """Joined back with spaces, the grouped words are the normalised text: the grouping only
    says which words one whitespace token held."""
    from neardup.views import TOKEN_JOINER, grouped_words

    grouped = grouped_words(text)
    assert grouped.replace(TOKEN_JOINER, " ") == normalize_text(text)
    assert "  " not in grouped and TOKEN_JOINER * 2 not in grouped


def test_word_edits_count_a_dropped_token_of_several_words_once():
    """A URL or a call dropped from a sentence is one word dropped for its writer: counted
    once, over the sentence's tokens (measured: 3 planted copies of 48,000 + 12,000 real
    sentences, ``bench_quality.py --only text-scale``, that the normalised words turned away).
    Punctuation turned into spaces changes no token's words; a footer written twice is not the
    footer once (half its tokens added)."""
    from neardup.views import grouped_words

    source = 'A left shift by *n* bits is defined as multiplication with "pow(2,n)".'
    dropped = "A left shift by *n* bits is defined as multiplication with"
    assert grouped_words(source).endswith("with pow-2-n")
    assert word_edits(normalize_text(source), normalize_text(dropped)).changed == 3
    assert not word_edits(normalize_text(source), normalize_text(dropped)).confirmed  # 3 of 14
    edits = word_edits(grouped_words(source), grouped_words(dropped))
    assert edits == WordEdits(words=12, replaced=0, changed=1) and edits.confirmed
    moved = word_edits(
        grouped_words("Mail http://lists.example.org/list/help to leave the list now"),
        grouped_words("Mail http://other.example.net/bye to leave the list now"),
    )  # a replaced URL is one replaced word of 7, as a dropped one is one dropped word
    assert moved == WordEdits(words=7, replaced=1, changed=1)
    spaced = " ".join(re.sub(r"[^\w\s]", " ", source).split())  # punctuation -> spaces
    assert word_edits(grouped_words(source), grouped_words(spaced)).changed == 0
    footer = "RPM-List mailing list http://lists.freshrpms.net/mailman/listinfo/rpm-list"
    twice = word_edits(grouped_words(footer), grouped_words(f"{footer} {footer}"))
    assert twice.words == 8 and twice.changed >= 2 and not twice.related  # 4 of 8 added
    rows = TextView()([source, "Plain words here."])
    assert rows.grouped == (grouped_words(source), "")  # "": the normalised text itself
    assert rows[:1].grouped is None  # a derived array: unknown
    with pytest.raises(NeardupInputError, match="one grouped string per text"):
        as_text_rows(np.zeros((2, 4)), ["a", "b"], 4, None, ["a"])


def test_word_edits_count_each_character_of_a_script_written_without_spaces():
    """Chinese, Japanese or Thai sentences have no spaces between their words: each of their
    characters is one word and one token, so a character dropped is one edit in the
    sentence's length, not the whole sentence changed (Debian's Chinese program messages,
    ``bench_quality.py --only text-cjk``: one character dropped found at 0.15 before)."""
    from neardup.views import grouped_words

    source = "无法打开配置文件，请检查文件的权限设置。"
    shorter = "无法打开配置文件，请检查文件权限设置。"  # "的" dropped
    dropped = word_edits(grouped_words(source), grouped_words(shorter))
    assert dropped == WordEdits(words=18, replaced=0, changed=1) and dropped.confirmed
    unpunctuated = grouped_words("无法打开配置文件 请检查文件的权限设置")
    assert word_edits(grouped_words(source), unpunctuated).changed == 0
    other = "无法打开日志文件，请检查文件的权限设置。"  # "配置" -> "日志": another message
    templated = word_edits(grouped_words(source), grouped_words(other))
    assert templated.replaced == 2 and not templated.related
    mixed = word_edits("use iphone手机 now", "use iphone手 now")
    assert mixed == WordEdits(words=5, replaced=0, changed=1)
    thai = word_edits("ฉันรักภาษาไทยมาก", "ฉันรักภาษาไทย")
    assert thai.words == 16 and thai.confirmed


def test_text_rows_find_a_chinese_copy_with_a_character_dropped(template_corpus):
    """A Chinese sentence copied without one character, within the text view's threshold, is
    found: the word check counts one character of 32 changed (it had counted the whole
    sentence, one "word", as changed and turned the pair away)."""
    from neardup import Distance

    train, test, _, _ = template_corpus
    chinese = [
        "无法打开配置文件，请检查文件的权限设置以及磁盘上是否还有足够的空间。",
        "下载软件包列表时出现错误，某些索引文件下载失败，它们已被忽略。",
        "正在读取状态信息，这可能需要一些时间，请耐心等待当前操作完成。",
    ]
    copy = chinese[0].replace("足够的", "足够")
    view = TextView()
    rows = {"train": view([*train, *chinese]), "test": view([*test, copy])}
    unit = {s: r / np.linalg.norm(r, axis=1, keepdims=True) for s, r in rows.items()}
    gap = float(np.linalg.norm(unit["test"][-1] - unit["train"][len(train)]))
    data = {s: {"text": r} for s, r in rows.items()}
    leak = find_duplicates(data, threshold=Distance(gap / 0.9)).leakage["test"]
    assert dict(zip(leak.positions, leak.nearest_positions)).get(len(test)) == len(train)


def test_text_rows_take_a_copy_without_its_call_through_its_grouped_words(template_corpus):
    """A pydoc sentence copied without its quoted call (``"func(argument-list)"``: one token,
    three words) lies a little beyond the view's cut; its grouped words confirm it (one token
    of 12 dropped), its normalised words do not (3 of 14), so rows without ``grouped`` miss it."""
    from neardup import Distance
    from neardup.views import WORD_REACH

    train, test, _, _ = template_corpus
    source = next(n for n, t in enumerate(train) if t.startswith("The only operation on a func"))
    copy = train[source].replace(' "func(argument-list)"', "")
    assert copy != train[source]
    view = TextView()
    rows = {"train": view(train), "test": view([*test, copy])}
    unit = {s: r / np.linalg.norm(r, axis=1, keepdims=True) for s, r in rows.items()}
    gap = float(np.linalg.norm(unit["test"][-1] - unit["train"][source]))
    threshold = Distance(gap / (0.5 + 0.5 * WORD_REACH))  # beyond the cut, within the reach
    grouped = find_duplicates({s: {"text": r} for s, r in rows.items()}, threshold=threshold)
    leak = grouped.leakage["test"]
    assert dict(zip(leak.positions, leak.nearest_positions)).get(len(test)) == source
    words_only = {
        s: {"text": as_text_rows(np.asarray(r), r.texts, r.ngram, r.markup)}
        for s, r in rows.items()
    }
    missed = find_duplicates(words_only, threshold=threshold).leakage["test"]
    assert len(test) not in missed.positions


def test_markup_words_keep_the_words_markup_leaves_without_punctuation():
    from neardup.views import markup_words

    source = '(Please select <a href="http://x.org/tz?id=7">time zone</a> &amp; click).'
    stripped = " ".join(re.sub(r"[^\w\s]", " ", source).split())  # punctuation removed
    assert markup_words(source) == "please select a href http x org tz id 7 time zone a amp click"
    assert normalize_text(stripped) == markup_words(source)  # what the copy normalises to
    assert normalize_text(source) == "please select time zone click"
    rows = TextView()([source, "Plain text, no markup."])
    assert rows.markup == (markup_words(source), "")  # "": the normalised text itself
    # the rows alone (the markup route's), without the texts kept beside them: the same rows
    np.testing.assert_array_equal(
        TextView().rows([source, b"Plain text."]), np.asarray(TextView()([source, b"Plain text."]))
    )
    assert rows[:1].markup is None  # a derived array: unknown
    with pytest.raises(NeardupInputError, match="one markup string per text"):
        as_text_rows(np.zeros((2, 4)), ["a", "b"], 4, ["a"])


@pytest.mark.parametrize("brute_force_pairs", [10**8, 0])
def test_text_rows_find_a_copy_whose_markup_lost_its_punctuation(
    template_corpus, brute_force_pairs, monkeypatch
):
    """A sentence of a mail's HTML source, copied with its punctuation removed, keeps its
    tags' words: far from its source in the view, found through the source's markup words
    (every pair measured, or, past BRUTE_FORCE_PAIRS, a MinHash pass); two HTML texts of one
    template (whose markup words agree) are not compared that way."""
    import neardup._markup_route as route

    monkeypatch.setattr(route, "BRUTE_FORCE_PAIRS", brute_force_pairs)
    train, test, _, _ = template_corpus
    source = (
        'Or you can see it on our website by clicking <a href="http://topsitez.us/'
        'category-tab.htm?id=713164&d=jmason.org">your listing</a>.'
    )
    template = '<a href="http://topsitez.us/category-tab.htm?id=713164&d=jmason.org">Palm Vx</a>'
    other = template.replace("Palm Vx", "Visor Edge")
    copy = " ".join(re.sub(r"[^\w\s]", " ", source).split())
    train, test = [*train, source, template], [*test, copy, other]
    view = TextView()
    rows = {"train": view(train), "test": view(test)}
    unit = {s: r / np.linalg.norm(r, axis=1, keepdims=True) for s, r in rows.items()}
    result = find_duplicates({s: {"text": r} for s, r in rows.items()})
    cut = result.views["text"].threshold.value
    assert np.linalg.norm(unit["test"][-2] - unit["train"][-2]) > 1.3 * cut  # beyond reach
    leak = result.leakage["test"]
    found = dict(zip(leak.positions, leak.nearest_positions))
    assert found.get(len(test) - 2) == len(train) - 2
    assert len(test) - 1 not in found  # markup alike, text not: a template
    plain = find_duplicates(
        {s: {"text": as_text_rows(r, r.texts, r.ngram)} for s, r in rows.items()}
    )
    assert len(test) - 2 not in plain.leakage["test"].positions  # without markup words
