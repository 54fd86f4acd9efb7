"""A Lightning training run that reports its own train/test leakage.

A small CNN learns scikit-learn's digits (8x8 images). The test split is contaminated on
purpose: 30 of its images are copies of training images (10 exact, 10 shifted by one
pixel, 10 with a little noise). ``DuplicatesCallback`` hooks an intermediate layer during
evaluation (and views the input images as thumbnails), re-reads the training split in eval
mode at the end, and prints which test images have a near-duplicate in the training data and
which view found them.

Run: ``python examples/lightning_digits.py`` (about 10-20 s on a laptop CPU).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

try:
    import lightning.pytorch as pl
except ImportError:  # the older package name
    import pytorch_lightning as pl

from neardup.integrations.lightning import DuplicatesCallback

PLANTED = ("exact", "shift", "noise")


def contaminated_digits(
    n_train: int = 1200, per_kind: int = 10, seed: int = 0
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], dict]:
    """Digits split into train/test, with copies of training images planted in the test split.

    Returns ``(x_train, y_train), (x_test, y_test), planted`` where ``planted[kind]`` is a
    list of ``(test_index, train_index)`` pairs; images are ``(n, 1, 8, 8)`` float32 in [0, 1].
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    train, test = order[:n_train], order[n_train:]
    x_train, y_train, x_test, y_test = x[train], y[train], x[test].copy(), y[test].copy()
    sources = rng.choice(n_train, size=per_kind * len(PLANTED), replace=False)
    targets = rng.choice(len(x_test), size=len(sources), replace=False)
    planted: dict[str, list[tuple[int, int]]] = {kind: [] for kind in PLANTED}
    for i, (src, dst) in enumerate(zip(sources, targets)):
        kind = PLANTED[i // per_kind]
        image = x_train[src].copy()
        if kind == "shift":  # one pixel to the right, a blank column enters on the left
            image = np.roll(image, 1, axis=-1)
            image[..., 0] = 0.0
        elif kind == "noise":
            image = np.clip(image + rng.normal(0, 0.03, image.shape), 0, 1).astype(np.float32)
        x_test[dst], y_test[dst] = image, y_train[src]
        planted[kind].append((int(dst), int(src)))
    return (x_train, y_train), (x_test, y_test), planted


class DigitsCNN(pl.LightningModule):
    """Two conv layers, a 64-unit embedding and a 10-way head."""

    def __init__(self, lr: float = 3e-3) -> None:
        super().__init__()
        self.lr = lr
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(), nn.Linear(64, 10)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def _step(self, batch: tuple[torch.Tensor, torch.Tensor], name: str) -> torch.Tensor:
        x, y = batch
        logits = self(x)
        loss = nn.functional.cross_entropy(logits, y)
        self.log(f"{name}_loss", loss, prog_bar=name == "val")
        if name != "train":
            self.log(f"{name}_acc", (logits.argmax(1) == y).float().mean())
        return loss

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def loaders(batch_size: int = 64, seed: int = 0):
    (xtr, ytr), (xte, yte), planted = contaminated_digits(seed=seed)
    train = TensorDataset(torch.from_numpy(xtr), torch.from_numpy(ytr))
    test = TensorDataset(torch.from_numpy(xte), torch.from_numpy(yte))
    return (
        DataLoader(train, batch_size=batch_size, shuffle=True),
        DataLoader(test, batch_size=256),
        DataLoader(train, batch_size=256),  # the same data without shuffling, for the callback
        planted,
    )


def main() -> None:
    pl.seed_everything(0, verbose=False)
    train_dl, test_dl, train_eval_dl, planted = loaders()
    # layers=None: the callback picks a layer and says which; analyse at the end of test()
    callback = DuplicatesCallback(train_loader=train_eval_dl, analyze_at_fit_end=False)
    logs = "reports/lightning"  # the CSV metrics and neardup's JSON/HTML reports go here
    trainer = pl.Trainer(
        max_epochs=8,
        accelerator="cpu",
        devices=1,
        callbacks=[callback],
        default_root_dir=logs,
        enable_progress_bar=False,
        enable_model_summary=False,
        logger=pl.loggers.CSVLogger(logs),
    )
    model = DigitsCNN()
    trainer.fit(model, train_dl)
    metrics = trainer.test(model, test_dl, verbose=False)[0]
    print(f"\ntest accuracy {metrics['test_acc']:.3f}")
    leak = callback.leakage["test"]  # the combined verdict of the layer and the input view
    found = dict(zip(leak.ids, leak.found_by))
    print(f"views: {callback.views}")
    for kind, pairs in planted.items():
        hits = [test_index for test_index, _ in pairs if test_index in found]
        views = sorted({v for t in hits for v in found[t]})
        print(f"planted {kind:>5}: {len(hits)}/{len(pairs)} found (by {', '.join(views)})")
    others = len(found.keys() - {t for pairs in planted.values() for t, _ in pairs})
    print(f"other test images flagged (natural look-alikes): {others}")


if __name__ == "__main__":
    main()
