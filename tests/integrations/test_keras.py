"""DuplicatesCallback on real Keras 3 / TensorFlow (CPU) models trained on scikit-learn digits.

30 test images are replaced by noisy copies (sigma 0.03) of training images: the callback
must find them as train/test leakage from an intermediate layer. TensorFlow start-up and
training are shared through module-scoped fixtures.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from neardup import DuplicatesResult, LeakageError, NeardupInputError  # noqa: E402
from neardup.integrations.keras import DuplicatesCallback  # noqa: E402

N_PLANTED = 30


@pytest.fixture(autouse=True)
def _in_tmp_dir(tmp_path, monkeypatch):
    """Reports go to ./neardup_reports by default: keep them out of the source tree."""
    monkeypatch.chdir(tmp_path)


class Split(NamedTuple):
    x_train: np.ndarray  # (1300, 8, 8, 1)
    y_train: np.ndarray
    x_test: np.ndarray  # (497, 8, 8, 1), 30 of them noisy copies of training images
    y_test: np.ndarray
    planted: set[int]  # positions of the copies in the test split


@pytest.fixture(scope="module")
def split(digits):
    """Train/test split of digits (N, 8, 8, 1) with 30 planted cross-split near-duplicates."""
    images, targets = digits
    x = images[..., None]
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(x))
    train, test = perm[:1300], perm[1300:]
    x_train, y_train = x[train], targets[train]
    x_test, y_test = x[test].copy(), targets[test].copy()
    planted = np.sort(rng.choice(len(x_test), N_PLANTED, replace=False))
    sources = rng.choice(len(x_train), N_PLANTED, replace=False)
    noise = rng.normal(0, 0.03, x_train[sources].shape).astype(np.float32)
    x_test[planted] = np.clip(x_train[sources] + noise, 0, 1)
    y_test[planted] = y_train[sources]
    return Split(x_train, y_train, x_test, y_test, set(planted.tolist()))


def _conv_layers(prefix: str = "") -> list:
    return [
        keras.layers.Conv2D(16, 3, padding="same", activation="relu", name=f"{prefix}conv1"),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu", name=f"{prefix}conv2"),
        keras.layers.Flatten(name=f"{prefix}flat"),
        keras.layers.Dense(32, activation="relu", name=f"{prefix}embedding"),
    ]


def _compile(model):
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.fixture(scope="module")
def sequential(split):
    """A small CNN (Sequential built with an Input), trained 2 epochs."""
    x_train, y_train = split.x_train, split.y_train
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            *_conv_layers(),
            keras.layers.Dense(10, activation="softmax", name="head"),
        ]
    )
    _compile(model).fit(x_train, y_train, epochs=2, batch_size=64, verbose=0)
    return model


@pytest.fixture(scope="module")
def functional(split):
    """A functional model whose conv layers live in a nested Sequential ``encoder``."""
    x_train, y_train = split.x_train, split.y_train
    keras.utils.set_random_seed(1)
    encoder = keras.Sequential([keras.Input((8, 8, 1)), *_conv_layers()], name="encoder")
    inputs = keras.Input((8, 8, 1), name="image")
    hidden = keras.layers.Dropout(0.1, name="dropout")(encoder(inputs))
    outputs = keras.layers.Dense(10, activation="softmax", name="head")(hidden)
    model = _compile(keras.Model(inputs, outputs, name="digits_net"))
    model.fit(x_train, y_train, epochs=2, batch_size=64, verbose=0)
    return model


def _data(split, test=None):
    x_train, y_train, x_test, y_test = split[:4]
    return {"train": (x_train, y_train), "test": (x_test, y_test) if test is None else test}


def _leaked(result: DuplicatesResult) -> set[int]:
    return set(result.leakage["test"].positions)


def _assert_finds_planted(result: DuplicatesResult, planted: set[int]) -> None:
    leaked = _leaked(result)
    assert planted <= leaked, f"missed planted copies {sorted(planted - leaked)}"
    assert len(leaked - planted) <= 3, f"false alarms {sorted(leaked - planted)}"


# ---- finds the planted leaks ----


def test_sequential_numpy_finds_planted_leaks_from_intermediate_layer(sequential, split, capsys):
    cb = DuplicatesCallback(["conv2", "embedding"], _data(split), pool="flatten")
    results = cb.run(sequential)
    # + the default input view (AlignedImageView: the thumbnail and its aligned view)
    assert list(results) == ["conv2", "embedding", "input", "input:aligned"]
    conv2 = results["conv2"]
    assert conv2.split_sizes == {"train": 1300, "test": 497}
    assert conv2.settings["dim"] == 8 * 8 * 32  # flattened (8, 8, 32) feature maps
    _assert_finds_planted(conv2, split.planted)
    assert set(conv2.class_counts["test"]) == set(range(10))  # labels from y
    assert "leakage test -> train" in capsys.readouterr().out
    assert cb.metrics["neardup/conv2/test/leak_count"] == len(_leaked(conv2))


def test_avg_pool_gives_one_feature_per_channel(sequential, split):
    cb = DuplicatesCallback("conv1", _data(split), pool="avg", verbose=0)
    assert cb.run(sequential)["conv1"].settings["dim"] == 16


def test_unlabelled_arrays_give_results_without_labels(sequential, split):
    x_train, x_test, planted = split.x_train, split.x_test, split.planted
    cb = DuplicatesCallback("conv2", {"train": x_train, "test": x_test}, pool="flatten", verbose=0)
    result = cb.run(sequential)["conv2"]
    _assert_finds_planted(result, planted)
    assert list(result.class_counts["test"]) == [None]


def test_memory_budget_spills_to_disk_and_changes_no_result(sequential, split, tmp_path):
    spill = tmp_path / "spill"
    plain = DuplicatesCallback("conv2", _data(split), verbose=0).run(sequential)["conv2"]
    cb = DuplicatesCallback("conv2", _data(split), verbose=0, memory_budget="20kB", spill_dir=spill)
    assert cb.run(sequential)["conv2"].to_dict() == plain.to_dict()
    assert spill.is_dir()  # created by the first spill; the files went with the collector
    assert not list(spill.glob("*.npy"))
    with pytest.raises(NeardupInputError, match="memory_budget='lots' is not a size in bytes"):
        DuplicatesCallback("conv2", _data(split), memory_budget="lots")


def test_tf_data_batched_and_unbatched_match_numpy(functional, split):
    x_test, y_test, planted = split.x_test, split.y_test, split.planted
    one_hot = keras.utils.to_categorical(y_test, 10)  # one-hot targets -> argmax labels
    base = tf.data.Dataset.from_tensor_slices((x_test, one_hot))
    found = {}
    for name, test in {
        "numpy": (x_test, y_test),
        "batched": base.batch(64),
        "unbatched": base,
    }.items():
        cb = DuplicatesCallback("encoder/conv2", _data(split, test), pool="flatten", verbose=0)
        result = cb.run(functional)["encoder/conv2"]
        assert result.split_sizes["test"] == len(x_test)
        assert result.class_counts["test"] == {
            int(c): int(n) for c, n in zip(*np.unique(y_test, return_counts=True))
        }
        found[name] = _leaked(result)
    _assert_finds_planted(cb.results["encoder/conv2"], planted)
    assert found["numpy"] == found["batched"] == found["unbatched"]


def test_nested_layer_by_bare_name_reads_the_submodel_activations(functional, split):
    x_test = split.x_test[:40]
    cb = DuplicatesCallback("conv2", {"test": x_test}, pool="flatten", verbose=0)
    features = cb._features(functional, x_test)["conv2"]
    encoder = functional.get_layer("encoder")
    direct = keras.Model(encoder.inputs[0], encoder.get_layer("conv2").output)(x_test)
    np.testing.assert_allclose(features, keras.ops.convert_to_numpy(direct), rtol=1e-5)
    assert cb.run(functional)["conv2"].split_sizes == {"test": 40}


def test_pydataset_input(sequential, split):
    x_test, y_test, planted = split.x_test, split.y_test, split.planted

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return -(-len(x_test) // 100)

        def __getitem__(self, i):
            return x_test[i * 100 : (i + 1) * 100], y_test[i * 100 : (i + 1) * 100]

    cb = DuplicatesCallback("conv2", _data(split, Batches()), pool="flatten", verbose=0)
    _assert_finds_planted(cb.run(sequential)["conv2"], planted)


def test_feature_fn_analyzes_a_subclassed_model(split):
    x_train, y_train, planted = split.x_train, split.y_train, split.planted

    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(16, 3, padding="same", activation="relu")
            self.flat = keras.layers.Flatten()
            self.head = keras.layers.Dense(10)

        def call(self, x):
            return self.head(self.flat(self.conv(x)))

    keras.utils.set_random_seed(0)
    net = _compile(Net())
    net.fit(x_train, y_train, epochs=1, batch_size=64, verbose=0)
    cb = DuplicatesCallback(
        data=_data(split),
        feature_fn=lambda model, x: {"conv": model.conv(x)},
        pool="flatten",
        verbose=0,
    )
    _assert_finds_planted(cb.run(net)["conv"], planted)


# ---- Keras hooks ----


def test_every_n_epochs_adds_scalars_to_history(sequential, split, tmp_path):
    x_train, y_train = split.x_train, split.y_train
    cb = DuplicatesCallback(
        "conv2", _data(split), pool="flatten", every_n_epochs=2, report_dir=tmp_path, verbose=0
    )
    history = sequential.fit(x_train, y_train, epochs=3, batch_size=128, verbose=0, callbacks=[cb])
    # analysed at epoch 2 (every_n_epochs) and at the end of the last epoch (the final
    # analysis lands in that epoch's logs); History records keys when present
    fractions = history.history["neardup/test/leak_fraction"]
    assert len(fractions) == 2
    assert fractions[-1] == pytest.approx(cb.metrics["neardup/test/leak_fraction"])
    assert len(history.history["loss"]) == 3
    assert history.history["neardup/test/leak_count"][0] >= N_PLANTED
    # the final analysis (epoch 3 changed the weights) writes the final reports
    # (the combined verdict, then one report per view: the layer and the input view)
    names = sorted(p.name for p in tmp_path.glob("*.json"))
    assert names == sorted(
        f"neardup{epoch}{view}.json"
        for epoch in ("", "-epoch002")
        for view in ("", "-conv2", "-input", "-input_aligned")  # + the aligned input view
    )
    assert sorted(map(str, cb.report_paths)) == sorted(
        str(tmp_path / f"neardup{view}.{ext}")
        for view in ("", "-conv2", "-input", "-input_aligned")
        for ext in ("html", "json")
    )
    loaded = DuplicatesResult.from_json(tmp_path / "neardup-conv2.json")
    assert loaded.leakage["test"].count == cb.results["conv2"].leakage["test"].count


def test_every_epoch_with_two_layers_and_no_rerun_at_train_end(sequential, split, tmp_path):
    x_train, y_train = split.x_train, split.y_train
    cb = DuplicatesCallback(
        ["conv1", "conv2"],
        _data(split),
        pool="flatten",
        every_n_epochs=1,
        report_dir=tmp_path,
        verbose=0,
    )
    runs = []
    original = cb._analyze  # counts analyses; the real one runs
    cb._analyze = lambda model: runs.append(model) or original(model)
    history = sequential.fit(x_train, y_train, epochs=2, batch_size=128, verbose=0, callbacks=[cb])
    assert len(history.history["neardup/conv2/test/leak_count"]) == 2
    assert len(history.history["neardup/conv1/test/duplicate_sets"]) == 2
    assert len(runs) == 2  # train end reuses the analysis of epoch 2...
    assert sorted(p.name for p in tmp_path.glob("*.json")) == sorted(  # ...for the final
        f"neardup{epoch}{view}.json"  # reports (combined verdict + one per view)
        for epoch in ("", "-epoch001", "-epoch002")
        for view in ("", "-conv1", "-conv2", "-input", "-input_aligned")
    )


def test_progress_bar_on_long_extraction_only(sequential, split, capsys):
    x_train, x_test = split.x_train, split.x_test
    cb = DuplicatesCallback("conv1", {"train": x_train, "test": x_test}, batch_size=64)
    cb.run(sequential)
    out = capsys.readouterr().out
    assert "extracting activations of split 'train'" in out  # 21 batches
    assert "21/21" in out
    assert "split 'test'" not in out  # 8 batches: no bar


def test_targets_that_are_not_labels_warn_and_are_ignored(sequential, split):
    x_train, x_test = split.x_train, split.x_test
    data = {"train": (x_train, x_train), "test": (x_test, x_test)}  # autoencoder targets
    cb = DuplicatesCallback("conv1", data, verbose=0)
    with pytest.warns(UserWarning, match="not one label per sample"):
        result = cb.run(sequential)["conv1"]
    assert list(result.class_counts["train"]) == [None]


def test_validation_does_not_trigger_but_evaluate_does(sequential, split):
    x_train, y_train, x_test, y_test, planted = split
    cb = DuplicatesCallback("conv2", _data(split), pool="flatten", at_train_end=False, verbose=0)
    sequential.fit(
        x_train[:256],
        y_train[:256],
        validation_data=(x_test, y_test),
        epochs=1,
        verbose=0,
        callbacks=[cb],
    )
    assert cb.results == {}  # fit's validation is not evaluate
    sequential.evaluate(x_test, y_test, verbose=0, callbacks=[cb])
    _assert_finds_planted(cb.results["conv2"], planted)


def test_overrides_no_batch_hooks_so_async_dispatch_stays_on(split):
    # Keras turns async dispatch off for callbacks that override a batch-end hook
    # (CallbackList._configure_async_dispatch); begin hooks would add work to every step too.
    from keras.src.utils.python_utils import is_default

    cb = DuplicatesCallback("conv2", _data(split))
    hooks = [
        f"on_{kind}_batch_{when}"
        for kind in ("train", "test", "predict")
        for when in ("begin", "end")
    ]
    assert all(is_default(getattr(cb, hook)) for hook in [*hooks, "on_batch_end"])


def test_fail_above_raises_leakage_error(sequential, split):
    cb = DuplicatesCallback("conv2", _data(split), pool="flatten", fail_above=0.01, verbose=0)
    with pytest.raises(LeakageError, match=r"split 'test'.*fail_above=0.01"):
        cb.run(sequential)
    assert cb.results["conv2"].leakage["test"].count >= N_PLANTED  # results kept


def test_infinite_dataset_needs_steps(sequential, split):
    x_test, y_test = split.x_test, split.y_test
    forever = tf.data.Dataset.from_tensor_slices((x_test, y_test)).batch(50).repeat()
    with pytest.raises(NeardupInputError, match=r"infinite tf.data.Dataset.*steps=\{'test': n\}"):
        DuplicatesCallback("conv2", _data(split, forever))
    cb = DuplicatesCallback("conv2", _data(split, forever), steps={"test": 3}, verbose=0)
    assert cb.run(sequential)["conv2"].split_sizes["test"] == 150


def test_sequential_without_input_is_checked_once_fit_has_built_it(split):
    x_train, y_train = split.x_train, split.y_train
    model = _compile(
        keras.Sequential(
            [keras.layers.Flatten(), keras.layers.Dense(16, name="hidden"), keras.layers.Dense(10)]
        )
    )
    cb = DuplicatesCallback("hidden", _data(split), verbose=0)
    model.fit(x_train[:200], y_train[:200], epochs=1, verbose=0, callbacks=[cb])
    assert cb.results["hidden"].split_sizes == {"train": 1300, "test": 497}


def test_multi_input_model_takes_dicts_of_arrays_and_datasets(split):
    x_train, x_test, y_test = split.x_train, split.x_test, split.y_test
    image = keras.Input((8, 8, 1), name="image")
    extra = keras.Input((3,), name="extra")
    hidden = keras.layers.Dense(8, name="mix")(
        keras.layers.Concatenate()([keras.layers.Flatten()(image), extra])
    )
    model = keras.Model({"image": image, "extra": extra}, keras.layers.Dense(10)(hidden))
    ones = np.ones((len(x_test), 3), np.float32)
    test = tf.data.Dataset.from_tensor_slices(({"image": x_test, "extra": ones}, y_test))
    data = {"train": {"image": x_train, "extra": np.ones((1300, 3), np.float32)}, "test": test}
    result = DuplicatesCallback("mix", data, verbose=0).run(model)["mix"]
    assert result.split_sizes == {"train": 1300, "test": 497}
    assert list(result.class_counts["train"]) == [None]  # no y for train
    with pytest.raises(NeardupInputError, match="has 1 input array.*takes 2"):
        DuplicatesCallback("mix", {"train": x_train}, verbose=0).run(model)


# ---- bad input ----


def test_shared_layer_is_ambiguous(split):
    shared = keras.layers.Dense(4, name="shared")
    inputs = keras.Input((8, 8, 1))
    flat = keras.layers.Flatten()(inputs)
    model = keras.Model(inputs, keras.layers.Add()([shared(flat), shared(flat * 2.0)]))
    with pytest.raises(NeardupInputError, match="'shared' is called 2 times"):
        DuplicatesCallback("shared", _data(split)).run(model)


def test_pydataset_without_length_or_infinite_without_steps(split):
    class NoLength(keras.utils.PyDataset):
        def __getitem__(self, i):
            return split.x_test[:10]

    class Forever(NoLength):
        num_batches = None

    with pytest.raises(NeardupInputError, match="without __len__ or num_batches"):
        DuplicatesCallback("conv2", _data(split, NoLength()))
    with pytest.raises(NeardupInputError, match="infinite PyDataset"):
        DuplicatesCallback("conv2", _data(split, Forever()))


def test_subclassed_model_without_feature_fn_explains_both_ways_out(split):
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(4)

        def call(self, x):
            return self.dense(keras.ops.reshape(x, (-1, 64)))

    net = Net()
    net(split.x_test[:2])
    cb = DuplicatesCallback("dense", _data(split))
    with pytest.raises(NeardupInputError, match=r"subclassed.*functional model.*feature_fn="):
        cb.run(net)


def test_unknown_layer_lists_the_closest_names(sequential, functional, split):
    with pytest.raises(NeardupInputError, match=r"no layer 'conv3'.*closest: 'conv2', 'conv1'"):
        DuplicatesCallback("conv3", _data(split)).run(sequential)
    with pytest.raises(NeardupInputError, match=r"no layer 'encoder/conv'.*'encoder/conv"):
        DuplicatesCallback("encoder/conv", _data(split)).run(functional)


def test_unknown_layer_lists_the_model_layers(sequential, functional, split):
    with pytest.raises(NeardupInputError, match=r"Its layers: 'conv1', 'conv2', 'flat', 'embed"):
        DuplicatesCallback("conv3", _data(split)).run(sequential)
    with pytest.raises(NeardupInputError, match=r"Its layers: .*'encoder', 'encoder/conv1'"):
        DuplicatesCallback("conv", _data(split)).run(functional)


def test_unknown_layer_fails_before_training(sequential, split):
    x_train, y_train = split.x_train, split.y_train
    weights = [w.copy() for w in sequential.get_weights()]
    cb = DuplicatesCallback("embeding", _data(split), verbose=0)
    with pytest.raises(NeardupInputError, match="closest: 'embedding'"):
        sequential.fit(x_train, y_train, epochs=1, verbose=0, callbacks=[cb])
    assert all(np.array_equal(a, b) for a, b in zip(weights, sequential.get_weights()))


def test_mismatched_input_shapes(sequential, split):
    x_train, x_test = split.x_train, split.x_test
    flat = {"train": x_train, "test": x_test.reshape(len(x_test), 64)}
    with pytest.raises(
        NeardupInputError, match=r"data\['test'\].*\(64,\).*x.reshape\(len\(x\), 8, 8, 1\)"
    ):
        DuplicatesCallback("conv2", flat).run(sequential)

    class Flat(keras.utils.PyDataset):  # shape known only at the first batch
        def __len__(self):
            return 1

        def __getitem__(self, i):
            return x_test[:10].reshape(10, 64)

    with pytest.raises(NeardupInputError, match=r"shape \(64,\)"):
        DuplicatesCallback("conv2", _data(split, Flat()), verbose=0).run(sequential)


def test_unbuilt_sequential_says_how_to_build_it(split):
    model = keras.Sequential([keras.layers.Dense(4, name="dense")])
    with pytest.raises(NeardupInputError, match=r"never built.*keras.Input"):
        DuplicatesCallback("dense", _data(split)).run(model)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"layers": []}, "layers must be None, a layer name"),
        ({"input_view": "pixels"}, "input_view='pixels' is not supported"),
        ({"layers": ["a", "a"]}, "lists a name twice"),
        ({"feature_fn": lambda m, x: x}, "not both"),
        ({"data": {}}, "non-empty dict split -> data"),
        ({"data": {"train": "x.npy"}}, "str, which is not supported"),
        ({"data": {"train": (np.zeros((3, 8, 8, 1)), np.zeros(4))}}, "y has 4"),
        ({"reference": "trian"}, "reference split 'trian'.*closest: 'train'"),
        ({"pool": "mean"}, "pool='mean' is not supported"),
        ({"every_n_epochs": 0}, "every_n_epochs must be an int >= 1"),
        ({"steps": {"val": 2}}, "steps names split"),
        ({"fail_above": 2}, "not a fraction"),
        ({"backend": "faiss"}, "backend='faiss'"),
        ({"normalize": "l2"}, "normalize"),
        ({"verbose": 3}, "verbose must be 0, 1 or 2"),
        ({"combine": "all"}, "combine='all' is not valid.*'any', 'confirm:<view>'"),
        ({"combine": "confirm:input", "input_view": None}, "needs the input view"),
        ({"combine": "confirm:conv3"}, "names view 'conv3'.*closest: 'conv2'"),
    ],
)
def test_options_are_validated_in_init(split, kwargs, message):
    options = {"layers": "conv2", "data": _data(split), **kwargs}
    with pytest.raises(NeardupInputError, match=message):
        DuplicatesCallback(**options)


def test_missing_keras_names_the_install_command():
    import subprocess
    import sys

    code = "import sys; sys.modules['keras'] = None; import neardup.integrations.keras"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode != 0
    assert 'pip install "neardup[keras]"' in done.stderr


# ---- defaults: layers, pooling and the input view, as the Lightning callback ----


def _brightness_split(split, rng_seed=3):
    """The digits split with 10 more test images replaced by training images x 0.85 and 10
    by exact copies (beside the 30 noisy ones): positions per kind."""
    rng = np.random.default_rng(rng_seed)
    x_test, y_test = split.x_test.copy(), split.y_test.copy()
    free = np.setdiff1d(np.arange(len(x_test)), sorted(split.planted))
    slots = rng.choice(free, 20, replace=False)
    sources = rng.choice(len(split.x_train), 20, replace=False)
    x_test[slots[:10]] = split.x_train[sources[:10]] * 0.85
    x_test[slots[10:]] = split.x_train[sources[10:]]
    y_test[slots] = split.y_train[sources]
    kinds = {
        "noise": set(split.planted),
        "brightness": set(slots[:10].tolist()),
        "exact": set(slots[10:].tolist()),
    }
    return x_test, y_test, kinds


def test_defaults_pick_a_layer_add_the_input_view_and_find_every_kind(sequential, split, capsys):
    x_test, y_test, kinds = _brightness_split(split)
    cb = DuplicatesCallback(data=_data(split, (x_test, y_test)))
    cb.run(sequential)
    out = capsys.readouterr().out
    assert "layers=None -> analysing 'conv2', the last convolution" in out
    assert "input_view='auto' -> images (8, 8, 1) -> AlignedImageView()" in out
    assert cb.layers == ["conv2"] and list(cb.results) == ["conv2", "input", "input:aligned"]
    assert cb.pool == "max"  # the default shared with the Lightning callback
    # the default threshold is find_duplicates' Auto, one per view (it once became Relative)
    assert {r.threshold.strategy for r in cb.results.values()} == {"Auto"}
    leak = cb.leakage["test"]
    found = set(leak.positions)
    planted = set().union(*kinds.values())
    for kind, positions in kinds.items():
        assert positions <= found, f"{kind}: missed {sorted(positions - found)}"
    assert len(found - planted) <= 3, f"false alarms {sorted(found - planted)}"
    by_position = dict(zip(leak.positions, leak.found_by))
    # brightness copies are identical thumbnails: the input view finds them all
    assert all("input" in by_position[p] for p in kinds["brightness"])
    assert leak.ids == leak.positions and len(leak.nearest_ids) == leak.count
    assert set(leak.view_distances) == {"conv2", "input", "input:aligned"}
    # the layer's finds count when a pixel view confirms them (look-alikes of a digit do not)
    assert cb.result.settings["combine"] == "confirm:input"
    assert cb.result.settings["confirm_within"] == 2.5
    assert cb.metrics["neardup/test/leak_count"] == leak.count
    assert cb.metrics["neardup/input/test/leak_count"] == cb.results["input"].leakage["test"].count


def test_default_layer_is_the_end_of_the_last_conv_block():
    from neardup.integrations.keras._graph import default_layer

    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(8, 3, name="c1"),
            keras.layers.Conv2D(8, 3, name="c2"),
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.ReLU(name="relu"),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.GlobalAveragePooling2D(name="gap"),
            keras.layers.Dense(4, name="head"),
        ]
    )
    name, why = default_layer(model)
    assert name == "pool" and "'c2'" in why
    dense = keras.Sequential(
        [keras.Input((10,)), keras.layers.Dense(8, name="d1"), keras.layers.Dense(2, name="d2")]
    )
    assert default_layer(dense)[0] == "d1"


def test_input_view_off_or_custom(sequential, split):
    from neardup.views import ImageView

    off = DuplicatesCallback("conv2", _data(split), input_view=None, pool="flatten", verbose=0)
    assert list(off.run(sequential)) == ["conv2"]
    assert set(off.leakage["test"].positions) >= split.planted  # the layer alone finds them
    big = DuplicatesCallback("conv2", _data(split), input_view=ImageView(size=4), verbose=0)
    assert big.run(sequential)["input"].settings["dim"] == 16
    with pytest.raises(NeardupInputError, match="named 'input'"):
        DuplicatesCallback("input", _data(split))


def test_colour_images_get_a_colour_and_a_luma_input_view(colour_digits):
    train, test, planted = colour_digits
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(10, activation="softmax", name="head"),
        ]
    )
    data = {
        "train": (train / 255.0, np.zeros(len(train), int)),
        "test": (test / 255.0, np.zeros(len(test), int)),
    }
    cb = DuplicatesCallback(data=data, verbose=0)
    results = cb.run(model)
    # the core turns the colour input view into its thumbnail, luma and aligned views
    assert {"input", "input-luma", "input:aligned"} <= set(results)
    assert results["input"].settings["dim"] == 192 and results["input-luma"].settings["dim"] == 64
    leak = cb.leakage["test"]
    found = dict(zip(leak.positions, leak.nearest_positions))
    assert {p: found.get(p) for p in planted} == planted  # every colour-jittered copy
    by_luma = [f for p, f in zip(leak.positions, leak.found_by) if p in planted]
    assert sum("input-luma" in f for f in by_luma) >= 8
    with pytest.raises(NeardupInputError, match="named 'input-luma'"):
        DuplicatesCallback("input-luma", data)


def test_string_inputs_get_the_word_check_of_the_text_view(template_corpus):
    """A model that takes strings (``TextVectorization``) fed by ``tf.data``: the input view
    is ``TextView()`` and its rows keep their texts, so a pair must be confirmed by the text
    view and pass its word check. pydoc's own templated pair ("str.isalpha() ..." /
    "str.isdecimal() ...") is close in the n-grams but has a word replaced: turned away; a
    copy with a word dropped is found."""
    train, test, templated, copied = template_corpus

    def dataset(texts):
        return tf.data.Dataset.from_tensor_slices((texts, np.zeros(len(texts)))).batch(64)

    keras.utils.set_random_seed(0)
    vectorize = keras.layers.TextVectorization(max_tokens=2000, output_mode="tf_idf")
    vectorize.adapt(np.array(train))
    inputs = keras.Input(shape=(), dtype="string")
    hidden = keras.layers.Dense(32, activation="relu", name="encoder")(vectorize(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2)(hidden))
    model.compile("adam", "sparse_categorical_crossentropy")
    cb = DuplicatesCallback(
        "encoder", data={"train": dataset(train), "test": dataset(test)}, verbose=0
    )
    model.evaluate(dataset(test), callbacks=[cb], verbose=0)
    assert list(cb.results) == ["encoder", "input"]
    assert templated in cb.results["input"].leakage["test"].positions  # the n-grams alone
    leak = cb.leakage["test"]
    found = dict(zip(leak.positions, leak.nearest_positions))
    assert templated not in found
    assert found[copied] == 5
    assert cb.result.settings["word_check"]["input"] >= 1
