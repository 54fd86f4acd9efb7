"""A self-contained HTML report of one :class:`~neardup.DuplicatesResult`.

One file that opens offline: no scripts, fonts or images from elsewhere; thumbnails are inline
PNGs, charts are inline SVG drawn from the result's numbers, and the "sets spanning splits"
filter is a CSS-only checkbox. Everything user-supplied (ids, labels, split and layer names,
text samples) goes through :func:`html.escape`. The page size is bounded by ``max_sets``,
``max_pairs``, ``max_members`` and ``thumbnail_budget``, not by the number of samples.
"""

from __future__ import annotations

import datetime
import math
import os
import zlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from html import escape
from typing import TYPE_CHECKING, Any

from .._atomic import write_text_atomically
from .._errors import NeardupInputError
from ._thumbnails import SampleSource

if TYPE_CHECKING:
    from ._result import DuplicateSet, DuplicatesResult, Leakage

__all__ = ["render_html", "render_html_fragment", "split_color"]

# One colour per split name, the same in every report: the usual names are fixed, any other
# name gets a colour from its hash. The charts use none of these colours for anything else.
_SPLIT_COLORS = {
    "train": "#1f77b4",
    "training": "#1f77b4",
    "val": "#2ca02c",
    "valid": "#2ca02c",
    "validation": "#2ca02c",
    "dev": "#2ca02c",
    "test": "#ff7f0e",
    "testing": "#ff7f0e",
}
_OTHER_SPLIT_COLORS = ("#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f3b08", "#1b9e77")
# histogram: same split (grey) / another split (purple, as the "spans splits" badge);
# class bars: before (light grey) / after (dark grey); threshold: red
_WITHIN, _CROSS, _BEFORE, _AFTER, _THRESHOLD = "#9aa5b1", "#6f42c1", "#d0d7de", "#57606a", "#d62728"


def split_color(split: str) -> str:
    """The colour of a split in every report: fixed for train/val/test, hashed otherwise."""
    fixed = _SPLIT_COLORS.get(str(split).lower())
    if fixed is not None:
        return fixed
    return _OTHER_SPLIT_COLORS[zlib.crc32(str(split).encode("utf-8")) % len(_OTHER_SPLIT_COLORS)]


_MAX_HIDDEN_MEMBERS = 40  # members behind "show more" in one set
_MAX_CHART_LABELS = 40

_CSS = """
:root{--fg:#1b1f24;--muted:#5b6570;--line:#d8dee4;--bg:#fff;--soft:#f5f7f9;--warn:#b3261e}
*{box-sizing:border-box}
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:var(--fg);
 background:var(--bg);margin:0 auto;max-width:1200px;padding:16px 24px 48px}
h1{font-size:22px;margin:8px 0 4px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid
 var(--line);padding-bottom:4px}h3{font-size:15px;margin:16px 0 6px}
.muted,.more{color:var(--muted)}.more{font-style:italic}
table.figures{border-collapse:collapse;margin:8px 0}
table.figures td,table.figures th{border:1px solid var(--line);padding:4px 10px;text-align:left}
table.figures th{background:var(--soft);font-weight:600}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.cards{display:flex;flex-wrap:wrap;gap:10px;margin:10px 0}
.card{border:1px solid var(--line);border-radius:8px;padding:8px 14px;background:var(--soft)}
.card b{display:block;font-size:20px}.card.bad b{color:var(--warn)}
svg.chart{display:block;max-width:100%;height:auto;margin:6px 0}
svg text{font:11px system-ui,sans-serif;fill:#333}
.legend span{display:inline-block;margin-right:14px}
.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px}
.badge{display:inline-block;border-radius:9px;padding:0 7px;font-size:12px;color:#fff;
 background:#6a737d;white-space:nowrap;max-width:160px;overflow:hidden;text-overflow:ellipsis;
 vertical-align:middle}
.badge.label{background:#eaeef2;color:var(--fg);border:1px solid var(--line)}
.badge.warn{background:var(--warn)}.badge.span{background:#6f42c1}
figure.member{margin:0;display:inline-flex;flex-direction:column;align-items:center;gap:3px;
 padding:6px;border:1px solid var(--line);border-radius:6px;background:var(--bg);
 min-width:84px;max-width:260px;vertical-align:top}
figcaption{font-size:12px;text-align:center;word-break:break-all}
img.thumb{height:64px;width:auto;image-rendering:pixelated;background:#000}
.text{font:12px/1.35 ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap;
 overflow-wrap:anywhere;background:var(--soft);padding:4px 6px;border-radius:4px;width:220px;
 max-width:100%;max-height:9em;overflow:hidden;text-align:left}
.nothumb{font-size:11px;color:var(--muted)}
.members{display:flex;flex-wrap:wrap;gap:6px;align-items:flex-start}
details.rest{margin-top:6px}details.rest summary{cursor:pointer;color:var(--muted)}
#sets{display:flex;flex-wrap:wrap;gap:10px;align-items:flex-start}
section.set{border:1px solid var(--line);border-radius:8px;padding:8px 10px;
 background:var(--soft);flex:0 1 auto;max-width:100%}
section.set.spans{border-left:4px solid #6f42c1}
.set h3{margin:0 0 6px;font-size:14px;font-weight:600}
.pairs{display:grid;grid-template-columns:repeat(auto-fill,minmax(370px,1fr));gap:8px}
.pairs.texts{grid-template-columns:repeat(auto-fill,minmax(560px,1fr))}
.pair>figure.member{flex:1 1 0;min-width:0;max-width:none}
.pair{display:flex;align-items:center;gap:10px;padding:6px;border:1px solid var(--line);
 border-radius:8px}
.pair.conflict{background:#fdecea}
.pair .dist{min-width:110px;text-align:center;font-variant-numeric:tabular-nums}
.pair .views{font-size:11px;color:#666;margin-top:4px;text-align:left}
.pair .view.found{color:#1a7f37;font-weight:600}
.filterbox{margin:6px 0 10px;padding:6px 10px;background:#eef2ff;border-radius:6px;
 display:inline-block}
#only-spanning:checked ~ #sets > section.set:not(.spans){display:none}
.footer{margin-top:32px}
.classcharts{display:flex;flex-wrap:wrap;gap:8px 40px}
"""


