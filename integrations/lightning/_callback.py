"""PyTorch Lightning callback: near-duplicates and train/test leakage from eval activations.

>>> from neardup.integrations.lightning import DuplicatesCallback
>>> cb = DuplicatesCallback()             # a default layer + an input view  # doctest: +SKIP
>>> trainer = Trainer(callbacks=[cb]); trainer.fit(model, train_dl, val_dl)  # doctest: +SKIP
>>> cb.leakage["val"].ids, cb.leakage["val"].found_by   # the combined verdict  # doctest: +SKIP
>>> cb.results["features"].leakage["val"].count          # one view's own result  # doctest: +SKIP

Works with both ``lightning.pytorch`` and ``pytorch_lightning``: the callback derives from
the ``Callback`` class of each package that is installed, so either ``Trainer`` accepts it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from neardup import (
    ActivationCollector,
    DuplicatesResult,
    Leakage,
    LeakageError,
    NeardupInputError,
)
from neardup.validators import check_options

from .._common import (
    DEFAULT_POOL,
    check_fail_above,
    check_pool,
    collector_options,
    missing_framework,
)
from .._finish import announce, finish
from .._views import (
    InputView,
    analyze_views,
    check_combine_view,
    check_view_names,
    first_rows,
)

if TYPE_CHECKING:  # both packages' classes share these names; lightning.pytorch's stand for both
    from lightning.pytorch import LightningModule, Trainer

try:
    import torch
except ImportError as err:  # pragma: no cover - torch is a hard requirement of the extra
    raise missing_framework("neardup.integrations.lightning", "lightning", err) from err

_BASES: list[type] = []
try:
    import lightning.pytorch as _lightning

    _BASES.append(_lightning.Callback)
except ImportError:  # pragma: no cover - depends on the environment
    _lightning = None
try:
    import pytorch_lightning as _pytorch_lightning

    _BASES.append(_pytorch_lightning.Callback)
except ImportError:  # pragma: no cover - depends on the environment
    _pytorch_lightning = None
if not _BASES:  # pragma: no cover - depends on the environment
    raise missing_framework(
        "neardup.integrations.lightning",
        "lightning",
        ImportError("neither lightning nor pytorch_lightning is installed"),
    )

from ._data import (  # noqa: E402  (after the framework check on purpose)
    default_forward,
    default_input,
    default_labels,
    is_map_style,
    sample_order,
    sharded_loader,
)
from ._ddp import dedupe_by_id, distributed, gather_rows  # noqa: E402
from ._hooks import (  # noqa: E402
    HookManager,
    compiled_wrappers,
    default_layer,
    resolve_layers,
)
from ._loggers import publish_to_loggers  # noqa: E402

__all__ = ["DuplicatesCallback"]

_TRAIN = "train"
_STAGES = {"val": "val", "validate": "val", "validation": "val", "test": "test"}


def _check_splits(splits: Any) -> dict[str, Any] | None:
    """Normalise ``splits=`` to ``{"index": {idx: name}}`` or ``{"stage": {stage: [names]}}``."""
    if splits is None:
        return None
    if not isinstance(splits, Mapping) or not splits:
        raise NeardupInputError(
            f"splits={splits!r} is not supported; pass a dict of split name -> eval dataloader "
            "index (e.g. {'val': 0, 'holdout': 1}) or stage -> name(s) (e.g. "
            "{'val': 'holdout', 'test': ['test_a', 'test_b']})."
        )
    values = list(splits.values())
    by_index = all(isinstance(v, int) and not isinstance(v, bool) for v in values)
    if by_index:
        if len(set(values)) != len(values) or min(values) < 0:
            raise NeardupInputError(f"splits={splits!r}: dataloader indices must be distinct >= 0.")
        index_names = {int(i): str(name) for name, i in splits.items()}
        names = list(index_names.values())
    else:
        bad = [k for k in splits if k not in _STAGES]
        if bad:
            raise NeardupInputError(
                f"splits={splits!r}: unknown stage(s) {bad}; use 'val' or 'test' as keys with "
                "a name or list of names, or map names to dataloader indices."
            )
        by_stage = {}
        for stage, names in splits.items():
            names = [names] if isinstance(names, str) else list(names)
            if not all(isinstance(n, str) for n in names):
                raise NeardupInputError(f"splits[{stage!r}] must be a name or a list of names.")
            by_stage[_STAGES[stage]] = names
        names = [n for v in by_stage.values() for n in v]
    if _TRAIN in names:
        raise NeardupInputError(
            f"splits={splits!r}: the name {_TRAIN!r} is reserved for the training split."
        )
    return {"index": index_names} if by_index else {"stage": by_stage}


def _check_positive(name: str, value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise NeardupInputError(f"{name} must be a positive int or None, got {value!r}.")
    return value


class DuplicatesCallback(*_BASES):  # type: ignore[misc]
    """Collect intermediate-layer activations during evaluation; report near-duplicates.

    Forward hooks on the named submodules are active only inside validation/test loops (not
    during training steps or the sanity check). Each eval dataloader is a split; the
    training split comes from an explicit eval-mode, no-grad pass over the training data
    when the analysis runs. Every row carries its dataset index; under DDP the rows are
    gathered to rank 0 and the ``DistributedSampler`` padding is dropped.

    Several *views* of every sample are analysed together: the model layer(s) and, by
    default, an *input view* of the batch's input tensor (``ImageView()`` 8x8 standardised
    thumbnails for image batches, ``TextView()`` for lists of strings). Each view gets its own
    automatic threshold; ``cb.leakage[split]`` is the combined verdict (a pair leaks when it
    is within the threshold of any view; ``found_by`` says which) and ``cb.results[view]``
    each view's own result. A pair a layer finds must also be close in the input view (the
    rule of the ``datasets`` hook, ``combine="confirm:input"``): for texts, in the text view,
    whose word check turns away templated sentences; for images, within 2.5 thresholds of a
    pixel view (a trained model's pooled features put look-alikes of a class together).

    Parameters
    ----------
    layers:
        Names from ``model.named_modules()``. ``None`` picks one (the last convolution; else
        the first parametrised layer) and says which.
    input_view:
        ``"auto"`` (default): an image or text view of the inputs when the batch's input is
        an image tensor ``(B, C, H, W)`` / ``(B, H, W)`` or a list of strings, else none;
        ``None``: layers only; or a callable ``view(inputs) -> (B, d)`` array, e.g.
        ``neardup.views.ImageView(size=16)``. The view is named ``"input"``; colour images
        under ``"auto"`` add its luma, ``"input-luma"``, and its YCbCr view, ``"input-ycbcr"``.
    input_fn:
        ``input_fn(batch)`` returns the inputs the input view reads (default: ``x`` of
        ``(x, y)``, a dict's ``"image"``/``"pixel_values"``/... entry, or the batch itself).
    pool:
        ``"max"`` (default, shared with the Keras callback: ``benchmarks/bench_pooling.py``)
        / ``"avg"`` over the spatial/sequence axes of ``(B, C, ...)`` maps, ``"flatten"``,
        or ``callable(raw_output) -> (B, features)`` tensor.
    splits:
        Split names: ``{name: dataloader_index}`` or ``{"val"|"test": name or [names]}``.
        Default ``"val"`` / ``"test"`` (``"val_0"``, ``"val_1"``, ... for several loaders).
    train_loader:
        The loader for the training split (pass one without augmentation); default: the
        trainer's train dataloader (or the datamodule's). Map-style loaders are re-read in
        order, each rank taking every ``world_size``-th sample.
    forward_fn, label_fn:
        ``forward_fn(pl_module, batch)`` runs the model on a training batch (default: ``x``
        of ``(x, y)``, a dict's input or ``**dict``); ``label_fn(batch)`` returns one label per
        sample or None (default: ``y`` / ``batch["label"]`` when it is an int vector).
    max_train_samples:
        Read at most this many training samples in the training pass. The pass also honours
        the trainer's ``fast_dev_run`` and ``limit_train_batches`` (an int: that many
        batches; a float: that share of them), so a smoke run stays a smoke run.
    every_n_val_epochs:
        Also analyse after every N-th validation run during ``fit`` (metrics via
        ``pl_module.log``, so ModelCheckpoint/EarlyStopping can monitor them).
    analyze_at_fit_end:
        Analyse the last validation run at the end of ``fit`` (default True).
    fail_above:
        Raise :class:`neardup.LeakageError` at the end of a run when more than this fraction
        of an eval split leaks into the training split.
    report_dir, save_reports, verbose:
        Where JSON/HTML reports go (default ``trainer.log_dir``), whether to write them and
        whether to print the summary (rank 0 only).
    memory_budget, spill_dir:
        Bytes of activations kept in memory by each of the two collectors (eval splits,
        training pass): an int, or ``"4GB"``, ``"512MiB"``. Past it they spill to ``.npy``
        files in ``spill_dir`` (default: a temporary directory), removed when the next run
        starts, when the callback is garbage-collected, or at exit.
    threshold, normalize, reduce, k, backend, seed:
        Passed to :func:`neardup.find_duplicates` (one threshold strategy for every view;
        default ``Auto()`` per view).
    combine:
        How the views' verdicts combine (:func:`neardup.find_duplicates`). ``None``
        (default): ``"confirm:input"`` when the input view is ``TextView()`` or
        ``AlignedImageView()`` beside the layers (a pair a layer finds must also be close in
        the input's characters or pixels), else ``"any"``.

    Attributes
    ----------
    result: the combined :class:`neardup.DuplicatesResult` of the latest analysis.
    leakage: ``split -> Leakage``, the combined verdict (``ids``, ``nearest_ids``,
        ``found_by``, ``view_distances``).
    results: ``view -> DuplicatesResult``, each layer's (and the input view's) own result.
    """

    def __init__(
        self,
        layers: Sequence[str] | str | None = None,
        *,
        input_view: Any = "auto",
        input_fn: Callable[[Any], Any] | None = None,
        pool: str | Callable[[Any], Any] = DEFAULT_POOL,
        splits: Mapping[str, Any] | None = None,
        train_loader: Any = None,
        forward_fn: Callable[[Any, Any], Any] | None = None,
        label_fn: Callable[[Any], Any] | None = None,
        max_train_samples: int | None = None,
        every_n_val_epochs: int | None = None,
        analyze_at_fit_end: bool = True,
        fail_above: float | None = None,
        report_dir: str | Path | None = None,
        save_reports: bool = True,
        verbose: bool = True,
        threshold: Any = None,
        normalize: str | None = "row",
        reduce: Any = None,
        k: int = 10,
        backend: Any = "auto",
        seed: int = 0,
        combine: str | None = None,
        memory_budget: int | str | None = None,
        spill_dir: str | Path | None = None,
    ) -> None:
        if isinstance(layers, str):
            layers = [layers]
        if layers is not None:
            layers = list(layers)
            if not layers or not all(isinstance(n, str) for n in layers):
                raise NeardupInputError(
                    f"layers={layers!r} must be None or a non-empty list of module names "
                    "from model.named_modules()."
                )
            check_view_names(layers, input_view)
        self._layers = layers
        self._input_option = input_view
        self._input = InputView(input_view)
        self.pool = check_pool(pool)
        self._splits = _check_splits(splits)
        for name, fn in (
            ("forward_fn", forward_fn),
            ("label_fn", label_fn),
            ("input_fn", input_fn),
        ):
            if fn is not None and not callable(fn):
                raise NeardupInputError(f"{name} must be a callable, got {fn!r}.")
        self.train_loader = train_loader
        self.forward_fn = forward_fn or default_forward
        self.label_fn = label_fn or default_labels
        self.input_fn = input_fn or default_input
        self.max_train_samples = _check_positive("max_train_samples", max_train_samples)
        self.every_n_val_epochs = _check_positive("every_n_val_epochs", every_n_val_epochs)
        self.analyze_at_fit_end = bool(analyze_at_fit_end)
        self.fail_above = check_fail_above(fail_above)
        self.report_dir = report_dir
        self.save_reports = bool(save_reports)
        self.verbose = bool(verbose)
        self._collector_options = collector_options(memory_budget, spill_dir)
        self.analyze_options = {
            "threshold": threshold,
            "normalize": normalize,
            "reduce": reduce,
            "k": k,
            "backend": backend,
            "seed": seed,
        }
        if combine is not None:  # None: analyze_views' default for the input view
            self.analyze_options["combine"] = combine
        check_options(self.analyze_options, where="DuplicatesCallback")
        check_combine_view(combine, layers, input_view)
        self.result: DuplicatesResult | None = None
        self.results: dict[str, DuplicatesResult] = {}
        self.report_paths: list[Path] = []
        self.last_summary: dict[str, Any] | None = None
        self._hooks = HookManager(self.pool)
        self._eval: ActivationCollector | None = None
        self._eval_stage: str | None = None
        self._ddp_ids = False
        self._device = torch.device("cpu")
        self._split_names: list[str] = []
        self._orders: list[np.ndarray | None] = []
        self._positions: list[int] = []
        self._val_runs = 0
        self._chosen_layers: list[str] | None = None
        self._sanity = False  # hooks attached only to check the layers during the sanity check
        self._train_dataset: Any = None  # of the latest training pass, for thumbnails

    # ------------------------------------------------------------------ Lightning API
    @property
    def state_key(self) -> str:
        return self._generate_state_key(layers=self._layers, splits=self._splits)

    @property
    def layers(self) -> list[str] | None:
        """The layers analysed (the chosen one once ``layers=None`` has been resolved)."""
        return self._chosen_layers or self._layers

    @property
    def leakage(self) -> dict[str, Leakage]:
        """``split -> Leakage``: the combined verdict of the latest analysis (all views)."""
        return {} if self.result is None else self.result.leakage

    @property
    def views(self) -> list[str]:
        """The views analysed: the layers, then ``"input"`` when there is an input view (and
        ``"input-luma"`` and ``"input-ycbcr"`` for colour images under ``input_view="auto"``)."""
        return [*(self.layers or []), *self._input.names]

    def state_dict(self) -> dict[str, Any]:
        return {"settings": self._settings(), "last_summary": self.last_summary}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.last_summary = state_dict.get("last_summary")
        saved = state_dict.get("settings", {})
        if saved and saved != self._settings():
            warnings.warn(
                f"neardup: the checkpoint's DuplicatesCallback settings {saved} differ from "
                f"this instance's {self._settings()}; keeping this instance's.",
                stacklevel=2,
            )

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start_eval(trainer, pl_module, "val")

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start_eval(trainer, pl_module, "test")

    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._collect_batch(trainer, batch, dataloader_idx)

    #: test batches are collected exactly as validation batches
    on_test_batch_end = on_validation_batch_end

    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._hooks.detach()
        self._sanity = False
        if trainer.sanity_checking or self._eval is None:
            return
        fn = str(getattr(trainer.state.fn, "value", trainer.state.fn))
        if fn == "validate":
            self._analyze(trainer, pl_module, "validate", log=pl_module.log, final=True)
        elif fn == "fit" and self.every_n_val_epochs:
            self._val_runs += 1
            if self._val_runs % self.every_n_val_epochs == 0:
                stem = f"epoch{trainer.current_epoch}"
                self._analyze(trainer, pl_module, stem, log=pl_module.log, final=False)

    def on_test_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._hooks.detach()
        if self._eval is not None:
            self._analyze(trainer, pl_module, "test", log=pl_module.log, final=True)

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._hooks.detach()

    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._hooks.detach()

    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self.analyze_at_fit_end:
            return
        if self._eval is None or self._eval_stage != "val":
            self._warn(
                trainer,
                "no validation data was collected during fit (no val dataloader, or "
                "limit_val_batches=0), so there is nothing to compare with the training split. "
                "Pass val_dataloaders to fit(), or call trainer.validate/test with this callback.",
            )
            return
        self._analyze(trainer, pl_module, "fit", log=None, final=True)

    def on_exception(
        self, trainer: Trainer, pl_module: LightningModule, exception: BaseException
    ) -> None:
        self._hooks.detach()

    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._hooks.detach()

    # ------------------------------------------------------------------ collection
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # unknown layer names fail before the first step (also without a sanity check)
        resolve_layers(pl_module, self._resolve_layer_names(trainer, pl_module))

    def _start_eval(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._hooks.detach()
        self._sanity = bool(trainer.sanity_checking)
        if self._sanity:  # check the layers now: they must exist and run in the eval step
            self._attach(trainer, pl_module)
            return
        loaders = trainer.val_dataloaders if stage == "val" else trainer.test_dataloaders
        loaders = _as_list(loaders)
        self._eval, self._eval_stage = ActivationCollector(**self._collector_options), stage
        self._split_names = self._names_for(stage, len(loaders))
        self._orders, self._positions = [], [0] * len(loaders)
        self._ddp_ids = distributed()
        for name, loader in zip(self._split_names, loaders):
            order, why = sample_order(loader)
            if order is None:
                self._warn(
                    trainer,
                    f"split {name!r}: {why}, so rows are identified by their position in "
                    "the loading order, not by dataset index"
                    + (
                        "; under DDP padding or shared samples cannot be told apart and "
                        "samples seen by several ranks will look like exact duplicates."
                        if self._ddp_ids
                        else "."
                    ),
                )
            self._orders.append(order)
        self._attach(trainer, pl_module)

    def _attach(self, trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
        """Hook the layers (resolving their names); compiled modules run eagerly meanwhile."""
        modules = resolve_layers(pl_module, self._resolve_layer_names(trainer, pl_module))
        compiled = compiled_wrappers(pl_module)
        if compiled and not self._hooks.warned_compiled:
            self._hooks.warned_compiled = True
            self._info(
                trainer,
                f"neardup: torch.compile'd module(s) {compiled} run eagerly while neardup "
                "collects activations (compiled code skips forward hooks added after "
                "compiling); training steps stay compiled.",
            )
        self._hooks.attach(modules, inside_compiled=bool(compiled))
        return modules

    def _resolve_layer_names(self, trainer: Trainer, pl_module: LightningModule) -> list[str]:
        if self._layers is not None:
            return self._layers
        if self._chosen_layers is None:
            name, why = default_layer(pl_module)
            self._chosen_layers = [name]
            self._info(trainer, f"neardup: layers=None -> analysing {name!r}, {why}.")
        return self._chosen_layers

    def _names_for(self, stage: str, count: int) -> list[str]:
        default = [stage] if count == 1 else [f"{stage}_{i}" for i in range(count)]
        if self._splits is None:
            return default
        if "index" in self._splits:
            return [self._splits["index"].get(i, default[i]) for i in range(count)]
        names = self._splits["stage"].get(stage)
        if names is None:
            return default
        if len(names) != count:
            raise NeardupInputError(
                f"splits gives {len(names)} name(s) {names} for the {stage} stage, which has "
                f"{count} dataloader(s); give one name per dataloader."
            )
        return names

    def _collect_batch(self, trainer: Any, batch: Any, dataloader_idx: int) -> None:
        if self._sanity and self._hooks.active:
            missing = [name for name, v in self._hooks.take().items() if v is None]
            if missing:
                raise NeardupInputError(
                    f"layer(s) {missing} did not run in the validation step during the sanity "
                    "check; hook modules that the eval step calls (see model.named_modules())."
                )
            return
        if not self._hooks.active or self._eval is None:
            return
        outputs = self._hooks.take()
        split = self._split_names[dataloader_idx]
        ids, labels = self._batch_ids(outputs, dataloader_idx, split), self.label_fn(batch)
        for layer, values in outputs.items():
            self._eval.add(split, layer, values.numpy(), ids=ids, labels=labels)
        self._add_input_rows(trainer, self._eval, split, batch, ids, labels)

    def _add_input_rows(
        self,
        trainer: Any,
        collector: ActivationCollector,
        split: str,
        batch: Any,
        ids: Any,
        labels: Any,
        *,
        first: int | None = None,
    ) -> None:
        """Add the input view's rows of one batch (nothing when there is no input view).

        ``first``: keep the batch's first rows only (``max_train_samples`` reached inside it).
        """
        if not self._input.active:
            return
        announce = not self._input.resolved
        rows = self._input.rows(self.input_fn(batch))
        if announce:
            self._info(trainer, f"neardup: input_view='auto' -> {self._input.reason}.")
        if rows is None:
            return
        for name, values in rows.items():
            if first is not None and first < len(values):
                values = first_rows(values, first)
            if len(values) != len(ids):
                raise NeardupInputError(
                    f"split {split!r}: the input view gave {len(values)} rows for a batch of "
                    f"{len(ids)} samples; pass input_fn=lambda batch: ... returning the "
                    "batch's inputs, or input_view=None."
                )
            collector.add(split, name, values, ids=ids, labels=labels)

    def _batch_ids(self, outputs: dict[str, Any], idx: int, split: str) -> np.ndarray:
        missing = [name for name, v in outputs.items() if v is None]
        if missing:
            raise NeardupInputError(
                f"layer(s) {missing} did not run while evaluating split {split!r}; hook "
                "modules that the eval step calls (see model.named_modules())."
            )
        n = len(next(iter(outputs.values())))
        start, self._positions[idx] = self._positions[idx], self._positions[idx] + n
        order = self._orders[idx]
        if order is not None and start + n <= len(order):
            return order[start : start + n]
        if order is not None:
            raise NeardupInputError(
                f"split {split!r}: the hooked layers produced more rows ({start + n}) than the "
                f"dataloader has samples ({len(order)}); a hooked module runs more than once "
                "per batch. Hook a module that runs once per forward pass."
            )
        positions = np.arange(start, start + n, dtype=np.int64)
        if self._ddp_ids:  # unique across ranks without dataset indices
            return positions * torch.distributed.get_world_size() + torch.distributed.get_rank()
        return positions

    def _train_pass(
        self, trainer: Trainer, pl_module: LightningModule
    ) -> ActivationCollector | None:
        """Explicit eval-mode, no-grad pass over the training data; None when there is none."""
        loader = self._train_loader(trainer)
        if loader is None:
            return None
        rank, world = trainer.global_rank, trainer.world_size
        order = None
        if is_map_style(loader):
            loader = sharded_loader(loader, rank, world)
            order = np.asarray(loader.sampler, dtype=np.int64)
        elif distributed():
            self._warn(
                trainer,
                "the training loader is not a map-style DataLoader: under DDP its rows are "
                "identified by position per rank, and samples seen by several ranks will look "
                "like exact duplicates. Pass train_loader= with a map-style dataset.",
            )
        self._train_dataset = loader.dataset if is_map_style(loader) else None
        collector = ActivationCollector(**self._collector_options)
        max_batches = self._train_batch_limit(trainer, loader)
        was_training = pl_module.training
        pl_module.eval()
        self._attach(trainer, pl_module)
        position = 0
        try:
            with torch.no_grad():
                for batch_idx, batch in enumerate(loader):
                    if batch_idx >= max_batches or position >= self._max_samples(world):
                        break
                    labels = self.label_fn(batch)
                    self.forward_fn(pl_module, trainer.strategy.batch_to_device(batch))
                    outputs = self._hooks.take()
                    if any(v is None for v in outputs.values()):
                        missing = [k for k, v in outputs.items() if v is None]
                        raise NeardupInputError(
                            f"layer(s) {missing} did not run in forward_fn on a training batch; "
                            "pass forward_fn= that calls the hooked modules."
                        )
                    n = len(next(iter(outputs.values())))
                    keep = min(n, self._max_samples(world) - position)
                    if keep < n:  # max_train_samples reached inside this batch
                        outputs = {k: v[:keep] for k, v in outputs.items()}
                        labels = None if labels is None else labels[:keep]
                        n = keep
                    if order is not None:
                        ids = order[position : position + n]
                    else:
                        ids = np.arange(position, position + n, dtype=np.int64) * world + rank
                    position += n
                    for layer, values in outputs.items():
                        collector.add(_TRAIN, layer, values.numpy(), ids=ids, labels=labels)
                    self._add_input_rows(trainer, collector, _TRAIN, batch, ids, labels, first=n)
        finally:
            self._hooks.detach()
            pl_module.train(was_training)
        return collector

    def _max_samples(self, world: int) -> float:
        """Training samples this rank reads at most (``max_train_samples`` over the ranks)."""
        if self.max_train_samples is None:
            return float("inf")
        return -(-self.max_train_samples // max(world, 1))

    @staticmethod
    def _train_batch_limit(trainer: Trainer, loader: Any) -> float:
        """Batches of the training pass: the trainer's ``limit_train_batches``/``fast_dev_run``."""
        limit = getattr(trainer, "limit_train_batches", 1.0)
        if getattr(trainer, "fast_dev_run", False):
            runs = trainer.fast_dev_run
            return 1 if runs is True else int(runs)
        if isinstance(limit, int) and not isinstance(limit, bool):
            return limit
        if isinstance(limit, float) and limit < 1.0:
            try:
                return max(1, int(limit * len(loader))) if limit > 0 else 0
            except TypeError:  # an iterable loader without a length
                return float("inf")
        return float("inf")

    def _train_loader(self, trainer: Trainer) -> Any:
        if self.train_loader is not None:
            return self.train_loader
        loader = trainer.train_dataloader
        if loader is None and getattr(trainer, "datamodule", None) is not None:
            try:
                loader = trainer.datamodule.train_dataloader()
            except Exception:  # a datamodule without train data raises its own error
                loader = None
        if loader is None:
            try:
                loader = trainer.lightning_module.train_dataloader()
            except Exception:  # LightningModule.train_dataloader raises when not defined
                loader = None
        if isinstance(loader, (list, tuple)) and len(loader) == 1:
            loader = loader[0]
        if loader is not None and not isinstance(loader, torch.utils.data.DataLoader):
            raise NeardupInputError(
                f"the trainer's training data is a {type(loader).__name__} (several loaders?); "
                "pass DuplicatesCallback(train_loader=...) with one DataLoader."
            )
        return loader

    # ------------------------------------------------------------------ analysis
    def _gathered(self, collectors: dict[str, ActivationCollector], layers: list[str]) -> Any:
        """``(split, layer) -> (values, ids, labels)`` on every rank, padding rows dropped."""
        ddp = distributed()
        out = {}
        for split, collector in collectors.items():
            for layer in layers:
                if split in collector.splits:  # every batch adds all layers at once
                    values, ids, labels = collector.get(split, layer)
                else:  # this rank saw no sample of the split
                    values, ids, labels = (
                        np.zeros((0, 0), np.float32),
                        np.zeros(0, np.int64),
                        None,
                    )
                if ddp:
                    values, ids, labels = gather_rows(values, ids, labels, self._device)
                out[split, layer] = dedupe_by_id(values, ids, labels)
        return out

    def _analyze(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        stem: str,
        *,
        log: Callable | None,
        final: bool,
    ) -> None:
        self._device = trainer.strategy.root_device if distributed() else torch.device("cpu")
        if self._device.type != "cpu" and torch.distributed.get_backend() == "gloo":
            self._device = torch.device("cpu")
        self._resolve_layer_names(trainer, pl_module)
        train = self._train_pass(trainer, pl_module)
        layers = self.views
        collectors = {s: self._eval for s in self._split_names}
        if train is not None:
            collectors[_TRAIN] = train
        rows = self._gathered(collectors, layers)
        log_dir = self._log_dir(trainer)  # on every rank: reading log_dir may be collective
        payload: dict[str, Any] = {"metrics": {}, "error": None}
        if trainer.is_global_zero:
            rows, reference = self._usable_rows(trainer, rows, has_train=train is not None)
            payload = self._analyze_rank_zero(
                trainer, rows, layers, reference=reference, stem=stem, final=final, log_dir=log_dir
            )
        payload = trainer.strategy.broadcast(payload, src=0)
        self._report_metrics(trainer, payload["metrics"], log)
        if trainer.is_global_zero:
            step = trainer.global_step
            # the combined verdict ("": neardup/<split>/...), then each view's own result
            results = {} if self.result is None else {"": self.result, **self.results}
            publish_to_loggers(trainer.loggers, results, self.report_paths, step)
        if payload["error"]:
            raise LeakageError(payload["error"])

    def _usable_rows(
        self, trainer: Trainer, rows: dict, *, has_train: bool
    ) -> tuple[dict, str | None]:
        """The rows without empty splits (warned about), and the reference split (or None)."""
        empty = sorted({s for (s, _), (v, _, _) in rows.items() if len(v) == 0})
        if has_train and _TRAIN in empty:
            self._warn(
                trainer, "the training loader yielded no samples; checking eval splits only."
            )
            has_train = False
        eval_empty = [s for s in self._split_names if s in empty]
        if eval_empty:
            self._warn(
                trainer, f"eval split(s) {eval_empty} yielded no samples; they are left out."
            )
        # analysed in place: no second copy of the collected activations
        rows = {key: part for key, part in rows.items() if key[0] not in empty}
        if not rows:
            raise NeardupInputError(
                "neardup: no samples were collected from any split; check the dataloaders."
            )
        if not has_train:
            self._warn(
                trainer,
                "no training data to compare with (no train dataloader here): reporting "
                "duplicates within and across eval splits only. Pass train_loader= to check "
                "train/test leakage.",
            )
        return rows, _TRAIN if has_train else None

    def _analyze_rank_zero(
        self,
        trainer: Trainer,
        rows: dict,
        layers: list[str],
        *,
        reference: str | None,
        stem: str,
        final: bool,
        log_dir: Path,
    ) -> dict[str, Any]:
        """Analyse every view, then :func:`finish` (reports, summary, gate) on the combined
        verdict; the payload to broadcast."""
        options = dict(self.analyze_options, reference=reference)
        self.result = analyze_views(rows, layers, input_view=self._input.view, **options)
        self.results = dict(self.result.views)
        outcome = finish(
            self.result,
            report_dir=log_dir if self.save_reports else None,
            stem=f"neardup-{stem}",
            samples=self._sample_lookup(trainer) if self.save_reports else None,
            fail_above=self.fail_above,
            gate=final,
            verbose=bool(self.verbose),
        )
        self.report_paths = outcome.report_paths
        self.last_summary = {
            "stage": stem,
            "metrics": outcome.metrics,
            "summary": outcome.summary,
            "reports": [str(p) for p in outcome.report_paths],
        }
        return {"metrics": outcome.metrics, "error": outcome.failure}

    def _report_metrics(
        self, trainer: Trainer, metrics: dict[str, float], log: Callable | None
    ) -> None:
        if not metrics:
            return
        if log is not None:
            for key, value in metrics.items():
                log(key, value, logger=True, sync_dist=distributed())
            return
        trainer.callback_metrics.update({k: torch.tensor(v) for k, v in metrics.items()})
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
            logger.save()

    def _log_dir(self, trainer: Trainer) -> Path:
        if self.report_dir is not None:
            return Path(self.report_dir)
        log_dir = trainer.log_dir
        return Path(log_dir if log_dir is not None else trainer.default_root_dir)

    def _sample_lookup(self, trainer: Trainer) -> Callable[[str, Any], Any] | None:
        """``(split, id) -> input array`` for the HTML report, read from map-style datasets."""
        loaders = _as_list(
            trainer.val_dataloaders if self._eval_stage == "val" else trainer.test_dataloaders
        )
        datasets = {
            name: loader.dataset
            for name, loader, order in zip(self._split_names, loaders, self._orders)
            if order is not None
        }
        if self._train_dataset is not None:  # the data the training pass read (a DataModule's)
            datasets[_TRAIN] = self._train_dataset
        if not datasets:
            return None

        def lookup(split: str, index: Any) -> Any:
            dataset = datasets.get(split)
            if dataset is None:
                return None
            item = dataset[int(index)]
            if isinstance(item, (tuple, list)):
                item = item[0]
            elif isinstance(item, Mapping):
                item = next((v for v in item.values() if isinstance(v, torch.Tensor)), None)
            return item.numpy() if isinstance(item, torch.Tensor) else item

        return lookup

    # ------------------------------------------------------------------ helpers
    def _settings(self) -> dict[str, Any]:
        pool = (
            self.pool if isinstance(self.pool, str) else getattr(self.pool, "__name__", "callable")
        )
        options = {
            k: v if isinstance(v, (int, float, str, type(None))) else repr(v)
            for k, v in self.analyze_options.items()
        }
        return {
            "layers": self._layers,
            "input_view": self._input_option
            if isinstance(self._input_option, (str, type(None)))
            else repr(self._input_option),
            "pool": pool,
            "splits": repr(self._splits),
            "every_n_val_epochs": self.every_n_val_epochs,
            "analyze_at_fit_end": self.analyze_at_fit_end,
            "fail_above": self.fail_above,
            **options,
        }

    @staticmethod
    def _warn(trainer: Trainer, message: str) -> None:
        if trainer.is_global_zero:
            warnings.warn(f"neardup: {message}", stacklevel=3)

    def _info(self, trainer: Trainer, message: str) -> None:
        if trainer.is_global_zero and self.verbose:
            announce(message)


def _as_list(loaders: Any) -> list[Any]:
    if loaders is None:
        return []
    if isinstance(loaders, (list, tuple)):
        return list(loaders)
    if isinstance(loaders, Mapping):
        return list(loaders.values())
    return [loaders]
