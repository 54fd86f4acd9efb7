"""DuplicatesCallback with real Lightning trainers (both packages), real digits, CPU only.

One CNN is trained once per module on digits whose test split holds planted copies of
training images (10 exact, 10 shifted by one pixel, 10 noisy); every test then runs a real
``Trainer`` (fit / validate / test) with the callback on that model.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, TensorDataset

pytest.importorskip("lightning")
pytest.importorskip("pytorch_lightning")

import lightning.pytorch as lpl
import pytorch_lightning as ptl

from neardup import DuplicatesResult, LeakageError, NeardupInputError
from neardup.integrations.lightning import DuplicatesCallback

HERE = Path(__file__).parent
ROOT = HERE.parents[1]
PACKAGES = {"lightning.pytorch": lpl, "pytorch_lightning": ptl}


def _load(path: Path, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = _load(ROOT / "examples" / "lightning_digits.py", "_lightning_digits_example")


def _module_class(pl):
    """The examples' digits CNN as a LightningModule of the given Lightning package."""

    class CNN(pl.LightningModule):
        def __init__(self, fail_at: int | None = None) -> None:
            super().__init__()
            self.fail_at = fail_at
            self.features = nn.Sequential(
                nn.Conv2d(1, 16, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(16, 32, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
            )
            self.head = nn.Sequential(
                nn.Flatten(), nn.Linear(512, 64), nn.ReLU(), nn.Linear(64, 10)
            )

        def forward(self, x):
            return self.head(self.features(x))

        def training_step(self, batch, batch_idx):
            x, y = batch
            return nn.functional.cross_entropy(self(x), y)

        def validation_step(self, batch, batch_idx, dataloader_idx=0):
            if self.fail_at is not None and batch_idx == self.fail_at:
                raise RuntimeError("boom in validation_step")
            x, y = batch
            self.log("val_loss", nn.functional.cross_entropy(self(x), y))

        def test_step(self, batch, batch_idx, dataloader_idx=0):
            self.validation_step(batch, batch_idx, dataloader_idx)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=1e-3)

    return CNN


MODELS = {name: _module_class(pl) for name, pl in PACKAGES.items()}


@pytest.fixture(scope="module")
def data():
    (xtr, ytr), (xte, yte), planted = example.contaminated_digits()
    tensors = [torch.from_numpy(a) for a in (xtr, ytr, xte, yte)]
    return (*tensors, planted)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """State dict of the CNN after 8 epochs on the training split (no callback)."""
    xtr, ytr, *_ = data
    lpl.seed_everything(0, verbose=False)
    model = example.DigitsCNN()
    loader = DataLoader(TensorDataset(xtr, ytr), batch_size=64, shuffle=True)
    _trainer(lpl, tmp_path_factory.mktemp("pretrain"), max_epochs=8).fit(model, loader)
    return {k: v.clone() for k, v in model.state_dict().items()}


def _trainer(pl, root, **kwargs):
    options = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=root,
    )
    options.update(kwargs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pl.Trainer(**options)


def _model(package, state, **kwargs):
    model = MODELS[package](**kwargs)
    model.load_state_dict(state)
    return model


def _loaders(data, batch_size=128):
    xtr, ytr, xte, yte, _ = data
    train = DataLoader(TensorDataset(xtr, ytr), batch_size=batch_size)
    test = DataLoader(TensorDataset(xte, yte), batch_size=batch_size)
    return train, test


def _hooks_left(model):
    return sum(len(m._forward_hooks) for m in model.modules())


def _planted_ids(planted, kind=None):
    kinds = [kind] if kind else list(planted)
    return {t for k in kinds for t, _ in planted[k]}


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(*args, **kwargs)


class _HookWatcher(lpl.Callback):
    """Records whether any forward hook is registered while training steps run."""

    def __init__(self, model):
        self.model, self.during_training = model, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.during_training.append(_hooks_left(self.model))


# ---------------------------------------------------------------------------- behaviour


def test_fit_finds_planted_copies_with_dataset_indices(data, trained, tmp_path, capsys):
    xtr, ytr, *_, planted = data
    model = _model("lightning.pytorch", trained)
    _, test = _loaders(data)
    shuffled = DataLoader(TensorDataset(xtr, ytr), batch_size=64, shuffle=True)
    cb = DuplicatesCallback(["features"])  # training split: the trainer's (shuffled) loader
    watcher = _HookWatcher(model)
    logger = lpl.loggers.CSVLogger(tmp_path)
    trainer = _trainer(
        lpl,
        tmp_path,
        max_epochs=1,
        callbacks=[watcher, cb],
        logger=logger,
        num_sanity_val_steps=2,
    )
    _quiet(trainer.fit, model, shuffled, test)

    result = cb.results["features"]
    assert isinstance(result, DuplicatesResult)
    # the sanity check's batches were not collected, every sample exactly once
    assert result.split_sizes == {"val": 597, "train": 1200}
    leak = result.leakage["val"]
    found = set(leak.ids)
    assert _planted_ids(planted, "exact") <= found
    assert len(_planted_ids(planted, "shift") & found) >= 8
    assert len(found - _planted_ids(planted)) <= 3
    # ids are dataset indices of both splits, even though training was shuffled
    nearest = dict(zip(leak.ids, leak.nearest_ids))
    for test_index, train_index in planted["exact"]:
        assert nearest[test_index] == train_index
    # never hooked during training steps, nothing left afterwards
    assert watcher.during_training and max(watcher.during_training) == 0
    assert _hooks_left(model) == 0
    # metrics reached the logger, reports the log dir, summary the console
    logger.save()
    rows = list(csv.DictReader(open(Path(logger.log_dir) / "metrics.csv")))
    leaks = [r["neardup/val/leak_count"] for r in rows if r.get("neardup/val/leak_count")]
    assert leaks and float(leaks[-1]) == cb.leakage["val"].count  # the combined verdict
    report = Path(trainer.log_dir) / "neardup-fit-features.json"
    assert json.loads(report.read_text())["leakage"]["val"]["count"] == leak.count
    out = capsys.readouterr().out
    assert "leakage val -> train" in out and str(report) in out
    assert cb.last_summary["metrics"]["neardup/features/val/leak_count"] == leak.count


@pytest.mark.parametrize("package", list(PACKAGES))
def test_validate_and_test_entry_points_both_packages(package, data, trained, tmp_path):
    pl = PACKAGES[package]
    model = _model(package, trained)
    train, test = _loaders(data)
    cb = DuplicatesCallback(["features.3"], train_loader=train, verbose=False)
    trainer = _trainer(pl, tmp_path, callbacks=[cb])
    validated = _quiet(trainer.validate, model, test, verbose=False)[0]
    assert validated["neardup/val/leak_count"] == cb.results["features.3"].leakage["val"].count
    assert validated["neardup/val/leak_count"] >= 25
    tested = _quiet(trainer.test, model, test, verbose=False)[0]
    assert set(cb.results["features.3"].leakage) == {"test"}
    assert tested["neardup/test/leak_count"] == validated["neardup/val/leak_count"]
    assert _hooks_left(model) == 0


def test_several_eval_dataloaders_named_splits_and_dict_batches(data, trained, tmp_path):
    xtr, ytr, xte, yte, planted = data
    clean_rows = np.setdiff1d(np.arange(len(xte)), sorted(_planted_ids(planted)))

    class DictDataset(Dataset):  # a train loader of dict batches: default forward/labels
        def __len__(self):
            return len(xtr)

        def __getitem__(self, i):
            return {"image": xtr[i], "label": ytr[i]}

    contaminated = DataLoader(TensorDataset(xte, yte), batch_size=100)
    clean = DataLoader(TensorDataset(xte[clean_rows], yte[clean_rows]), batch_size=100)
    cb = DuplicatesCallback(
        ["features"],
        splits={"test": ["contaminated", "clean"]},
        train_loader=DataLoader(DictDataset(), batch_size=100),
        verbose=False,
    )
    model = _model("lightning.pytorch", trained)
    out = _quiet(_trainer(lpl, tmp_path, callbacks=[cb]).test, model, [contaminated, clean])
    result = cb.results["features"]
    assert result.split_sizes == {"contaminated": 597, "clean": 567, "train": 1200}
    assert result.leakage["contaminated"].count >= 24
    assert result.leakage["clean"].count <= 3
    assert sum(result.class_counts["train"].values()) == 1200  # labels from dict batches
    assert out[0]["neardup/contaminated/leak_count"] == result.leakage["contaminated"].count


def test_every_n_val_epochs_feeds_model_checkpoint(data, trained, tmp_path):
    train, test = _loaders(data)
    cb = DuplicatesCallback(
        ["features"],
        every_n_val_epochs=1,
        analyze_at_fit_end=False,
        verbose=False,
        save_reports=False,
    )
    ckpt = lpl.callbacks.ModelCheckpoint(
        dirpath=tmp_path / "ckpt", monitor="neardup/val/leak_fraction", mode="min"
    )
    trainer = _trainer(
        lpl,
        tmp_path,
        max_epochs=2,
        limit_train_batches=2,
        callbacks=[cb, ckpt],
        enable_checkpointing=True,
        num_sanity_val_steps=0,
    )
    _quiet(trainer.fit, _model("lightning.pytorch", trained), train, test)
    assert ckpt.best_model_path and ckpt.best_model_score is not None
    # limit_train_batches=2 bounds the training pass too: 2 batches of 128 training images, so
    # only the planted copies of those 256 count
    assert cb.results["features"].split_sizes["train"] == 256
    last = cb.leakage["val"].fraction  # the monitored metric is the combined verdict's
    # the training pass reads 2 batches (limit_train_batches=2: 256 of 1,200 training
    # digits), which hold the sources of about 6 of the 30 planted copies (6 / 597 = 0.01)
    assert 0.005 < float(ckpt.best_model_score) <= last + 1e-6  # the best of the 2 epochs
    # the checkpoint carries the callback's state under its state key
    state = torch.load(ckpt.best_model_path, weights_only=False)["callbacks"][cb.state_key]
    assert state["settings"]["layers"] == ["features"]
    assert state["last_summary"]["metrics"]["neardup/val/leak_count"] > 0


def test_two_instances_coexist_and_state_round_trips(data, trained, tmp_path):
    train, test = _loaders(data)
    a = DuplicatesCallback(["features"], train_loader=train, verbose=False, save_reports=False)
    b = DuplicatesCallback(["head.1"], train_loader=train, verbose=False, save_reports=False)
    assert a.state_key != b.state_key
    _quiet(
        _trainer(lpl, tmp_path, callbacks=[a, b]).validate,
        _model("lightning.pytorch", trained),
        test,
    )
    # each layer beside the default input view (8x8 thumbnails of the digits)
    # (and the input view's aligned view, which re-scores candidate pairs over shifts/crops)
    assert list(a.results) == ["features", "input", "input:aligned"]
    assert list(b.results) == ["head.1", "input", "input:aligned"]
    restored = DuplicatesCallback(["features"], train_loader=train)
    restored.load_state_dict(a.state_dict())
    assert restored.last_summary == a.last_summary
    with pytest.warns(UserWarning, match="settings"):
        DuplicatesCallback(["features"], pool="avg").load_state_dict(a.state_dict())


def test_default_layer_is_chosen_and_announced(data, trained, tmp_path, capsys):
    train, test = _loaders(data)
    cb = DuplicatesCallback(train_loader=train, save_reports=False)
    _quiet(
        _trainer(lpl, tmp_path, callbacks=[cb]).validate, _model("lightning.pytorch", trained), test
    )
    assert cb.layers == ["features"]
    assert list(cb.results) == ["features", "input", "input:aligned"]
    out = capsys.readouterr().out
    assert "layers=None -> analysing 'features'" in out
    assert "input_view='auto' -> images (1, 8, 8) -> AlignedImageView()" in out


def test_fail_above_raises_after_the_run(data, trained, tmp_path):
    train, test = _loaders(data)
    model = _model("lightning.pytorch", trained)
    cb = DuplicatesCallback(["features"], train_loader=train, fail_above=0.01, verbose=False)
    with pytest.raises(LeakageError, match=r"split 'val'.*fail_above=0.01"):
        _quiet(_trainer(lpl, tmp_path, callbacks=[cb]).validate, model, test)
    assert _hooks_left(model) == 0
    cb = DuplicatesCallback(["features"], train_loader=train, fail_above=0.2, verbose=False)
    _quiet(_trainer(lpl, tmp_path, callbacks=[cb]).validate, model, test)  # 5 % < 20 %


def test_default_config_finds_exact_noise_and_brightness_copies(data, trained, tmp_path, capsys):
    """layers=None, input_view='auto', pool and threshold defaults: one combined verdict."""
    xtr, ytr, xte, yte, planted = data
    taken = _planted_ids(planted)
    rng = np.random.default_rng(5)
    slots = rng.choice(sorted(set(range(len(xte))) - taken), 10, replace=False)
    sources = rng.choice(len(xtr), 10, replace=False)
    xte, yte = xte.clone(), yte.clone()
    xte[slots], yte[slots] = xtr[sources] * 0.85, ytr[sources]  # brightness x 0.85
    kinds = {k: _planted_ids(planted, k) for k in planted}
    kinds["brightness"] = set(slots.tolist())
    train = DataLoader(TensorDataset(xtr, ytr), batch_size=128)
    test = DataLoader(TensorDataset(xte, yte), batch_size=128)
    cb = DuplicatesCallback(train_loader=train, save_reports=False)
    model = _model("lightning.pytorch", trained)
    _quiet(_trainer(lpl, tmp_path, callbacks=[cb]).validate, model, test)
    assert "input_view='auto' -> images (1, 8, 8)" in capsys.readouterr().out
    assert cb.views == ["features", "input"] and cb.pool == "max"
    leak = cb.leakage["val"]
    found = dict(zip(leak.ids, leak.found_by))
    for kind in ("exact", "noise", "brightness"):
        assert kinds[kind] <= set(found), f"{kind}: missed {sorted(kinds[kind] - set(found))}"
    assert len(kinds["shift"] & set(found)) >= 8
    planted_all = set().union(*kinds.values())
    assert len(set(found) - planted_all) <= 3, sorted(set(found) - planted_all)
    # a brightness copy is an identical thumbnail: the input view finds every one
    assert all("input" in found[i] for i in kinds["brightness"])
    nearest = dict(zip(leak.ids, leak.nearest_ids))  # dataset indices on both sides
    assert all(nearest[int(s)] == int(t) for s, t in zip(slots, sources))
    assert set(leak.view_distances) == {"features", "input", "input:aligned"}
    assert cb.result.settings["combine"] == "confirm:input"  # the pixels confirm the layer
    off = DuplicatesCallback(train_loader=train, save_reports=False, input_view=None, verbose=False)
    model = _model("lightning.pytorch", trained)
    _quiet(_trainer(lpl, tmp_path, callbacks=[off]).validate, model, test)
    assert list(off.results) == ["features"] and off.views == ["features"]


def test_input_fn_and_a_custom_input_view(data, trained, tmp_path):
    from neardup.views import ImageView

    train, test = _loaders(data)
    seen = []

    def inputs(batch):
        seen.append(len(batch[0]))
        return batch[0]

    cb = DuplicatesCallback(
        ["features"],
        train_loader=train,
        input_view=ImageView(size=4),
        input_fn=inputs,
        save_reports=False,
        verbose=False,
    )
    model = _model("lightning.pytorch", trained)
    _quiet(_trainer(lpl, tmp_path, callbacks=[cb]).validate, model, test)
    assert cb.results["input"].settings["dim"] == 16 and sum(seen) == 597 + 1200
    with pytest.raises(NeardupInputError, match="input_view='thumbs' is not supported"):
        DuplicatesCallback(input_view="thumbs")
    with pytest.raises(NeardupInputError, match="named 'input'"):
        DuplicatesCallback(["input"])


def test_colour_images_get_a_colour_and_a_luma_input_view(colour_digits, tmp_path):
    train, test, planted = colour_digits

    class ColourCNN(lpl.LightningModule):  # untrained: the input views do the finding here
        def __init__(self) -> None:
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
            self.head = nn.Sequential(nn.Flatten(), nn.Linear(512, 10))

        def forward(self, x):
            return self.head(self.features(x))

        def validation_step(self, batch, batch_idx):
            self.log("val_loss", nn.functional.cross_entropy(self(batch[0]), batch[1]))

    def loader(x):
        chw = torch.from_numpy(np.moveaxis(x, -1, 1) / np.float32(255.0))
        return DataLoader(TensorDataset(chw, torch.zeros(len(x), dtype=torch.long)), 128)

    torch.manual_seed(0)
    cb = DuplicatesCallback(train_loader=loader(train), save_reports=False, verbose=False)
    _quiet(_trainer(lpl, tmp_path, callbacks=[cb]).validate, ColourCNN(), loader(test))
    # the core turns the colour input view into its thumbnail, luma and aligned views
    assert cb.views[-1] == "input"
    assert {"input", "input-luma", "input:aligned"} <= set(cb.results)
    assert cb.results["input-luma"].settings["dim"] == 64
    leak = cb.leakage["val"]
    found = dict(zip(leak.positions, leak.nearest_positions))
    assert {p: found.get(p) for p in planted} == planted  # every colour-jittered copy
    by_luma = [f for p, f in zip(leak.positions, leak.found_by) if p in planted]
    assert sum("input-luma" in f for f in by_luma) >= 8
    with pytest.raises(NeardupInputError, match="named 'input-luma'"):
        DuplicatesCallback(["input-luma"])


# ---------------------------------------------------------------------------- bad input


def test_hooks_removed_after_an_exception(data, trained, tmp_path):
    train, test = _loaders(data, batch_size=64)
    model = _model("lightning.pytorch", trained, fail_at=2)
    cb = DuplicatesCallback(["features", "head.1"], train_loader=train)
    with pytest.raises(RuntimeError, match="boom"):
        _quiet(_trainer(lpl, tmp_path, callbacks=[cb]).validate, model, test)
    assert _hooks_left(model) == 0 and not cb._hooks.active


def test_unknown_layer_lists_closest_names_and_leaks_no_hook(data, trained, tmp_path):
    train, test = _loaders(data)
    model = _model("lightning.pytorch", trained)
    cb = DuplicatesCallback(["features.9", "head.1"], train_loader=train)
    with pytest.raises(NeardupInputError, match=r"'features.9'.*closest: 'features.\d'") as err:
        _quiet(_trainer(lpl, tmp_path, callbacks=[cb]).validate, model, test)
    assert "named_modules(): 'features', 'features.0', 'features.1'" in str(err.value)
    assert _hooks_left(model) == 0


def test_tuple_and_dict_outputs(data, trained, tmp_path):

    class Pair(nn.Module):  # returns (features, aux) like an LSTM
        def forward(self, x):
            return x, x.sum()

    class Outputs(nn.Module):  # returns two tensors under names neardup cannot choose from
        def forward(self, x):
            return {"a": x, "b": x * 2}

    class Wrapped(MODELS["lightning.pytorch"]):
        def __init__(self):
            super().__init__()
            self.pair, self.outputs = Pair(), Outputs()

        def forward(self, x):
            h = self.pair(self.features(x))[0]
            return self.head(self.outputs(h)["a"])

    model = Wrapped()
    model.load_state_dict(trained, strict=False)
    train, test = _loaders(data)
    cb = DuplicatesCallback(["pair"], train_loader=train, verbose=False, save_reports=False)
    with pytest.warns(UserWarning, match="'pair' returns a tuple of 2; collecting its first"):
        _trainer(lpl, tmp_path, callbacks=[cb]).validate(model, test, verbose=False)
    assert cb.results["pair"].leakage["val"].count >= 25
    cb = DuplicatesCallback(["outputs"], train_loader=train)
    with pytest.raises(NeardupInputError, match=r"dict with tensors \['a', 'b'\].*pool=callable"):
        _quiet(_trainer(lpl, tmp_path, callbacks=[cb]).validate, model, test)
    assert _hooks_left(model) == 0
    pick = DuplicatesCallback(
        ["outputs"],
        pool=lambda out: out["b"].amax(dim=(2, 3)),
        train_loader=train,
        verbose=False,
        save_reports=False,
    )
    _quiet(_trainer(lpl, tmp_path, callbacks=[pick]).validate, model, test)
    assert pick.results["outputs"].settings["dim"] == 32


def test_iterable_eval_dataset_warns_and_still_works(data, trained, tmp_path):
    *_, xte, yte, _ = data

    class Stream(IterableDataset):
        def __iter__(self):
            return iter(zip(xte, yte))

    train, _ = _loaders(data)
    cb = DuplicatesCallback(["features"], train_loader=train, verbose=False, save_reports=False)
    with pytest.warns(UserWarning, match="IterableDataset.*position in the loading order"):
        _trainer(lpl, tmp_path, callbacks=[cb]).validate(
            _model("lightning.pytorch", trained),
            DataLoader(Stream(), batch_size=100),
            verbose=False,
        )
    assert cb.results["features"].leakage["val"].count >= 25


def test_fit_without_eval_dataloader_says_so(data, trained, tmp_path):
    train, _ = _loaders(data)
    cb = DuplicatesCallback(["features"])
    trainer = _trainer(lpl, tmp_path, max_epochs=1, limit_train_batches=1, callbacks=[cb])
    with pytest.warns(UserWarning, match="no validation data was collected during fit"):
        trainer.fit(_model("lightning.pytorch", trained), train)
    assert cb.results == {}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"pool": "mean"}, r"pool='mean' is not supported; use 'avg' or 'max'"),
        ({"layers": []}, r"non-empty list of module names"),
        ({"splits": {"val": "train"}}, r"'train' is reserved"),
        ({"splits": {"valid": "a"}}, r"unknown stage\(s\) \['valid'\]"),
        ({"splits": {"a": 0, "b": 0}}, r"indices must be distinct"),
        ({"fail_above": 5}, r"fail_above=5 is not a fraction"),
        ({"every_n_val_epochs": 0}, r"every_n_val_epochs must be a positive int"),
        ({"forward_fn": "model"}, r"forward_fn must be a callable"),
        ({"memory_budget": "lots"}, r"memory_budget='lots' is not a size in bytes"),
        ({"spill_dir": "/tmp"}, r"spill_dir='/tmp' is only used with memory_budget="),
        ({"combine": "all"}, r"combine='all' is not valid.*'any', 'confirm:<view>'"),
        ({"combine": "confirm:input", "input_view": None}, r"needs the input view.*'any'"),
        ({"layers": ["fc"], "combine": "confirm:fc2"}, r"names view 'fc2'.*closest: 'fc'"),
    ],
)
def test_bad_options_are_rejected_in_init(options, message):
    with pytest.raises(NeardupInputError, match=message):
        DuplicatesCallback(**options)


