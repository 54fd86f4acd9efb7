"""Several views, one verdict; the Auto threshold; set diameters, max_diameter= and keep=."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from neardup import (
    Auto,
    Distance,
    DuplicatesResult,
    NeardupInputError,
    Relative,
    find_duplicates,
)
from neardup.search import NeighborGraph, Rows, build_graph


def _two_views(seed: int = 0):
    """Train/test in two views; test rows 0-9 copy train in view a only, 10-19 in b only."""
    rng = np.random.default_rng(seed)
    a_train, b_train = rng.normal(size=(2, 600, 32)).astype(np.float32)
    a_test, b_test = rng.normal(size=(2, 200, 32)).astype(np.float32)
    a_test[:10] = a_train[:10] + rng.normal(scale=0.01, size=(10, 32))
    b_test[10:20] = b_train[10:20] + rng.normal(scale=0.01, size=(10, 32))
    return {"train": {"a": a_train, "b": b_train}, "test": {"a": a_test, "b": b_test}}


def test_any_view_within_its_threshold_is_the_combined_verdict():
    data = _two_views()
    result = find_duplicates(data)
    leak = result.leakage["test"]
    assert sorted(leak.positions) == list(range(20))
    assert leak.nearest_positions == leak.positions  # each copy leaks through its source
    for pos, views in zip(leak.positions, leak.found_by):
        assert views == (["a"] if pos < 10 else ["b"])
    assert np.all(leak.distances <= 1.0)
    for view in ("a", "b"):  # distances in every view are the exact ones
        x = data["train"][view][leak.nearest_positions] / np.linalg.norm(
            data["train"][view][leak.nearest_positions], axis=1, keepdims=True
        )
        y = data["test"][view][leak.positions] / np.linalg.norm(
            data["test"][view][leak.positions], axis=1, keepdims=True
        )
        np.testing.assert_allclose(
            leak.view_distances[view], np.linalg.norm(x - y, axis=1), atol=1e-5
        )
    assert set(result.views) == {"a", "b"}
    assert result.views["a"].leakage["test"].count == 10
    assert result.threshold.strategy == "Views"
    assert len(result.clusters) == 20 and all(c.spans_splits for c in result.clusters)
    assert "view a" in result.summary() and "view b" in result.summary()


def test_confirm_rule_keeps_only_pairs_the_named_view_confirms():
    data = _two_views()
    rng = np.random.default_rng(5)
    a_train, a_test = data["train"]["a"], data["test"]["a"]
    # rows 20-24: copies in b, and in a just beyond a's threshold (1.05 thresholds away)
    data["test"]["b"][20:25] = data["train"]["b"][20:25]
    a_test[20:25] = a_train[20:25] + rng.normal(scale=0.05, size=(5, 32))

    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    gap = np.linalg.norm(unit(a_test[20:25]) - unit(a_train[20:25]), axis=1)
    threshold = {"a": Distance(float(gap.max()) / 1.05), "b": Distance(0.05)}
    anyway = find_duplicates(data, threshold=threshold)
    assert sorted(anyway.leakage["test"].positions) == list(range(25))
    confirmed = find_duplicates(data, threshold=threshold, combine="confirm:a")
    leak = confirmed.leakage["test"]
    # b's finds 10-19 lie far apart in a: dropped; 20-24 are within 1.1 thresholds of a: kept
    assert sorted(leak.positions) == list(range(10)) + list(range(20, 25))
    late = [found for p, found in zip(leak.positions, leak.found_by) if p >= 20]
    assert all("b" in found for found in late) and ["b"] in late  # the farthest: b alone
    by_b = find_duplicates(data, combine="confirm:b").leakage["test"]  # Auto thresholds
    assert sorted(by_b.positions) == list(range(10, 25))  # a's finds 0-9 are far apart in b
    assert confirmed.settings["combine"] == "confirm:a"
    assert "view a confirms it" in confirmed.to_html(None)
    assert len(confirmed.clusters) == 15  # sets come from the confirmed pairs only
    with pytest.raises(NeardupInputError, match="names view 'c'.*not in the data"):
        find_duplicates(data, combine="confirm:c")
    with pytest.raises(NeardupInputError, match="combine.* must be one of 'any', 'confirm:<view>'"):
        find_duplicates(data, combine="confirm:")


def test_multiview_result_round_trips_through_json(tmp_path):
    result = find_duplicates(_two_views(), max_diameter=2.0)
    path = tmp_path / "r.json"
    result.to_json(path)
    back = DuplicatesResult.from_json(path)
    assert back.leakage["test"].found_by == result.leakage["test"].found_by
    np.testing.assert_allclose(
        back.leakage["test"].view_distances["b"], result.leakage["test"].view_distances["b"]
    )
    assert back.views["a"].threshold.reason == result.views["a"].threshold.reason
    assert [c.diameter for c in back.clusters] == [c.diameter for c in result.clusters]
    assert json.loads(path.read_text())["views"]["b"]["threshold"]["strategy"] == "Auto"


def test_per_view_thresholds_and_bad_view_input():
    data = _two_views()
    result = find_duplicates(data, threshold={"a": Distance(0.0)})  # b keeps Auto
    assert result.views["a"].threshold.value == 0.0
    assert sorted(result.leakage["test"].positions) == list(range(10, 20))
    with pytest.raises(NeardupInputError, match="names view 'c'"):
        find_duplicates(data, threshold={"c": Relative()})
    bad = {"train": data["train"], "test": {"a": data["test"]["a"]}}
    with pytest.raises(NeardupInputError, match="lacks \\['b'\\]"):
        find_duplicates(bad)
    short = {"train": data["train"], "test": {"a": data["test"]["a"], "b": data["test"]["b"][:5]}}
    with pytest.raises(NeardupInputError, match="same samples"):
        find_duplicates(short)
    with pytest.raises(NeardupInputError, match="combine.* must be one of"):
        find_duplicates(data, combine="all")
    with pytest.raises(NeardupInputError, match="one value per view"):
        find_duplicates(data["train"]["a"], threshold={"a": Relative()})


def test_diameter_and_max_diameter_split_a_chain():
    # points on a line 0.9 apart: consecutive pairs within Distance(1), the chain 3.6 long
    x = np.zeros((5, 2), dtype=np.float32)
    x[:, 0] = np.arange(5) * 0.9
    whole = find_duplicates(x, threshold=Distance(1.0), normalize=None, k=4)
    assert len(whole.clusters) == 1
    assert whole.clusters[0].diameter == pytest.approx(3.6, abs=1e-5)
    assert whole.clusters[0].central == whole.clusters[0].positions.index(2)
    split = find_duplicates(x, threshold=Distance(1.0), normalize=None, k=4, max_diameter=1.0)
    assert [c.size for c in split.clusters] == [2, 2]
    assert all(c.diameter <= 1.0 for c in split.clusters)
    with pytest.raises(NeardupInputError, match="max_diameter"):
        find_duplicates(x, k=4, max_diameter=0)


@settings(max_examples=20, deadline=None)
@given(st.integers(0, 10_000), st.floats(1.0, 3.0))
def test_property_max_diameter_bounds_every_set(seed, limit):
    rng = np.random.default_rng(seed)
    x = np.cumsum(rng.normal(scale=0.3, size=(40, 3)), axis=0).astype(np.float32)
    result = find_duplicates(x, threshold=Distance(0.5), normalize=None, k=6, max_diameter=limit)
    for dup in result.clusters:
        pts = x[dup.positions]
        exact = np.linalg.norm(pts[:, None] - pts[None], axis=-1).max()
        assert exact <= limit * 0.5 + 1e-4
        assert dup.diameter == pytest.approx(exact, abs=1e-4)


def test_keep_mask_keeps_one_member_per_set_deterministically():
    data = _two_views()
    result = find_duplicates(data)
    again = find_duplicates(data)
    for keep in ("first", "centroid", "reference"):
        masks = result.keep_mask(keep=keep)
        assert all(np.array_equal(masks[s], again.keep_mask(keep=keep)[s]) for s in masks)
        dropped = sum(int((~m).sum()) for m in masks.values())
        assert dropped == sum(c.size - 1 for c in result.clusters)
    reference = result.keep_mask(keep="reference")
    assert reference["train"].all() and (~reference["test"]).sum() == 20
    first = result.keep_mask(keep="first")  # train comes first in split order
    assert first["train"].all()
    with pytest.raises(NeardupInputError, match="keep.* must be one of"):
        result.keep_mask(keep="last")


@pytest.mark.parametrize("n, d", [(4000, 4), (6000, 16), (3000, 128)])
def test_auto_is_silent_on_gaussian_noise(n, d):
    x = np.random.default_rng(d).normal(size=(n, d)).astype(np.float32)
    result = find_duplicates({"train": x[: n // 2], "test": x[n // 2 :]})
    assert result.threshold.strategy == "Auto"
    assert result.num_duplicated == 0
    assert "intrinsic dimension" in result.threshold.reason
    assert "low tail's own slope" not in result.threshold.reason  # the power law holds


def _clusters_of_varied_density(seed: int, n: int = 4000, d: int = 16) -> np.ndarray:
    """``(n, d)`` rows around 200 centres, each cluster's spread drawn log-uniformly from
    0.01 to 1: the nearest-neighbour distances' low tail is far heavier than ``t ** m``."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(200, d)) * 10
    spread = np.exp(rng.uniform(np.log(0.01), 0.0, 200))
    cluster = rng.integers(0, 200, n)
    return (centres[cluster] + rng.normal(size=(n, d)) * spread[cluster, None]).astype(np.float32)


