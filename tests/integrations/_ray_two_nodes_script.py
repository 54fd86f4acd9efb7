"""Run by test_ray.py in its own process: a two-node Ray cluster on this machine.

``ray.cluster_utils.Cluster`` starts a head node and a second node (a raylet of its own, one
CPU each), as ``ray start --head`` and ``ray start --address=...`` would, and stops only its own
processes. The cell joins of one run must land on both nodes, and the result must equal the
single-process one. Prints one JSON line.
"""

from __future__ import annotations

import functools
import json
import os

import numpy as np
import ray
from ray.cluster_utils import Cluster
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from sklearn.datasets import load_digits

import neardup
from neardup.integrations.ray import RayExecutor, find_duplicates


def _where(fn, task):
    return ray.get_runtime_context().get_node_id(), fn(task)


@ray.remote(num_cpus=1)
def _node_id() -> str:
    return ray.get_runtime_context().get_node_id()


def _start_a_worker_on_every_node() -> None:
    """One task pinned to each alive node, awaited: a worker is up on both before the run (on
    a loaded machine the second node's first worker can take longer to start than the whole
    run, which then lands on the head alone, as a cluster's idle node would not)."""
    nodes = [node["NodeID"] for node in ray.nodes() if node["Alive"]]
    pinned = [
        _node_id.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n, soft=False))
        for n in nodes
    ]
    assert sorted(ray.get([task.remote() for task in pinned], timeout=300)) == sorted(nodes)


class NodeRecorder(RayExecutor):
    def __init__(self, **options):
        super().__init__(**options)
        self.nodes: list[str] = []

    def map(self, fn, tasks):
        for node, result in super().map(functools.partial(_where, fn), tasks):
            self.nodes.append(node)
            yield result


def main() -> None:
    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32).reshape(len(digits.images), -1)
    x[1500:1520] = x[:20] + 0.01
    data = {"train": x[:1400], "test": x[1400:]}
    cells = neardup.Cells(cell_size=64)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        ray.init(address=cluster.address, log_to_driver=False, configure_logging=False)
        cluster.wait_for_nodes()
        alive = sum(node["Alive"] for node in ray.nodes())
        _start_a_worker_on_every_node()
        recorder = NodeRecorder()
        shards = {}
        for split, values in data.items():
            path = os.path.join(os.environ["SHARD_DIR"], f"{split}.npy")
            np.save(path, values)
            shards[split] = [path]
        result = find_duplicates(shards, backend=cells, executor=recorder)
    finally:
        ray.shutdown()
        cluster.shutdown()
    expected = neardup.find_duplicates(data, backend=cells)
    print(
        json.dumps(
            {
                "alive_nodes": alive,
                "task_nodes": len(set(recorder.nodes)),
                "tasks": len(recorder.nodes),
                "equal": result.to_dict() == expected.to_dict(),
                "leaked": result.leakage["test"].count,
            }
        )
    )


if __name__ == "__main__":
    main()
