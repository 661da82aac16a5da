"""scikit-learn estimators: the checks, oracles for what they select, pipelines."""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sklearn = pytest.importorskip("sklearn")

from sklearn.base import BaseEstimator, ClassifierMixin, clone  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.model_selection import GridSearchCV  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

from maxvol_kit import (  # noqa: E402
    FrequentDirections,
    MaxVolFeatureSelector,
    MaxVolSampler,
    RandomizedLowRank,
    SubsetFitEstimator,
    fast_maxvol,
    maxvol,
    rect_maxvol,
)
from tests.maxvol_kit.helpers import assert_fd_guarantee  # noqa: E402

ESTIMATORS = [
    MaxVolSampler(random_state=0),
    MaxVolSampler(stratify=True, weighting="coverage", method="maxvol", random_state=0),
    MaxVolSampler(features="lowrank", rank=3, method="rect", random_state=0),
    SubsetFitEstimator(
        MaxVolSampler(n_samples=0.5, stratify=True, random_state=0),
        LogisticRegression(),
    ),
    # The defaults, as a user writes them: every class is in the selection.
    SubsetFitEstimator(MaxVolSampler(random_state=0), LogisticRegression()),
    MaxVolFeatureSelector(),
    RandomizedLowRank(random_state=0),
    FrequentDirections(sketch_size=4),
    FrequentDirections(sketch_size=4, center=True),
]

_REPEATS = (
    "the selection depends on which rows are present: MaxVol never selects two "
    "copies of a row, so repeating rows is not the same as weighting them"
)
EXPECTED_FAILURES = {
    "check_sample_weight_equivalence_on_dense_data": _REPEATS,
    "check_sample_weight_equivalence_on_sparse_data": _REPEATS,
}


def _expected_failures(estimator):
    return EXPECTED_FAILURES if isinstance(estimator, SubsetFitEstimator) else {}


@parametrize_with_checks(ESTIMATORS, expected_failed_checks=_expected_failures)
def test_scikit_learn_checks(estimator, check):
    check(estimator)


def _digits():
    X, y = load_digits(return_X_y=True)
    return X, y


def principal_coordinates(X):
    U, s, _ = np.linalg.svd(X - X.mean(axis=0), full_matrices=False)
    r = int(np.sum(s > np.sqrt(np.finfo(float).eps) * s[0]))
    return U[:, :r] * s[:r]


# MaxVolSampler ------------------------------------------------------------------


PLAIN = {"features": "centered", "typicality": 0.0}  # pure volume, no weighting


@pytest.mark.parametrize(
    ("method", "run"),
    [
        ("fast", lambda Z, K: fast_maxvol(Z, rank=K)),
        ("maxvol", lambda Z, K: maxvol(Z[:, :K])),
        ("rect", lambda Z, K: rect_maxvol(Z[:, :K], n_rows=K)),
    ],
)
@pytest.mark.parametrize("K", [5, 20, 40])
def test_sampler_selects_the_maxvol_rows_of_the_principal_coordinates(method, run, K):
    X, _ = _digits()
    Z = principal_coordinates(X)
    result = run(Z, K)
    expected = np.sort(result.indices)
    sampler = MaxVolSampler(n_samples=K, method=method, **PLAIN).fit(X)
    np.testing.assert_array_equal(sampler.sample_indices_, expected)
    np.testing.assert_array_equal(sampler.pick_order_, result.indices)  # in order
    measured = Z if method == "fast" else Z[:, :K]
    np.testing.assert_allclose(
        sampler.gains_, _prefix_gains(measured, result.indices), atol=1e-8
    )
    assert sampler.gains_.sum() == pytest.approx(result.log_volume)
    assert sampler.support_.sum() == K and sampler.support_[expected].all()
    assert sampler.sample_weight_ is None and sampler.n_features_in_ == 64


def _prefix_gains(M, order):
    """Log-volume gained by each pick: differences of the prefixes' log-volumes."""
    volumes = [0.0]
    for j in range(1, len(order) + 1):
        P = M[order[:j]]
        G = P @ P.T if j <= M.shape[1] else P.T @ P
        volumes.append(0.5 * np.linalg.slogdet(G)[1])
    return np.diff(volumes)


