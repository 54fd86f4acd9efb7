"""Leakage in a real train/test split of scikit-learn's digits, straight from pixel space.

No model needed: the 8x8 images themselves are the features. Digits has no exact duplicates,
but ~216 pairs of images are cosine > 0.98 alike; with a random split, some test images have
such a twin in the training split. Run: python examples/digits_leakage.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

import neardup

digits = load_digits()
images = (digits.images / 16.0).astype(np.float32)  # (1797, 8, 8) in [0, 1]
x_train, x_test, y_train, y_test = train_test_split(
    images, digits.target, test_size=0.25, random_state=0
)

# A similarity level the user chooses: cosine >= 0.98 between two images' pixels.
result = neardup.find_duplicates(
    {"train": x_train, "test": x_test},
    labels={"train": y_train, "test": y_test},
    threshold=neardup.Cosine(0.98),
)
print(result.summary())

leak = result.leakage["test"]
print(f"\nleaked test images per class: {[int(v['count']) for v in leak.by_class.values()]}")
for conflict in leak.label_conflicts[:5]:
    print(
        f"  label conflict: test #{conflict['id']} ({conflict['label']}) ~ "
        f"train #{conflict['nearest_id']} ({conflict['nearest_label']})"
    )

# The default threshold (Relative) only flags pairs far closer than the data's typical
# neighbours: natural look-alikes are not duplicates by that standard.
default = neardup.find_duplicates({"train": x_train, "test": x_test})
print(f"\ndefault threshold {default.threshold}: {default.leakage['test'].count} leaked")

out = Path("reports")
out.mkdir(exist_ok=True)
result.to_json(out / "digits-leakage.json")
print(f"JSON report: {out / 'digits-leakage.json'}")
result.to_html(out / "digits-leakage.html", samples={"train": x_train, "test": x_test})
print(f"HTML report: {out / 'digits-leakage.html'}")
