"""Train logistic regression on a 5% coreset of digits: MaxVol against random rows.

Run: python examples/coreset_logistic.py [--out DIR]   (writes coreset_digits.png)
"""

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from maxvol_kit import MaxVolSampler


def main(out=Path(".")):
    X, y = load_digits(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(
        X, y, test_size=0.3, stratify=y, random_state=0
    )
    scaler = StandardScaler().fit(X_tr)
    X_tr, X_te = scaler.transform(X_tr), scaler.transform(X_te)

    sampler = MaxVolSampler(n_samples=0.05, stratify=True, random_state=0)
    X_core, y_core = sampler.fit_resample(X_tr, y_tr)
    maxvol_acc = LogisticRegression(max_iter=3000).fit(X_core, y_core).score(X_te, y_te)

    rng = np.random.default_rng(0)
    random_acc = [
        LogisticRegression(max_iter=3000).fit(X_tr[idx], y_tr[idx]).score(X_te, y_te)
        for idx in (
            rng.choice(len(y_tr), len(y_core), replace=False) for _ in range(10)
        )
    ]
    share = len(y_core) / len(y_tr)
    print(f"coreset of {len(y_core)} rows ({share:.0%} of the training set)")
    print(f"MaxVolSampler (stratified): {maxvol_acc:.3f}")
    mean, std = np.mean(random_acc), np.std(random_acc)
    print(f"random rows, 10 draws:      {mean:.3f} +- {std:.3f}")

    images = load_digits().images
    chosen = sampler.sample_indices_[:20]
    fig, axes = plt.subplots(2, 10, figsize=(10, 2.4))
    train_idx = train_test_split(
        np.arange(len(y)), test_size=0.3, stratify=y, random_state=0
    )[0]
    for ax, i in zip(axes.ravel(), chosen, strict=True):
        ax.imshow(images[train_idx[i]], cmap="gray_r")
        ax.set_axis_off()
    fig.suptitle("20 of the rows MaxVolSampler picked")
    fig.savefig(out / "coreset_digits.png", dpi=100)
    return maxvol_acc, random_acc


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("."))
    main(parser.parse_args().out)
