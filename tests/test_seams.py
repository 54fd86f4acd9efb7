"""The seam check (.ci/check_seams.py, run by ``make lint``): clean here, and it catches
private imports planted across modules, subpackages and the integrations."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_checker():
    spec = importlib.util.spec_from_file_location("check_seams", ROOT / ".ci" / "check_seams.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


seams = _load_checker()


def test_the_tree_has_no_private_imports_across_seams():
    assert seams.check_tree(ROOT) == []


@pytest.fixture()
def tree(tmp_path):
    """A copy of the package sources (and examples) to plant violations in."""
    for folder in ("core", "integrations", "examples"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    return tmp_path


def _plant(tree: Path, rel: str, line: str) -> None:
    path = tree / rel
    path.write_text(path.read_text(encoding="utf-8") + "\n" + line + "\n", encoding="utf-8")


@pytest.mark.parametrize(
    ("rel", "line", "reason"),
    [
        # another subpackage's private module, relative
        (
            "core/index/_reference.py",
            "from ..search._graph import build_graph",
            "private module neardup.search._graph imported from outside neardup.search",
        ),
        # a private name across modules, relative, inside one package
        (
            "core/search/_exact.py",
            "from ._annoy import _query_rows",
            "private name _query_rows imported from neardup.search._annoy",
        ),
        # a private name from a flat pipeline module
        (
            "core/_pipeline.py",
            "from ._validate import _per_split",
            "private name _per_split imported from neardup._validate",
        ),
        # the integrations reaching into a private core module (absolute and plain import)
        (
            "integrations/_common.py",
            "from neardup._collector import ActivationCollector",
            "the integrations import private core module neardup._collector",
        ),
        (
            "integrations/keras/_graph.py",
            "import neardup.search._rows",
            "the integrations import private core module neardup.search._rows",
        ),
        # an example importing a private module
        (
            "examples/digits_leakage.py",
            "from neardup._errors import closest_names",
            "private module neardup._errors imported from outside the package",
        ),
    ],
)
def test_planted_violations_are_reported(tree, rel, line, reason):
    _plant(tree, rel, line)
    problems = seams.check_tree(tree)
    assert len(problems) == 1, problems
    assert problems[0].startswith(rel + ":")
    assert problems[0].endswith(reason)


def test_allowed_imports_pass(tree):
    """Siblings' private modules, the parent's flat modules and public APIs are fine."""
    _plant(tree, "core/index/_reference.py", "from .._validate import check_ids")
    _plant(tree, "core/search/_exact.py", "from ._rows import Rows")
    _plant(tree, "integrations/keras/_data.py", "from .._common import check_pool")
    _plant(tree, "integrations/keras/_data.py", "from neardup.search import build_graph")
    _plant(tree, "examples/digits_leakage.py", "from neardup.validators import closest_names")
    assert seams.check_tree(tree) == []


def test_script_exits_nonzero_and_names_the_file(tree):
    _plant(tree, "core/report/_html.py", "from ..search._copies import find_copies")
    shutil.copytree(ROOT / ".ci", tree / ".ci")
    run = subprocess.run(
        [sys.executable, str(tree / ".ci" / "check_seams.py")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 1
    assert "core/report/_html.py:" in run.stdout
    assert "1 import(s) cross a module seam" in run.stdout
