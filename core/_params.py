"""Every user-facing option declared once: its constraint, its meaning and its fix.

Entry points (``find_duplicates``, ``ReferenceIndex``, ``ActivationCollector.analyze``, the
callbacks, ``find_leakage``, the CLI) call :func:`check_options` on what they were given,
before any work starts, in the spirit of scikit-learn's ``_param_validation`` but with
neardup's message style: the problem (option, value, rule), the fix, and for unknown names
or choices the closest valid names.

A new option is one :func:`register` call; ``tests/test_params.py`` then sends generated bad
values (:meth:`Constraint.invalid_examples`) for it to every entry point whose signature has
an argument of that name.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ._errors import NeardupInputError, closest_names

__all__ = [
    "PARAMS",
    "Boolean",
    "Choice",
    "Constraint",
    "Integer",
    "Nullable",
    "Param",
    "Predicate",
    "Text",
    "check_option",
    "check_options",
    "register",
]


class Constraint:
    """A rule an option value must follow."""

    def accepts(self, value: Any) -> bool:
        raise NotImplementedError

    def describe(self) -> str:
        """The rule as the end of "must be ...", e.g. ``"an int >= 1"``."""
        raise NotImplementedError

    def invalid_examples(self) -> list[Any]:
        """Values this constraint refuses (for the generated bad-value tests)."""
        raise NotImplementedError

    def hint(self, value: Any) -> str:
        """Extra help for a refused ``value`` (closest names); empty by default."""
        return ""


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


@dataclass(frozen=True)
class Integer(Constraint):
    """An int in ``[low, high]`` (either bound may be None), or one of ``also``."""

    low: int | None = None
    high: int | None = None
    also: tuple[int, ...] = ()

    def accepts(self, value: Any) -> bool:
        if not _is_int(value):
            return False
        if int(value) in self.also:
            return True
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            rule = f"an int from {self.low} to {self.high:,}"
        elif self.low is not None:
            rule = f"an int >= {self.low}"
        elif self.high is not None:
            rule = f"an int <= {self.high:,}"
        else:
            rule = "an int"
        return rule + "".join(f", or {v}" for v in self.also)

    def invalid_examples(self) -> list[Any]:
        out: list[Any] = ["x", 1.5, True, None]
        if self.low is not None:
            out += [
                v for v in (self.low - 1, self.low - 5, 0) if v < self.low and v not in self.also
            ]
        if self.high is not None:
            out.append(self.high + 1)
            out.append(2**70)
        return out


@dataclass(frozen=True)
class Choice(Constraint):
    """One of a fixed set of values."""

    values: tuple[Any, ...]

    def accepts(self, value: Any) -> bool:
        try:
            return any(value is v or (type(value) is type(v) and value == v) for v in self.values)
        except Exception:  # an object whose == raises (e.g. an array)
            return False

    def describe(self) -> str:
        return "one of " + ", ".join(map(repr, self.values))

    def invalid_examples(self) -> list[Any]:
        return ["no-such-choice", 3, np.zeros(2)]

    def hint(self, value: Any) -> str:
        names = [v for v in self.values if isinstance(v, str)]
        if isinstance(value, str) and names:
            return closest_names(value, names)
        return ""


@dataclass(frozen=True)
class Boolean(Constraint):
    """``True`` or ``False`` (numpy bools too; not 0/1 or strings)."""

    def accepts(self, value: Any) -> bool:
        return isinstance(value, (bool, np.bool_))

    def describe(self) -> str:
        return "True or False"

    def invalid_examples(self) -> list[Any]:
        return ["yes", 2, None]


@dataclass(frozen=True)
class Text(Constraint):
    """A non-empty string of at most ``max_length`` characters."""

    max_length: int = 200

    def accepts(self, value: Any) -> bool:
        return isinstance(value, str) and 0 < len(value) <= self.max_length

    def describe(self) -> str:
        return f"a non-empty string of at most {self.max_length} characters"

    def invalid_examples(self) -> list[Any]:
        return ["", 3, "x" * (self.max_length + 1)]


@dataclass(frozen=True)
class Predicate(Constraint):
    """Any rule given as a function, with its description and refused examples."""

    test: Callable[[Any], bool]
    description: str
    examples: tuple[Any, ...] = ()

    def accepts(self, value: Any) -> bool:
        return bool(self.test(value))

    def describe(self) -> str:
        return self.description

    def invalid_examples(self) -> list[Any]:
        return list(self.examples)


@dataclass(frozen=True)
class Nullable(Constraint):
    """``None`` or a value ``inner`` accepts.

    ``quiet``: ``None`` only means "not given" (e.g. the annoy options, whose defaults live in
    ``Annoy``), so the rule shown to users is ``inner``'s alone.
    """

    inner: Constraint
    quiet: bool = False

    def accepts(self, value: Any) -> bool:
        return value is None or self.inner.accepts(value)

    def describe(self) -> str:
        return self.inner.describe() if self.quiet else f"None or {self.inner.describe()}"

    def invalid_examples(self) -> list[Any]:
        return [v for v in self.inner.invalid_examples() if v is not None]

    def hint(self, value: Any) -> str:
        return self.inner.hint(value)


@dataclass(frozen=True)
class Param:
    """One option: its name, constraint, what it means and how to fix a bad value."""

    name: str
    constraint: Constraint
    meaning: str
    fix: str = ""
    clean: Callable[[Any], Any] | None = field(default=None, compare=False)


#: every option, by name (see :func:`register`).
PARAMS: dict[str, Param] = {}


def register(param: Param) -> Param:
    """Add (or replace) ``param`` in :data:`PARAMS` and return it."""
    PARAMS[param.name] = param
    return param


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def check_option(name: str, value: Any, *, where: str = "") -> Any:
    """Validate one option by its table entry and return the (cleaned) value.

    Raises
    ------
    NeardupInputError
        Naming the option, the value received, the rule, and the fix.
    """
    param = PARAMS[name]
    if not param.constraint.accepts(value):
        prefix = f"{where}: " if where else ""
        hint = param.constraint.hint(value)
        hint = f" ({hint})" if hint else ""
        fix = f" {param.fix}" if param.fix else ""
        raise NeardupInputError(
            f"{prefix}{name}={_short(value)} is not valid: {name} ({param.meaning}) must be "
            f"{param.constraint.describe()}{hint}.{fix}"
        )
    return param.clean(value) if param.clean is not None else value


def check_options(
    options: Mapping[str, Any], *, where: str = "", allowed: Iterable[str] | None = None
) -> dict[str, Any]:
    """Validate every registered option in ``options``; return them cleaned.

    With ``allowed``, a name outside it is refused with the closest allowed names (so a typo
    in ``**options`` is caught here, not deep inside the analysis). Names that are not in the
    table and not refused are passed through unchanged.
    """
    if allowed is not None:
        allowed = list(allowed)
        for name in options:
            if name not in allowed:
                prefix = f"{where}: " if where else ""
                raise NeardupInputError(
                    f"{prefix}unknown option {name!r} ({closest_names(name, allowed)}). "
                    "Check its spelling against the function's documented options."
                )
    return {
        name: check_option(name, value, where=where) if name in PARAMS else value
        for name, value in options.items()
    }


# ---------------------------------------------------------------------------- the table
def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _threshold_ok(value: Any) -> bool:
    from ._threshold import ThresholdStrategy

    return value is None or isinstance(value, ThresholdStrategy) or callable(value)


def _reduce_ok(value: Any) -> bool:
    from ._reduce import PCA

    return value is None or isinstance(value, PCA) or (_is_int(value) and value >= 1)


#: largest worker count accepted (threads or processes): more only thrashes.
MAX_JOBS = 1024

register(Param("k", Integer(low=1), "neighbours per sample", "10 is the default."))


def _backend_ok(value: Any) -> bool:
    from .search import BACKEND_NAMES, Backend

    if isinstance(value, Backend):
        return True
    return isinstance(value, str) and value in BACKEND_NAMES


def _backend_hint(value: Any) -> str:
    from .search import BACKEND_NAMES

    return closest_names(value, list(BACKEND_NAMES)) if isinstance(value, str) else ""


class _BackendConstraint(Predicate):
    def hint(self, value: Any) -> str:
        return _backend_hint(value)


register(
    Param(
        "backend",
        _BackendConstraint(
            _backend_ok,
            "a backend object (neardup.Cells(), neardup.Annoy(...), neardup.Exact()) or one of "
            "'auto', 'cells', 'annoy', 'exact'",
            ("no-such-choice", 3, np.zeros(2)),
        ),
        "the neighbour search",
        "'auto' (the default) is the cell engine, neardup.Cells().",
    )
)
register(
    Param(
        "normalize",
        Choice(("row", "column", None)),
        "the feature normalisation",
        "Use 'row' (cosine geometry, the default), 'column' (DNIKit's per-column L2) or None "
        "(raw Euclidean distances).",
    )
)
register(
    Param(
        "n_trees",
        Nullable(Integer(low=1, high=10_000), quiet=True),
        "annoy trees",
        "More trees miss fewer neighbours and cost more time; 6 is the default, DNIKit used 30.",
    )
)
register(
    Param(
        "search_k",
        Nullable(Integer(low=1, also=(-1,)), quiet=True),
        "annoy nodes inspected per query",
        "Use -1 (n_trees * k, the default) or a number of nodes; 0 would inspect nothing.",
    )
)
register(
    Param(
        "seed",
        Integer(low=0, high=2**32 - 1),
        "the random seed",
        "Pass a fixed int such as 0 (annoy takes 32-bit seeds).",
    )
)
register(
    Param(
        "n_jobs",
        Nullable(Integer(low=1, high=MAX_JOBS, also=(-1,)), quiet=True),
        "threads that build the annoy index",
        "Use 1 (the same index on every machine) or -1 (every core, as DNIKit).",
    )
)
register(
    Param(
        "query_jobs",
        Nullable(Integer(low=1, high=MAX_JOBS, also=(-1,)), quiet=True),
        "processes that query the annoy index",
        "Use -1 (one per CPU) or 1 (no worker processes); the result is the same for any value.",
    )
)
register(
    Param(
        "dedupe",
        Nullable(Boolean(), quiet=True),
        "whether byte-identical rows are grouped before the annoy search",
        "Pass True (the default) or False.",
    )
)
register(
    Param(
        "reference",
        Nullable(Text()),
        "the split others are checked against",
        "Pass the training split's name, e.g. 'train', or None to skip leakage.",
    )
)
register(
    Param(
        "layer",
        Nullable(Text(max_length=1000)),
        "the layer's name in the result",
        "Pass a short name or None.",
    )
)
register(
    Param(
        "threshold",
        Predicate(
            _threshold_ok,
            "None, a strategy (Relative(), Cosine(s), Distance(x), Percentile(p), Slope()) "
            "or a callable(sorted_distances) -> float",
            ("relative", 0.2),
        ),
        "how close is a duplicate",
        "E.g. threshold=neardup.Cosine(0.98).",
    )
)
register(
    Param(
        "reduce",
        Predicate(_reduce_ok, "None, an int >= 1 or PCA(n)", ("x", 0, -3, 1.5)),
        "PCA before the search",
        "E.g. reduce=64 for the top 64 principal components.",
    )
)
register(
    Param(
        "progress",
        Predicate(
            lambda v: v is None or isinstance(v, bool) or callable(v),
            "None, True/False (tqdm progress bars) or a callable(stage, done, total)",
            ("x", 3),
        ),
        "the progress callback",
    )
)
register(
    Param(
        "split",
        Text(),
        "the name of the scored data",
        "Pass a short name such as 'test' or 'new'.",
    )
)


def _max_diameter_ok(value: Any) -> bool:
    if value is None:
        return True
    return _is_number(value) and bool(np.isfinite(float(value))) and float(value) > 0


def _combine_ok(value: Any) -> bool:
    if value == "any" and isinstance(value, str):
        return True
    return isinstance(value, str) and value.startswith("confirm:") and len(value) > 8


register(
    Param(
        "combine",
        Predicate(
            _combine_ok,
            "one of 'any', 'confirm:<view>'",
            ("all", "confirm:", 3, None),
        ),
        "how several views' verdicts combine into one",
        "'any': a pair is a near-duplicate when it is within its threshold in at least one "
        "view; 'confirm:<view>' (e.g. 'confirm:input'): and also within 1.1 thresholds in "
        "that view (a TextView's own threshold; 2.5 in one of its pixel views for "
        "AlignedImageView rows).",
    )
)
register(
    Param(
        "max_diameter",
        Predicate(
            _max_diameter_ok,
            "None or a finite number > 0 (a multiple of the threshold)",
            ("x", 0, -1.0, float("inf"), float("nan"), True),
        ),
        "the widest duplicate set kept whole, in thresholds",
        "E.g. max_diameter=2.0 splits chains wider than two thresholds; None keeps every set.",
    )
)
register(
    Param(
        "keep",
        Choice(("first", "centroid", "reference")),
        "which member of a duplicate set survives a clean export",
        "Use 'first', 'centroid' or 'reference' (the member from the reference split).",
    )
)
