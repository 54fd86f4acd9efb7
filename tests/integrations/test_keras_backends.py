"""The Keras callback on every Keras 3 backend: TensorFlow, torch and JAX.

Keras picks its backend once per process (``KERAS_BACKEND`` before ``import keras``), so each
backend runs ``_keras_backend_script.py`` in its own subprocess; several checks share it to pay
the backend's start-up once. The script trains a real CNN on scikit-learn digits with 20 noisy
copies of training images planted in the test split.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("_keras_backend_script.py")
BACKEND_MODULES = {"tensorflow": "tensorflow", "torch": "torch", "jax": "jax"}


@pytest.fixture(scope="module", params=sorted(BACKEND_MODULES))
def run(request, tmp_path_factory):
    backend = request.param
    if importlib.util.find_spec(BACKEND_MODULES[backend]) is None:
        pytest.fail(f"the {backend} backend is not installed: pip install -e '.[dev]'")
    out = tmp_path_factory.mktemp(f"keras-{backend}")
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(out)],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), out


def test_runs_on_the_requested_backend_and_finds_the_planted_copies(run):
    report, _ = run
    assert report["backend"] in BACKEND_MODULES
    planted = set(report["planted"])
    for found in (report["fit_leaked"], report["subclassed_leaked"]):
        assert planted <= set(found), f"missed {sorted(planted - set(found))}"
        assert len(set(found) - planted) <= 3


def test_final_analysis_lands_in_the_last_epochs_logs_and_tensorboard(run):
    report, _ = run
    history = report["history"]
    assert report["loss_epochs"] == 2
    # analysed once, at the end of the last epoch: one value, in History...
    assert history["neardup/test/leak_count"] == [float(len(report["fit_leaked"]))]
    # the combined verdict (no single threshold), then each view's own figures
    assert set(history) == {
        f"neardup/test/{name}" for name in ("duplicate_sets", "leak_count", "leak_fraction")
    } | {
        f"neardup/{view}/test/{name}"
        for view in ("conv2", "input", "input_aligned")
        for name in ("duplicate_sets", "threshold", "leak_count", "leak_fraction")
    }
    # ...and in the TensorBoard event files (the callback after neardup's)
    events = report["events"]
    assert events["epoch_neardup/test/leak_count"] == history["neardup/test/leak_count"]
    assert events["epoch_neardup/test/leak_fraction"] == pytest.approx(
        history["neardup/test/leak_fraction"]
    )


def test_reports_are_written_by_default(run):
    report, out = run
    # one report per view (the layer, the input and its aligned view), then the combined one
    assert report["fit_reports"] == [
        f"tb/neardup/neardup{part}.{ext}"
        for part in ("-conv2", "-input", "-input_aligned", "")
        for ext in ("html", "json")
    ]
    default = report["default_dir"]
    assert report["evaluate_reports"] == [
        f"{default}/neardup{part}.{ext}"
        for part in ("-conv1", "-input", "-input_aligned", "")
        for ext in ("html", "json")
    ]
    saved = json.loads((out / default / "neardup-conv1.json").read_text())
    assert saved["leakage"]["test"]["total"] == 497
    assert report["subclassed_reports"] == 0  # report_dir=None writes nothing


def test_datasets_image_embedder_takes_the_model_for_a_keras_one(run):
    report, _ = run
    # on the torch backend a Keras model is also a torch.nn.Module: it must still be run
    # (and its layer found) the Keras way, and its fingerprint follow its weights
    assert report["embedder"] == {
        "kind": "keras",
        "shape": [5, 8 * 8 * 32],
        "fingerprint_follows_weights": True,
    }