def render_html(
    result: DuplicatesResult,
    path: str | os.PathLike[str] | None = None,
    *,
    samples: Mapping[str, Sequence[Any]] | Callable[[str, Any], Any] | None = None,
    max_sets: int = 200,
    max_pairs: int = 200,
    max_members: int = 8,
    thumbnail_size: int = 64,
    thumbnail_budget: int = 4_000_000,
    title: str | None = None,
) -> str:
    """Render ``result`` as one self-contained HTML page; write it to ``path`` when given.

    Parameters
    ----------
    samples:
        Thumbnails: a mapping ``split -> sequence`` indexed by position within the split (an
        array of images — HW, HWC or CHW, grayscale or RGB, uint8 or float — or a list of
        strings), or a callable ``(split, id) -> image or text``. ``None``: ids only.
    max_sets, max_pairs:
        At most this many duplicate sets (tightest first) and leaked pairs per eval split
        (closest first) are shown; the page says how many more there are.
    max_members:
        Members of a set shown at once; the next ones (up to 40) sit behind "show more".
    thumbnail_size, thumbnail_budget:
        Longer side (pixels) images are reduced to, and the total bytes of inline thumbnails
        after which samples show their id only.

    Returns
    -------
    str: the HTML text.
    """
    _check_options(max_sets, max_pairs, max_members, thumbnail_size, thumbnail_budget)
    source = SampleSource(
        samples, result.split_sizes, max_side=thumbnail_size, budget=thumbnail_budget
    )
    page = _Page(result, source, max_sets=max_sets, max_pairs=max_pairs, max_members=max_members)
    text = page.render(title)
    if path is not None:
        write_text_atomically(path, text)  # the old page stays whole until the rename
    return text


_FRAGMENT_CSS = """
.neardup{font:13px/1.4 system-ui,sans-serif;max-width:900px}
.neardup table{border-collapse:collapse;margin:4px 0}
.neardup td,.neardup th{border:1px solid #d8dee4;padding:2px 8px;text-align:left}
.neardup th{background:#f5f7f9}.neardup td.num{text-align:right}
.neardup .badge{display:inline-block;border-radius:9px;padding:0 7px;font-size:12px;color:#fff}
.neardup .bad{color:#b3261e;font-weight:600}.neardup .muted{color:#5b6570}
"""


