"""Fail on imports that cross a module seam through a private name (``make lint`` runs this).

The rules, for every module of the package ``neardup`` (``core/``, ``integrations/``) and the
examples:

1. No private name (``_x``) is imported from another module: a name other modules need is
   public (in that module's ``__all__``) or the code stays in one module.
2. A private module (``_x.py``) is imported only by modules of the package that holds it and
   of that package's subpackages: ``neardup.search._graph`` only from inside
   ``neardup.search``; the flat pipeline modules ``neardup._validate`` … only from inside
   ``neardup``. Other packages go through the package's public API (``neardup.search``).
3. The integrations (``neardup.integrations``) and the examples import only public
   ``neardup`` modules and names outside the integrations themselves.

Ruff's ``PLC2701`` catches rule 3 for absolute imports but skips relative ones (rules 1 and 2
inside the core), hence this check. Exit status 1 and one line per violation when any.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: source folder -> the package it installs as (pyproject's package-dir)
PACKAGE_DIRS = {"core": "neardup", "integrations": "neardup.integrations"}
SCRIPT_DIRS = ("examples",)
ALLOWED_PRIVATE_NAMES = {"__version__", "__all__"}
INTEGRATIONS = "neardup.integrations"


def module_name(path: Path, root: Path) -> tuple[str, bool]:
    """Dotted name of the source file ``path`` and whether it is a package ``__init__``."""
    rel = path.relative_to(root)
    package = PACKAGE_DIRS[rel.parts[0]]
    parts = [*package.split("."), *rel.parts[1:-1]]
    if rel.name == "__init__.py":
        return ".".join(parts), True
    return ".".join([*parts, rel.stem]), False


def resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module a ``from … import`` reads from."""
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _is_private(part: str) -> bool:
    return part.startswith("_") and part not in ALLOWED_PRIVATE_NAMES


def _inside(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def seam_errors(target: str, importer: str | None) -> Iterator[str]:
    """Why importing module ``target`` from ``importer`` (``None``: a script) crosses a seam."""
    if not _inside(target, "neardup"):
        return
    parts = target.split(".")
    for depth, part in enumerate(parts):
        if not _is_private(part):
            continue
        holder = ".".join(parts[:depth])
        if importer is None:
            yield f"private module {target} imported from outside the package"
        elif _inside(importer, INTEGRATIONS) and not _inside(holder, INTEGRATIONS):
            yield f"the integrations import private core module {target}"
        elif not _inside(importer, holder):
            yield f"private module {target} imported from outside {holder}"
        return


def check_source(source: str, filename: str, importer: str | None, is_package: bool) -> list[str]:
    """Violations in one file's source (``importer``: its module name; ``None``: a script)."""
    problems = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                for why in seam_errors(alias.name, importer):
                    problems.append(f"{filename}:{node.lineno}: {why}")
        elif isinstance(node, ast.ImportFrom):
            if node.level and importer is None:
                continue
            target = resolve(node, importer or "", is_package)
            if not _inside(target, "neardup"):
                continue
            reasons = list(seam_errors(target, importer))
            for alias in node.names:
                if _is_private(alias.name):
                    reasons.append(f"private name {alias.name} imported from {target}")
            problems += [f"{filename}:{node.lineno}: {why}" for why in reasons]
    return problems


def check_tree(root: Path = ROOT) -> list[str]:
    """Violations in every module of the package and every example under ``root``."""
    problems = []
    for folder in PACKAGE_DIRS:
        for path in sorted((root / folder).rglob("*.py")):
            module, is_package = module_name(path, root)
            rel = str(path.relative_to(root))
            problems += check_source(path.read_text(encoding="utf-8"), rel, module, is_package)
    for folder in SCRIPT_DIRS:
        for path in sorted((root / folder).rglob("*.py")):
            rel = str(path.relative_to(root))
            problems += check_source(path.read_text(encoding="utf-8"), rel, None, False)
    return problems


def main() -> int:
    problems = check_tree()
    for line in problems:
        print(line)
    if problems:
        print(f"{len(problems)} import(s) cross a module seam through a private name.")
        return 1
    print("seams: no private imports across modules.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
