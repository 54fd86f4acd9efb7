"""Keras 3 callback: near-duplicates and train/test leakage from intermediate-layer activations.

Keras callbacks never see the input batches, so the callback is given its data (one entry per
split) and reads the activations of the named layers through one feature model,
``keras.Model(model.inputs, [layer outputs])``, built once and sharing the model's weights.
Activations are pooled batch by batch and fed to :class:`neardup.ActivationCollector`, so raw
feature maps of a whole split are never held at once.

>>> from neardup.integrations.keras import DuplicatesCallback  # doctest: +SKIP
>>> cb = DuplicatesCallback(data={"train": (x, y), "test": test_ds})  # doctest: +SKIP
>>> model.fit(x, y, epochs=5, callbacks=[cb])  # doctest: +SKIP
>>> cb.leakage["test"].ids, cb.leakage["test"].found_by  # combined verdict  # doctest: +SKIP
>>> cb.results["conv2"].leakage["test"].count  # one view's own result  # doctest: +SKIP
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from neardup import ActivationCollector, DuplicatesResult, Leakage, NeardupInputError
from neardup.validators import (
    as_backend,
    as_reducer,
    as_strategy,
    check_normalize,
    check_option,
    check_options,
    closest_names,
)

from .._common import (
    DEFAULT_POOL,
    check_fail_above,
    check_pool,
    collector_options,
    leakage_metrics,
    missing_framework,
    pool_array,
)
from .._finish import announce, finish
from .._views import InputView, analyze_views, check_combine_view, check_view_names

try:
    import keras
except ImportError as err:  # pragma: no cover - exercised only without keras
    raise missing_framework("neardup.integrations.keras", "keras", err) from err

from ._data import SplitSource, as_source, labels_of, warn_no_labels
from ._graph import build_extractor, default_layer, graph_of, model_input_shapes

__all__ = ["DEFAULT_REPORT_DIR", "DuplicatesCallback"]

FeatureFn = Callable[[Any, Any], Any]
#: where reports go when no TensorBoard callback gives a log directory
DEFAULT_REPORT_DIR = "neardup_reports"
_PROGRESS_MIN_BATCHES = 20  # show a progress bar for splits of at least this many batches


class DuplicatesCallback(keras.callbacks.Callback):
    """Find near-duplicates and train/test leakage in a Keras model's layer activations.

    Several *views* of every sample are analysed together: the model layer(s) and, by
    default, an *input view* of the data's ``x`` (``ImageView()`` 8x8 standardised
    thumbnails for image arrays, ``TextView()`` for arrays of strings). Each view gets its own
    automatic threshold; ``cb.leakage[split]`` is the combined verdict (a pair leaks when it
    is within the threshold of any view; ``found_by`` says which) and ``cb.results[view]``
    each view's own result. A pair a layer finds must also be close in the input view (the
    rule of the ``datasets`` hook, ``combine="confirm:input"``): for texts, in the text view,
    whose word check turns away templated sentences; for images, within 2.5 thresholds of a
    pixel view (a trained model's pooled features put look-alikes of a class together).

    Parameters
    ----------
    layers:
        Layer name(s) to analyse; layers inside nested sub-models as ``"encoder/conv2"`` (or
        the bare name when it is unique). ``None`` picks one as the Lightning callback does
        (the end of the block holding the last convolution; else the first layer with
        weights) and says which. Not used with ``feature_fn``.
    data:
        ``split -> data``: numpy arrays, ``(x, y)`` tuples, finite ``tf.data.Dataset`` or
        ``keras.utils.PyDataset``. ``y`` gives labels (one-hot -> argmax) for class statistics.
    reference:
        The split the others are checked against for leakage (``None``: no leakage check).
    input_view:
        ``"auto"`` (default): an image or text view of ``x`` when it is an image array
        ``(B, H, W, C)`` / ``(B, H, W)`` or strings, else none; ``None``: layers only; or a
        callable ``view(x_batch) -> (B, d)`` array, e.g. ``neardup.views.ImageView(size=16)``.
        The view is named ``"input"``; colour images under ``"auto"`` add its luma,
        ``"input-luma"``, and its YCbCr view, ``"input-ycbcr"``.
    pool:
        ``"max"`` (default, shared with the Lightning callback: ``benchmarks/bench_pooling.py``)
        / ``"avg"`` over the spatial/sequence axes of feature maps, ``"flatten"``, or a
        ``callable(array (B, ...)) -> (B, features)``.
    feature_fn:
        ``feature_fn(model, x_batch) -> array or {name: array}`` instead of ``layers``; the way
        to analyse subclassed models, which have no graph of layers to read. It receives
        batches as they come (datasets are not batched for it).
    every_n_epochs:
        Also analyse every N epochs; the scalars (``neardup/test/leak_fraction``, ...) are
        added to the epoch ``logs`` so ``History`` (and a ``TensorBoard`` placed after this
        callback) record them.
    at_train_end, at_test_end:
        Analyse when ``fit`` ends / when ``evaluate`` (not fit's validation) ends. The final
        analysis of ``fit`` runs at the end of its last epoch (the last of ``epochs``, or the
        one where a callback listed before this one, such as ``EarlyStopping``, stops
        training), so its scalars land in that epoch's ``logs`` as well.
    batch_size, steps:
        Batch size for arrays and unbatched datasets; ``steps`` (int, or ``split -> int``)
        limits the batches read from datasets and is required for infinite ones.
    report_dir:
        Write ``neardup.json`` (the combined verdict) and ``neardup-<view>.json`` per view
        (and ``.html``) there. The default, ``"auto"``,
        writes them under ``<log_dir>/neardup`` of a ``keras.callbacks.TensorBoard`` in the
        same ``fit``/``evaluate`` call, and else under ``./neardup_reports``
        (:data:`DEFAULT_REPORT_DIR`); ``None`` writes nothing.
    fail_above:
        Raise :class:`neardup.LeakageError` when a split leaks more than this fraction (after
        writing the reports); raised from an every-N-epochs analysis, it stops training.
    memory_budget, spill_dir:
        Bytes of activations each collector keeps in memory (an int, or ``"4GB"``,
        ``"512MiB"``); past it they spill to ``.npy`` files in ``spill_dir`` (default: a
        temporary directory), removed when the analysis is done with them.
    threshold, normalize, reduce, k, backend, seed:
        Options of :func:`neardup.find_duplicates`.
    combine:
        How the views' verdicts combine (:func:`neardup.find_duplicates`). ``None``
        (default): ``"confirm:input"`` when the input view is ``TextView()`` or
        ``AlignedImageView()`` beside the layers (a pair a layer finds must also be close in
        the input's characters or pixels), else ``"any"``.
    verbose:
        0 silent; 1 prints a summary per layer after training/evaluate/run and a progress
        bar on long extraction; 2 also prints the summaries of every-N-epochs analyses.

    Attributes
    ----------
    result: the combined :class:`neardup.DuplicatesResult` of the latest analysis.
    leakage: ``split -> Leakage``, the combined verdict (``ids``, ``nearest_ids``,
        ``found_by``, ``view_distances``).
    results: ``view -> DuplicatesResult``, each layer's (and the input view's) own result
        (empty before the first analysis).
    metrics: the ``neardup/...`` scalars of the latest analysis.
    report_paths: files written by the latest analysis.
    """

    def __init__(
        self,
        layers: str | Sequence[str] | None = None,
        data: Mapping[str, Any] | None = None,
        *,
        reference: str | None = "train",
        input_view: Any = "auto",
        pool: str | Callable[[Any], Any] = DEFAULT_POOL,
        feature_fn: FeatureFn | None = None,
        every_n_epochs: int | None = None,
        at_train_end: bool = True,
        at_test_end: bool = True,
        batch_size: int = 256,
        steps: int | Mapping[str, int] | None = None,
        report_dir: str | os.PathLike[str] | None = "auto",
        fail_above: float | None = None,
        threshold: Any = None,
        normalize: str | None = "row",
        reduce: Any = None,
        k: int = 10,
        backend: Any = "auto",
        seed: int = 0,
        combine: str | None = None,
        verbose: int = 1,
        memory_budget: int | str | None = None,
        spill_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__()
        self.options = _check_options(threshold, normalize, reduce, k, backend, seed, combine)
        check_option("reference", reference, where="DuplicatesCallback")
        self.layers = _check_layers(layers, feature_fn)
        check_combine_view(combine, self.layers, input_view)
        self.feature_fn = feature_fn
        self._default_layers = self.layers is None and feature_fn is None
        self._input_option = input_view
        self._input = InputView(input_view)
        if self.layers is not None:
            check_view_names(self.layers, input_view)
        self.pool = check_pool(pool)
        self.every_n_epochs = _check_positive_int(every_n_epochs, "every_n_epochs", none_ok=True)
        self.at_train_end = bool(at_train_end)
        self.at_test_end = bool(at_test_end)
        self.batch_size = _check_positive_int(batch_size, "batch_size")
        self.sources = _check_data(data, steps)
        self.reference = _check_reference(reference, self.sources)
        self.report_dir = _check_report_dir(report_dir)
        self.fail_above = check_fail_above(fail_above)
        self._collector_options = collector_options(memory_budget, spill_dir)
        if verbose not in (0, 1, 2):
            raise NeardupInputError(f"verbose must be 0, 1 or 2, got {verbose!r}.")
        self.verbose = verbose
        self.result: DuplicatesResult | None = None
        self.results: dict[str, DuplicatesResult] = {}
        self.metrics: dict[str, float] = {}
        self.report_paths: list[Path] = []
        self._extractor: tuple[Any, Any] | None = None  # (model, feature model)
        self._in_fit = False
        self._fresh = False  # results describe the current weights
        self._log_dir: str | None = None  # of a TensorBoard callback in the same fit/evaluate

    # ---- Keras hooks (no batch hooks: Keras's async dispatch stays on) ----
    def set_model(self, model: keras.Model) -> None:
        super().set_model(model)
        self._in_fit = False  # fit sets it again in on_train_begin; evaluate does not

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._in_fit, self._fresh = True, False
        self._log_dir = _tensorboard_log_dir()
        self._prepare(self.model)  # fail before training, not after it

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._fresh = False

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        periodic = bool(self.every_n_epochs) and (epoch + 1) % self.every_n_epochs == 0
        if not periodic and not (self.at_train_end and self._is_last_epoch(epoch)):
            return
        self._analyze(self.model)
        self._fresh = True
        if logs is not None:
            logs.update(self.metrics)  # History/TensorBoard after us record them
        if periodic:
            self._finish(f"neardup-epoch{epoch + 1:03d}", verbose=self.verbose >= 2)

    def _is_last_epoch(self, epoch: int) -> bool:
        """The last of ``epochs``, or the epoch where a callback before us stopped training."""
        epochs = (self.params or {}).get("epochs")
        stopping = bool(getattr(self.model, "stop_training", False))
        return stopping or (epochs is not None and epoch + 1 >= epochs)

    def on_train_end(self, logs: dict | None = None) -> None:
        self._in_fit = False
        if not self.at_train_end:
            return
        if self._fresh:  # the last epoch's analysis describes the final weights
            self._finish("neardup", verbose=self.verbose >= 1)
        else:
            self.run(self.model)

    def on_test_begin(self, logs: dict | None = None) -> None:
        if not self._in_fit and self.at_test_end:
            self._log_dir = _tensorboard_log_dir()
            self._prepare(self.model)

    def on_test_end(self, logs: dict | None = None) -> None:
        if not self._in_fit and self.at_test_end:
            self.run(self.model)

    @property
    def leakage(self) -> dict[str, Leakage]:
        """``split -> Leakage``: the combined verdict of the latest analysis (all views)."""
        return {} if self.result is None else self.result.leakage

    # ---- public steps ----
    def run(
        self, model: keras.Model | None = None, *, stem: str = "neardup"
    ) -> dict[str, DuplicatesResult]:
        """Analyse ``model`` (default: the model this callback is attached to) now.

        Extracts the activations of every split, runs the analysis, writes the reports,
        prints the summary and applies ``fail_above``. Returns ``layer -> DuplicatesResult``.
        """
        model = self.model if model is None else model
        if model is None:
            raise NeardupInputError(
                "run() needs a model: pass cb.run(model), or use the callback in fit/evaluate."
            )
        self._analyze(model)
        self._finish(stem, verbose=self.verbose >= 1)
        return self.results

    # ---- private steps ----
    def _prepare(self, model: keras.Model) -> None:
        """Build the feature model and check the input shapes that are known up front."""
        if self.feature_fn is not None:
            return
        if isinstance(model, keras.Sequential) and graph_of(model) is None:
            return  # a Sequential without Input is built by its first step; checked later
        self._feature_model(model)
        expected = model_input_shapes(model)
        for source in self.sources.values():
            shapes = source.x_shapes()
            if shapes is not None:
                _check_shapes(
                    source.name, shapes, expected, unbatched_ok=source.dataset is not None
                )

    def _feature_model(self, model: keras.Model) -> Any:
        if self._extractor is None or self._extractor[0] is not model:
            if self._default_layers:
                name, why = default_layer(model)
                if self.layers != [name] and self.verbose:
                    print(f"neardup: layers=None -> analysing {name!r}, {why}.")
                self.layers = [name]
            check_view_names(self.layers, self._input_option)
            self._extractor = (model, build_extractor(model, self.layers))
        return self._extractor[1]

    def _features(self, model: keras.Model, x: Any) -> dict[str, Any]:
        """``name -> activations`` of one batch, as numpy."""
        if self.feature_fn is None:
            out = self._feature_model(model).predict_on_batch(x)
            out = out if isinstance(out, list) else [out]
            return dict(zip(self.layers, out))
        out = self.feature_fn(model, x)
        if not isinstance(out, Mapping):
            out = {"features": out}
        return {str(name): keras.ops.convert_to_numpy(v) for name, v in out.items()}

    def _collect(self, model: keras.Model) -> ActivationCollector:
        """Run every split through the feature model, batch by batch, into a collector."""
        expected = None if self.feature_fn is not None else model_input_shapes(model)
        ranks = [len(s) for s in expected] if expected else [-1]
        channels_last = keras.config.image_data_format() == "channels_last"
        collector = ActivationCollector(**self._collector_options)
        for source in self.sources.values():
            bar = self._progress_bar(source)
            has_labels: bool | None = None
            for i, (x, y) in enumerate(source.batches(self.batch_size, ranks)):
                if expected is not None and i == 0:
                    _check_shapes(source.name, _batch_shapes(x), expected)
                labels = labels_of(y)
                if has_labels is None:
                    has_labels = labels is not None
                    if y is not None and labels is None:
                        warn_no_labels(source.name)
                labels = labels if has_labels else None
                for name, values in self._features(model, x).items():
                    pooled = pool_array(values, self.pool, channels_last=channels_last)
                    collector.add(source.name, name, pooled, labels=labels)
                self._add_input_rows(collector, source.name, x, labels)
                if bar is not None:
                    bar.update(i + 1)
        return collector

    def _add_input_rows(
        self, collector: ActivationCollector, split: str, x: Any, labels: Any
    ) -> None:
        """Add the input view's rows of one batch (nothing when there is no input view)."""
        if not self._input.active:
            return
        announce = not self._input.resolved
        rows = self._input.rows(x)
        if announce and self.verbose:
            print(f"neardup: input_view='auto' -> {self._input.reason}.")
        if rows is None:
            return
        n = len(keras.tree.flatten(x)[0])
        for name, values in rows.items():
            if len(values) != n:
                raise NeardupInputError(
                    f"split {split!r}: the input view gave {len(values)} rows for a batch of "
                    f"{n} samples; pass input_view= a callable returning one row per sample, "
                    "or None."
                )
            collector.add(split, name, values, labels=labels)

    def _progress_bar(self, source: SplitSource) -> Any:
        total = source.num_batches(self.batch_size)
        if not self.verbose or (total is not None and total < _PROGRESS_MIN_BATCHES):
            return None
        announce(f"neardup: extracting activations of split {source.name!r}")
        return keras.utils.Progbar(total, verbose=self.verbose, unit_name="batch")

    def _analyze(self, model: keras.Model) -> None:
        """Extract every split and analyse it: sets ``results`` and ``metrics``."""
        collector = self._collect(model)
        options = dict(self.options, reference=self.reference)
        if options["reduce"] is not None:
            options["reduce"] = as_reducer(options["reduce"].n_components)  # a fresh PCA
        rows = {
            (split, view): collector.get(split, view)
            for split in collector.splits
            for view in collector.layers
        }
        self.result = analyze_views(rows, collector.layers, input_view=self._input.view, **options)
        self.results = dict(self.result.views)
        self.metrics = leakage_metrics(self.result)

    @property
    def resolved_report_dir(self) -> Path | None:
        """Where reports go now: ``report_dir``, or for ``"auto"`` the TensorBoard log dir's
        ``neardup`` folder when a TensorBoard callback runs beside this one, else
        :data:`DEFAULT_REPORT_DIR`."""
        if self.report_dir != "auto":
            return self.report_dir
        if self._log_dir is not None:
            return Path(self._log_dir) / "neardup"
        return Path(DEFAULT_REPORT_DIR).resolve()

    def _finish(self, stem: str, *, verbose: bool) -> None:
        """Write the reports, show the summaries, then apply ``fail_above``."""
        samples = {n: s.samples for n, s in self.sources.items() if s.samples is not None}
        outcome = finish(
            self.result,
            report_dir=self.resolved_report_dir,
            stem=stem,
            samples=samples or None,
            fail_above=self.fail_above,
            verbose=verbose,
        )
        self.report_paths = outcome.report_paths
        outcome.raise_for_failure()


def _check_report_dir(report_dir: Any) -> Path | str | None:
    if report_dir is None or report_dir == "auto":
        return report_dir
    if not isinstance(report_dir, (str, os.PathLike)):
        raise NeardupInputError(
            f"report_dir must be a directory path, 'auto' or None, got {report_dir!r}."
        )
    return Path(report_dir)


def _tensorboard_log_dir() -> str | None:
    """The ``log_dir`` of a ``keras.callbacks.TensorBoard`` in the running fit/evaluate.

    Keras gives a callback no handle on its siblings, so this looks for the ``CallbackList``
    that is calling this hook a few frames up; ``None`` when there is no TensorBoard (or the
    hook was called some other way).
    """
    frame = inspect.currentframe()
    try:
        for _ in range(8):
            frame = frame.f_back if frame is not None else None
            if frame is None:
                return None
            owner = frame.f_locals.get("self")
            if isinstance(owner, keras.callbacks.CallbackList):
                for callback in owner.callbacks:
                    if isinstance(callback, keras.callbacks.TensorBoard):
                        return str(callback.log_dir)
                return None
        return None
    finally:
        del frame


def _check_layers(layers: Any, feature_fn: Any) -> list[str] | None:
    if feature_fn is not None:
        if not callable(feature_fn):
            raise NeardupInputError(
                f"feature_fn must be callable(model, x) -> array or dict, got {feature_fn!r}."
            )
        if layers is not None:
            raise NeardupInputError(
                "give layers= (names of the model's layers) or feature_fn=, not both; with "
                "feature_fn, return a dict name -> array to analyse several outputs."
            )
        return None
    if layers is None:
        return None  # chosen from the model (default_layer) when it is known
    if isinstance(layers, str):
        layers = [layers]
    if not layers or not all(isinstance(n, str) and n for n in layers):
        raise NeardupInputError(
            f"layers must be None, a layer name or a list of layer names, got {layers!r} "
            "(or pass feature_fn= instead)."
        )
    if len(set(layers)) != len(layers):
        raise NeardupInputError(f"layers lists a name twice: {list(layers)}.")
    return list(layers)


def _check_positive_int(value: Any, name: str, *, none_ok: bool = False) -> int | None:
    if value is None and none_ok:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise NeardupInputError(f"{name} must be an int >= 1, got {value!r}.")
    return value


def _check_data(data: Any, steps: Any) -> dict[str, SplitSource]:
    if not isinstance(data, Mapping) or not data:
        raise NeardupInputError(
            "data must be a non-empty dict split -> data, e.g. "
            "data={'train': (x_train, y_train), 'test': test_ds}."
        )
    if isinstance(steps, Mapping):
        unknown = [s for s in steps if s not in data]
        if unknown:
            raise NeardupInputError(
                f"steps names split(s) {unknown} that are not in data "
                f"({closest_names(unknown[0], data)})."
            )
        per_split = dict(steps)
    else:
        per_split = dict.fromkeys(data, steps)
    return {name: as_source(name, value, per_split.get(name)) for name, value in data.items()}


def _check_reference(reference: Any, sources: Mapping[str, SplitSource]) -> str | None:
    if reference is None or len(sources) == 1 or reference in sources:
        return reference
    raise NeardupInputError(
        f"reference split {reference!r} is not in data ({closest_names(reference, sources)}); "
        "pass reference= one of the data keys, or None to skip the leakage check."
    )


def _check_options(
    threshold: Any,
    normalize: Any,
    reduce: Any,
    k: Any,
    backend: Any,
    seed: Any,
    combine: Any = None,
) -> dict[str, Any]:
    """Validate the find_duplicates options now, not after an epoch of training."""
    # combine None: analyze_views' default for the input view ("confirm:input" or "any")
    extra = {} if combine is None else {"combine": combine}
    check_options(
        dict(threshold=threshold, normalize=normalize, reduce=reduce, k=k, backend=backend,
             seed=seed, **extra),
        where="DuplicatesCallback",
    )  # fmt: skip
    as_backend(backend)  # a backend object or "auto" / "cells" / "annoy" / "exact"
    return extra | {
        # None: find_duplicates' default (Auto, per view), as in the Lightning callback
        "threshold": None if threshold is None else as_strategy(threshold),
        "normalize": check_normalize(normalize),
        "reduce": as_reducer(reduce),
        "k": _check_positive_int(k, "k"),
        "backend": backend,
        "seed": seed,
    }


def _batch_shapes(x: Any) -> list[tuple[Any, ...]]:
    return [tuple(keras.ops.shape(a)) for a in keras.tree.flatten(x)]


def _check_shapes(
    split: str,
    shapes: list[tuple[Any, ...]],
    expected: list[tuple[Any, ...]],
    *,
    unbatched_ok: bool = False,
) -> None:
    """Compare input shapes (batch axis first) with ``model.inputs``; None matches anything.

    With ``unbatched_ok`` (a tf.data element spec), a shape without the batch axis is fine:
    such a dataset is batched when it is read.
    """
    if len(shapes) != len(expected):
        raise NeardupInputError(
            f"data[{split!r}] has {len(shapes)} input array(s) but the model takes "
            f"{len(expected)}; give x as a list/dict with one array per model input."
        )
    for got, exp in zip(shapes, expected):
        if unbatched_ok and len(got) == len(exp) - 1:
            got = (None, *got)
        if len(got) == len(exp) and all(
            e is None or g is None or g == e for g, e in zip(got[1:], exp[1:])
        ):
            continue
        reshape = ", ".join("-1" if e is None else str(e) for e in exp[1:])
        raise NeardupInputError(
            f"data[{split!r}] has samples of shape {tuple(got[1:])} but the model expects "
            f"{tuple(exp[1:])} (model.inputs: {tuple(exp)}); reshape the data to the model's "
            f"input shape, e.g. x.reshape(len(x), {reshape})."
        )