def render_html_fragment(result: DuplicatesResult, *, max_rows: int = 10) -> str:
    """A compact HTML summary of ``result`` for a notebook cell (``_repr_html_``).

    One ``<div class="neardup">`` with its own scoped styles: the figures per split, the
    threshold, the closest ``max_rows`` leaked pairs per eval split and the ``max_rows``
    tightest duplicate sets, as text (no thumbnails). Every user-supplied value is escaped.
    """
    r = result
    t = r.threshold
    params = ", ".join(f"{_e(k)}={_e(v)}" for k, v in t.params.items())
    badge = {
        s: f'<span class="badge" style="background:{split_color(s)}">{_e(s)}</span>'
        for s in r.split_sizes
    }

    def split_badge(split: str) -> str:
        return badge.get(split) or _e(split)

    rows = []
    for split, n in r.split_sizes.items():
        leak = r.leakage.get(split)
        leaked = "reference" if split == r.reference else "—"
        if leak is not None:
            cls = ' class="num bad"' if leak.count else ' class="num"'
            leaked = f"<span{cls}>{leak.count:,} ({100 * leak.fraction:.2f} %)</span>"
        rows.append(
            f"<tr><td>{split_badge(split)}</td><td class='num'>{n:,}</td><td>{leaked}</td></tr>"
        )
    layer = f" · layer {_e(r.layer)}" if r.layer else ""
    parts = [
        f"<style>{_FRAGMENT_CSS}</style><div class='neardup'><b>neardup result{layer}</b>",
        f"<table><tr><th>split</th><th>samples</th><th>leaked into {_e(r.reference)}</th></tr>"
        f"{''.join(rows)}</table>",
        f"<div>threshold {_e(t.strategy)}({params}) → distance {_fmt(t.value)} · "
        f"{len(r.clusters):,} duplicate sets holding {r.num_duplicated:,} samples</div>",
    ]
    for split, leak in r.leakage.items():
        if not leak.count:
            continue
        pairs = "".join(
            f"<tr><td>{_e(sid)}</td><td>{_e(rid)}</td><td class='num'>{_fmt(float(d))}</td></tr>"
            for sid, rid, d in list(zip(leak.ids, leak.nearest_ids, leak.distances))[:max_rows]
        )
        more = leak.count - min(leak.count, max_rows)
        tail = f"<div class='muted'>… {more:,} more</div>" if more > 0 else ""
        parts.append(
            f"<div>closest leaked {split_badge(split)} samples</div><table><tr>"
            f"<th>{_e(split)} id</th><th>nearest {_e(leak.reference)} id</th><th>distance</th>"
            f"</tr>{pairs}</table>{tail}"
        )
    if r.clusters:
        sets = []
        for c in r.clusters[:max_rows]:
            members = ", ".join(f"{_e(s)}:{_e(i)}" for s, i in list(zip(c.splits, c.ids))[:6])
            members += " …" if c.size > 6 else ""
            sets.append(
                f"<tr><td class='num'>{c.size:,}</td><td class='num'>{_fmt(c.mean)}"
                f"</td><td>{members}</td></tr>"
            )
        more = len(r.clusters) - len(sets)
        tail = f"<div class='muted'>… {more:,} more sets</div>" if more > 0 else ""
        parts.append(
            "<div>tightest duplicate sets</div><table><tr><th>size</th>"
            f"<th>mean distance</th><th>members (split:id)</th></tr>{''.join(sets)}"
            f"</table>{tail}"
        )
    parts.append(
        "<div class='muted'>result.to_html(path, samples=...) writes the full report</div></div>"
    )
    return "".join(parts)


def _check_options(*values: int) -> None:
    names = ("max_sets", "max_pairs", "max_members", "thumbnail_size", "thumbnail_budget")
    minimum = (0, 0, 1, 4, 0)
    for name, value, low in zip(names, values, minimum):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise NeardupInputError(f"{name} must be an integer >= {low}, got {value!r}.")


def _fmt(x: float) -> str:
    return f"{x:.4g}"


#: characters of one user-supplied value (id, label, split name, text sample) shown at most:
#: a result loaded from an edited JSON file may hold megabyte-long names.
_MAX_SHOWN = 1000


def _e(value: Any) -> str:
    """Escape any user-supplied value for HTML text or attributes, cut to ``_MAX_SHOWN``."""
    text = str(value)
    if len(text) > _MAX_SHOWN:
        text = f"{text[:_MAX_SHOWN]}… ({len(text):,} characters)"
    return escape(text, quote=True)


