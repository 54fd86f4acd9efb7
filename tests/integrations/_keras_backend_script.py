"""Run the Keras callback on one Keras 3 backend and print what it found as JSON.

Usage: ``KERAS_BACKEND=jax python _keras_backend_script.py OUT_DIR`` (the backend must be
chosen before ``keras`` is imported, hence one process per backend). Several checks share
the one process, to pay the backend's start-up once:

1. ``fit`` a small CNN on real digits with 20 noisy copies of training images planted in the
   test split, with ``DuplicatesCallback`` placed before a ``TensorBoard`` callback: the final
   analysis must land in the last epoch's logs (History and the TensorBoard event files) and
   the reports in ``<log_dir>/neardup``;
2. ``evaluate`` without TensorBoard: reports in the default directory (the working directory
   is ``OUT_DIR``);
3. a subclassed model analysed through ``feature_fn``;
4. the ``datasets`` hook's ``ImageEmbedder`` over the fitted model: taken for a Keras model on
   every backend (on torch a Keras model is also a ``torch.nn.Module``), its layer named the
   Keras way, its fingerprint tied to the current weights.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras
import numpy as np
from sklearn.datasets import load_digits

from neardup.integrations.keras import DEFAULT_REPORT_DIR, DuplicatesCallback

N_PLANTED = 20


def _digits() -> tuple[np.ndarray, ...]:
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[..., None]
    y = digits.target.astype(np.int64)
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(x))
    x_train, y_train = x[perm[:1300]], y[perm[:1300]]
    x_test, y_test = x[perm[1300:]].copy(), y[perm[1300:]].copy()
    planted = np.sort(rng.choice(len(x_test), N_PLANTED, replace=False))
    sources = rng.choice(len(x_train), N_PLANTED, replace=False)
    noise = rng.normal(0, 0.03, x_train[sources].shape).astype(np.float32)
    x_test[planted] = np.clip(x_train[sources] + noise, 0, 1)
    y_test[planted] = y_train[sources]
    return x_train, y_train, x_test, y_test, planted


def _model() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax", name="head"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    return model


def _event_scalars(log_dir: Path) -> dict[str, list[float]]:
    """The ``neardup`` scalars in the TensorBoard event files under ``log_dir``: tag -> values."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.util import tensor_util

    found: dict[str, list[float]] = {}
    for run in sorted({p.parent for p in log_dir.rglob("events.out.tfevents.*")}):
        acc = EventAccumulator(str(run), size_guidance={"tensors": 0, "scalars": 0})
        acc.Reload()
        tags = acc.Tags()
        for tag in tags.get("scalars", []):
            if "neardup" in tag:
                found.setdefault(tag, []).extend(e.value for e in acc.Scalars(tag))
        for tag in tags.get("tensors", []):  # tf.summary v2 writes scalars as tensors
            if "neardup" in tag:
                values = [float(tensor_util.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)]
                found.setdefault(tag, []).extend(values)
    return found


def main(out: Path) -> dict:
    os.chdir(out)
    x_train, y_train, x_test, y_test, planted = _digits()
    data = {"train": (x_train, y_train), "test": (x_test, y_test)}
    report = {"backend": keras.backend.backend(), "planted": planted.tolist()}

    # 1. fit: final analysis in the last epoch's logs, reports under the TensorBoard log dir
    model = _model()
    cb = DuplicatesCallback(["conv2"], data, pool="flatten", verbose=0)
    log_dir = out / "tb"
    history = model.fit(
        x_train, y_train, epochs=2, batch_size=64, verbose=0,
        callbacks=[cb, keras.callbacks.TensorBoard(log_dir=str(log_dir))],
    )  # fmt: skip
    report["fit_leaked"] = sorted(cb.leakage["test"].positions)  # the combined verdict
    report["history"] = {k: v for k, v in history.history.items() if k.startswith("neardup/")}
    report["loss_epochs"] = len(history.history["loss"])
    report["events"] = _event_scalars(log_dir)
    report["fit_reports"] = sorted(str(p.relative_to(out)) for p in cb.report_paths)

    # 2. evaluate without TensorBoard: reports in the documented default directory
    evaluated = DuplicatesCallback(["conv1"], data, pool="flatten", verbose=0)
    model.evaluate(x_test, y_test, verbose=0, callbacks=[evaluated])
    report["evaluate_reports"] = sorted(str(p.relative_to(out)) for p in evaluated.report_paths)
    report["default_dir"] = DEFAULT_REPORT_DIR

    # 3. a subclassed model through feature_fn
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(8, 3, padding="same", activation="relu")
            self.head = keras.layers.Dense(10, activation="softmax")

        def call(self, x):
            return self.head(keras.ops.mean(self.conv(x), axis=(1, 2)))

    net = Net()
    net.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    sub = DuplicatesCallback(
        data=data, feature_fn=lambda m, x: {"conv": m.conv(x)}, pool="flatten",
        report_dir=None, verbose=0,
    )  # fmt: skip
    net.fit(x_train, y_train, epochs=1, batch_size=64, verbose=0, callbacks=[sub])
    report["subclassed_leaked"] = sorted(sub.leakage["test"].positions)
    report["subclassed_reports"] = len(sub.report_paths)

    # 4. the datasets hook's embedder over the same Keras model
    from neardup.integrations.datasets import ImageEmbedder

    embed = ImageEmbedder(model, lambda images: np.stack(images), layer="conv2", pool="flatten")
    vectors = embed({"image": list(x_test[:5])})
    before = embed.neardup_fingerprint()
    kernel = model.get_layer("conv2").kernel
    kernel.assign(kernel * 2.0)
    report["embedder"] = {
        "kind": embed.kind,
        "shape": list(vectors.shape),
        "fingerprint_follows_weights": embed.neardup_fingerprint() != before,
    }
    return report


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]).resolve())))
