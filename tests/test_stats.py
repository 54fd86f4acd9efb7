"""neardup._stats: numpy's median, quantile and unique values, without importing numpy.ma."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from neardup._stats import distinct, median, quantile


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.int64])
def test_same_values_as_numpy(dtype):
    rng = np.random.default_rng(0)
    for n in [1, 2, 3, 4, 7, 10, 101, 1000]:
        values = (rng.random(n) * 50).astype(dtype)
        assert median(values) == float(np.median(values))
        for q in [0.0, 0.01, 0.25, 0.5, 0.7, 0.995, 1.0, float(rng.random())]:
            assert quantile(values, q) == float(np.quantile(values, q)), (n, q)
        assert np.array_equal(distinct(values), np.unique(values))
        assert distinct(values).dtype == np.unique(values).dtype


def test_nan_and_empty():
    values = np.array([3.0, np.nan, 1.0, np.nan, 1.0])
    assert np.isnan(median(values)) and np.isnan(quantile(values, 0.5))
    assert np.array_equal(distinct(values), np.unique(values), equal_nan=True)  # one NaN
    assert np.isnan(median(np.zeros(0))) and np.isnan(quantile(np.zeros(0), 0.3))
    assert distinct(np.zeros(0, dtype=np.int64)).size == 0
    assert distinct(np.array(["b", "a", "b"])).tolist() == ["a", "b"]


def test_find_duplicates_does_not_import_numpy_ma():
    # numpy.ma costs 8-80 ms of CPU to import; the default path never needs it
    code = textwrap.dedent(
        """
        import sys
        import numpy as np
        import neardup
        rng = np.random.default_rng(0)
        x = rng.normal(size=(6000, 16)).astype("float32")
        x[:50] = x[100:150] + 0.001
        labels = rng.integers(0, 3, 6000)
        result = neardup.find_duplicates(
            {"train": x[:4800], "test": x[4800:]},
            labels={"train": labels[:4800], "test": labels[4800:]},
        )
        assert len(result.clusters) >= 50, len(result.clusters)
        print("numpy.ma" in sys.modules)
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