class _Page:
    """Builds the page section by section (header, histogram, leakage, sets, classes)."""

    def __init__(
        self,
        result: DuplicatesResult,
        source: SampleSource,
        *,
        max_sets: int,
        max_pairs: int,
        max_members: int,
    ) -> None:
        self.r = result
        self.source = source
        self.max_sets, self.max_pairs, self.max_members = max_sets, max_pairs, max_members
        self.split_index = {s: i for i, s in enumerate(result.split_sizes)}
        self.spanning = sum(1 for c in result.clusters if c.spans_splits)

    # -- page -------------------------------------------------------------------------------
    def render(self, title: str | None) -> str:
        layer = f" · layer {self.r.layer}" if self.r.layer else ""
        heading = title or f"neardup report{layer}"
        body = [
            f"<h1>{_e(heading)}</h1>",
            self._header(),
            self._histogram_section(),
            self._leakage_section(),
            self._sets_section(),
            self._classes_section(),
            self._footer(),
        ]
        split_css = "".join(
            f".s{i}{{background:{split_color(s)}}}" for s, i in self.split_index.items()
        )
        return (
            '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width,initial-scale=1">'
            f"<title>{_e(heading)}</title><style>{_CSS}{split_css}</style></head>"
            f"<body>\n{''.join(body)}\n</body></html>\n"
        )

    def _split_badge(self, split: str) -> str:
        return f'<span class="badge split s{self.split_index.get(split, 0)}">{_e(split)}</span>'

    # -- 1. header --------------------------------------------------------------------------
    def _header(self) -> str:
        r = self.r
        t = r.threshold
        params = ", ".join(f"{_e(k)}={_e(v)}" for k, v in t.params.items())
        cards = [
            _card(f"{r.num_samples:,}", "samples"),
            _card(f"{len(r.clusters):,}", "duplicate sets", bad=bool(r.clusters)),
            _card(f"{r.num_duplicated:,}", "samples in sets"),
        ]
        for split, leak in r.leakage.items():
            cards.append(
                _card(
                    f"{100 * leak.fraction:.2f} %",
                    f"of {_e(split)} leaks into {_e(leak.reference)} ({leak.count:,})",
                    bad=leak.count > 0,
                )
            )
        rows = []
        for split, n in r.split_sizes.items():
            leak = r.leakage.get(split)
            role = "reference" if split == r.reference else ""
            if leak is not None:
                leaked = f"{leak.count:,} ({100 * leak.fraction:.2f} %)"
                conflicts = f"{len(leak.label_conflicts):,}"
            else:
                leaked = conflicts = "—"
            rows.append(
                f"<tr><td>{self._split_badge(split)} {role}</td><td class='num'>{n:,}</td>"
                f"<td class='num'>{leaked}</td><td class='num'>{conflicts}</td></tr>"
            )
        leak_head = f"leaked into {_e(r.reference)}" if r.reference else "leaked"
        spanning = f" ({self.spanning:,} span splits)" if len(r.split_sizes) > 1 else ""
        s = r.settings
        return (
            f'<div class="cards">{"".join(cards)}</div>'
            '<table class="figures"><tr><th>split</th><th>samples</th>'
            f"<th>{leak_head}</th><th>label conflicts</th></tr>{''.join(rows)}</table>"
            f"<p>Threshold <b>{_e(t.strategy)}({params})</b> resolved to distance "
            f"<b>{_fmt(t.value)}</b>; {len(r.clusters):,} duplicate sets{spanning} holding "
            f"{r.num_duplicated:,} samples.</p>"
            + _views_line(r)
            + f'<p class="muted">normalize={_e(s.get("normalize"))} · k={_e(s.get("k"))} · '
            f"backend={_e(s.get('backend'))} · features={_e(s.get('dim'))} · "
            f"reduce={_e(s.get('reduce'))}</p>"
        )

    # -- 2. histogram -----------------------------------------------------------------------
    def _histogram_section(self) -> str:
        h = self.r.histogram or {}
        edges, within, cross = h.get("edges") or [], h.get("within") or [], h.get("cross") or []
        if len(edges) < 2:
            return "<h2>Nearest-neighbour distances</h2><p class='muted'>No histogram.</p>"
        svg = _histogram_svg(edges, within, cross, self.r.threshold.value)
        return (
            "<h2>Nearest-neighbour distances</h2>"
            "<p class='muted'>Distance of every sample to its nearest neighbour (counts on a "
            "log scale). Pairs left of the red line are near-duplicates: a good threshold sits "
            "in a gap between a small bump of copies and the bulk of natural neighbours.</p>"
            f'<p class="legend"><span><i style="background:{_WITHIN}"></i>nearest neighbour in '
            f'the same split</span><span><i style="background:{_CROSS}"></i>in another split'
            f'</span><span><i style="background:{_THRESHOLD}"></i>threshold '
            f"{_fmt(self.r.threshold.value)}</span></p>{svg}"
        )

    # -- 3. leaked pairs --------------------------------------------------------------------
    def _leakage_section(self) -> str:
        r = self.r
        if not r.leakage:
            why = "one split only" if len(r.split_sizes) < 2 else "no reference split"
            return f"<h2>Leaked samples</h2><p class='muted'>No leakage analysis ({why}).</p>"
        labels = self._label_lookup()
        parts = ["<h2>Leaked samples</h2>"]
        for split, leak in r.leakage.items():
            parts.append(self._leak_block(split, leak, labels))
        return "".join(parts)

    def _label_lookup(self) -> dict[tuple[str, int], Any]:
        """(split, position) -> label, from the duplicate sets (the only per-sample labels)."""
        out: dict[tuple[str, int], Any] = {}
        for c in self.r.clusters:
            if c.labels is None:
                continue
            for split, pos, lab in zip(c.splits, c.positions, c.labels):
                out[(split, int(pos))] = lab
        return out

    def _leak_block(self, split: str, leak: Leakage, labels: dict) -> str:
        head = (
            f"<h3>{self._split_badge(split)} → {self._split_badge(leak.reference)} "
            f"{leak.count:,} of {leak.total:,} samples ({100 * leak.fraction:.2f} %) have a "
            f"near-duplicate in {_e(leak.reference)}</h3>"
        )
        if leak.count == 0:
            return head + "<p class='muted'>No leaked samples.</p>"
        conflicts = {(str(c.get("id")), str(c.get("nearest_id"))): c for c in leak.label_conflicts}
        by_class = _by_class_line(leak)
        rows = []
        shown = min(leak.count, self.max_pairs)
        has_pos = len(leak.positions) == leak.count and len(leak.nearest_positions) == leak.count
        for i in range(shown):
            sid, rid, dist = leak.ids[i], leak.nearest_ids[i], float(leak.distances[i])
            pos = int(leak.positions[i]) if has_pos else None
            rpos = int(leak.nearest_positions[i]) if has_pos else None
            conflict = conflicts.get((str(sid), str(rid)))
            if conflict is not None:
                lab, rlab = conflict.get("label"), conflict.get("nearest_label")
            else:
                lab, rlab = labels.get((split, pos)), labels.get((leak.reference, rpos))
            flag = ' <span class="badge warn">label conflict</span>' if conflict else ""
            rows.append(
                f'<div class="pair{" conflict" if conflict else ""}">'
                f"{self._member(split, pos, sid, lab)}"
                f'<div class="dist">↔ distance<br><b>{_fmt(dist)}</b>{flag}'
                f"{_found_by(leak, i)}</div>"
                f"{self._member(leak.reference, rpos, rid, rlab)}</div>"
            )
        more = _more(leak.count - shown, f"leaked {_e(split)} samples", "max_pairs")
        kind = "pairs texts" if any('class="text"' in row for row in rows) else "pairs"
        return head + by_class + f'<div class="{kind}">{"".join(rows)}</div>' + more

    # -- 4. duplicate sets ------------------------------------------------------------------
    def _sets_section(self) -> str:
        r = self.r
        total = len(r.clusters)
        parts = ["<h2>Duplicate sets</h2>"]
        if total == 0:
            return parts[0] + "<p class='muted'>No duplicate sets at this threshold.</p>"
        shown = r.clusters[: self.max_sets]
        shown_spanning = sum(1 for c in shown if c.spans_splits)
        parts.append(
            f"<p>Tightest first (mean distance of the members to their centroid). Showing "
            f"{len(shown):,} of {total:,} sets. Each sample: split, id, label.</p>"
        )
        if len(r.split_sizes) > 1:
            parts.append(
                '<input type="checkbox" id="only-spanning">'
                '<label class="filterbox" for="only-spanning">Only sets that span splits '
                f"({shown_spanning:,} of the {len(shown):,} shown; {self.spanning:,} in all)"
                "</label>"
            )
        sets = [self._set_block(i, c) for i, c in enumerate(shown, start=1)]
        parts.append(f'<div id="sets">{"".join(sets)}</div>')
        parts.append(_more(total - len(shown), "sets", "max_sets"))
        return "".join(parts)

    def _set_block(self, number: int, c: DuplicateSet) -> str:
        labels = c.labels if c.labels is not None else [None] * c.size
        per_split: dict[str, int] = {}
        for s in c.splits:
            per_split[s] = per_split.get(s, 0) + 1
        composition = " ".join(f"{self._split_badge(s)}&nbsp;{n}" for s, n in per_split.items())
        distinct = {str(lab) for lab in labels if lab is not None}
        flags = ""
        if c.spans_splits:
            flags += ' <span class="badge span">spans splits</span>'
        if len(distinct) > 1:
            flags += ' <span class="badge warn">labels differ</span>'
        spread = f" ± {_fmt(c.std)}" if c.size > 2 else ""
        members = [
            self._member(s, p, i, lab) for s, p, i, lab in zip(c.splits, c.positions, c.ids, labels)
        ]
        first = members[: self.max_members]
        hidden = members[self.max_members : self.max_members + _MAX_HIDDEN_MEMBERS]
        rest = ""
        if hidden:
            left = c.size - len(first) - len(hidden)
            tail = f"<p class='more'>{left:,} more members not shown</p>" if left > 0 else ""
            rest = (
                f'<details class="rest"><summary>{len(hidden):,} more members</summary>'
                f'<div class="members">{"".join(hidden)}</div>{tail}</details>'
            )
        return (
            f'<section class="set{" spans" if c.spans_splits else ""}" id="set-{number}">'
            f"<h3>#{number} · {c.size:,} samples · mean distance {_fmt(c.mean)}{spread}"
            f"<br>{composition}{flags}</h3>"
            f'<div class="members">{"".join(first)}</div>{rest}</section>'
        )

    def _member(self, split: str, position: int | None, sample_id: Any, label: Any) -> str:
        thumb = self.source.thumbnail(split, position, sample_id) if position is not None else ""
        lab = f' <span class="badge label">label {_e(label)}</span>' if label is not None else ""
        return (
            f'<figure class="member">{thumb}<figcaption>{self._split_badge(split)} '
            f'<span class="id" title="id">{_e(sample_id)}</span>{lab}</figcaption></figure>'
        )

    # -- 5. class distribution --------------------------------------------------------------
    def _classes_section(self) -> str:
        r = self.r
        head = (
            "<h2>Class distribution</h2><p class='muted'>Samples per class before and after "
            "collapsing every duplicate set to one sample, per split.</p>"
            f'<p class="legend"><span><i style="background:{_BEFORE}"></i>before</span>'
            f'<span><i style="background:{_AFTER}"></i>after collapsing duplicates</span></p>'
        )
        if not r.class_counts:
            return head + "<p class='muted'>No class counts.</p>"
        unlabelled = all(set(c) <= {None} for c in r.class_counts.values())
        if unlabelled:
            groups = [
                (
                    split,
                    sum(r.class_counts[split].values()),
                    sum(r.effective_class_counts.get(split, {}).values()),
                )
                for split in r.class_counts
            ]
            return head + "<p>Without labels: one bar pair per split.</p>" + _bars_svg(groups)
        parts, charts = [head], []
        for split, counts in r.class_counts.items():
            after = r.effective_class_counts.get(split, {})
            before_total, after_total = sum(counts.values()), sum(after.values())
            groups = [(lab, n, after.get(lab, n)) for lab, n in counts.items()]
            note = ""
            if len(groups) > _MAX_CHART_LABELS:
                groups.sort(key=lambda g: g[2] - g[1])  # most duplicates removed first
                note = (
                    f"<p class='more'>the {_MAX_CHART_LABELS} classes that lose most samples; "
                    f"{len(groups) - _MAX_CHART_LABELS:,} more not shown</p>"
                )
                groups = groups[:_MAX_CHART_LABELS]
            groups.sort(key=lambda g: _sort_key(g[0]))
            loss = 100 * (before_total - after_total) / before_total if before_total else 0.0
            change = f"−{loss:.2f} %" if after_total != before_total else "no change"
            charts.append(
                f'<div class="classchart"><h3>{self._split_badge(split)} {before_total:,} → '
                f"{after_total:,} samples ({change})</h3>{_bars_svg(groups)}{note}</div>"
            )
        return "".join(parts) + f'<div class="classcharts">{"".join(charts)}</div>'

    def _footer(self) -> str:
        from .. import __version__

        when = _report_time().strftime("%Y-%m-%d %H:%M")
        extra = ""
        if self.source.skipped:
            extra = f" {self.source.skipped:,} thumbnails left out (thumbnail_budget reached)."
        return (
            f"<p class='muted' style='margin-top:32px'>neardup {__version__} · {when}.{extra}</p>"
        )


