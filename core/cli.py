"""Command line: ``neardup scan`` (find duplicates and leakage in .npy/.npz activations,
folders of images or text files),
``neardup show`` (print a saved JSON result), ``neardup report`` (render it as HTML) and
``neardup index build`` / ``neardup index score`` (a saved reference index, scored later).

Exit codes: 0 success, 1 leakage above ``--fail-above`` (a CI gate, and nothing else),
2 bad input or options (nothing was written), 3 an internal error or a failure of the system
(a bug, out of memory, a full disk). Output paths are checked before the work starts, and
every output file is written atomically: it holds the old content or the new, never a part.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import traceback
import zipfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ._atomic import check_writable, write_text_atomically
from ._auto_threshold import Auto
from ._errors import NeardupInputError
from ._params import check_option
from ._pipeline import find_duplicates
from ._progress import ProgressBars
from ._sample_files import (
    greyed_if_grey,
    is_sample_file,
    read_image_folder,
    read_lines,
    read_text_lines,
    read_thumbnail,
)
from ._threshold import Cosine, Distance, Percentile, Relative, Slope, ThresholdStrategy
from .index import ReferenceIndex
from .report import SCHEMA_VERSION, DuplicatesResult, Leakage, to_plain
from .search import DEFAULT_TREES, ProgressFn
from .views import AlignedImageView, TextView

__all__ = ["EXIT_GATE", "EXIT_INPUT", "EXIT_INTERNAL", "EXIT_OK", "main", "parse_threshold"]

EXIT_OK, EXIT_GATE, EXIT_INPUT, EXIT_INTERNAL = 0, 1, 2, 3
#: side of the images an HTML report of a folder scan shows (read again from their files)
_REPORT_SIDE = 96


def _option(name: str) -> Callable[[str], Any]:
    """An argparse ``type`` that parses an int and checks it against the option table."""

    def parse(text: str) -> Any:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        try:
            return check_option(name, value)
        except NeardupInputError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = name
    return parse


_STRATEGIES = {
    "auto": lambda v: Auto(false_alarms=float(v)) if v else Auto(),
    "relative": lambda v: Relative(float(v)) if v else Relative(),
    "cosine": lambda v: Cosine(float(v)),
    "distance": lambda v: Distance(float(v)),
    "percentile": lambda v: Percentile(float(v)),
    "slope": lambda v: Slope(int(v)) if v else Slope(),
}


def parse_threshold(text: str) -> ThresholdStrategy:
    """Parse ``name[:value]``, e.g. ``auto``, ``relative:0.2``, ``cosine:0.98``, ``slope``."""
    name, _, value = text.partition(":")
    maker = _STRATEGIES.get(name.strip().lower())
    if maker is None:
        raise NeardupInputError(
            f"unknown threshold {text!r}; use one of auto[:FALSE_ALARMS], relative[:RATIO], "
            "cosine:SIMILARITY, "
            "distance:D, percentile:P, slope[:SENSITIVITY]."
        )
    try:
        return maker(value.strip())
    except (TypeError, ValueError) as err:
        if isinstance(err, NeardupInputError):
            raise
        raise NeardupInputError(f"threshold {text!r}: {value!r} is not a number.") from err


def _named_paths(items: Sequence[str], option: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise NeardupInputError(
                f"{option} {item!r}: expected NAME=PATH (e.g. train=train.npy)."
            )
        if name in out:
            raise NeardupInputError(f"{option}: split {name!r} given twice.")
        out[name] = path
    return out


_LOAD_CHUNK_BYTES = 64 << 20


def _load_array(
    spec: str, what: str, prefer: Sequence[str], progress: ProgressFn | None = None
) -> np.ndarray:
    """Load ``a.npy``, ``a.npz`` (its only array, or one named in ``prefer``) or ``a.npz:key``.

    With ``progress``, a ``.npy`` file is read in 64 MiB blocks of rows, each reported as
    ``loading <what>``; an ``.npz`` (compressed, read at once) reports its start and end.
    """
    path, key = spec, None
    if ":" in spec and not Path(spec).exists():
        path, _, key = spec.rpartition(":")
    if not Path(path).exists():
        raise NeardupInputError(f"{what}: file {path!r} does not exist.")
    stage = f"loading {what} ({Path(path).name})"
    try:
        loaded = np.load(path, allow_pickle=False, mmap_mode="r" if progress else None)
    except (ValueError, OSError, EOFError) as err:
        raise NeardupInputError(f"{what}: cannot read {path!r} as .npy/.npz ({err}).") from err
    if isinstance(loaded, np.ndarray):
        return _read_in_blocks(loaded, stage, progress) if progress else loaded
    if progress:
        progress(stage, 0, 1)
    with loaded:
        keys = list(loaded.keys())
        if key is None:
            chosen = [k for k in prefer if k in keys]
            key = keys[0] if len(keys) == 1 else (chosen[0] if chosen else None)
        if key not in keys:
            raise NeardupInputError(
                f"{what}: {path!r} holds arrays {keys}; name one as {path}:KEY."
            )
        try:
            array = loaded[key]
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
            raise NeardupInputError(
                f"{what}: cannot read array {key!r} of {path!r} ({err}); neardup reads numeric "
                "or string arrays only, never pickled objects."
            ) from err
    if progress:
        progress(stage, 1, 1)
    return array


def _read_in_blocks(mapped: np.ndarray, stage: str, progress: ProgressFn) -> np.ndarray:
    """Copy a memory-mapped ``.npy`` into memory block by block, reporting rows read."""
    if mapped.ndim == 0 or len(mapped) == 0:
        return np.array(mapped)
    out = np.empty(mapped.shape, dtype=mapped.dtype)
    n = len(mapped)
    step = max(1, _LOAD_CHUNK_BYTES // max(1, mapped[:1].nbytes))
    progress(stage, 0, n)
    for start in range(0, n, step):
        stop = min(start + step, n)
        out[start:stop] = mapped[start:stop]
        progress(stage, stop, n)
    return out


def _npz_labels(path: str) -> np.ndarray | None:
    """The ``y``/``labels`` array of an x/y ``.npz`` (``None`` for anything else)."""
    if not path.endswith(".npz") or not Path(path).exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            key = next((k for k in ("y", "labels") if k in npz.files), None)
            return None if key is None else npz[key]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise NeardupInputError(f"labels in {path!r} cannot be read ({err}).") from err


def _load_ids(spec: str, what: str) -> np.ndarray:
    """Ids from a ``.txt`` file (one per line) or a ``.npy``/``.npz`` array."""
    if spec.endswith(".txt"):
        if not Path(spec).exists():
            raise NeardupInputError(f"{what}: file {spec!r} does not exist.")
        return np.array(read_lines(spec, what), dtype=str)
    return _load_array(spec, what, ("ids",))


def _leak_table(leakage: Mapping[str, Leakage], limit: int = 10) -> str:
    shown = {
        split: list(zip(leak.ids, leak.nearest_ids, leak.distances))[:limit]
        for split, leak in leakage.items()
    }
    cells = [
        (split, str(sid), f"{leakage[split].reference}:{rid}", dist)
        for split, pairs in shown.items()
        for sid, rid, dist in pairs
    ]
    if not cells:
        return ""
    w_id = max(10, *(len(c[1]) for c in cells))  # ids may be file paths: columns fit them
    w_near = max(16, *(len(c[2]) for c in cells))
    rows = [f"  {'split':>8}  {'id':>{w_id}}  {'nearest':<{w_near}}  {'distance':>8}"]
    for split, pairs in shown.items():
        for sid, rid, dist in pairs:
            near = f"{leakage[split].reference}:{rid}"
            rows.append(f"  {split:>8}  {sid!s:>{w_id}}  {near:<{w_near}}  {dist:8.4f}")
        more = leakage[split].count - len(pairs)
        if more > 0:
            rows.append(f"  {'':>8}  ... {more:,} more in {split}")
    return "\n".join(["closest leaked samples:", *rows])


def _scan(args: argparse.Namespace) -> int:
    if args.json and args.json != "-":
        check_writable(args.json, "--json")
    if args.html:
        check_writable(args.html, "--html")
    splits = _named_paths(args.split, "--split")
    labels_paths = _named_paths(args.labels, "--labels")
    unknown = set(labels_paths) - set(splits)
    if unknown:
        raise NeardupInputError(f"--labels names split(s) {sorted(unknown)} not given by --split.")
    progress = ProgressBars(disable=args.quiet)
    samples: Any = None
    ids: dict[str, Any] | None = None
    if any(is_sample_file(p) for p in splits.values()):
        data, ids, labels, samples = _read_samples(splits, labels_paths, progress)
    else:
        data = {
            n: _load_array(p, f"split {n!r}", ("x", "activations"), progress)
            for n, p in splits.items()
        }
        labels = {
            n: _load_array(p, f"labels {n!r}", ("y", "labels")) for n, p in labels_paths.items()
        }
        for name, path in splits.items():  # an x/y pair in one .npz brings its own labels
            if name not in labels:
                own = _npz_labels(path)
                if own is not None:
                    labels[name] = own
    single = len(data) == 1 and samples is None
    result = find_duplicates(
        next(iter(data.values())) if single else data,
        labels=next(iter(labels.values()), None) if single else (labels or None),
        ids=ids,
        threshold=parse_threshold(args.threshold) if args.threshold else None,
        normalize=None if args.normalize == "none" else args.normalize,
        reduce=args.reduce,
        k=args.k,
        backend=args.backend,
        reference=None if args.no_reference else args.reference,
        **_annoy_options(args),
        seed=args.seed,
        progress=progress,
    )
    progress.close()
    if args.html:
        result.to_html(args.html, samples=samples)
    if args.json == "-":
        print(result.to_json())
    else:
        if args.json:
            result.to_json(args.json)
        print(result.summary())
        table = _leak_table(result.leakage)
        if table:
            print(table)
        if args.json:
            print(f"JSON report: {args.json}")
        if args.html:
            print(f"HTML report: {args.html}")
    return _gate(result.leakage, args.fail_above)


def _read_samples(
    splits: Mapping[str, str], labels_paths: Mapping[str, str], progress: ProgressFn
) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], Any]:
    """``(data, ids, labels, samples)`` of splits given as image folders or text files.

    Every split must be of one kind: folders of images get one :class:`AlignedImageView`
    (the same thumbnail side for all splits), text files a :class:`TextView` each (as a view,
    so its word check applies). ``samples`` are the texts, or a function ``(split, id) ->
    image`` that reads an image again at a larger size, for the HTML report.
    """
    folders = {n: Path(p).is_dir() for n, p in splits.items()}
    texts = {n: not folders[n] and p.lower().endswith(".txt") for n, p in splits.items()}
    if not (all(folders.values()) or all(texts.values())):
        kinds = {
            n: "folder" if folders[n] else "text" if texts[n] else "activations" for n in splits
        }
        raise NeardupInputError(
            f"--split: every split must be of one kind, got {kinds}; give each split as a "
            "folder of images, or each as a .txt file (one sample per line), or each as "
            ".npy/.npz activations."
        )
    if labels_paths:
        raise NeardupInputError(
            f"--labels {sorted(labels_paths)}: splits read from folders or text files take no "
            "--labels (an image folder's labels are its class subfolders, "
            "folder/<class>/<image>)."
        )
    if all(texts.values()):
        lines = {n: read_text_lines(p, f"split {n!r}") for n, p in splits.items()}
        view = TextView()
        data = {n: {"text": view(t.texts)} for n, t in lines.items()}
        return (
            data,
            {n: t.ids for n, t in lines.items()},
            {},
            {n: t.texts for n, t in lines.items()},
        )
    read = {n: read_image_folder(p, f"split {n!r}", progress) for n, p in splits.items()}
    greyed_if_grey(list(read.values()))
    largest = max(
        (image for f in read.values() for image in f.images), key=lambda a: max(a.shape[:2])
    )
    view = AlignedImageView(side=AlignedImageView().side_for([largest]))
    data = {n: view(f.images) for n, f in read.items()}
    labels = (
        {n: np.array(f.labels) for n, f in read.items()}
        if all(f.labels is not None for f in read.values())
        else {}
    )
    roots = {n: Path(f.root) for n, f in read.items()}

    def picture(split: str, sample_id: Any) -> np.ndarray:  # the report's few images, larger
        return read_thumbnail(str(roots[split] / str(sample_id)), _REPORT_SIDE)

    return data, {n: f.ids for n, f in read.items()}, labels, picture


def _annoy_options(args: argparse.Namespace) -> dict[str, int]:
    """``--trees``/``--search-k``/``--query-jobs`` for ``scan``: options of ``--backend annoy``
    only (the cell engine has none of them)."""
    if args.backend != "annoy":
        return {}
    return {"n_trees": args.trees, "search_k": args.search_k, "query_jobs": args.query_jobs}


def _gate(leakage: Mapping[str, Leakage], fail_above: float | None) -> int:
    if fail_above is None:
        return 0
    worst = max((leak.fraction for leak in leakage.values()), default=0.0)
    if worst > fail_above:
        print(
            f"neardup: FAIL: leakage {100 * worst:.2f} % exceeds --fail-above "
            f"{100 * fail_above:.2f} %",
            file=sys.stderr,
        )
        return 1
    return 0


def _show(args: argparse.Namespace) -> int:
    result = DuplicatesResult.from_json(args.result)
    print(result.summary())
    table = _leak_table(result.leakage)
    if table:
        print(table)
    return _gate(result.leakage, args.fail_above)


def _report(args: argparse.Namespace) -> int:
    check_writable(args.html, "--html")
    result = DuplicatesResult.from_json(args.result)
    samples = {}
    for name, path in _named_paths(args.samples, "--samples").items():
        if path.endswith(".txt"):
            if not Path(path).exists():
                raise NeardupInputError(f"samples {name!r}: file {path!r} does not exist.")
            samples[name] = read_lines(path, f"samples {name!r}")
        else:
            samples[name] = _load_array(path, f"samples {name!r}", ("x", "images", "text"))
    result.to_html(
        args.html,
        samples=samples or None,
        max_sets=args.max_sets,
        max_pairs=args.max_pairs,
        title=args.title,
    )
    print(f"HTML report: {args.html}")
    return 0


def _labelled(
    data: str, labels: str | None, ids: str | None, what: str, progress: ProgressFn | None = None
) -> tuple:
    """Activations, labels (``--labels`` or the .npz's own ``y``) and ids of one split."""
    x = _load_array(data, what, ("x", "activations"), progress)
    y = _load_array(labels, f"labels of {what}", ("y", "labels")) if labels else _npz_labels(data)
    return x, y, (_load_ids(ids, f"ids of {what}") if ids else None)


def _index_build(args: argparse.Namespace) -> int:
    _check_index_dir(Path(args.index), args.overwrite)
    progress = ProgressBars(disable=args.quiet)
    x, labels, ids = _labelled(
        args.data, args.labels, args.ids, f"reference {args.reference!r}", progress
    )
    index = ReferenceIndex.build(
        x,
        labels=labels,
        ids=ids,
        threshold=parse_threshold(args.threshold) if args.threshold else None,
        normalize=None if args.normalize == "none" else args.normalize,
        reduce=args.reduce,
        k=args.k,
        backend=args.backend,
        seed=args.seed,
        **(
            {"n_trees": args.trees, "query_jobs": args.query_jobs}
            if args.backend == "annoy"
            else {}
        ),
        reference=args.reference,
        progress=progress,
    )
    progress.close()
    index.save(args.index, overwrite=args.overwrite)
    print(f"reference index {args.index}: {_describe(index)}")
    return 0


def _describe(index: ReferenceIndex) -> str:
    s, t = index.settings, index.threshold
    params = ", ".join(f"{k}={v}" for k, v in t.params.items())
    reduce = f", PCA to {s['dim']}" if s["reduce"] is not None else ""
    return (
        f"{index.size:,} {index.reference} samples x {index.dim} features{reduce}\n"
        f"  threshold {t.strategy}({params}) -> distance {t.value:.4g}"
        f"  [normalize={s['normalize']}, {_engine(s)}, k={s['k']}]"
    )


def _engine(settings: dict) -> str:
    """The index's engine in words: annoy's trees, or the cells and their margin."""
    if settings.get("backend", "annoy") == "annoy":
        return f"annoy trees={settings['n_trees']}"
    return (
        f"{settings['backend']}: {settings['n_cells_used']:,} cells, margin "
        f"{settings['margin_used']:g} x threshold, {settings['entries_per_row']:.2f} cells per row"
    )


def _check_index_dir(path: Path, overwrite: bool) -> None:
    """Refuse an INDEX_DIR that ``save`` would refuse, before the index is built."""
    if path.exists() and not path.is_dir():
        raise NeardupInputError(f"INDEX_DIR {str(path)!r} is a file; give a directory.")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        raise NeardupInputError(
            f"INDEX_DIR {str(path)!r}: the directory is not empty; choose a new directory or "
            "pass --overwrite."
        )
    parent = path if path.is_dir() else path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not os.access(parent, os.W_OK | os.X_OK):
        raise NeardupInputError(
            f"INDEX_DIR {str(path)!r} cannot be created: {str(parent)!r} is not writable."
        )


def _index_score(args: argparse.Namespace) -> int:
    if args.json and args.json != "-":
        check_writable(args.json, "--json")
    index = ReferenceIndex.load(args.index)
    x, labels, ids = _labelled(args.data, args.labels, args.ids, f"split {args.split!r}")
    leak = index.score(x, ids=ids, labels=labels, split=args.split, search_k=args.search_k)
    if args.json:
        text = json.dumps(
            {
                "schema": SCHEMA_VERSION,
                "index": str(args.index),
                "threshold": index.threshold.to_dict(),
                "settings": to_plain(index.settings),
                "leakage": {leak.split: leak.to_dict()},
            },
            indent=1,
            allow_nan=False,
        )
        if args.json == "-":
            print(text)
            return _gate({leak.split: leak}, args.fail_above)
        write_text_atomically(args.json, text)
    print(f"reference index {args.index}: {_describe(index)}")
    print(f"  {leak.sentence()}")
    table = _leak_table({leak.split: leak})
    if table:
        print(table)
    if args.json:
        print(f"JSON report: {args.json}")
    return _gate({leak.split: leak}, args.fail_above)


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{text} is not a fraction in [0, 1] (0.01 = 1 %)")
    return value


_EXIT_GATED = (
    "Exit codes: 0 success, 1 leakage above --fail-above, 2 bad input. 3 internal error (a bug, "
    "out of memory, a full disk). Output files are written atomically: the old file or the "
    "new, never a part."
)
_EXIT_PLAIN = (
    "Exit codes: 0 success, 2 bad input. 3 internal error (a bug, out of memory, a full "
    "disk). Output files are written atomically: the old file or the new, never a part."
)


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="neardup",
        description="Find near-duplicate samples and train/test leakage.",
        epilog=_EXIT_GATED,
    )
    parser.add_argument("--version", action="version", version=f"neardup {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    scan = sub.add_parser(
        "scan",
        help="analyse activations (.npy/.npz), folders of images or text files, one per split",
        description="Analyse activations stored as .npy/.npz files, folders of images, or "
        "text files (one sample per line), one per split. Images and texts are analysed with "
        "the default input views (AlignedImageView, TextView).",
        epilog=_EXIT_GATED,
    )
    scan.add_argument(
        "--split",
        action="append",
        required=True,
        metavar="NAME=PATH[:KEY]",
        help="one split (repeat per split): activations in a .npy/.npz (its only array, "
        "'x'/'activations', or KEY), a folder of images (read recursively; class subfolders "
        "give labels), or a .txt file with one text per line",
    )
    scan.add_argument(
        "--labels",
        action="append",
        default=[],
        metavar="NAME=PATH[:KEY]",
        help="labels of one split (a .npz split with a 'y'/'labels' array provides them itself)",
    )
    _add_analysis_arguments(scan, index=False)
    scan.add_argument(
        "--backend",
        choices=["auto", "cells", "annoy", "exact"],
        default="auto",
        help="auto/cells: exact pairs from the cell engine (default); annoy: approximate kNN "
        "graph (--trees, --query-jobs, --search-k apply to it); exact: brute-force kNN graph",
    )
    scan.add_argument(
        "--search-k",
        type=_option("search_k"),
        default=-1,
        help="with --backend annoy: search_k (default -1)",
    )
    scan.add_argument(
        "--reference", default="train", help="split the others are checked against (default train)"
    )
    scan.add_argument("--no-reference", action="store_true", help="skip the leakage analysis")
    scan.add_argument("--json", metavar="PATH", help="write the full result as JSON ('-': stdout)")
    scan.add_argument(
        "--html",
        metavar="PATH",
        help="write the HTML report (with thumbnails or texts for folders and text files)",
    )
    scan.add_argument(
        "--fail-above",
        type=_fraction,
        metavar="FRACTION",
        help="exit with status 1 when any split's leakage fraction exceeds this",
    )
    scan.set_defaults(run=_scan)
    show = sub.add_parser(
        "show",
        help="print the summary of a saved JSON result",
        description="Print the summary and the closest leaked pairs of a saved JSON result.",
        epilog=_EXIT_GATED,
    )
    show.add_argument("result", help="a JSON file written by scan --json or result.to_json()")
    show.add_argument("--fail-above", type=_fraction, metavar="FRACTION")
    show.set_defaults(run=_show)
    report = sub.add_parser(
        "report",
        help="render a saved JSON result as a self-contained HTML page",
        description="Render a saved JSON result as one self-contained HTML page.",
        epilog=_EXIT_PLAIN,
    )
    report.add_argument("result", help="a JSON file written by scan --json or result.to_json()")
    report.add_argument("--html", required=True, metavar="PATH", help="the page to write")
    report.add_argument(
        "--samples",
        action="append",
        default=[],
        metavar="NAME=PATH[:KEY]",
        help="thumbnails of one split, in the analysed order: images in .npy/.npz, or a .txt "
        "file with one text per line (repeat per split)",
    )
    report.add_argument("--max-sets", type=int, default=200, help="sets shown (default 200)")
    report.add_argument(
        "--max-pairs", type=int, default=200, help="leaked pairs shown per split (default 200)"
    )
    report.add_argument("--title", help="page title")
    report.set_defaults(run=_report)
    _index_parser(sub)
    return parser


