"""The pooling both callbacks use by default: avg vs max vs flatten, measured on real images.

One measurement decides ``DEFAULT_POOL`` (``neardup/integrations/_common.py``), shared by the
Lightning and Keras callbacks. A small CNN (two conv blocks, a 64-unit embedding, a 10-way
head; the architecture of ``examples/lightning_digits.py``, sized to the images) is trained
on real images whose test split holds planted copies of training images of five kinds
(exact, Gaussian noise, brightness x0.85, contrast x0.8, a 1-2 pixel shift). The default
layer of the callbacks (the block holding the last convolution) is read with each pooling,
and :func:`neardup.find_duplicates` runs with its defaults (``Auto`` threshold) on it alone:

- recall per planted kind (planted test images reported as leaked);
- false alarms: other test images reported (not planted);
- ``sep``: the 5th percentile of the natural nearest-train distances of unplanted test
  images over the 95th percentile of the planted copies' distances to their source
  (> 1: the two groups are separable by a threshold).

Data: scikit-learn digits (8x8, 1,200 train / 597 test) and Fashion-MNIST (Debian
``dataset-fashion-mnist``, 28x28, 5,000 train / 1,000 test), both offline.

    python benchmarks/bench_pooling.py              # both data sets (about 2 min on 2 vCPUs)
    python benchmarks/bench_pooling.py --only digits
"""

from __future__ import annotations

import argparse
import gzip
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

import neardup
from neardup.integrations.lightning._hooks import HookManager, default_layer

FASHION = Path("/usr/share/datasets/fashion-mnist")
KINDS = ("exact", "noise", "brightness x0.85", "contrast x0.8", "shift 1-2 px")
POOLS = ("avg", "max", "flatten")


def _digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images / 16.0).astype(np.float32)
    order = np.random.default_rng(0).permutation(len(x))
    tr, te = order[:1200], order[1200:]
    return x[tr], d.target[tr], x[te], d.target[te]