@pytest.mark.parametrize("seed", [2, 10])
def test_auto_recuts_where_natural_rows_crowd_below_the_power_law(seed):
    """Varied density puts natural rows below the power law's cut (56 and 125 of ~4,000, 1.4
    and 3.1 %; 11 and 25 test rows were flagged before the re-cut): the slope of the data's
    own low tail places it again, below them and above the planted copies."""
    x = _clusters_of_varied_density(seed)
    train, test = x[:3000], x[3000:].copy()
    clean = find_duplicates({"train": train, "test": test}, normalize=None)
    assert clean.leakage["test"].count == 0
    assert "low tail's own slope" in clean.threshold.reason
    rng = np.random.default_rng(seed + 10)
    slots, sources = rng.choice(1000, 20, replace=False), rng.choice(3000, 20, replace=False)
    test[slots] = train[sources] + rng.normal(scale=1e-4, size=(20, 16)).astype(np.float32)
    leaked = find_duplicates({"train": train, "test": test}, normalize=None).leakage["test"]
    assert sorted(leaked.positions) == sorted(slots.tolist())


@pytest.mark.parametrize("share", [0.28, 0.5])
def test_auto_finds_leaks_when_many_rows_are_near_copies(share):
    """The 25 % anchor would fall inside the copies' own low mode: they are set aside."""
    from sklearn.datasets import load_digits

    rng = np.random.default_rng(0)
    x = load_digits().data.astype(np.float32)
    n, split = len(x), 1400
    natural_test = x[split:].copy()
    pairs = int(share * n / 2)  # within-train near-copy pairs: `share` of all rows
    order = rng.permutation(split)
    x[order[pairs : 2 * pairs]] = x[order[:pairs]] + rng.normal(0, 0.3, (pairs, 64))
    leaks = rng.choice(np.arange(split, n), 30, replace=False)
    x[leaks] = x[order[2 * pairs : 2 * pairs + 30]] + rng.normal(0, 0.3, (30, 64))
    result = find_duplicates({"train": x[:split], "test": x[split:]})
    assert sorted(result.leakage["test"].positions) == sorted((leaks - split).tolist())
    assert f"{2 * pairs + 60} copy-like rows set aside" in result.threshold.reason
    clean = find_duplicates({"train": x[:split], "test": natural_test})
    assert clean.leakage["test"].count == 0  # the same copy-laden train, digits' own test rows


