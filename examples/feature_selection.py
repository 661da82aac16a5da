"""Keep 16 of the 64 digits pixels: MaxVol columns against SelectKBest.

Run: python examples/feature_selection.py [--out DIR]   (writes selected_pixels.png)
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from sklearn.datasets import load_digits
from sklearn.feature_selection import SelectKBest, f_classif
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from maxvol_kit import MaxVolFeatureSelector


def main(out=Path(".")):
    X, y = load_digits(return_X_y=True)
    scores = {}
    selectors = {
        "MaxVolFeatureSelector": MaxVolFeatureSelector(n_features_to_select=16),
        "SelectKBest(f_classif)": SelectKBest(f_classif, k=16),
    }
    for name, selector in selectors.items():
        pipe = make_pipeline(
            selector, StandardScaler(), LogisticRegression(max_iter=3000)
        )
        scores[name] = cross_val_score(pipe, X, y, cv=5).mean()
        print(f"{name:24s} 5-fold accuracy with 16 pixels: {scores[name]:.3f}")
    mask = MaxVolFeatureSelector(n_features_to_select=16).fit(X).get_support()
    fig, ax = plt.subplots(figsize=(3, 3))
    ax.imshow(mask.reshape(8, 8), cmap="Blues")
    ax.set_title("pixels MaxVol keeps")
    ax.set_axis_off()
    fig.savefig(out / "selected_pixels.png", dpi=100)
    return scores


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("."))
    main(parser.parse_args().out)
