"""Every ```python snippet of the README runs as written, each in a fresh interpreter.

The core snippets' printed output is compared with what the README shows; the framework
quick starts (Lightning, Keras, Hugging Face datasets) train or embed for real and are checked
for what their comments promise.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).parents[1] / "README.md"


def _snippets() -> list[tuple[str, str]]:
    """``(heading, code)`` of every python block, under its nearest ``##``/``###`` heading."""
    text = README.read_text(encoding="utf-8")
    out, heading = [], ""
    for match in re.finditer(r"^(#{2,3} [^\n]*)$|^```python\n(.*?)^```", text, re.M | re.S):
        if match.group(1):
            heading = match.group(1).lstrip("#").strip()
        else:
            out.append((heading, match.group(2)))
    return out


SNIPPETS = _snippets()


def _run(code: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TF_CPP_MIN_LOG_LEVEL="3", KERAS_BACKEND="tensorflow")
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, env=env,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return done


def _check_core(out: str, cwd: Path) -> None:
    assert "leakage test -> train: 20 of 1,000 samples" in out
    assert (cwd / "report.json").exists()


def _check_dnikit(out: str, cwd: Path) -> None:
    name, count, first = out.splitlines()[0].split(" ", 2)
    assert name == "embedding" and int(count) >= 10
    a, b = json.loads(first)
    assert b - a == 1000  # the tightest set is one of the planted exact copies


def _check_reference(out: str, cwd: Path) -> None:
    text = README.read_text(encoding="utf-8").split("## Reference index", 1)[1]
    shown = re.search(r"```python\n.*?```\n```\n(.*?)```", text, re.S).group(1)
    assert out == shown
    assert (cwd / "train_index" / "meta.json").exists()


def _check_lightning(out: str, cwd: Path) -> None:
    views, leak, found_by = out.strip().splitlines()[-3:]
    assert views == "['features', 'input']"  # the default layer and the input view
    count, ids, nearest = re.fullmatch(r"(\d+) (\[.*?\]) (\[.*?\])", leak).groups()
    assert int(count) >= 20  # the 20 dimmed copies (digits has a few natural twins too)
    assert len(json.loads(ids)) == len(json.loads(nearest)) == 5  # dataset indices
    assert "'input'" in found_by  # a dimmed copy is an identical thumbnail
    for stem in ("neardup-fit", "neardup-fit-features", "neardup-fit-input"):
        assert list(cwd.glob(f"lightning_logs/version_0/{stem}.html"))


def _check_keras(out: str, cwd: Path) -> None:
    history, views, leak, report = out.strip().splitlines()[-4:]
    assert float(json.loads(history)[-1]) >= 20  # the 20 dimmed copies, combined verdict
    # the default layer, the input view and its aligned view (AlignedImageView is the default)
    assert views == "['pool'] ['pool', 'input', 'input:aligned']"
    positions, found_by = leak.split("] ", 1)
    assert json.loads(positions + "]") == [0, 1, 2, 3, 4] and "'input'" in found_by
    assert report == "logs/neardup/neardup.html" and (cwd / report).exists()
    assert (cwd / "logs/neardup/neardup-pool.html").exists()


def _check_datasets(out: str, cwd: Path) -> None:
    assert "leakage test -> train: 1 of 2 samples" in out
    assert "[0] [0] [[" in out and "'input']]" in out  # found by the text view
    assert "A Signature object represents the overall signature of a function." in out


def _check_views(out: str, cwd: Path) -> None:
    assert "leakage test -> train: 20 of 597 samples" in out
    assert "20 leaked; pair 0 found by ['image', 'pixels']" in out
    assert "{'train': 0, 'test': 20} samples to drop" in out


def _check_html(out: str, cwd: Path) -> None:
    page = (cwd / "report.html").read_text(encoding="utf-8")
    assert "Leaked samples" in page and "data:image/png" in page


def _check_bad_input(out: str, cwd: Path) -> None:
    text = README.read_text(encoding="utf-8").split("## Bad input", 1)[1]
    shown = re.search(r"```python\n.*?```\n```\n(.*?)```", text, re.S).group(1)
    assert out == shown


def _check_ray(out: str, cwd: Path) -> None:
    assert out.splitlines()[-2:] == ["50 leaked", "True"]


def _check_performance(out: str, cwd: Path) -> None:
    assert out.split() == ["500"]


def _check_memory(out: str, cwd: Path) -> None:
    assert out == ""


CHECKS = {
    "Quick start (core)": _check_core,
    "DNIKit-compatible facade": _check_dnikit,
    "Views and thresholds": _check_views,
    "Reference index: score new data against a saved training split": _check_reference,
    "PyTorch Lightning: a training run that reports its own leakage": _check_lightning,
    "Keras 3: a callback that checks for train/test leakage": _check_keras,
    "Hugging Face `datasets`: leakage across a DatasetDict": _check_datasets,
    "Ray: the cell engine on a cluster": _check_ray,
    "The HTML report": _check_html,
    "Bad input": _check_bad_input,
    "Annoy backend": _check_performance,
    "Memory": _check_memory,
}


def test_every_snippet_has_a_check():
    headings = [heading for heading, _ in SNIPPETS]
    assert sorted(headings) == sorted(CHECKS), "a README python block has no check here"


@pytest.mark.parametrize(("heading", "code"), SNIPPETS, ids=[h for h, _ in SNIPPETS])
def test_readme_snippet_runs_as_written(heading, code, tmp_path):
    if heading.startswith("Ray"):
        pytest.importorskip("ray")
    done = _run(code, tmp_path)
    CHECKS[heading](done.stdout, tmp_path)