def _fashion() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    def read(name: str, offset: int) -> np.ndarray:
        with gzip.open(FASHION / name) as fh:
            return np.frombuffer(fh.read(), np.uint8, offset=offset)

    x = read("train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    y = read("train-labels-idx1-ubyte.gz", 8)
    xt = read("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)
    yt = read("t10k-labels-idx1-ubyte.gz", 8)
    return (
        (x[:5000] / 255.0).astype(np.float32),
        y[:5000].astype(np.int64),
        (xt[:1000] / 255.0).astype(np.float32),
        yt[:1000].astype(np.int64),
    )


def _edit(image: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "noise":
        return np.clip(image + rng.normal(0, 0.03, image.shape), 0, 1)
    if kind == "brightness x0.85":
        return image * 0.85
    if kind == "contrast x0.8":
        return np.clip((image - image.mean()) * 0.8 + image.mean(), 0, 1)
    if kind == "shift 1-2 px":
        dy, dx = rng.choice([-2, -1, 1, 2], size=2)
        padded = np.pad(image, 2, mode="edge")
        return padded[2 + dy : 2 + dy + image.shape[0], 2 + dx : 2 + dx + image.shape[1]]
    return image.copy()


def plant(x_train, x_test, per_kind: int, rng: np.random.Generator):
    """Replace ``per_kind`` test images per kind by edited copies; test position -> kind."""
    x_test = x_test.copy()
    slots = rng.choice(len(x_test), per_kind * len(KINDS), replace=False)
    sources = rng.choice(len(x_train), len(slots), replace=False)
    kind_of, source_of = {}, {}
    for n, (slot, source) in enumerate(zip(slots, sources)):
        kind = KINDS[n // per_kind]
        x_test[slot] = _edit(x_train[source], kind, rng).astype(np.float32)
        kind_of[int(slot)], source_of[int(slot)] = kind, int(source)
    return x_test, kind_of, source_of


class CNN(nn.Module):
    def __init__(self, side: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * (side // 2) ** 2, 64), nn.ReLU(), nn.Linear(64, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def train(x: np.ndarray, y: np.ndarray, epochs: int) -> CNN:
    torch.manual_seed(0)
    model = CNN(x.shape[-1])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xs, ys = torch.from_numpy(x[:, None]), torch.from_numpy(y.astype(np.int64))
    for _ in range(epochs):
        order = torch.randperm(len(xs))
        for start in range(0, len(xs), 64):
            idx = order[start : start + 64]
            loss = nn.functional.cross_entropy(model(xs[idx]), ys[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def pooled(model: CNN, x: np.ndarray, layer: str, pool: str) -> np.ndarray:
    hooks = HookManager(pool)
    hooks.attach({layer: dict(model.named_modules())[layer]})
    rows = []
    with torch.no_grad():
        for start in range(0, len(x), 512):
            model(torch.from_numpy(x[start : start + 512, None]))
            rows.append(hooks.take()[layer].numpy())
    hooks.detach()
    return np.concatenate(rows)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def study(name: str, data, per_kind: int, epochs: int) -> list[dict]:
    x_train, y_train, x_test, _ = data
    rng = np.random.default_rng(1)
    x_test, kind_of, source_of = plant(x_train, x_test, per_kind, rng)
    start = time.perf_counter()
    model = train(x_train, y_train, epochs)
    layer, _ = default_layer(model)
    print(
        f"\n{name}: CNN trained {epochs} epochs in {time.perf_counter() - start:.0f} s; "
        f"default layer {layer!r}; {per_kind} planted per kind"
    )
    rows = []
    planted = np.array(sorted(kind_of))
    unplanted = np.setdiff1d(np.arange(len(x_test)), planted)
    for pool in POOLS:
        a, b = pooled(model, x_train, layer, pool), pooled(model, x_test, layer, pool)
        result = neardup.find_duplicates({"train": a, "test": b})
        flagged = set(result.leakage["test"].positions)
        ua, ub = _unit(a.astype(np.float64)), _unit(b.astype(np.float64))
        natural = 1 - (ub[unplanted].astype(np.float32) @ ua.T.astype(np.float32)).max(axis=1)
        copies = np.array([1 - ub[p] @ ua[source_of[p]] for p in planted])
        row = {
            "data": name,
            "pool": pool,
            "dim": a.shape[1],
            "false": len(flagged - set(kind_of)),
            "sep": float(np.quantile(natural, 0.05) / max(np.quantile(copies, 0.95), 1e-12)),
        }
        for kind in KINDS:
            hits = [p for p, k in kind_of.items() if k == kind and p in flagged]
            row[kind] = len(hits) / per_kind
        rows.append(row)
        print(f"  {pool}: {row}", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="digits,fashion")
    parser.add_argument("--per-kind", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = []
    if "digits" in args.only:
        rows += study("digits", _digits(), args.per_kind, epochs=8)
    if "fashion" in args.only:
        rows += study("Fashion-MNIST", _fashion(), args.per_kind, epochs=2)
    print()
    print("| data | pool | dim | " + " | ".join(KINDS) + " | false alarms | sep |")
    print("|---|---|---:|" + "---:|" * len(KINDS) + "---:|---:|")
    for r in rows:
        recalls = " | ".join(f"{r[k]:.2f}" for k in KINDS)
        print(
            f"| {r['data']} | {r['pool']} | {r['dim']} | {recalls} | {r['false']} | "
            f"{r['sep']:.2f} |"
        )
    mean = {
        p: np.mean([np.mean([r[k] for k in KINDS]) for r in rows if r["pool"] == p]) for p in POOLS
    }
    false = {p: sum(r["false"] for r in rows if r["pool"] == p) for p in POOLS}
    print(
        "\nmean recall over kinds and data: "
        + ", ".join(f"{p} {mean[p]:.3f} ({false[p]} false alarms)" for p in POOLS)
    )


if __name__ == "__main__":
    main()