# -- helpers --------------------------------------------------------------------------------
def _report_time() -> datetime.datetime:
    """When the report was written: now, or ``SOURCE_DATE_EPOCH`` (seconds since 1970, UTC)
    where it is set, so that the same result always writes the same bytes (the
    reproducible-builds convention, also what makes reports comparable in tests)."""
    epoch = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if epoch:
        try:
            return datetime.datetime.fromtimestamp(int(epoch), tz=datetime.timezone.utc)
        except (ValueError, OverflowError, OSError) as error:
            raise NeardupInputError(
                f"SOURCE_DATE_EPOCH={epoch!r} is not a whole number of seconds since "
                "1970-01-01 UTC; set it to one (e.g. 1700000000) or unset it."
            ) from error
    return datetime.datetime.now()


def _card(value: str, caption: str, *, bad: bool = False) -> str:
    return f'<div class="card{" bad" if bad else ""}"><b>{value}</b>{caption}</div>'


def _more(count: int, what: str, option: str) -> str:
    if count <= 0:
        return ""
    return f"<p class='more'>{count:,} more {what} not shown (raise {option} to see them).</p>"


def _sort_key(label: Any) -> tuple:
    return (0, label, "") if isinstance(label, (int, float)) else (1, 0, str(label))


def _by_class_line(leak: Leakage) -> str:
    items = [(k, v) for k, v in leak.by_class.items() if v.get("count")]
    if not items:
        return ""
    items.sort(key=lambda kv: -kv[1].get("fraction", 0))
    text = ", ".join(
        f"{_e(k)}: {int(v['count']):,}/{int(v['total']):,} ({100 * v['fraction']:.1f} %)"
        for k, v in items[:20]
    )
    more = f", … {len(items) - 20} more classes" if len(items) > 20 else ""
    return f"<p class='muted'>Leaked per class: {text}{more}</p>"