def test_sampler_beyond_the_rank_uses_rectangular_maxvol():
    X, _ = _digits()
    Z = principal_coordinates(X)  # rank 61: three pixel columns are constant
    sampler = MaxVolSampler(n_samples=100, **PLAIN).fit(X)
    result = rect_maxvol(Z, n_rows=100)
    np.testing.assert_array_equal(sampler.sample_indices_, np.sort(result.indices))
    np.testing.assert_allclose(
        sampler.gains_, _prefix_gains(Z, result.indices), atol=1e-7
    )
    assert sampler.gains_.sum() == pytest.approx(result.log_volume)


def test_typicality_scales_rows_by_their_mahalanobis_and_euclidean_distance():
    X, _ = _digits()
    Z = principal_coordinates(X)
    m = np.mean((Z / Z.std(axis=0)) ** 2, axis=1)
    Xc = X - X.mean(axis=0)
    e = np.einsum("ij,ij->i", Xc, Xc)  # squared distances from the mean
    for alpha in (0.5, 2.0):
        w = np.exp(-alpha * (m + 2 / 30 * e / e.mean()))
        expected = fast_maxvol(w[:, None] * Z, rank=30).indices
        sampler = MaxVolSampler(30, features="centered", typicality=alpha).fit(X)
        np.testing.assert_array_equal(sampler.sample_indices_, np.sort(expected))


def test_one_row_per_class_is_near_the_class_mean():
    X, y = _digits()
    sampler = MaxVolSampler(10, stratify=True, random_state=0).fit(X, y)
    for i in sampler.sample_indices_:
        members = X[y == y[i]]
        distance = np.linalg.norm(members - members.mean(axis=0), axis=1)
        mine = np.linalg.norm(X[i] - members.mean(axis=0))
        assert np.mean(distance < mine) < 0.1  # among the tenth nearest the mean
    plain = MaxVolSampler(10, stratify=True, random_state=0, **PLAIN).fit(X, y)
    far = [  # plain volume keeps an extreme row of each class instead
        np.mean(np.linalg.norm(X[y == y[i]] - X[y == y[i]].mean(axis=0), axis=1)
                < np.linalg.norm(X[i] - X[y == y[i]].mean(axis=0)))
        for i in plain.sample_indices_
    ]  # fmt: skip
    assert np.median(far) > 0.5


def test_default_keeps_away_from_outliers_that_plain_volume_picks():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((500, 5))
    X[:5] *= 12  # five far outliers
    plain = MaxVolSampler(10, **PLAIN).fit(X).sample_indices_
    default = MaxVolSampler(10, random_state=0).fit(X).sample_indices_
    assert np.isin(np.arange(5), plain).sum() >= 4
    assert np.isin(np.arange(5), default).sum() == 0


def test_kernel_features_follow_the_random_state():
    X, y = _digits()
    a = MaxVolSampler(40, stratify=True, random_state=3).fit(X, y).sample_indices_
    b = MaxVolSampler(40, stratify=True, random_state=3).fit(X, y).sample_indices_
    c = MaxVolSampler(40, stratify=True, random_state=4).fit(X, y).sample_indices_
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_sampler_with_repeated_rows_still_selects_distinct_indices():
    X = np.vstack([np.random.default_rng(1).standard_normal((10, 3))] * 5)
    idx = MaxVolSampler(20, random_state=0).fit(X).sample_indices_
    assert np.unique(idx).size == 20


def test_sampler_fraction_and_resample():
    X, y = _digits()
    sampler = MaxVolSampler(n_samples=0.05, stratify=False, random_state=0)
    X_res, y_res = sampler.fit_resample(X, y)
    K = round(0.05 * X.shape[0])
    assert X_res.shape == (K, 64)
    np.testing.assert_array_equal(X_res, X[sampler.sample_indices_])
    np.testing.assert_array_equal(y_res, y[sampler.sample_indices_])
    X_only = MaxVolSampler(n_samples=0.05, random_state=0).fit_resample(X)
    np.testing.assert_array_equal(X_only, X_res)  # no y: nothing to stratify by


