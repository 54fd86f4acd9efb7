"""Keras 3: find train/test leakage from a CNN's intermediate layer while it trains.

scikit-learn's 8x8 digits, split into train and test; 30 test images are replaced by noisy
copies of training images (the "leak"). A small CNN trains for 3 epochs with
``DuplicatesCallback``, which reads the second conv block's activations (and views the input
images as thumbnails) every epoch (the scalars land in ``History``) and writes JSON/HTML
reports to ``./reports`` when training ends.

    python examples/keras_digits.py
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # quieter TensorFlow start-up

import keras
import numpy as np
from sklearn.datasets import load_digits

from neardup.integrations.keras import DuplicatesCallback


def planted_split(n_planted: int = 30, seed: int = 0):
    """Digits as (N, 8, 8, 1) in [0, 1]; ``n_planted`` test images are noisy train copies."""
    digits = load_digits()
    x = (digits.images / 16.0).astype("float32")[..., None]
    y = digits.target
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    train, test = order[:1300], order[1300:]
    x_train, y_train, x_test, y_test = x[train], y[train], x[test].copy(), y[test].copy()
    planted = rng.choice(len(x_test), n_planted, replace=False)
    sources = rng.choice(len(x_train), n_planted, replace=False)
    noise = rng.normal(0, 0.03, x_train[sources].shape)
    x_test[planted] = np.clip(x_train[sources] + noise, 0, 1)
    y_test[planted] = y_train[sources]
    return (x_train, y_train), (x_test, y_test), set(planted.tolist())


def main() -> None:
    (x_train, y_train), (x_test, y_test), planted = planted_split()
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
            keras.layers.Flatten(),
            keras.layers.Dense(32, activation="relu", name="embedding"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])

    cb = DuplicatesCallback(
        layers=["conv2"],
        data={"train": (x_train, y_train), "test": (x_test, y_test)},
        pool="flatten",  # keep the spatial layout: 8x8 maps pooled to one value lose it
        every_n_epochs=1,
        report_dir="reports",
    )
    history = model.fit(x_train, y_train, epochs=3, batch_size=64, verbose=2, callbacks=[cb])

    print("History:", [round(v, 4) for v in history.history["neardup/test/leak_fraction"]])
    leak = cb.leakage["test"]  # the combined verdict of conv2 and the input view
    found = set(leak.positions)
    print(
        f"planted copies found: {len(found & planted)} of {len(planted)}; "
        f"other test images flagged: {len(found - planted)}"
    )


if __name__ == "__main__":
    main()
