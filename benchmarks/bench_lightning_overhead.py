"""Cost of DuplicatesCallback's collection in the eval loop, and which layer to pick.

Default mode: time ``trainer.validate`` on a small CNN (the example's) with and without the
callback's forward hooks, collection only (the analysis after the loop is not timed), and
print the ratio. Runs are interleaved and the median of ``--repeats`` is reported.

``--layers``: train the CNN on digits with planted copies in the test split and report,
for every layer and pooling, how far the planted copies are from their training source
compared with natural nearest neighbours, and what ``find_duplicates`` finds with its
default threshold. This is the measurement behind the ``layers=None`` rule.

    python benchmarks/bench_lightning_overhead.py [--repeats 7] [--tile 20]
    python benchmarks/bench_lightning_overhead.py --layers
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from lightning_digits import DigitsCNN, loaders, pl

import neardup
from neardup.integrations.lightning import DuplicatesCallback


class _CollectOnly(DuplicatesCallback):
    """The callback with its post-loop analysis switched off: only collection is measured."""

    def _analyze(self, *args, **kwargs):
        self._eval = None  # drop the rows, as the analysis would have consumed them


class _LoopTimer(pl.Callback):
    """CPU time of the eval loop, from its start to its epoch end (before later callbacks run).

    Process CPU time rather than wall time: the benchmark box is shared, and torch runs on
    one thread here, so CPU time is the loop's own cost.
    """

    def __init__(self) -> None:
        self.seconds: list[float] = []

    def on_validation_start(self, trainer, pl_module):
        self._t0 = time.process_time()

    def on_validation_epoch_end(self, trainer, pl_module):
        self.seconds.append(time.process_time() - self._t0)


def _trainer(callbacks, root):
    return pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=8,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root,
    )


class DigitsMLP(DigitsCNN):
    """The same training code with a 64-128-64-10 perceptron (no convolution)."""

    def __init__(self, lr: float = 3e-3) -> None:
        super().__init__(lr)
        self.features = torch.nn.Sequential(
            torch.nn.Flatten(),
            torch.nn.Linear(64, 128),
            torch.nn.ReLU(),
            torch.nn.Linear(128, 64),
            torch.nn.ReLU(),
        )
        self.head = torch.nn.Linear(64, 10)


def _trained_model(root: str, kind: str = "cnn") -> tuple[DigitsCNN, dict]:
    pl.seed_everything(0, verbose=False)
    train_dl, _, _, planted = loaders()
    model = DigitsCNN() if kind == "cnn" else DigitsMLP()
    _trainer([], root).fit(model, train_dl)
    return model, planted


def overhead(repeats: int, tile: int, layer: str, pool: str, root: str) -> None:
    model, _ = _trained_model(root)
    _, test_dl, _, _ = loaders()
    x, y = test_dl.dataset.tensors
    big = DataLoader(TensorDataset(x.repeat(tile, 1, 1, 1), y.repeat(tile)), batch_size=256)
    timings: dict[str, list[float]] = {"without": [], "with": []}
    for _ in range(repeats):
        for mode in ("without", "with"):
            timer = _LoopTimer()
            callbacks = [timer]
            if mode == "with":
                # collection only: the timer stops before the epoch end, the analysis is off
                callbacks.append(
                    _CollectOnly([layer], pool=pool, verbose=False, save_reports=False)
                )
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _trainer(callbacks, root).validate(model, big, verbose=False)
            timings[mode].append(timer.seconds[-1])
    print(
        f"eval loop over {len(big.dataset):,} digits, batch 256, layer {layer!r} pool={pool}, "
        f"1 torch thread, CPU seconds"
    )
    for stat in (statistics.median, min):
        base, hooked = stat(timings["without"]), stat(timings["with"])
        print(
            f"  {stat.__name__:>6}: without {base * 1000:.0f} ms, with {hooked * 1000:.0f} ms, "
            f"ratio {hooked / base:.3f} ({100 * (hooked / base - 1):+.1f} %)"
        )
    print(f"  runs without: {_ms(timings['without'])}")
    print(f"  runs with:    {_ms(timings['with'])}")


def _ms(values):
    return ", ".join(f"{v * 1000:.0f}" for v in values)


def _activations(model, loader, names, pool):
    from neardup.integrations.lightning._hooks import HookManager

    modules = dict(model.named_modules())
    hooks = HookManager(pool)
    hooks.attach({n: modules[n] for n in names})
    rows = {n: [] for n in names}
    model.eval()
    with torch.no_grad():
        for xb, _ in loader:
            model(xb)
            for n, v in hooks.take().items():
                rows[n].append(v.numpy())
    hooks.detach()
    return {n: np.concatenate(v) for n, v in rows.items()}


def layer_study(root: str, kind: str) -> None:
    from neardup.integrations.lightning._hooks import default_layer

    model, planted = _trained_model(root, kind)
    _, test_dl, train_eval_dl, _ = loaders()
    names = [n for n, m in model.named_modules() if n]
    print(f"model {kind}: layers=None picks {default_layer(model)[0]!r}")
    planted_rows = {kind: np.array([t for t, _ in pairs]) for kind, pairs in planted.items()}
    is_planted = np.zeros(len(test_dl.dataset), bool)
    for rows in planted_rows.values():
        is_planted[rows] = True
    print("distances: cosine distance of a test image to its nearest training image,")
    print("as multiples of the median natural (non-planted) nearest distance;")
    print("found: planted copies flagged by find_duplicates' default threshold (of 10 each),")
    print("false: non-planted test images flagged.\n")
    print(
        f"{'layer':<12}{'pool':<8}{'dim':>5} {'exact':>6}{'shift':>7}{'noise':>7}"
        f"{'nat p1':>8}   found e/s/n   false"
    )
    for pool in ("avg", "max", "flatten"):
        train = _activations(model, train_eval_dl, names, pool)
        test = _activations(model, test_dl, names, pool)
        for name in names:
            a = _unit(train[name])
            b = _unit(test[name])
            nearest = 1 - (b @ a.T).max(axis=1)
            natural = nearest[~is_planted]
            scale = float(np.median(natural))
            worst = {k: float(nearest[r].max()) / scale for k, r in planted_rows.items()}
            result = neardup.find_duplicates({"train": train[name], "test": test[name]})
            flagged = set(result.leakage["test"].ids)
            found = [sum(int(r) in flagged for r in rows) for rows in planted_rows.values()]
            false = len(flagged) - sum(found)
            print(
                f"{name:<12}{pool:<8}{a.shape[1]:>5} {worst['exact']:>6.2f}{worst['shift']:>7.2f}"
                f"{worst['noise']:>7.2f}{np.quantile(natural, 0.01) / scale:>8.2f}   "
                f"{found[0]:>2}/{found[1]:>2}/{found[2]:>2}      {false:>3}"
            )


def _unit(x):
    x = x.astype(np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--tile", type=int, default=20, help="copies of the 597 test digits")
    parser.add_argument("--layer", default="features")
    parser.add_argument("--pool", default="max")
    parser.add_argument("--layers", action="store_true", help="run the layer study instead")
    parser.add_argument("--model", choices=("cnn", "mlp"), default="cnn", help="layer study model")
    args = parser.parse_args()
    torch.set_num_threads(1)
    import tempfile

    with tempfile.TemporaryDirectory() as root:
        if args.layers:
            layer_study(root, args.model)
        else:
            overhead(args.repeats, args.tile, args.layer, args.pool, root)


if __name__ == "__main__":
    main()
