"""Every script in examples/ runs as written (a fresh process, its own working directory)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.py"))


@pytest.mark.parametrize("script", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_runs_and_reports_leakage(script, tmp_path):
    done = subprocess.run(
        [sys.executable, str(script)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    assert "leakage" in done.stdout.lower()
    assert "Traceback" not in done.stderr


def test_digits_demo_finds_real_pixel_space_twins(tmp_path):
    script = Path(__file__).parents[1] / "examples" / "digits_leakage.py"
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    assert "leakage test -> train: 47 of 450 samples" in done.stdout
    assert (tmp_path / "reports" / "digits-leakage.json").exists()