_INDEX_HELP = """\
Build a reference index once from the reference (training) split, save it as a directory,
and score new data against it later, anywhere, without rebuilding it.

The transform (PCA, normalisation) is fitted on the reference alone and the threshold is
resolved once, at build time, on the reference's own neighbours; every later score uses
that same fixed distance, so batches scored on different days are judged alike.

  neardup index build train.npz ref_index/ --threshold cosine:0.98
  neardup index score ref_index/ new_batch.npy --fail-above 0.01 --json leak.json

"""


def _add_labels_and_ids(parser: argparse.ArgumentParser) -> None:
    """``--labels`` and ``--ids`` of the ``index`` subcommands."""
    parser.add_argument(
        "--labels", metavar="PATH[:KEY]", help="labels (an x/y .npz provides its own 'y')"
    )
    parser.add_argument("--ids", metavar="PATH", help="ids: .npy/.npz array or .txt, one per line")


def _add_analysis_arguments(parser: argparse.ArgumentParser, *, index: bool) -> None:
    """The options ``scan`` and ``index build`` share (``index``: worded for a saved index)."""
    parser.add_argument(
        "--threshold",
        metavar="NAME[:VALUE]",
        help=(
            "relative[:0.2] (default), auto[:0.1], cosine:S, distance:D, percentile:P, slope[:5]"
            "; resolved now, on the reference, and fixed for every score"
            if index
            else "auto[:0.1] (default), relative[:0.2], cosine:S, distance:D, percentile:P, "
            "slope[:5]"
        ),
    )
    parser.add_argument("--normalize", choices=["row", "column", "none"], default="row")
    parser.add_argument(
        "--reduce",
        type=int,
        metavar="N",
        help="PCA (of the reference) to N dims" if index else "PCA to N dimensions first",
    )
    parser.add_argument(
        "--k",
        type=_option("k"),
        default=10,
        help=f"neighbours{' / candidates' if index else ''} per sample (default 10)",
    )
    parser.add_argument(
        "--trees",
        type=_option("n_trees"),
        default=DEFAULT_TREES,
        help=f"annoy trees (default {DEFAULT_TREES}; DNIKit used 30)",
    )
    parser.add_argument(
        "--query-jobs",
        type=_option("query_jobs"),
        default=-1,
        help="processes querying annoy (-1: one per CPU; the result is the same for any value)",
    )
    parser.add_argument("--seed", type=_option("seed"), default=0)
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")