def test_auto_on_a_sample_of_rows_matches_the_full_graph():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(6000, 12)).astype(np.float32)
    x[:300] = x[300:600] + rng.normal(scale=0.01, size=(300, 12))
    full = find_duplicates(x, backend="exact")
    # rebuild the graph the engine would give for 2,000 sampled rows (their k nearest of all)
    rows = Rows([x], "row")
    graph = build_graph(rows, 10, backend="exact")
    sample = rng.choice(6000, 2000, replace=False)
    sampled = NeighborGraph(graph.indices[sample], graph.distances[sample], "exact")
    sampled.total_rows = 6000
    value = Auto().resolve(sampled, "row")
    assert value == pytest.approx(full.threshold.value, rel=0.15)
    assert full.num_duplicated == 600


def test_auto_with_only_exact_copies_reports_them():
    x = np.zeros((6, 3), dtype=np.float32)
    x[:, 0] = 1
    x[3:, 1] = 1
    result = find_duplicates(x, k=5)
    assert result.threshold.value == 0.0
    assert "only exact copies" in result.threshold.reason
    assert sorted(c.size for c in result.clusters) == [3, 3]


def test_html_report_shows_which_view_found_each_pair():
    result = find_duplicates(_two_views())
    page = result.to_html(None)
    assert page.count("found by:") == 20
    assert page.count('class="view found">✓ a ') == 10
    assert page.count('class="view found">✓ b ') == 10
    assert "within the threshold of any view" in page


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.integers(1, 3))
def test_property_combined_verdict_agrees_with_views_and_sets(seed, n_views):
    rng = np.random.default_rng(seed)
    data = {"train": {}, "test": {}}
    for v in range(n_views):
        train = rng.normal(size=(120, 6)).astype(np.float32)
        test = rng.normal(size=(40, 6)).astype(np.float32)
        copies = rng.choice(40, 5, replace=False)
        test[copies] = train[copies] + rng.normal(scale=0.02, size=(5, 6))
        data["train"][f"v{v}"], data["test"][f"v{v}"] = train, test
    result = find_duplicates(data, threshold=Relative(0.3))
    leak = result.leakage["test"]
    set_of = {}
    for s, dup in enumerate(result.clusters):
        for split, pos in zip(dup.splits, dup.positions):
            set_of[split, pos] = s
    for i, (pos, ref) in enumerate(zip(leak.positions, leak.nearest_positions)):
        found = leak.found_by[i]
        assert found and leak.distances[i] <= 1.0
        for name, view in result.views.items():
            within = leak.view_distances[name][i] <= view.threshold.value * (1 + 1e-5)
            assert within == (name in found)
        assert set_of["test", pos] == set_of["train", ref]  # a leaked pair shares a set
    union = set().union(*(set(v.leakage["test"].positions) for v in result.views.values()))
    assert set(leak.positions) == union  # "any": leaked in the union of the views