def test_stratify_auto_follows_the_target():
    X, y = _digits()
    rows = {
        option: MaxVolSampler(0.05, stratify=option, random_state=0)
        .fit(X, target)
        .sample_indices_
        for option, target in [(True, y), (False, y), ("auto", y)]
    }
    np.testing.assert_array_equal(rows["auto"], rows[True])  # class labels
    continuous = y + np.random.default_rng(0).random(len(y))  # a regression target
    np.testing.assert_array_equal(
        MaxVolSampler(0.05, random_state=0).fit(X, continuous).sample_indices_,
        rows[False],
    )


def test_every_class_is_selected_even_below_one_row_per_class():
    X, y = _digits()
    sampler = MaxVolSampler(n_samples=3, random_state=0).fit(X, y)
    assert np.unique(y[sampler.sample_indices_]).size == 10  # raised to 10 rows
    model = SubsetFitEstimator(MaxVolSampler(n_samples=2), LogisticRegression())
    assert model.fit(X, y).classes_.size == 10


def test_sampler_stratified_counts_follow_the_class_sizes():
    X, y = _digits()
    sampler = MaxVolSampler(n_samples=100, stratify=True, **PLAIN).fit(X, y)
    counts = np.bincount(y[sampler.sample_indices_], minlength=10)
    share = 100 * np.bincount(y) / len(y)
    assert counts.sum() == 100
    assert np.all(np.abs(counts - share) < 1)
    # within each class: MaxVol on that class's centred coordinates
    for c in range(10):
        rows = np.flatnonzero(y == c)
        k = counts[c]
        expected = rows[fast_maxvol(principal_coordinates(X[rows]), rank=k).indices]
        assert set(sampler.sample_indices_[y[sampler.sample_indices_] == c]) == set(
            expected
        )


def test_sampler_gives_every_class_a_row_when_the_budget_allows():
    X, y = _digits()
    sampler = MaxVolSampler(n_samples=12, stratify=True).fit(X, y)
    assert set(y[sampler.sample_indices_]) == set(range(10))


def test_sampler_coverage_weights():
    X, _ = _digits()
    sampler = MaxVolSampler(n_samples=30, weighting="coverage").fit(X)
    w = sampler.sample_weight_
    assert w.shape == (30,) and np.all(w >= 1)  # each covers at least itself
    assert w.sum() == X.shape[0]


def test_sampler_errors():
    X, y = _digits()
    with pytest.raises(ValueError, match=r"n_samples \(5000\) is larger than the 1797"):
        MaxVolSampler(n_samples=5000).fit(X)
    with pytest.raises(ValueError, match="stratify=True requires y to be passed"):
        MaxVolSampler(stratify=True).fit(X)
    with pytest.raises(ValueError, match="y has 3 entries but X has 1797 rows"):
        MaxVolSampler(stratify=True).fit(X, y[:3])
    with pytest.raises(ValueError, match="'method' parameter of MaxVolSampler"):
        MaxVolSampler(method="qr").fit(X)


def test_sampler_on_constant_rows():
    X = np.ones((20, 3))
    sampler = MaxVolSampler(n_samples=4).fit(X)
    np.testing.assert_array_equal(sampler.sample_indices_, np.arange(4))


def test_sampler_in_an_imbalanced_learn_pipeline():
    imblearn_pipeline = pytest.importorskip("imblearn.pipeline")
    X, y = _digits()
    sampler = MaxVolSampler(n_samples=200, stratify=True, random_state=0)
    pipe = imblearn_pipeline.make_pipeline(
        sampler, LogisticRegression(max_iter=3000)
    ).fit(X, y)
    direct = LogisticRegression(max_iter=3000).fit(*clone(sampler).fit_resample(X, y))
    np.testing.assert_array_equal(pipe.predict(X), direct.predict(X))


# SubsetFitEstimator ---------------------------------------------------------------


class _Recorder(ClassifierMixin, BaseEstimator):
    """Remembers what fit received (to check the routing)."""

    def fit(self, X, y, sample_weight=None):
        self.X_, self.sample_weight_ = np.asarray(X), sample_weight
        self.classes_ = np.unique(y)
        return self

    def predict(self, X):
        return np.full(len(X), self.classes_[0])