def _index_parser(sub: argparse._SubParsersAction) -> None:
    """``neardup index build`` and ``neardup index score``."""
    index = sub.add_parser(
        "index",
        help="build a saved reference index from train, then score new data against it",
        description=_INDEX_HELP,
        epilog=_EXIT_GATED,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = index.add_subparsers(dest="action", required=True)
    build = actions.add_parser(
        "build",
        help="index the reference activations and save the index directory",
        description="Index the reference activations (.npy/.npz) and save the index in "
        "INDEX_DIR (cells or annoy index, vectors, transform, ids, labels and meta.json; no "
        "pickle).",
        epilog=_EXIT_PLAIN,
    )
    build.add_argument("data", metavar="TRAIN", help="reference activations: PATH[:KEY]")
    build.add_argument("index", metavar="INDEX_DIR", help="directory to write (created)")
    _add_labels_and_ids(build)
    _add_analysis_arguments(build, index=True)
    build.add_argument(
        "--backend",
        choices=["auto", "cells", "annoy", "exact"],
        default="auto",
        help="auto/cells: k-means cells, each batch joined exactly in its cells (default); "
        "annoy: annoy proposes candidates (--trees, --query-jobs apply to it); exact: one cell",
    )
    build.add_argument(
        "--reference", default="train", help="name of the reference split (default train)"
    )
    build.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the index in a non-empty INDEX_DIR (checked before any computing)",
    )
    build.set_defaults(run=_index_build)

    score = actions.add_parser(
        "score",
        help="score new activations against a saved index",
        description="Report the samples of DATA that have a near-duplicate in the index's "
        "reference split, at the threshold fixed when the index was built.",
        epilog=_EXIT_GATED,
    )
    score.add_argument("index", metavar="INDEX_DIR", help="written by neardup index build")
    score.add_argument("data", metavar="DATA", help="new activations: PATH[:KEY]")
    _add_labels_and_ids(score)
    score.add_argument("--split", default="new", help="name of the new data (default new)")
    score.add_argument(
        "--search-k",
        type=_option("search_k"),
        default=-1,
        help="for an index built with --backend annoy: search_k (-1: trees x k; more misses less)",
    )
    score.add_argument("--json", metavar="PATH", help="write the leakage as JSON ('-': stdout)")
    score.add_argument(
        "--fail-above",
        type=_fraction,
        metavar="FRACTION",
        help="exit with status 1 when the leaked fraction exceeds this",
    )
    score.set_defaults(run=_index_score)


