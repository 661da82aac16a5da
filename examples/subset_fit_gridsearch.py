"""Tune the coreset budget inside a Pipeline with GridSearchCV.

Run: python examples/subset_fit_gridsearch.py
"""

from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from maxvol_kit import MaxVolSampler, SubsetFitEstimator


def main():
    X, y = load_digits(return_X_y=True)
    X_tr, X_te, y_tr, y_te = train_test_split(X, y, stratify=y, random_state=0)
    pipe = make_pipeline(
        StandardScaler(),
        SubsetFitEstimator(
            MaxVolSampler(stratify=True, random_state=0),
            LogisticRegression(max_iter=3000),
        ),
    )
    grid = {"subsetfitestimator__selector__n_samples": [0.02, 0.05, 0.1, 0.2]}
    search = GridSearchCV(pipe, grid, cv=3).fit(X_tr, y_tr)
    for budget, score in zip(
        grid["subsetfitestimator__selector__n_samples"],
        search.cv_results_["mean_test_score"],
        strict=True,
    ):
        print(f"budget {budget:4.0%}: cross-validated accuracy {score:.3f}")
    print("best:", search.best_params_, f"test accuracy {search.score(X_te, y_te):.3f}")
    return search


if __name__ == "__main__":
    main()