def test_subset_fit_fits_the_estimator_on_the_selected_rows():
    X, y = _digits()
    model = SubsetFitEstimator(
        MaxVolSampler(n_samples=150, stratify=True), LogisticRegression(max_iter=3000)
    ).fit(X, y)
    idx = model.selector_.sample_indices_
    direct = LogisticRegression(max_iter=3000).fit(X[idx], y[idx])
    np.testing.assert_allclose(model.predict_proba(X), direct.predict_proba(X))
    np.testing.assert_array_equal(model.classes_, np.arange(10))
    assert model.score(X, y) == pytest.approx(direct.score(X, y))
    np.testing.assert_allclose(model.decision_function(X), direct.decision_function(X))


def test_subset_fit_routes_weights():
    X, y = _digits()
    sw = np.arange(len(y), dtype=float) + 1
    plain = SubsetFitEstimator(MaxVolSampler(n_samples=50), _Recorder()).fit(X, y)
    assert plain.estimator_.sample_weight_ is None
    routed = SubsetFitEstimator(MaxVolSampler(n_samples=50), _Recorder()).fit(
        X, y, sample_weight=sw
    )
    idx = routed.selector_.sample_indices_
    np.testing.assert_array_equal(routed.estimator_.sample_weight_, sw[idx])
    both = SubsetFitEstimator(
        MaxVolSampler(n_samples=50, weighting="coverage"), _Recorder(), use_weights=True
    ).fit(X, y, sample_weight=sw)
    expected = both.selector_.sample_weight_ * sw[both.selector_.sample_indices_]
    np.testing.assert_allclose(both.estimator_.sample_weight_, expected)


def test_subset_fit_in_a_pipeline_with_grid_search_and_clone():
    X, y = _digits()
    pipe = make_pipeline(
        StandardScaler(),
        SubsetFitEstimator(
            MaxVolSampler(stratify=True), LogisticRegression(max_iter=2000)
        ),
    )
    search = GridSearchCV(
        pipe, {"subsetfitestimator__selector__n_samples": [0.05, 0.2]}, cv=3
    ).fit(X, y)
    assert search.best_params_["subsetfitestimator__selector__n_samples"] in (0.05, 0.2)
    assert search.score(X, y) > 0.8
    cloned = clone(pipe)
    assert not hasattr(cloned[-1], "estimator_")


def test_subset_fit_hides_methods_the_estimator_lacks():
    model = SubsetFitEstimator(MaxVolSampler(), _Recorder())
    assert not hasattr(model, "predict_proba")
    assert hasattr(model, "predict")


# MaxVolFeatureSelector -----------------------------------------------------------


@pytest.mark.parametrize("k", [5, 16, 32])
def test_feature_selector_picks_maxvol_columns_of_the_loadings(k):
    X, _ = _digits()
    Xc = X - X.mean(axis=0)
    _, s, Vt = np.linalg.svd(Xc, full_matrices=False)
    r = int(np.sum(s > np.sqrt(np.finfo(float).eps) * s[0]))
    loadings = Vt[:r].T * s[:r]
    result = fast_maxvol(loadings, rank=k)
    expected = np.sort(result.indices)
    selector = MaxVolFeatureSelector(n_features_to_select=k).fit(X)
    np.testing.assert_array_equal(np.flatnonzero(selector.get_support()), expected)
    np.testing.assert_array_equal(selector.pick_order_, result.indices)
    np.testing.assert_allclose(
        selector.gains_, _prefix_gains(loadings, result.indices), atol=1e-8
    )
    np.testing.assert_array_equal(selector.transform(X), X[:, expected])
    names = selector.get_feature_names_out()
    assert list(names) == [f"x{j}" for j in expected]


def test_feature_selector_never_keeps_constant_columns_needlessly():
    X, _ = _digits()
    constant = np.flatnonzero(X.std(axis=0) == 0)
    selector = MaxVolFeatureSelector(n_features_to_select=20).fit(X)
    assert not selector.get_support()[constant].any()


# RandomizedLowRank and FrequentDirections -----------------------------------------


def test_randomized_low_rank_equals_pca_up_to_sign():
    X, _ = _digits()
    ours = RandomizedLowRank(6, n_oversamples=30, n_iter=8, random_state=0).fit(X)
    pca = PCA(n_components=6, svd_solver="full").fit(X)
    np.testing.assert_allclose(
        np.abs(ours.components_ @ pca.components_.T), np.eye(6), atol=1e-6
    )
    Z, P = ours.transform(X), pca.transform(X)
    np.testing.assert_allclose(np.abs(Z), np.abs(P), atol=1e-6 * np.abs(P).max())
    assert list(ours.get_feature_names_out()) == [
        f"randomizedlowrank{i}" for i in range(6)
    ]


