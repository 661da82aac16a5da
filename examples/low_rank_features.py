"""Low-rank features: RandomizedLowRank in a pipeline, Frequent Directions on a stream.

Run: python examples/low_rank_features.py
"""

import numpy as np
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline

from maxvol_kit import FrequentDirections, RandomizedLowRank


def main():
    X, y = load_digits(return_X_y=True)
    pipe = make_pipeline(
        RandomizedLowRank(n_components=20, random_state=0),
        LogisticRegression(max_iter=3000),
    )
    score = cross_val_score(pipe, X, y, cv=5).mean()
    print(f"20 randomized principal components: {score:.3f}")

    # Stream the rows in chunks of 100: the sketch never holds more than 2 * 16 rows.
    fd = FrequentDirections(sketch_size=16)
    for chunk in np.array_split(X, len(X) // 100):
        fd.partial_fit(chunk)
    B = fd.sketch_
    gap = np.linalg.eigvalsh(X.T @ X - B.T @ B).max()
    bound = min(
        (np.linalg.svd(X, compute_uv=False)[k:] ** 2).sum() / (16 - k)
        for k in range(16)
    )
    print(f"sketch {B.shape}; ||X^T X - B^T B||_2 = {gap:.4g} <= bound {bound:.4g}")
    return gap, bound


if __name__ == "__main__":
    main()