def test_colour_image_rows_get_a_ycbcr_view_with_the_colour_cast_weighted_once():
    from sklearn.datasets import load_digits

    from neardup.views import AlignedImageView, ImageView

    rng = np.random.default_rng(0)
    digits = np.kron(load_digits().images[:400] / 16.0, np.ones((2, 2)))  # 16 x 16: no resampling
    fg, bg = rng.uniform(0, 255, (2, len(digits), 1, 1, 3))
    rgb = np.rint(digits[..., None] * fg + (1 - digits[..., None]) * bg).astype(np.uint8)
    train, test = rgb[:300], rgb[300:].copy()
    gains = np.array([1.1, 0.95, 0.9])  # a colour-jittered copy of train[7]
    test[0] = np.clip(np.rint(train[7] * gains), 0, 255).astype(np.uint8)
    view = AlignedImageView()
    result = find_duplicates({"train": {"image": view(train)}, "test": {"image": view(test)}})
    assert {"image", "image-luma", "image-ycbcr", "image:aligned"} == set(result.views)
    leak = result.leakage["test"]
    k = leak.positions.index(0)
    assert leak.nearest_positions[k] == 7
    # the view's rows are ImageView(color="ycbcr") of the images themselves: AlignedImageView
    # rows already carry the colour-cast weight, and it is not applied a second time
    rows = ImageView(color="ycbcr")(np.stack([test[0], train[7]]))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    expected = np.linalg.norm(rows[0] - rows[1])
    assert leak.view_distances["image-ycbcr"][k] == pytest.approx(expected, rel=1e-3, abs=1e-5)


