"""The README's core quick start runs as written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

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


def test_bad_input_section_runs_and_prints_what_it_shows(tmp_path):
    code = _block_after("## Bad input")
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    text = README.read_text(encoding="utf-8").split("## Bad input", 1)[1]
    shown = re.search(r"```python\n.*?```\n```\n(.*?)```", text, re.S).group(1)
    assert done.stdout == shown


def test_ray_section_runs_on_a_local_ray(tmp_path):
    """The Ray section's snippet, in its own process (it starts its own local Ray)."""
    import pytest

    pytest.importorskip("ray")
    code = _block_after("## Ray: the cell engine on a cluster")
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.splitlines()[-2:] == ["50 leaked", "True"]


def test_views_and_thresholds_section_runs(tmp_path):
    code = _block_after("## Views and thresholds")
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "leakage test -> train: 20 of 597 samples" in done.stdout
    assert "20 leaked; pair 0 found by ['image', 'pixels']" in done.stdout
    assert "{'train': 0, 'test': 20} samples to drop" in done.stdout
