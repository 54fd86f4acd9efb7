"""Run DuplicatesCallback under DDP (or one process) and write the result as JSON.

Used by tests/integrations/test_lightning.py in a subprocess (Lightning's ``ddp`` strategy
re-launches this script once per extra rank):

    python _lightning_ddp_script.py STATE.pt OUT_DIR DEVICES
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from neardup.integrations.lightning import DuplicatesCallback


class SmallCNN(pl.LightningModule):
    """The digits CNN of the tests (same architecture as examples/lightning_digits.py)."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(16, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(512, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x):
        return self.head(self.features(x))

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self(x), y), sync_dist=True)


def tensors(path: Path):
    data = torch.load(path)
    return data["state"], data["x_train"], data["y_train"], data["x_test"], data["y_test"]


def run(state_path: Path, out_dir: Path, devices: int) -> DuplicatesCallback:
    state, xtr, ytr, xte, yte = tensors(state_path)
    model = SmallCNN()
    model.load_state_dict(state)
    train_dl = DataLoader(TensorDataset(xtr, ytr), batch_size=100)
    val_dl = DataLoader(TensorDataset(xte, yte), batch_size=64)  # 597 samples: DDP pads one
    callback = DuplicatesCallback(["features"], train_loader=train_dl, report_dir=out_dir)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=devices,
        callbacks=[callback],
        strategy="ddp" if devices > 1 else "auto",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=out_dir,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.validate(model, val_dl, verbose=False)
    return callback


if __name__ == "__main__":
    torch.set_num_threads(1)
    cb = run(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
    if cb.results:  # rank 0 only
        (Path(sys.argv[2]) / f"ddp-rank0-world{sys.argv[3]}.json").write_text(
            cb.results["features"].to_json()
        )