def test_image_pixel_views_confirm_a_model_s_pairs_within_their_reach(digits):
    """``"confirm:<image view>"``: a pair a model view finds must lie within
    IMAGE_CONFIRM_WITHIN thresholds of one of the image's pixel views (thumbnail, aligned):
    look-alikes the model puts together are dropped, copies at any noise level that the
    pixels still place near their source are kept."""
    from neardup._multiview import IMAGE_CONFIRM_WITHIN
    from neardup.views import AlignedImageView

    images, labels = digits
    pixels = np.rint(images * 255).astype(np.uint8)
    rng = np.random.default_rng(3)
    train, test = pixels[:1200], pixels[1200:].copy()
    model_train = rng.normal(size=(1200, 16)).astype(np.float32)  # a model with no copies...
    model_test = rng.normal(size=(len(test), 16)).astype(np.float32)
    # ...but for 10 look-alikes (another image of the same digit) and 30 copies whose pixel
    # noise grows from faint to heavy: the model puts each on its train partner
    same_digit = [np.flatnonzero(labels[:1200] == labels[1200 + p]) for p in range(10)]
    alike = {p: int(rng.choice(rows)) for p, rows in enumerate(same_digit)}
    copies = dict(zip(range(10, 40), rng.choice(1200, 30, replace=False).tolist()))
    for step, (p, q) in enumerate(copies.items()):
        noise = rng.normal(0, 4 + 3 * step, size=(8, 8))
        test[p] = np.clip(np.rint(train[q] + noise), 0, 255).astype(np.uint8)
    for p, q in {**alike, **copies}.items():
        model_test[p] = model_train[q] + rng.normal(0, 1e-3, size=16)
    view = AlignedImageView()
    data = {
        "train": {"model": model_train, "input": view(train)},
        "test": {"model": model_test, "input": view(test)},
    }
    anyway = find_duplicates(data).leakage["test"]
    assert set(alike) | set(copies) <= set(anyway.positions)  # "any": the model finds all 40
    pixel_views = ("input", "input:aligned")
    result = find_duplicates(data, combine="confirm:input")
    assert result.settings["confirm_within"] == IMAGE_CONFIRM_WITHIN == 2.5
    assert result.settings["unconfirmed"] >= len(alike)  # the look-alikes, at least
    kept = set(result.leakage["test"].positions)
    reach = {}  # each planted pair's nearest pixel view, in thresholds (from the "any" run)
    found = dict(zip(anyway.positions, range(anyway.count)))
    for p in [*alike, *copies]:
        row = found[p]
        reach[p] = min(
            anyway.view_distances[v][row] / result.views[v].threshold.value for v in pixel_views
        )
    assert all(reach[p] > IMAGE_CONFIRM_WITHIN for p in alike)  # different handwriting
    assert not kept & set(alike)
    expected = {p for p in copies if reach[p] <= IMAGE_CONFIRM_WITHIN}
    edge = {p for p in copies if abs(reach[p] - IMAGE_CONFIRM_WITHIN) < 0.02}  # float32 here
    assert {p for p in copies if p in kept} - edge == expected - edge
    # the rule can fail both ways: heavy noise leaves some copies beyond the reach, and some
    # copies lie beyond the pixels' own threshold but within the reach
    assert 0 < len(expected) < len(copies)
    assert any(1.0 < reach[p] <= IMAGE_CONFIRM_WITHIN for p in copies)
    away = result.settings["unconfirmed"]
    assert f"confirms it (within 2.5 thresholds; {away} pairs within a view" in result.to_html(None)