def test_memory_budget_spills_activations_and_changes_no_result(data, trained, tmp_path):
    model = _model("lightning.pytorch", trained)
    train, test = _loaders(data)
    spill = tmp_path / "spill"
    options = dict(train_loader=train, verbose=False, save_reports=False)
    plain = DuplicatesCallback(["features.3"], **options)
    spilled = DuplicatesCallback(["features.3"], memory_budget="10kB", spill_dir=spill, **options)
    for cb in (plain, spilled):
        _quiet(_trainer(lpl, tmp_path, callbacks=[cb]).validate, model, test, verbose=False)
    assert spilled._eval.disk_nbytes > 0 and spilled._eval.nbytes == 0
    assert list(spill.glob("neardup-val-*.npy"))
    assert spilled.results["features.3"].to_dict() == plain.results["features.3"].to_dict()


def test_wrong_number_of_split_names(data, trained, tmp_path):
    train, test = _loaders(data)
    cb = DuplicatesCallback(["features"], splits={"test": ["a", "b"]}, train_loader=train)
    with pytest.raises(NeardupInputError, match=r"2 name\(s\) \['a', 'b'\] for the test stage"):
        _quiet(
            _trainer(lpl, tmp_path, callbacks=[cb]).test, _model("lightning.pytorch", trained), test
        )