def _nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] (1, 2, 5 x 10^n steps)."""
    span = high - low
    if span <= 0:
        return [low]
    raw = span / count
    step = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if m * step >= raw:
            step *= m
            break
    start = math.ceil(low / step) * step
    ticks, v = [], start
    while v <= high + step * 1e-9:
        ticks.append(round(v, 12))
        v += step
    return ticks


def _histogram_svg(
    edges: Sequence[float], within: Sequence[float], cross: Sequence[float], threshold: float
) -> str:
    """Two-series histogram (log counts) with the threshold as a vertical line."""
    width, height, left, right, top, bottom = 960, 280, 56, 16, 14, 40
    pw, ph = width - left - right, height - top - bottom
    x0, x1 = float(edges[0]), float(edges[-1])
    span = (x1 - x0) or 1.0
    bins = len(edges) - 1
    within = list(within) + [0] * (bins - len(within))
    cross = list(cross) + [0] * (bins - len(cross))
    peak = max([1.0, *within, *cross])
    ymax = math.log10(peak + 1)

    def sx(v: float) -> float:
        return left + (v - x0) / span * pw

    def sy(count: float) -> float:
        return top + ph - (math.log10(count + 1) / ymax) * ph

    out = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        'role="img" aria-label="histogram of nearest-neighbour distances" '
        'xmlns="http://www.w3.org/2000/svg">',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="#fafbfc" stroke="#d8dee4"/>',
    ]
    decade = 1
    while decade <= peak:
        y = sy(decade)
        out.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e6e9ec"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{decade:,}</text>'
        )
        decade *= 10
    for i in range(bins):
        a, b = sx(float(edges[i])), sx(float(edges[i + 1]))
        half = (b - a) / 2
        last = " (and above)" if i == bins - 1 else ""
        tip = (
            f"{_fmt(float(edges[i]))}–{_fmt(float(edges[i + 1]))}{last}: "
            f"{int(within[i]):,} same split, {int(cross[i]):,} other split"
        )
        for offset, count, color in ((0.0, within[i], _WITHIN), (half, cross[i], _CROSS)):
            if count > 0:
                y = sy(count)
                out.append(
                    f'<rect x="{a + offset:.2f}" y="{y:.2f}" width="{max(half - 0.4, 0.6):.2f}" '
                    f'height="{top + ph - y:.2f}" fill="{color}"><title>{tip}</title></rect>'
                )
    for tick in _nice_ticks(x0, x1):
        x = sx(tick)
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top + ph}" y2="{top + ph + 4}" stroke="#555"/>'
            f'<text x="{x:.1f}" y="{top + ph + 16}" text-anchor="middle">{_fmt(tick)}</text>'
        )
    out.append(
        f'<text x="{left + pw / 2}" y="{height - 4}" text-anchor="middle">distance to the '
        "nearest neighbour</text>"
    )
    tx = sx(min(max(threshold, x0), x1))
    anchor = "start" if tx < left + pw * 0.8 else "end"
    dx = 4 if anchor == "start" else -4
    out.append(
        f'<line class="threshold" x1="{tx:.1f}" x2="{tx:.1f}" y1="{top}" y2="{top + ph}" '
        f'stroke="{_THRESHOLD}" stroke-width="2" stroke-dasharray="5,3"/>'
        f'<text x="{tx + dx:.1f}" y="{top + 12}" text-anchor="{anchor}" fill="{_THRESHOLD}">'
        f"threshold {_fmt(threshold)}</text></svg>"
    )
    return "".join(out)


def _bars_svg(groups: Iterable[tuple[Any, float, float]]) -> str:
    """Grouped bar chart: for each (name, before, after), two bars on a linear scale."""
    groups = list(groups)
    if not groups:
        return ""
    slot = 36 if len(groups) <= 20 else 22
    left, right, top, bottom, ph = 56, 10, 10, 46, 170
    pw = slot * len(groups)
    width, height = left + pw + right, top + ph + bottom
    peak = max(1.0, *(max(b, a) for _, b, a in groups))
    ticks = _nice_ticks(0, peak, 4)

    scale_top = max(ticks[-1], peak)

    def sy(v: float) -> float:
        return top + ph - v / scale_top * ph

    out = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        'role="img" aria-label="samples per class before and after collapsing duplicates" '
        'xmlns="http://www.w3.org/2000/svg">'
    ]
    for tick in ticks:
        y = sy(tick)
        out.append(
            f'<line x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e6e9ec"/>'
            f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{tick:,.0f}</text>'
        )
    bar = (slot - 6) / 2
    for i, (name, before, after) in enumerate(groups):
        x = left + i * slot + 3
        shown = "(no label)" if name is None else str(name)
        tip = f"{_e(shown)}: {int(before):,} before, {int(after):,} after"
        for dx, value, color in ((0.0, before, _BEFORE), (bar, after, _AFTER)):
            y = sy(value)
            out.append(
                f'<rect x="{x + dx:.1f}" y="{y:.1f}" width="{bar:.1f}" height="{top + ph - y:.1f}"'
                f' fill="{color}"><title>{tip}</title></rect>'
            )
        short = shown if len(shown) <= 8 else shown[:7] + "…"
        out.append(
            f'<text x="{x + bar:.1f}" y="{top + ph + 14}" text-anchor="middle">{_e(short)}'
            f"<title>{_e(shown)}</title></text>"
        )
    out.append(
        f'<line x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}" stroke="#555"/></svg>'
    )
    return "".join(out)


def _found_by(leak: Leakage, i: int) -> str:
    """Which views found leaked pair ``i`` and its distance in each (multi-view results)."""
    if i >= len(leak.found_by):
        return ""
    found = set(leak.found_by[i])
    lines = []
    for view, distances in leak.view_distances.items():
        mark = "✓" if view in found else "·"
        cls = "view found" if view in found else "view"
        lines.append(f'<span class="{cls}">{mark} {_e(view)} {_fmt(float(distances[i]))}</span>')
    return '<div class="views">found by:<br>' + "<br>".join(lines) + "</div>"


def _confirm_reach(settings: dict) -> str:
    """``" (within ... thresholds; N pairs ... failed it)"`` for a confirm rule's settings;
    ``""`` for a result saved before they were recorded."""
    reach, away = settings.get("confirm_within"), settings.get("unconfirmed")
    if reach is None:
        return ""
    within = "its threshold" if reach == 1.0 else f"{_fmt(reach)} thresholds"
    if away is not None:
        within += f"; {away} pair{'s' * (away != 1)} within a view's threshold failed it"
    return f" (within {within})"


def _views_line(r: DuplicatesResult) -> str:
    """One line per view of a multi-view result: its threshold and why (distances of the
    combined verdict are in threshold units: distance / the view's threshold)."""
    if not r.views:
        reason = f" ({_e(r.threshold.reason)})" if r.threshold.reason else ""
        return f"<p class='muted'>{reason}</p>" if reason else ""
    items = "".join(
        f"<li><b>{_e(name)}</b>: {_e(v.threshold.strategy)} → distance "
        f"{_fmt(v.threshold.value)}<span class='muted'> ({_e(v.threshold.reason)})</span></li>"
        for name, v in r.views.items()
    )
    combine = str(r.settings.get("combine", "any"))
    rule = "it is within the threshold of any view"
    if combine.startswith("confirm:"):
        rule += f" and view {combine.split(':', 1)[1]} confirms it{_confirm_reach(r.settings)}"
    return (
        f"<p>Views (a pair is a near-duplicate when {_e(rule)}; "
        "distances below are in threshold units):</p>"
        f"<ul class='views'>{items}</ul>"
    )