@settings(max_examples=20)
@given(
    n=st.integers(1, 200),
    d=st.integers(1, 20),
    ell=st.integers(1, 10),
    chunks=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
)
def test_frequent_directions_estimator_guarantee(n, d, ell, chunks, seed):
    X = np.random.default_rng(seed).standard_normal((n, d)) * np.exp(-np.arange(d) / 3)
    fd = FrequentDirections(sketch_size=ell)
    for part in np.array_split(X, min(chunks, n)):
        fd.partial_fit(part)
    assert fd.n_samples_seen_ == n
    assert_fd_guarantee(X, fd.sketch_, ell)


def test_frequent_directions_fit_restarts_and_components_are_orthonormal():
    X = np.random.default_rng(0).standard_normal((300, 12))
    fd = FrequentDirections(sketch_size=5).fit(X)
    fd.fit(X[:10])
    assert fd.n_samples_seen_ == 10
    fd.fit(X)
    C = fd.components_
    np.testing.assert_allclose(C @ C.T, np.eye(5), atol=1e-12)
    assert fd.transform(X).shape == (300, 5)
    with pytest.raises(ValueError, match="X has 11 features"):
        fd.partial_fit(X[:, :11])


# Array-API dispatch: torch in, torch out --------------------------------------------

_DISPATCH_SCRIPT = textwrap.dedent(
    """
    import numpy as np, sklearn, torch
    from sklearn.datasets import load_digits
    from maxvol_kit import (MaxVolSampler, MaxVolFeatureSelector, RandomizedLowRank,
                            FrequentDirections)
    X_np, y_np = load_digits(return_X_y=True)
    X = torch.asarray(X_np)
    with sklearn.config_context(array_api_dispatch=True):
        s = MaxVolSampler(n_samples=30, random_state=0).fit(X)
        ref = MaxVolSampler(n_samples=30, random_state=0).fit(X_np)
        assert isinstance(s.sample_indices_, torch.Tensor)
        assert np.array_equal(s.sample_indices_.numpy(), ref.sample_indices_)
        Xr = s.fit_resample(X)
        assert isinstance(Xr, torch.Tensor) and Xr.shape == (30, 64)
        f = MaxVolFeatureSelector(n_features_to_select=8).fit(X)
        assert isinstance(f.transform(X), torch.Tensor)
        for est in (RandomizedLowRank(4, random_state=0), FrequentDirections(4)):
            out = est.fit(X).transform(X)
            assert isinstance(out, torch.Tensor) and out.shape == (1797, 4)
    print("ok")
    """
)