# ---------------------------------------------------------------------------- DDP


def test_ddp_two_processes_match_one_process(data, trained, tmp_path):
    """2 CPU ranks (gloo, uneven shards, one padded sample) give the 1-process result."""
    xtr, ytr, xte, yte, _ = data
    state = tmp_path / "state.pt"
    torch.save(
        {"state": trained, "x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte}, state
    )
    script = HERE / "_lightning_ddp_script.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run(
        [sys.executable, str(script), str(state), str(tmp_path), "2"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    ddp = DuplicatesResult.from_json(tmp_path / "ddp-rank0-world2.json")

    single = _load(script, "_lightning_ddp_script").run(state, tmp_path / "one", 1)
    one = single.results["features"]
    assert ddp.split_sizes == one.split_sizes == {"val": 597, "train": 1200}
    assert ddp.leakage["val"].ids == one.leakage["val"].ids
    assert ddp.leakage["val"].nearest_ids == one.leakage["val"].nearest_ids
    assert sorted(map(sorted, (c.ids for c in ddp.clusters))) == sorted(
        map(sorted, (c.ids for c in one.clusters))
    )
    assert ddp.threshold.value == pytest.approx(one.threshold.value, rel=1e-4)


# ---------------------------------------------------------------- native feel (issue 15)


class _StepCounter(lpl.Callback):
    def __init__(self):
        self.steps = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.steps += 1


class _CompiledNet(lpl.LightningModule):
    """The digits CNN wrapped as ``self.net``, compiled in ``configure_model``.

    ``backend="eager"`` keeps the test fast: it still runs the model through TorchDynamo,
    whose compiled frames skip forward hooks added after compiling (the failure to avoid).
    """

    def __init__(self, state):
        super().__init__()
        self.net = example.DigitsCNN()
        self.net.load_state_dict(state)

    def configure_model(self):
        if not hasattr(self.net, "_orig_mod"):
            self.net = torch.compile(self.net, backend="eager")

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        x, y = batch
        return nn.functional.cross_entropy(self.net(x), y)

    def validation_step(self, batch, batch_idx):
        x, y = batch
        self.log("val_loss", nn.functional.cross_entropy(self.net(x), y))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)  # keep the trained weights


def test_compiled_submodule_is_hooked_through_its_original_module(data, trained, tmp_path, capsys):
    import torch._dynamo.eval_frame as eval_frame

    train, test = _loaders(data)
    model = _CompiledNet(trained)
    cb = DuplicatesCallback(train_loader=train)  # layers=None on a compiled net
    _quiet(_trainer(lpl, tmp_path, max_epochs=1, callbacks=[cb]).fit, model, train, test)
    assert hasattr(model.net, "_orig_mod"), "configure_model did not compile the net"
    assert cb.layers == ["net.features"]  # the name as written, no _orig_mod
    leak = cb.results["net.features"].leakage["val"]
    assert _planted_ids(data[-1], "exact") <= set(leak.ids)
    assert "run eagerly while neardup collects" in capsys.readouterr().out
    assert eval_frame._stance.stance == "default"  # compiled again after collection
    assert _hooks_left(model) == 0
    # explicit names work with and without _orig_mod
    for name in ("net.features.2", "net._orig_mod.features.2"):
        named = DuplicatesCallback([name], train_loader=train, verbose=False)
        _quiet(_trainer(lpl, tmp_path, callbacks=[named]).validate, model, test, verbose=False)
        assert named.results[name].leakage["val"].count >= 10


def test_bad_layers_fail_in_the_sanity_check_before_training(data, trained, tmp_path):
    train, test = _loaders(data)
    counter = _StepCounter()
    cb = DuplicatesCallback(["features.9"], train_loader=train)
    trainer = _trainer(lpl, tmp_path, max_epochs=1, callbacks=[counter, cb])
    with pytest.raises(NeardupInputError, match=r"'features.9' is not a submodule"):
        _quiet(trainer.fit, _model("lightning.pytorch", trained), train, test)
    assert counter.steps == 0

    class Unused(MODELS["lightning.pytorch"]):
        def __init__(self):
            super().__init__()
            self.unused = nn.Linear(4, 4)  # exists, but the eval step never calls it

    model = Unused()
    model.load_state_dict(trained, strict=False)
    counter = _StepCounter()
    cb = DuplicatesCallback(["unused"], train_loader=train)
    trainer = _trainer(lpl, tmp_path, max_epochs=1, callbacks=[counter, cb])
    with pytest.raises(NeardupInputError, match="did not run in the validation step during the"):
        _quiet(trainer.fit, model, train, test)
    assert counter.steps == 0 and _hooks_left(model) == 0


@pytest.mark.parametrize(
    ("trainer_options", "callback_options", "train_rows"),
    [
        ({"fast_dev_run": True}, {}, 64),  # one batch of 64
        ({"limit_train_batches": 2, "max_epochs": 1}, {}, 128),
        ({"limit_train_batches": 0.25, "max_epochs": 1}, {}, 4 * 64),  # int(0.25 * 19 batches)
        ({"max_epochs": 1}, {"max_train_samples": 100}, 100),  # 64 + 36 of the second batch
    ],
)
def test_smoke_runs_read_a_bounded_training_pass(
    data, trained, tmp_path, trainer_options, callback_options, train_rows
):
    xtr, ytr, *_ = data
    train = DataLoader(TensorDataset(xtr, ytr), batch_size=64)
    _, test = _loaders(data)
    cb = DuplicatesCallback(["features"], verbose=False, **callback_options)
    model = _model("lightning.pytorch", trained)
    _quiet(_trainer(lpl, tmp_path, callbacks=[cb], **trainer_options).fit, model, train, test)
    assert cb.results["features"].split_sizes["train"] == train_rows


def test_loggers_get_split_metrics_histogram_text_and_report_artifacts(
    data, trained, tmp_path, monkeypatch
):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3: a local file store
    train, test = _loaders(data)
    tensorboard = lpl.loggers.TensorBoardLogger(tmp_path / "tb", name="run")
    csv_logger = lpl.loggers.CSVLogger(tmp_path / "csv", name="run")
    ml = lpl.loggers.MLFlowLogger(
        experiment_name="neardup", tracking_uri=(tmp_path / "mlruns").as_uri()
    )
    cb = DuplicatesCallback(["features"], train_loader=train, verbose=False)
    trainer = _trainer(lpl, tmp_path, callbacks=[cb], logger=[tensorboard, csv_logger, ml])
    _quiet(trainer.validate, model := _model("lightning.pytorch", trained), test, verbose=False)
    val_sets = sum(1 for c in cb.result.clusters if "val" in c.splits)  # combined verdict
    _quiet(trainer.test, model, test, verbose=False)
    for logger in (tensorboard, csv_logger, ml):
        logger.save()

    # CSVLogger: every scalar carries its split, so val and test never collide
    rows = list(csv.DictReader(open(Path(csv_logger.log_dir) / "metrics.csv")))
    columns = set(rows[0])
    assert {"neardup/val/duplicate_sets", "neardup/test/duplicate_sets"} <= columns
    assert {"neardup/features/val/threshold", "neardup/test/leak_fraction"} <= columns
    assert {"neardup/input/test/threshold", "neardup/input/test/leak_count"} <= columns
    assert not {"neardup/duplicate_sets", "neardup/threshold"} & columns
    assert [
        float(r["neardup/val/duplicate_sets"]) for r in rows if r.get("neardup/val/duplicate_sets")
    ] == [val_sets]

    # TensorBoard: the scalars, the nearest-neighbour histogram and the summary text
    acc = EventAccumulator(tensorboard.log_dir, size_guidance={"histograms": 0, "tensors": 0})
    acc.Reload()
    tags = acc.Tags()
    assert "neardup/val/leak_count" in tags["scalars"]
    assert {  # the combined verdict's (in threshold units) and each view's
        "neardup/val/nearest_neighbor_distance",
        "neardup/test/nearest_neighbor_distance",
        "neardup/features/val/nearest_neighbor_distance",
        "neardup/input/test/nearest_neighbor_distance",
    } <= set(tags["histograms"])
    histogram = acc.Histograms("neardup/val/nearest_neighbor_distance")[0].histogram_value
    assert histogram.num == 597 + 1200  # every sample's nearest neighbour
    assert "neardup/test/summary/text_summary" in tags["tensors"]
    text = acc.Tensors("neardup/test/summary/text_summary")[0].tensor_proto.string_val[0]
    assert b"leakage test -> train" in text

    # MLflow (a local file store): the JSON and HTML reports as artifacts
    client = mlflow.tracking.MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    artifacts = sorted(a.path for a in client.list_artifacts(ml.run_id, "neardup"))
    assert artifacts == sorted(  # the combined verdict and one report per view
        f"neardup/neardup-{stage}{view}.{ext}"
        for stage in ("test", "validate")
        for view in ("", "-features", "-input", "-input_aligned")  # ':' is no file character
        for ext in ("html", "json")
    )


class _DigitsDataModule(lpl.LightningDataModule):
    def __init__(self, data):
        super().__init__()
        self.xtr, self.ytr, self.xte, self.yte, _ = data

    def train_dataloader(self):
        return DataLoader(TensorDataset(self.xtr, self.ytr), batch_size=128, shuffle=True)

    def test_dataloader(self):
        return DataLoader(TensorDataset(self.xte, self.yte), batch_size=128)


def test_test_report_shows_train_thumbnails_from_a_datamodule(data, trained, tmp_path):
    cb = DuplicatesCallback(["features"], report_dir=tmp_path / "reports", verbose=False)
    trainer = _trainer(lpl, tmp_path, callbacks=[cb])
    _quiet(trainer.test, _model("lightning.pytorch", trained), datamodule=_DigitsDataModule(data))
    leak = cb.results["features"].leakage["test"]
    assert leak.count >= 10
    page = (tmp_path / "reports" / "neardup-test-features.html").read_text()
    train_thumbs = re.findall(
        r'<figure class="member"><img class="thumb"[^>]*><figcaption><span class="badge split '
        r's\d">train</span>',
        page,
    )
    assert len(train_thumbs) >= leak.count  # every leaked pair shows its train image


def test_text_batches_get_the_word_check_of_the_text_view(template_corpus, tmp_path):
    """A model fed lists of strings: the input view is ``TextView()``, its rows keep their
    texts through the callback, and a pair the layer finds must be confirmed by the text view:
    pydoc's own templated pair ("str.isalpha() ..." / "str.isdecimal() ...") is close in the
    n-grams but has a word replaced, so it is turned away; a copy with a word dropped is
    found."""
    from neardup.views import TextView

    train, val, templated, copied = template_corpus

    class TextNet(lpl.LightningModule):  # untrained: a random projection of n-gram counts
        def __init__(self) -> None:
            super().__init__()
            self.grams = TextView(dim=256)
            self.encoder = nn.Linear(256, 32)
            self.head = nn.Linear(32, 2)

        def forward(self, texts):
            counts = torch.from_numpy(np.asarray(self.grams(texts)))
            return self.head(torch.relu(self.encoder(counts)))

        def validation_step(self, batch, batch_idx):
            self.log("val_loss", nn.functional.cross_entropy(self(batch[0]), batch[1]))

    def loader(texts):
        return DataLoader([(t, 0) for t in texts], batch_size=128)

    torch.manual_seed(0)
    cb = DuplicatesCallback(
        ["encoder"], train_loader=loader(train), save_reports=False, verbose=False
    )
    _quiet(_trainer(lpl, tmp_path, callbacks=[cb]).validate, TextNet(), loader(val))
    assert cb.views == ["encoder", "input"]
    by_ngrams = cb.results["input"].leakage["val"]
    assert templated in by_ngrams.positions  # the n-grams alone put the template close
    leak = cb.leakage["val"]
    found = dict(zip(leak.positions, leak.nearest_positions))
    assert templated not in found
    assert found[copied] == 5
    assert cb.result.settings["word_check"]["input"] >= 1