_NAMED_OPTIONS = ("--split", "--labels", "--samples")


def _explain_extra_arguments(argv: Sequence[str], extra: Sequence[str]) -> str:
    """Why ``extra`` was left over: most often ``--split train x.npy`` for ``train=x.npy``."""
    for option, value in itertools.pairwise(argv):
        if option in _NAMED_OPTIONS and "=" not in value and value in argv:
            follows = argv[argv.index(value) + 1 :][:1]
            path = follows[0] if follows and follows[0] in extra else "PATH"
            return (
                f"{option} {value} {path}: {option} takes one NAME=PATH argument, with no "
                f"space around '=': write {option} {value}={path}."
            )
    return f"unrecognized arguments: {' '.join(extra)}"


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``neardup`` command; returns the exit status.

    0 success, 1 leakage above ``--fail-above``, 2 bad input (argparse exits with 2 too),
    3 anything else (the traceback is printed: it is a bug or a failure of the system).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        parser.error(_explain_extra_arguments(argv, extra))
    try:
        return int(args.run(args))
    except NeardupInputError as err:
        print(f"neardup: error: {err}", file=sys.stderr)
        return EXIT_INPUT
    except KeyboardInterrupt:
        print("neardup: interrupted", file=sys.stderr)
        return 130
    except MemoryError:
        print(
            "neardup: internal error: out of memory; use reduce=, a memory budget, or a "
            "machine with more memory.",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
    except OSError as err:
        print(f"neardup: internal error: {err}", file=sys.stderr)
        return EXIT_INTERNAL
    except Exception:
        traceback.print_exc()
        print(
            "neardup: internal error (exit 3): this is a bug in neardup; please report it with "
            "the traceback above.",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
