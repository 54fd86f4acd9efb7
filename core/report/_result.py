"""Result objects: plain data, printable, and serialisable to JSON (never pickled)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._atomic import write_text_atomically
from .._errors import NeardupInputError
from .._plain import to_plain
from .._threshold import ResolvedThreshold

__all__ = ["SCHEMA_VERSION", "DuplicateSet", "DuplicatesResult", "Leakage", "to_plain"]

SCHEMA_VERSION = 1


def _counts_to_json(counts: dict[str, dict[Any, int]]) -> dict[str, list[list[Any]]]:
    # labels may be ints or strings: keep them as values, not as (stringified) JSON keys
    return {s: [[to_plain(lab), int(n)] for lab, n in c.items()] for s, c in counts.items()}


def _counts_from_json(counts: dict[str, list[list[Any]]]) -> dict[str, dict[Any, int]]:
    return {s: {lab: n for lab, n in pairs} for s, pairs in counts.items()}


@dataclass
class DuplicateSet:
    """One set of near-duplicate samples (a connected component of close pairs).

    Members are listed in the order of their first principal component (sets of 3+), so
    similar samples sit side by side. ``mean``/``std``: distance of the members to the set's
    centroid in the analysed feature space (lower = tighter). ``diameter``: the largest exact
    distance between two members (in a multi-view result, in threshold units: the smallest
    over views of distance / threshold, so <= 1 means every member pair is itself a
    near-duplicate); a set much wider than the threshold is a chain (see ``max_diameter=``).
    ``central``: index (into the member lists) of the member nearest the set's centroid.
    """

    ids: list[Any]
    splits: list[str]
    positions: list[int]  # row of each member within its split
    labels: list[Any] | None
    mean: float
    std: float
    projection: np.ndarray | None = None  # (size, 2) for sets of more than 5 members
    diameter: float | None = None
    central: int = 0

    @property
    def size(self) -> int:
        return len(self.ids)

    @property
    def spans_splits(self) -> bool:
        return len(set(self.splits)) > 1

    def to_dict(self) -> dict[str, Any]:
        return {
            "ids": to_plain(self.ids),
            "splits": list(self.splits),
            "positions": [int(p) for p in self.positions],
            "labels": to_plain(self.labels),
            "size": self.size,
            "mean": float(self.mean),
            "std": float(self.std),
            "projection": None if self.projection is None else to_plain(self.projection),
            "diameter": None if self.diameter is None else float(self.diameter),
            "central": int(self.central),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DuplicateSet:
        proj = d.get("projection")
        return cls(
            ids=list(d["ids"]),
            splits=list(d["splits"]),
            positions=list(d["positions"]),
            labels=d.get("labels"),
            mean=float(d["mean"]),
            std=float(d["std"]),
            projection=None if proj is None else np.asarray(proj, dtype=np.float32),
            diameter=None if d.get("diameter") is None else float(d["diameter"]),
            central=int(d.get("central", 0)),
        )


@dataclass
class Leakage:
    """Samples of one evaluation split with a near-duplicate in the reference split.

    ``ids[i]`` leaks through ``nearest_ids[i]`` (its nearest reference sample) at
    ``distances[i]``, sorted closest first; ``positions`` / ``nearest_positions`` are the rows
    of those samples within their splits. ``fraction = count / total``. ``by_class`` maps a
    label to ``{"count", "total", "fraction"}``; ``label_conflicts`` lists leaked pairs whose
    labels differ (a labelling error on one side, or a genuinely ambiguous sample).

    In a result of several views, ``distances`` are in threshold units (the pair's smallest
    distance / threshold over the views, <= 1), ``found_by[i]`` lists the views in which pair
    ``i`` is within its threshold, and ``view_distances[view][i]`` is its distance in each view.
    """

    split: str
    reference: str
    ids: list[Any]
    nearest_ids: list[Any]
    distances: np.ndarray
    total: int
    positions: list[int] = field(default_factory=list)
    nearest_positions: list[int] = field(default_factory=list)
    by_class: dict[Any, dict[str, float]] = field(default_factory=dict)
    label_conflicts: list[dict[str, Any]] = field(default_factory=list)
    found_by: list[list[str]] = field(default_factory=list)
    view_distances: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.ids)

    @property
    def fraction(self) -> float:
        return self.count / self.total if self.total else 0.0

    def sentence(self) -> str:
        """One line: ``leakage test -> train: 12 of 500 samples (2.40 %) have a …``."""
        conflicts = (
            f", {len(self.label_conflicts)} with a different label" if self.label_conflicts else ""
        )
        return (
            f"leakage {self.split} -> {self.reference}: {self.count:,} of {self.total:,} "
            f"samples ({100 * self.fraction:.2f} %) have a near-duplicate in "
            f"{self.reference}{conflicts}"
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "reference": self.reference,
            "count": self.count,
            "total": self.total,
            "fraction": self.fraction,
            "ids": to_plain(self.ids),
            "nearest_ids": to_plain(self.nearest_ids),
            "distances": to_plain(np.asarray(self.distances, dtype=np.float64)),
            "positions": [int(p) for p in self.positions],
            "nearest_positions": [int(p) for p in self.nearest_positions],
            "by_class": [[to_plain(k), to_plain(v)] for k, v in self.by_class.items()],
            "label_conflicts": to_plain(self.label_conflicts),
            "found_by": [list(v) for v in self.found_by],
            "view_distances": {
                v: to_plain(np.asarray(d, dtype=np.float64)) for v, d in self.view_distances.items()
            },
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Leakage:
        return cls(
            split=d["split"],
            reference=d["reference"],
            ids=list(d["ids"]),
            nearest_ids=list(d["nearest_ids"]),
            distances=np.asarray(d["distances"], dtype=np.float32),
            total=int(d["total"]),
            positions=list(d.get("positions", [])),
            nearest_positions=list(d.get("nearest_positions", [])),
            by_class={k: v for k, v in d.get("by_class", [])},
            label_conflicts=list(d.get("label_conflicts", [])),
            found_by=[list(v) for v in d.get("found_by", [])],
            view_distances={
                v: np.asarray(x, dtype=np.float32) for v, x in d.get("view_distances", {}).items()
            },
        )


@dataclass
class DuplicatesResult:
    """Everything :func:`neardup.find_duplicates` found for one layer.

    Attributes
    ----------
    clusters: duplicate sets, tightest (smallest ``mean``) first.
    leakage: eval split -> :class:`Leakage` against ``reference`` (empty with one split).
    threshold: the strategy and the distance ``threshold.value`` it resolved to.
    split_sizes: samples per split, in input order.
    class_counts / effective_class_counts: per split, label -> samples before / after
        collapsing each duplicate set to one member (per label). Without labels, the only
        key is ``None``.
    histogram: nearest-neighbour distances (``edges``, ``within`` and ``cross`` split counts).
    settings: the options the analysis ran with (normalize, reduce, k, backend, ...).
    views: with several views, view -> that view's own result (the attributes above then
        hold the combined verdict, in threshold units); empty for a single view.
    """

    split_sizes: dict[str, int]
    reference: str | None
    threshold: ResolvedThreshold
    clusters: list[DuplicateSet]
    leakage: dict[str, Leakage]
    class_counts: dict[str, dict[Any, int]]
    effective_class_counts: dict[str, dict[Any, int]]
    histogram: dict[str, list[float]]
    settings: dict[str, Any]
    layer: str | None = None
    views: dict[str, DuplicatesResult] = field(default_factory=dict)

    @property
    def num_samples(self) -> int:
        return sum(self.split_sizes.values())

    @property
    def num_duplicated(self) -> int:
        """Samples that belong to some duplicate set."""
        return sum(c.size for c in self.clusters)

    def summary(self) -> str:
        """A short, human-readable report."""
        sizes = " · ".join(f"{s} {n:,}" for s, n in self.split_sizes.items())
        where = f" [{self.layer}]" if self.layer else ""
        s = self.settings
        lines = [
            f"neardup{where}: {self.num_samples:,} samples ({sizes}), {s.get('dim')} features",
            f"  threshold {self.threshold.strategy}"
            f"({', '.join(f'{k}={v}' for k, v in self.threshold.params.items())})"
            f" -> distance {self.threshold.value:.4g}"
            f"  [normalize={s.get('normalize')}, backend={s.get('backend')}, k={s.get('k')}]",
        ]
        if self.threshold.reason and not self.views:
            lines.append(f"  why: {self.threshold.reason}")
        for name, view in self.views.items():
            found = sum(name in f for leak in self.leakage.values() for f in leak.found_by)
            lines.append(
                f"  view {name}: {view.threshold.strategy} -> distance "
                f"{view.threshold.value:.4g}; {found} leaked pairs found in it"
                + (f" ({view.threshold.reason})" if view.threshold.reason else "")
            )
        spanning = sum(c.spans_splits for c in self.clusters)
        lines.append(
            f"  duplicate sets: {len(self.clusters):,} holding {self.num_duplicated:,} samples"
            + (f" ({spanning:,} span splits)" if len(self.split_sizes) > 1 else "")
        )
        lines += [f"  {leak.sentence()}" for leak in self.leakage.values()]
        for split in self.split_sizes:
            raw = sum(self.class_counts.get(split, {}).values())
            eff = sum(self.effective_class_counts.get(split, {}).values())
            if raw != eff:
                lines.append(f"  {split}: {raw:,} samples, {eff:,} after collapsing duplicates")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def _repr_html_(self) -> str:
        """A compact, escaped summary shown inline by Jupyter (no thumbnails)."""
        from ._html import render_html_fragment

        return render_html_fragment(self)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (labels and ids keep their int/str types)."""
        return {
            "schema": SCHEMA_VERSION,
            "layer": self.layer,
            "split_sizes": dict(self.split_sizes),
            "reference": self.reference,
            "threshold": self.threshold.to_dict(),
            "settings": to_plain(self.settings),
            "clusters": [c.to_dict() for c in self.clusters],
            "leakage": {s: leak.to_dict() for s, leak in self.leakage.items()},
            "class_counts": _counts_to_json(self.class_counts),
            "effective_class_counts": _counts_to_json(self.effective_class_counts),
            "histogram": to_plain(self.histogram),
            "views": {name: view.to_dict() for name, view in self.views.items()},
        }

    def to_json(self, path: str | os.PathLike[str] | None = None, *, indent: int = 1) -> str:
        """Return the JSON text; also write it to ``path`` when given."""
        try:
            text = json.dumps(self.to_dict(), indent=indent, allow_nan=False)
        except (TypeError, ValueError) as err:
            raise NeardupInputError(
                f"the result cannot be written as JSON ({err}); ids and labels must be ints or "
                "strings (no NaN or None)."
            ) from err
        if path is not None:
            write_text_atomically(path, text)  # the old file stays whole until the rename
        return text

    def keep_mask(self, *, keep: str = "first") -> dict[str, np.ndarray]:
        """Per split, a bool ``(n_split,)`` mask of the samples a clean export keeps.

        Every sample outside the duplicate sets is kept; of each set exactly one member is,
        chosen by ``keep``:

        - ``"first"``: the first member in split order (the order of ``split_sizes``), then
          by position within the split;
        - ``"centroid"``: the member nearest the set's centroid (``DuplicateSet.central``);
        - ``"reference"``: a member of the reference split when the set has one (the first
          such), otherwise the first member. Evaluation samples that leak into the reference
          split are then dropped and the reference is kept whole where possible.

        The choice depends only on the result, so the export is the same on every run.
        """
        from .._params import check_option

        keep = check_option("keep", keep, where="keep_mask")
        split_order = {name: i for i, name in enumerate(self.split_sizes)}
        masks = {name: np.ones(n, dtype=bool) for name, n in self.split_sizes.items()}
        for dup in self.clusters:
            members = sorted(
                range(dup.size), key=lambda m: (split_order[dup.splits[m]], dup.positions[m])
            )
            chosen = members[0]
            if keep == "centroid":
                chosen = dup.central
            elif keep == "reference":
                in_reference = [m for m in members if dup.splits[m] == self.reference]
                chosen = in_reference[0] if in_reference else members[0]
            for m in range(dup.size):
                if m != chosen:
                    masks[dup.splits[m]][dup.positions[m]] = False
        return masks

    def to_html(
        self,
        path: str | os.PathLike[str] | None,
        *,
        samples: Any = None,
        **options: Any,
    ) -> str:
        """Write a self-contained HTML report to ``path`` (``None``: only return the text).

        ``samples``: ``split -> sequence`` indexed by position within the split (images or
        strings) or a callable ``(split, id) -> image or text``, for thumbnails. ``options``:
        ``max_sets``, ``max_pairs``, ``max_members``, ``thumbnail_size``, ``thumbnail_budget``,
        ``title`` (see :func:`neardup.report.render_html`).
        """
        from ._html import render_html

        return render_html(self, path, samples=samples, **options)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DuplicatesResult:
        return cls(
            split_sizes=dict(d["split_sizes"]),
            reference=d.get("reference"),
            threshold=ResolvedThreshold.from_dict(d["threshold"]),
            clusters=[DuplicateSet.from_dict(c) for c in d["clusters"]],
            leakage={s: Leakage.from_dict(v) for s, v in d["leakage"].items()},
            class_counts=_counts_from_json(d["class_counts"]),
            effective_class_counts=_counts_from_json(d["effective_class_counts"]),
            histogram=dict(d["histogram"]),
            settings=dict(d["settings"]),
            layer=d.get("layer"),
            views={name: cls.from_dict(v) for name, v in d.get("views", {}).items()},
        )

    @classmethod
    def from_json(cls, path: str | os.PathLike[str]) -> DuplicatesResult:
        """Load a result written by :meth:`to_json`.

        Raises
        ------
        NeardupInputError
            When the file is missing, is not JSON, was written by a newer neardup (a higher
            ``"schema"``), or does not hold a result (wrong types, missing fields, numbers
            out of range).
        """
        where = str(path)
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, UnicodeDecodeError) as err:
            raise NeardupInputError(f"cannot read {where!r}: {err}") from err
        except (ValueError, RecursionError) as err:
            raise NeardupInputError(f"{where!r} is not valid JSON ({err}).") from err
        if not isinstance(data, dict):
            raise NeardupInputError(
                f"{where!r} holds a JSON {type(data).__name__}, not a neardup result object."
            )
        schema = data.get("schema")
        if not (isinstance(schema, int) and not isinstance(schema, bool)) or schema < 1:
            raise NeardupInputError(f'{where!r} has no valid "schema" version ({schema!r}).')
        if schema > SCHEMA_VERSION:
            raise NeardupInputError(
                f"{where!r} was written with result schema {schema}; this neardup reads schema "
                f"{SCHEMA_VERSION} and older. Upgrade neardup to read it."
            )
        try:
            result = cls.from_dict(data)
            json.dumps(result.to_dict(), allow_nan=False)  # every field of a plain type
            result.summary()
        except (KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError) as err:
            detail = f"missing field {err}" if isinstance(err, KeyError) else str(err)[:200]
            raise NeardupInputError(
                f"{where!r} is not a valid neardup result ({type(err).__name__}: {detail}); "
                "use a file written by `neardup scan --json` or DuplicatesResult.to_json()."
            ) from err
        return result
