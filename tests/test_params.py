"""The option table, checked at every entry point with generated bad values.

Every option registered in ``neardup._params.PARAMS`` is sent, with each value its constraint
refuses, to every entry point that takes it (found from the signatures, so a new option or a
new entry point is covered as soon as it is registered): each call must raise
``NeardupInputError`` naming the option before any work starts.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import neardup
from neardup import ActivationCollector, NeardupInputError, ReferenceIndex
from neardup._params import PARAMS, Integer, check_option, check_options
from neardup.validators import ANALYSIS_OPTIONS

RNG = np.random.default_rng(0)
X = RNG.normal(size=(60, 8)).astype(np.float32)
_NO_DEFAULT = object()


def _collector() -> ActivationCollector:
    c = ActivationCollector()
    c.add("train", "fc", X[:40])
    c.add("test", "fc", X[40:])
    return c


def _lightning(**options: Any) -> Any:
    from neardup.integrations.lightning import DuplicatesCallback

    return DuplicatesCallback(**options)


def _keras(**options: Any) -> Any:
    from neardup.integrations.keras import DuplicatesCallback

    return DuplicatesCallback(**options)


def _find_leakage(**options: Any) -> Any:
    import datasets

    from neardup.integrations.datasets import find_leakage

    parts = {
        name: datasets.Dataset.from_dict({"v": rows.tolist()})
        for name, rows in (("train", X[:40]), ("test", X[40:]))
    }
    return find_leakage(datasets.DatasetDict(parts), column="v", **options)


_INDEX = ReferenceIndex.build(X, backend="annoy", n_trees=2)
_RESULT = neardup.find_duplicates({"train": X[:40], "test": X[40:]})

#: entry point -> (call with options, the options it takes, their defaults)
ENTRY_POINTS: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {
    "find_duplicates": (lambda **o: neardup.find_duplicates(X, **o), neardup.find_duplicates),
    "find_duplicates_by_layer": (
        lambda **o: neardup.find_duplicates_by_layer({"train": {"fc": X}}, **o),
        neardup.find_duplicates,
    ),
    "ActivationCollector.analyze": (lambda **o: _collector().analyze(**o), neardup.find_duplicates),
    "ReferenceIndex.build": (lambda **o: ReferenceIndex.build(X, **o), ReferenceIndex.build),
    "ReferenceIndex.score": (lambda **o: _INDEX.score(X[:5], **o), ReferenceIndex.score),
    "lightning.DuplicatesCallback": (_lightning, None),
    "keras.DuplicatesCallback": (_keras, None),
    "datasets.find_leakage": (_find_leakage, neardup.find_duplicates),
    "DuplicatesResult.keep_mask": (
        lambda **o: _RESULT.keep_mask(**o),
        neardup.DuplicatesResult.keep_mask,
    ),
}


def _signature_of(name: str) -> inspect.Signature:
    _, source = ENTRY_POINTS[name]
    if source is None:  # a callback class: its __init__
        if name.startswith("lightning"):
            from neardup.integrations.lightning import DuplicatesCallback
        else:
            from neardup.integrations.keras import DuplicatesCallback
        source = DuplicatesCallback.__init__
    return inspect.signature(source)


def _cases() -> list[tuple[str, str, Any]]:
    cases = []
    for entry in ENTRY_POINTS:
        parameters = _signature_of(entry).parameters
        for option, param in PARAMS.items():
            if option not in parameters:
                continue
            if entry in ("find_duplicates_by_layer", "ActivationCollector.analyze") and (
                option not in ANALYSIS_OPTIONS
            ):
                continue
            default = parameters[option].default
            for bad in param.constraint.invalid_examples():
                if bad is None and default is None:
                    continue  # None is this entry point's own default
                cases.append((entry, option, bad))
    return cases


CASES = _cases()


def test_every_option_is_checked_somewhere():
    covered = {option for _, option, _ in CASES}
    assert set(PARAMS) - covered == set()
    assert len(CASES) > 150


@pytest.mark.parametrize(
    ("entry", "option", "bad"), CASES, ids=[f"{e}-{o}-{b!r:.20}" for e, o, b in CASES]
)
def test_generated_bad_values_are_refused_with_the_option_named(entry, option, bad):
    call, _ = ENTRY_POINTS[entry]
    with pytest.raises(NeardupInputError, match=rf"\b{option}\b"):
        call(**{option: bad})


@pytest.mark.parametrize(
    ("option", "flag", "bad"),
    [
        (option, flag, bad)
        for option, flag in {
            "k": "--k",
            "n_trees": "--trees",
            "search_k": "--search-k",
            "seed": "--seed",
            "query_jobs": "--query-jobs",
        }.items()
        for bad in PARAMS[option].constraint.invalid_examples()
        if isinstance(bad, (int, str)) and not isinstance(bad, bool)
    ],
)
def test_cli_refuses_the_same_values_with_exit_2(tmp_path, capsys, option, flag, bad):
    from neardup.cli import main

    np.save(tmp_path / "x.npy", X)
    with pytest.raises(SystemExit) as exit_info:
        main(["scan", "--split", f"data={tmp_path / 'x.npy'}", flag, str(bad), "--quiet"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert flag in err and ("is not valid" in err or "is not an integer" in err)


@pytest.mark.parametrize(
    "call",
    [
        lambda: _collector().analyze(n_tree=3),
        lambda: neardup.find_duplicates_by_layer({"train": {"fc": X}}, n_tree=3),
        lambda: _find_leakage(n_tree=3),
    ],
)
def test_misspelt_options_name_the_closest_option(call):
    with pytest.raises(NeardupInputError, match="unknown option 'n_tree' .*'n_trees'"):
        call()


def test_messages_state_problem_rule_and_fix():
    with pytest.raises(NeardupInputError) as info:
        check_option("n_jobs", -5, where="find_duplicates")
    message = str(info.value)
    assert message.startswith("find_duplicates: n_jobs=-5 is not valid: n_jobs (threads")
    assert "an int from 1 to 1,024, or -1" in message and "Use 1" in message
    with pytest.raises(NeardupInputError, match=r"backend='anoy' .*closest: 'annoy'"):
        check_options({"backend": "anoy"})


def test_a_registered_option_is_checked_everywhere_it_appears():
    """Registering a new option puts it in the table every entry point consults."""
    from neardup._params import Param, register

    register(Param("max_widgets", Integer(low=1), "widgets", "Use 1."))
    try:
        assert check_options({"max_widgets": 2}) == {"max_widgets": 2}
        with pytest.raises(NeardupInputError, match="max_widgets=0 is not valid"):
            check_options({"max_widgets": 0})
    finally:
        del PARAMS["max_widgets"]


def test_issue_examples_fail_fast():
    data = np.random.default_rng(0).normal(size=(200, 16)).astype("f4")
    for bad in (-5, 0):
        with pytest.raises(NeardupInputError, match=f"n_jobs={bad} is not valid"):
            neardup.find_duplicates(data, backend="annoy", n_jobs=bad)
    for name, bad in (("seed", "a"), ("seed", 2**40), ("n_trees", "x"), ("search_k", "x")):
        with pytest.raises(NeardupInputError, match=f"{name}="):
            neardup.find_duplicates(data, backend="exact", **{name: bad})
    with pytest.raises(NeardupInputError, match="search_k=3 is too small for k=10"):
        neardup.find_duplicates(data, backend="annoy", search_k=3)
