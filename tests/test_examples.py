"""The examples run offline and show what their docstrings promise."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_coreset_example_beats_random_rows(tmp_path):
    maxvol_acc, random_acc = _load("coreset_logistic").main(tmp_path)
    assert maxvol_acc > np.mean(random_acc)
    assert (tmp_path / "coreset_digits.png").stat().st_size > 1000


# f_classif divides by zero on the constant border pixels of digits.
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_feature_selection_example(tmp_path):
    scores = _load("feature_selection").main(tmp_path)
    assert scores["MaxVolFeatureSelector"] >= scores["SelectKBest(f_classif)"] - 0.02
    assert (tmp_path / "selected_pixels.png").exists()


def test_low_rank_example_meets_the_fd_bound():
    gap, bound = _load("low_rank_features").main()
    assert 0 <= gap <= bound


@pytest.mark.slow
def test_grid_search_example():
    search = _load("subset_fit_gridsearch").main()
    assert search.best_score_ > 0.8