def test_array_api_dispatch_keeps_torch_tensors():
    pytest.importorskip("torch")
    env = dict(os.environ, SCIPY_ARRAY_API="1")
    out = subprocess.run(
        [sys.executable, "-c", _DISPATCH_SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().endswith("ok")


# pandas in, pandas out ---------------------------------------------------------


def test_pandas_output_and_feature_names():
    pd = pytest.importorskip("pandas")
    X, y = _digits()
    frame = pd.DataFrame(X, columns=[f"pixel{j}" for j in range(64)])
    selector = MaxVolFeatureSelector(8).set_output(transform="pandas").fit(frame)
    out = selector.transform(frame)
    assert isinstance(out, pd.DataFrame)
    kept = list(frame.columns[selector.get_support()])
    assert list(out.columns) == kept and len(kept) == 8
    np.testing.assert_array_equal(selector.feature_names_in_, frame.columns)
    for estimator in (RandomizedLowRank(5, random_state=0), FrequentDirections(8)):
        Z = estimator.set_output(transform="pandas").fit(frame).transform(frame)
        assert isinstance(Z, pd.DataFrame) and Z.shape[0] == 1797
        prefix = type(estimator).__name__.lower()
        assert all(c.startswith(prefix) for c in Z.columns), list(Z.columns)
        np.testing.assert_array_equal(estimator.feature_names_in_, frame.columns)
    sampler = MaxVolSampler(50, random_state=0).fit(frame, y)
    np.testing.assert_array_equal(sampler.feature_names_in_, frame.columns)
    X_small, _ = sampler.fit_resample(frame, pd.Series(y))
    assert isinstance(X_small, pd.DataFrame) and len(X_small) == 50


# FrequentDirections: centring and explained variance ------------------------------


@pytest.mark.parametrize("center", [False, True])
def test_fd_explained_variance_is_below_the_truth_within_the_sketch_bound(center):
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(3)
    X = rng.standard_normal((3000, 30)) * np.linspace(5, 0.5, 30) + 2.0  # off-centre
    ell, k = 12, 6
    fd = FrequentDirections(sketch_size=ell, n_components=ell, center=center)
    for chunk in np.array_split(X, 7):
        fd.partial_fit(chunk)
    n = len(X)
    # The truth: PCA of the centred data, or the singular values of X itself.
    if center:
        truth = PCA(ell).fit(X).explained_variance_ * (n - 1)
        total = ((X - X.mean(axis=0)) ** 2).sum()
    else:
        truth = np.linalg.svd(X, compute_uv=False)[:ell] ** 2
        total = (X**2).sum()
    s = np.linalg.svd(X, compute_uv=False)  # the bound is on X's own tail
    bound = (s[k:] ** 2).sum() / (ell - k)
    estimate = fd.explained_variance_ * (n - 1)
    assert np.all(estimate <= truth * (1 + 1e-9))
    assert np.all(truth - estimate <= bound * (1 + 1e-9))
    np.testing.assert_allclose(fd.mean_, X.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(
        fd.explained_variance_ratio_, estimate / total, rtol=1e-9
    )
    Z = fd.transform(X)
    expected = (X - X.mean(axis=0) if center else X) @ fd.components_.T
    np.testing.assert_allclose(Z, expected, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize(
    "name", ["RandomUnderSampler", "RandomOverSampler", "NearMiss", "SMOTE"]
)
def test_subset_fit_takes_any_imbalanced_learn_sampler(name):
    imblearn = pytest.importorskip("imblearn")
    import importlib

    module = "over_sampling" if "Over" in name or name == "SMOTE" else "under_sampling"
    cls = getattr(importlib.import_module(f"imblearn.{module}"), name)
    X, y = _digits()
    keep = np.flatnonzero((y != 3) | (np.arange(len(y)) % 6 == 0))  # class 3 is rare
    X, y = X[keep], y[keep]
    sampler = cls(random_state=0) if name != "NearMiss" else cls()
    model = SubsetFitEstimator(sampler, LogisticRegression(max_iter=3000)).fit(X, y)
    X_new, y_new = clone(sampler).fit_resample(X, y)  # the oracle: imblearn's own rows
    direct = LogisticRegression(max_iter=3000).fit(X_new, y_new)
    np.testing.assert_allclose(model.predict_proba(X), direct.predict_proba(X))
    assert imblearn is not None
    if name == "SMOTE":  # new rows carry no user weights
        with pytest.raises(ValueError, match="per-sample metadata cannot follow"):
            SubsetFitEstimator(cls(random_state=0), LogisticRegression()).fit(
                X, y, sample_weight=np.ones(len(y))
            )


def test_subset_fit_routes_metadata_the_scikit_learn_way():
    from sklearn import config_context
    from sklearn.exceptions import UnsetMetadataPassedError

    X, y = _digits()
    sw = np.arange(len(y), dtype=float) + 1
    with config_context(enable_metadata_routing=True):
        asked = _Recorder().set_fit_request(sample_weight=True)
        model = SubsetFitEstimator(MaxVolSampler(n_samples=50), asked)
        model.fit(X, y, sample_weight=sw)
        idx = model.selector_.sample_indices_
        np.testing.assert_array_equal(model.estimator_.sample_weight_, sw[idx])
        declined = _Recorder().set_fit_request(sample_weight=False)
        model = SubsetFitEstimator(MaxVolSampler(n_samples=50), declined)
        assert model.fit(X, y).estimator_.sample_weight_ is None
        with pytest.raises(TypeError, match="not routed to any object"):
            model.fit(X, y, sample_weight=sw)  # declined: scikit-learn refuses it
        # Neither asked nor declined: refused too (the error depends on the release).
        with pytest.raises((UnsetMetadataPassedError, TypeError)):
            SubsetFitEstimator(MaxVolSampler(n_samples=50), _Recorder()).fit(
                X, y, sample_weight=sw
            )
    with pytest.raises(TypeError, match=r"needs sklearn\.set_config"):
        SubsetFitEstimator(MaxVolSampler(n_samples=50), _Recorder()).fit(
            X, y, groups=np.zeros(len(y))
        )


# scipy.sparse input -----------------------------------------------------------------


def _sparse_low_rank(rank=8, n=400, d=60, seed=1):
    sp = pytest.importorskip("scipy.sparse")
    W = sp.random(rank, d, density=0.3, random_state=seed)
    A = sp.random(n, rank, density=0.5, random_state=seed + 1)
    return (A @ W).tocsr()


@pytest.mark.parametrize("scale", [1.0, 2.0**300])
def test_feature_selector_on_sparse_input_equals_the_dense_result(scale):
    X = _sparse_low_rank() * scale  # rank 8 <= k + 10: the truncation is exact
    sparse = MaxVolFeatureSelector(5).fit(X)
    dense = MaxVolFeatureSelector(5).fit(X.toarray())
    np.testing.assert_array_equal(sparse.get_support(), dense.get_support())
    np.testing.assert_array_equal(sparse.pick_order_, dense.pick_order_)
    np.testing.assert_allclose(sparse.gains_, dense.gains_, rtol=1e-9)
    out = sparse.transform(X)
    assert hasattr(out, "tocsr")  # stays sparse
    np.testing.assert_array_equal(out.toarray(), X.toarray()[:, sparse.get_support()])


@pytest.mark.parametrize("center", [False, True])
def test_frequent_directions_on_sparse_input_equals_the_dense_result(center):
    X = _sparse_low_rank(rank=20)
    sparse = FrequentDirections(6, center=center).fit(X)
    dense = FrequentDirections(6, center=center).fit(X.toarray())
    np.testing.assert_allclose(
        np.abs(sparse.components_), np.abs(dense.components_), atol=1e-10
    )
    np.testing.assert_allclose(
        sparse.explained_variance_, dense.explained_variance_, rtol=1e-10
    )
    np.testing.assert_allclose(
        np.abs(sparse.transform(X)), np.abs(dense.transform(X.toarray())), atol=1e-10
    )


@pytest.mark.parametrize("n_components", [5, 60])  # 60 = n_features: every direction
def test_randomized_low_rank_on_sparse_input_equals_the_exact_svd(n_components):
    sp = pytest.importorskip("scipy.sparse")
    X = sp.random(300, 60, density=0.1, random_state=1, format="csr") * 1e6
    est = RandomizedLowRank(n_components).fit(X)
    D = X.toarray()
    _, s, Vt = np.linalg.svd(D - D.mean(axis=0), full_matrices=False)  # the oracle
    k = n_components
    np.testing.assert_allclose(est.singular_values_, s[:k], rtol=1e-9, atol=1e-9 * s[0])
    np.testing.assert_allclose(est.mean_, D.mean(axis=0))
    top = slice(0, min(k, 20))  # the tail of a flat spectrum has near-ties
    np.testing.assert_allclose(np.abs(est.components_[top]), np.abs(Vt[top]), atol=1e-8)
    out = est.transform(X)
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, (D - D.mean(axis=0)) @ est.components_.T, atol=1e-6)


def test_sampler_on_sparse_input_equals_the_dense_result():
    X = _sparse_low_rank()  # rank 8 <= k + 10: the sparse SVD is exact
    y = np.arange(X.shape[0]) % 3
    for options in (
        {"features": "centered", "typicality": 0.0},
        {"features": "centered"},
    ):
        sparse = MaxVolSampler(6, random_state=0, **options).fit(X, y)
        dense = MaxVolSampler(6, random_state=0, **options).fit(X.toarray(), y)
        np.testing.assert_array_equal(sparse.sample_indices_, dense.sample_indices_)
    # Kernel features of the coordinates: other random draws, but a valid selection.
    rows = MaxVolSampler(12, random_state=0).fit(X, y).sample_indices_
    assert len(set(rows.tolist())) == 12 and np.bincount(y[rows]).tolist() == [4, 4, 4]
    X_small = MaxVolSampler(6, random_state=0).fit_resample(X)
    assert hasattr(X_small, "tocsr") and X_small.shape == (6, X.shape[1])
