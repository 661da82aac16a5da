"""scikit-learn estimators: row coresets, column selection, low-rank features.

A transformer must not drop rows, so row selection is a sampler
(:class:`MaxVolSampler`, ``fit_resample`` as in imbalanced-learn) or a
meta-estimator (:class:`SubsetFitEstimator`) that fits its estimator on the
selected rows. Column selection is a ``SelectorMixin``
(:class:`MaxVolFeatureSelector`); :class:`RandomizedLowRank` and
:class:`FrequentDirections` are transformers.

All of them run MaxVol on *coordinates*: the principal coordinates
``Z = U_r S_r`` of the (centred) data, with ``r`` its numerical rank, so
that constant or collinear columns never make a selection ill-posed.
Selecting ``K <= r`` rows runs square MaxVol on the first ``K``
coordinates; ``K > r`` rows need rectangular MaxVol.
"""

from __future__ import annotations

from typing import ClassVar

import array_api_compat
import numpy as np

from maxvol_kit._backend import get_backend
from maxvol_kit._groups import allocate
from maxvol_kit._maxvol import fast_maxvol, maxvol
from maxvol_kit._rect import rect_maxvol
from maxvol_kit._sketch import (
    FrequentDirectionsSketch,
    host_rng,
    principal_coordinates,
    random_fourier_features,
    randomized_svd,
    typicality_weights,
)
from maxvol_kit._sklearn_compat import (
    BaseEstimator,
    ClassNamePrefixFeaturesOutMixin,
    HasMethods,
    Integral,
    Interval,
    MetadataRouter,
    MetaEstimatorMixin,
    MethodMapping,
    Real,
    SelectorMixin,
    StrOptions,
    TransformerMixin,
    _check_sample_weight,
    _fit_context,
    _num_samples,
    _routing_enabled,
    _safe_indexing,
    available_if,
    check_array,
    check_is_fitted,
    check_same_namespace,
    clone,
    column_or_1d,
    get_namespace,
    get_tags,
    indexable,
    process_routing,
    type_of_target,
    validate_data,
)
from maxvol_kit._validation import is_sparse as _is_sparse
from maxvol_kit._validation import rescaled, unmasked

__all__ = [
    "FrequentDirections",
    "MaxVolFeatureSelector",
    "MaxVolSampler",
    "RandomizedLowRank",
    "SubsetFitEstimator",
]

_SQUARE = {"fast": fast_maxvol, "maxvol": maxvol}


def _plain(X):
    """``X`` as the estimators read it: no masked entries, no autograd graph.

    scikit-learn would read the values under a mask and NumPy cannot read a
    tensor that requires grad; both are settled here, before validation.
    """
    if isinstance(X, np.ma.MaskedArray):
        return unmasked(X, "X")
    if getattr(X, "requires_grad", False) and hasattr(X, "detach"):
        return X.detach()
    return X


def _dense_blocks(X, rows):
    """The rows of a sparse ``X`` as dense arrays of at most ``rows`` rows."""
    step = max(rows, 1)
    return (X[start : start + step].toarray() for start in range(0, X.shape[0], step))


def _is_foreign_array(X):
    """An array of an array-API library other than NumPy (torch, CuPy, ...)."""
    return array_api_compat.is_array_api_obj(X) and not isinstance(X, np.ndarray)


def _take_rows(X, rows):
    """Rows ``rows`` (host ints) of ``X``: arrays of any namespace, or pandas."""
    if not _is_foreign_array(X):
        return _safe_indexing(X, rows)
    backend = get_backend(X)
    return backend.xp.take(X, backend.indices(rows), axis=0)


def _like(values, X, dtype=None):
    """Host ``values`` as an array of ``X``'s namespace and device (sparse: NumPy)."""
    if _is_sparse(X):
        return np.asarray(values, dtype=dtype)
    backend = get_backend(X)
    return backend.asarray(np.asarray(values), dtype=dtype)


def _namespace(X):
    """The namespace of the arrays fitted on ``X`` (NumPy for scipy.sparse)."""
    return np if _is_sparse(X) else get_backend(X).xp


def _float_dtypes(X):
    """float64 then float32 of ``X``'s namespace (array-API dispatch aware)."""
    xp, _ = get_namespace(X)
    return [xp.float64, xp.float32]


def _count(value, total, name):
    """An int count, or a fraction of ``total`` rounded (at least 1)."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(
            f"{name} must be an int or a fraction in (0, 1], got bool {value!r}."
        )
    if isinstance(value, Real) and not isinstance(value, Integral):
        return max(1, round(value * total))
    if value > total:
        raise ValueError(
            f"{name} ({value}) is larger than the {total} available; pass at most "
            f"{total}, or a fraction in (0, 1]."
        )
    return int(value)


def _select(Z, K, method, tol):
    """``K`` rows of the coordinates ``Z`` (n, r) by MaxVol, and what it measured.

    Returns the MaxVolResult and the matrix whose volume it maximised.

    ``K <= r``: ``fast`` takes the first ``K`` greedy-volume rows of ``Z``
    (rank-revealing :func:`fast_maxvol`), ``maxvol`` and ``rect`` run on the
    first ``K`` principal coordinates. ``K > r``: rectangular MaxVol (which
    starts from the greedy-volume rows).
    """
    r = Z.shape[1]
    if K > r:
        return rect_maxvol(Z, n_rows=K), Z
    if method == "fast":
        return fast_maxvol(Z, rank=K, tol=tol), Z
    if method == "rect":
        return rect_maxvol(Z[:, :K], n_rows=K), Z[:, :K]
    return maxvol(Z[:, :K], tol=tol), Z[:, :K]


def _gains(A, rows, block=64):
    """The log-volume each pick of ``rows`` adds, in order (they sum to the total).

    The first ``r`` picks add ``log|R_jj|``, the diagonal of the QR factor of
    ``A[rows[:r]]^T`` (the prefix's square volume). Beyond the rank, a block
    ``B`` of picks after rows with Gram matrix ``G = R^T R`` adds the log
    2-volume ``log det(G + B_i^T B_i) / det(G)`` over its prefixes ``B_i``,
    i.e. ``log L_ii`` of the Cholesky factor of ``I + W^T W``, ``W = R^-T
    B^T``: a matrix >= I, so the steps stay accurate when ``A[rows[:r]]`` is
    ill-conditioned.
    """
    from scipy.linalg import cholesky, qr, solve_triangular

    A = np.asarray(_to_numpy(A), dtype=np.float64)[np.asarray(rows)]
    r = min(A.shape)
    with np.errstate(divide="ignore"):  # a zero volume gains -inf, honestly
        gains = [np.log(np.abs(np.diag(qr(A[:r].T, mode="r")[0])))]
    R = qr(A[:r], mode="r")[0][:r]
    for start in range(r, len(A), block):
        B = A[start : start + block]
        W = solve_triangular(R, B.T, trans="T")
        L = cholesky(np.eye(len(B)) + W.T @ W, lower=True)
        gains.append(np.log(np.diag(L)))
        R = qr(np.vstack([R, B]), mode="r")[0][:r]
    return np.concatenate(gains)


def _coverage(result, n):
    """How many rows each selected row represents: the arg-max of ``|C|``."""
    C = _to_numpy(result.coefficients)
    owner = np.argmax(np.abs(C), axis=1)
    return np.bincount(owner, minlength=C.shape[1]).astype(np.float64)


class MaxVolSampler(BaseEstimator):
    """Select a coreset of rows by MaxVol on their principal coordinates.

    ``fit`` picks ``n_samples`` rows whose coordinates span the data with the
    largest volume (they express every other row with bounded coefficients);
    ``fit_resample`` returns them, as imbalanced-learn's samplers do, so the
    sampler works inside an imbalanced-learn ``Pipeline``. To fit any
    scikit-learn estimator on the selection, wrap both in
    :class:`SubsetFitEstimator`.

    Parameters
    ----------
    n_samples : int or float, default=0.1
        Rows to select: a count, or a fraction of the rows (at least 1).
    method : {"fast", "maxvol", "rect"}, default="fast"
        ``fast``: greedy volume + swaps (:func:`fast_maxvol`); ``maxvol``:
        LU start + swaps; ``rect``: rectangular MaxVol. Selections larger than
        the rank always use rectangular MaxVol.
    features : {"auto", "kernel", "centered", "raw", "lowrank"}, default="auto"
        The space MaxVol measures volume in. ``kernel``: random Fourier
        features of the Gaussian kernel (volume = diversity between rows);
        ``centered`` / ``raw``: principal coordinates of the centred or raw
        data; ``lowrank``: of a randomized SVD of rank ``rank``. ``auto``:
        ``kernel`` when a group selects at most as many rows as there are
        features, else ``centered`` (rectangular MaxVol then spreads the rows
        over the data); the choice the coreset benchmark supports.
    typicality : float, default=1.0
        Scale each row by ``exp(-typicality * (m_i + 2 e_i / k))``, ``m_i``
        its squared Mahalanobis distance over the rank, ``e_i`` its squared
        distance from the mean over the mean of those, ``k`` the rows kept
        from its group, so atypical rows count less (with one row per class,
        a row near the class medoid); 0 is plain maximum volume (which
        favours extremes).
    rank : int or None, default=None
        Rank of the ``lowrank`` features (default: the number of rows
        selected, at most the number of features).
    n_components : int or None, default=None
        Number of random Fourier features (default ``min(max(2 K, 64),
        1024)`` for ``K`` rows).
    stratify : bool or "auto", default="auto"
        Select within each class of ``y`` in proportion to its size; features
        are centred per class, and every class gets at least one row
        (``n_samples`` is raised to the number of classes if it is smaller),
        so an estimator fitted on the selection sees every class. ``"auto"``:
        when ``y`` is given and holds class labels (binary or multiclass,
        :func:`sklearn.utils.multiclass.type_of_target`), else not. True needs
        ``y``; False ignores it.
    weighting : {None, "coverage"}, default=None
        ``coverage``: ``sample_weight_`` counts, for each selected row, the
        rows whose largest MaxVol coefficient is on it (they sum to the number
        of rows).
    tol : float, default=1.05
        Dominance tolerance of the square MaxVol.
    random_state : int, RandomState instance or None, default=None
        Seed of the randomized SVD (``features="lowrank"``) and of the random
        Fourier features (``features="kernel"``, and ``"auto"`` when
        ``n_samples`` is at most the number of features). With None those
        two draw fresh randomness, so repeated fits may select different
        rows; pass an int for reproducible selections. The other features
        are deterministic.

    Attributes
    ----------
    sample_indices_ : ndarray of shape (n_selected,)
        The selected rows, sorted.
    pick_order_ : ndarray of shape (n_selected,)
        The same rows in the order MaxVol picked them (``fast``: the
        greedy-volume order, swaps replacing entries in place), class by
        class when stratified.
    gains_ : ndarray of shape (n_selected,)
        The log-volume each pick adds, in the features MaxVol measured; per
        class they sum to the class selection's log-volume.
    support_ : ndarray of shape (n_samples_fit,), dtype bool
        Mask of the selected rows.
    sample_weight_ : ndarray of shape (n_selected,) or None
        Weights of the selected rows (``weighting="coverage"``), else None.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Defined when ``X`` has string column names.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from maxvol_kit import MaxVolSampler
    >>> X, y = load_digits(return_X_y=True)
    >>> sampler = MaxVolSampler(n_samples=50, stratify=True).fit(X, y)
    >>> X_small, y_small = sampler.fit_resample(X, y)
    >>> X_small.shape, len(set(y_small))
    ((50, 64), 10)
    """

    _parameter_constraints: ClassVar[dict] = {
        "n_samples": [
            Interval(Integral, 1, None, closed="left"),
            Interval(Real, 0, 1, closed="right"),
        ],
        "method": [StrOptions({"fast", "maxvol", "rect"})],
        "features": [StrOptions({"auto", "kernel", "centered", "raw", "lowrank"})],
        "typicality": [Interval(Real, 0, None, closed="left")],
        "rank": [Interval(Integral, 1, None, closed="left"), None],
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "stratify": ["boolean", StrOptions({"auto"})],
        "weighting": [StrOptions({"coverage"}), None],
        "tol": [Interval(Real, 1, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        n_samples=0.1,
        *,
        method="fast",
        features="auto",
        typicality=1.0,
        rank=None,
        n_components=None,
        stratify="auto",
        weighting=None,
        tol=1.05,
        random_state=None,
    ):
        self.n_samples = n_samples
        self.method = method
        self.features = features
        self.typicality = typicality
        self.rank = rank
        self.n_components = n_components
        self.stratify = stratify
        self.weighting = weighting
        self.tol = tol
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Select the rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,), optional
            Class labels: required with ``stratify=True``, used by
            ``stratify="auto"`` when they are class labels.

        Returns
        -------
        self : MaxVolSampler
        """
        X = validate_data(self, _plain(X), dtype=_float_dtypes(X), accept_sparse="csr")
        xp = _namespace(X)
        n = X.shape[0]
        K = _count(self.n_samples, n, "n_samples")
        groups = self._groups(y, n)
        alloc = allocate([g.size for g in groups], max(K, len(groups)))
        rng = host_rng(self.random_state)
        picked, weights, gains = [], [], []
        for rows, k in zip(groups, alloc, strict=True):
            if k:
                sel, w, g = self._select_group(_take_rows(X, rows), k, rng)
                picked.append(rows[sel])
                weights.append(w)
                gains.append(g)
        self.pick_order_ = _like(np.concatenate(picked), X, xp.int64)
        self.gains_ = _like(np.concatenate(gains), X, X.dtype)
        order = np.argsort(np.concatenate(picked), kind="stable")
        indices = np.concatenate(picked)[order]
        support = np.zeros(n, dtype=bool)
        support[indices] = True
        # Fitted arrays live where X does (array-API dispatch).
        self.sample_indices_ = _like(indices, X, xp.int64)
        self.support_ = _like(support, X, xp.bool)
        self.sample_weight_ = (
            _like(np.concatenate(weights)[order], X, X.dtype)
            if self.weighting == "coverage"
            else None
        )
        return self

    def _groups(self, y, n):
        """The row groups to select within: the classes of ``y``, or all rows."""
        if self.stratify == "auto":
            labels = y is not None and type_of_target(_to_numpy(y)) in (
                "binary",
                "multiclass",
            )
            if not labels:
                return [np.arange(n)]
        elif not self.stratify:
            return [np.arange(n)]
        if y is None:
            raise ValueError(
                f"{type(self).__name__} with stratify=True requires y to be passed, "
                "but the target y is None; pass the class labels y, or set "
                "stratify=False."
            )
        y = check_array(_to_numpy(y), ensure_2d=False, dtype=None, input_name="y")
        y = column_or_1d(y, warn=True)
        if y.shape[0] != n:
            raise ValueError(f"y has {y.shape[0]} entries but X has {n} rows.")
        return [np.flatnonzero(y == c) for c in np.unique(y)]

    def _select_group(self, X, k, rng):
        """``k`` rows of ``X`` (local indices) and their coverage weights."""
        F, Z = self._coordinates(X, k, rng)
        if Z.shape[1] == 0:  # constant rows: any selection is as good
            return np.arange(k), np.full(k, X.shape[0] / k), np.zeros(k)
        kind = self.features
        if kind == "auto":
            kind = "kernel" if k <= X.shape[1] else "centered"
        A = Z
        if kind == "kernel":
            D = self.n_components or min(max(2 * k, 64), 1024)
            A = random_fourier_features(F, D, rng)
        if self.typicality:
            A = A * typicality_weights(Z, self.typicality, budget=k)[:, None]
        if kind == "kernel" and self.method != "fast":
            A = principal_coordinates(
                A, None, None
            )  # principal coordinates for the others
        try:
            result, measured = _select(A, k, self.method, self.tol)
        except ValueError:
            # Only kernel features skip the rank check of _coordinates: repeated
            # rows leave fewer than k independent ones.
            result, measured = _select(
                principal_coordinates(A, None, None), k, self.method, self.tol
            )
        sel = _to_numpy(result.indices)
        coverage = _coverage(result, X.shape[0]) if self.weighting else None
        return sel, coverage, _gains(measured, sel)

    def _coordinates(self, X, k, rng):
        """``(F, Z)``: the rows as MaxVol sees them, and their principal coordinates.

        For scipy.sparse ``X`` both are the top ``k + 10`` principal coordinates
        (``scipy.sparse.linalg.svds``, ``X`` never densified), so the kernel
        features are those of the coordinates; ``lowrank`` takes ``rank``.
        """
        rank = None
        if self.features == "lowrank":
            rank = self.rank or min(k, X.shape[1])
        if _is_sparse(X):
            U, s, _, _ = _sparse_svd(X, rank or k + 10, center=self.features != "raw")
            Z = U * s
            return Z, Z
        backend = get_backend(X)
        X, _ = rescaled(X, backend)  # the selection does not depend on the scale
        F = X if self.features == "raw" else X - backend.xp.mean(X, axis=0)
        return F, principal_coordinates(F, rank, rng)

    def fit_resample(self, X, y=None):
        """Fit, then return the selected rows of ``X`` (and of ``y`` if given).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,), optional

        Returns
        -------
        X_resampled : array-like of shape (n_selected, n_features)
        y_resampled : array-like of shape (n_selected,)
            Only when ``y`` is given.
        """
        self.fit(X, y)
        rows = get_backend(self.sample_indices_).ops.to_host(self.sample_indices_)
        X_sel = _take_rows(X, rows)
        if y is None:
            return X_sel
        return X_sel, _take_rows(y, rows)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = False
        tags.array_api_support = True
        tags.input_tags.sparse = True
        return tags


def _to_numpy(x):
    """A NumPy copy of a fitted index or weight array of any namespace."""
    if _is_foreign_array(x):
        return get_backend(x).ops.to_host(x)
    return np.asarray(x)


def _estimator_has(attr):
    def check(self):
        return hasattr(getattr(self, "estimator_", self.estimator), attr)

    return check


def _selection(selector, X, y):
    """Fit ``selector`` on ``(X, y)``: ``(rows, None)`` or ``(None, (X_new, y_new))``.

    Selectors that set ``sample_indices_`` in ``fit`` (ours, scikit-learn
    style) and resamplers that set it only in ``fit_resample``
    (imbalanced-learn's under- and random over-samplers) give the rows they
    keep. Resamplers that make new rows (SMOTE, ADASYN...) give their output.
    """
    selector.fit(X, y)
    resampled = None
    if not hasattr(selector, "sample_indices_") and hasattr(selector, "fit_resample"):
        resampled = selector.fit_resample(X, y)
    if hasattr(selector, "sample_indices_"):
        return _check_sample_indices(selector, _num_samples(X)), None
    if resampled is not None:
        return None, resampled
    raise TypeError(
        f"selector {type(selector).__name__} sets no sample_indices_ after fit and "
        "has no fit_resample, so the rows to fit on are unknown; pass a selector "
        "that records them (MaxVolSampler) or an imbalanced-learn sampler."
    )


def _num_samples_or_none(value):
    """The number of samples of an array-like, None for scalars and the like."""
    try:
        return _num_samples(value)
    except TypeError:
        return None


def _check_sample_indices(selector, n):
    """The selector's ``sample_indices_``: a non-empty 1-D int array in [0, n).

    A boolean mask of the rows works too. Repeats are allowed (over-samplers
    repeat rows); negative indices are not, they would wrap to other rows.
    """
    idx = _to_numpy(selector.sample_indices_)
    name = f"{type(selector).__name__}.sample_indices_"
    if idx.dtype == bool and idx.shape == (n,):  # a mask of the kept rows
        idx = np.flatnonzero(idx)
    if idx.ndim == 1 and idx.size == 0:
        raise ValueError(f"{name} is empty: the selector kept no rows of X.")
    if idx.ndim != 1 or idx.dtype.kind not in "iu":
        raise TypeError(
            f"{name} must be a 1-D array of row numbers, got shape {idx.shape} "
            f"and dtype {idx.dtype}; the selector must record the rows it keeps."
        )
    if idx.min() < 0 or idx.max() >= n:
        raise ValueError(
            f"{name} holds rows outside [0, {n}) (min {idx.min()}, max "
            f"{idx.max()}); X has {n} rows."
        )
    return idx


class SubsetFitEstimator(MetaEstimatorMixin, BaseEstimator):
    """Fit an estimator on the rows a selector picks.

    ``fit`` fits a clone of ``selector`` (anything with ``sample_indices_``
    after ``fit``, e.g. :class:`MaxVolSampler`, or any imbalanced-learn
    sampler: those that keep rows of ``X`` give them through
    ``sample_indices_``, those that make new rows such as SMOTE through
    ``fit_resample``), then a clone of ``estimator`` on the selected rows;
    prediction is delegated. Use it as the
    last step of a ``Pipeline`` and tune the budget with
    ``GridSearchCV(..., {"selector__n_samples": [...]})``.

    Parameters
    ----------
    selector : estimator
        Sets ``sample_indices_`` (and optionally ``sample_weight_``) in ``fit``.
    estimator : estimator
        Fitted on the selected rows.
    use_weights : bool, default=False
        Pass the selector's ``sample_weight_`` to ``estimator.fit``
        (multiplied by a user ``sample_weight`` if both are given).

    Attributes
    ----------
    selector_ : fitted clone of ``selector``
    estimator_ : clone of ``estimator`` fitted on the selected rows
    classes_ : ndarray, for classifiers
    n_features_in_ : int

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from sklearn.linear_model import LogisticRegression
    >>> from maxvol_kit import MaxVolSampler, SubsetFitEstimator
    >>> X, y = load_digits(return_X_y=True)
    >>> model = SubsetFitEstimator(
    ...     MaxVolSampler(n_samples=0.2, stratify=True),
    ...     LogisticRegression(max_iter=2000),
    ... ).fit(X, y)
    >>> model.estimator_.n_features_in_, len(model.selector_.sample_indices_)
    (64, 359)
    """

    _parameter_constraints: ClassVar[dict] = {
        "selector": [HasMethods(["fit"])],
        "estimator": [HasMethods(["fit"])],
        "use_weights": ["boolean"],
    }

    def __init__(self, selector, estimator, *, use_weights=False):
        self.selector = selector
        self.estimator = estimator
        self.use_weights = use_weights

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X, y=None, sample_weight=None, **fit_params):
        """Fit the selector, then the estimator on the selected rows.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,), optional
        sample_weight : array-like of shape (n_samples,), optional
            Passed to ``estimator.fit`` for the selected rows (under metadata
            routing only if the estimator requests it, the scikit-learn way).
        **fit_params
            Other metadata for ``estimator.fit``; needs
            ``sklearn.set_config(enable_metadata_routing=True)`` and the
            estimator's ``set_fit_request``. Per-sample arrays are cut to the
            selected rows.

        Returns
        -------
        self : SubsetFitEstimator
        """
        X, y = indexable(X, y)
        if y is not None:  # NaN or inf labels fail here, not only when selected
            check_array(_to_numpy(y), ensure_2d=False, dtype=None, input_name="y")
        params = self._estimator_params(sample_weight, fit_params)
        if params.get("sample_weight") is not None:
            params["sample_weight"] = _check_sample_weight(params["sample_weight"], X)
        self.selector_ = clone(self.selector)
        idx, resampled = _selection(self.selector_, X, y)
        if resampled is not None:  # new rows (e.g. SMOTE): fit on them as they are
            return self._fit_resampled(X, resampled, params)
        n = _num_samples(X)
        params = {  # per-sample metadata follows the rows
            k: _take_rows(v, idx) if _num_samples_or_none(v) == n else v
            for k, v in params.items()
        }
        weights = getattr(self.selector_, "sample_weight_", None)
        if self.use_weights and weights is not None:
            chosen = params.get("sample_weight")
            weights = _to_numpy(weights)
            params["sample_weight"] = weights if chosen is None else weights * chosen
        y_sel = None if y is None else _take_rows(y, idx)
        self.estimator_ = clone(self.estimator).fit(_take_rows(X, idx), y_sel, **params)
        return self._set_features_in(X)

    def _estimator_params(self, sample_weight, fit_params):
        """The metadata ``estimator.fit`` gets: routed, or ``sample_weight`` alone."""
        if _routing_enabled():
            metadata = dict(fit_params)
            if sample_weight is not None:  # None is "not passed"
                metadata["sample_weight"] = sample_weight
            return dict(process_routing(self, "fit", **metadata).estimator.fit)
        if fit_params:
            raise TypeError(
                f"{type(self).__name__}.fit got {sorted(fit_params)}; other metadata "
                "than sample_weight needs sklearn.set_config(enable_metadata_routing="
                "True) and estimator.set_fit_request(...)."
            )
        return {} if sample_weight is None else {"sample_weight": sample_weight}

    def get_metadata_routing(self):
        """The routing of ``fit``'s metadata to ``estimator.fit`` (scikit-learn's)."""
        return MetadataRouter(owner=type(self).__name__).add(
            estimator=self.estimator,
            method_mapping=MethodMapping().add(caller="fit", callee="fit"),
        )

    def _fit_resampled(self, X, resampled, params):
        if params:
            raise ValueError(
                f"sample_weight and other per-sample metadata cannot follow the rows "
                f"{type(self.selector_).__name__} makes (they are new, not rows of "
                "X); drop them, or use a selector that keeps rows of X."
            )
        X_new, y_new = resampled if isinstance(resampled, tuple) else (resampled, None)
        self.estimator_ = clone(self.estimator).fit(X_new, y_new)
        return self._set_features_in(X)

    def _set_features_in(self, X):
        width = X.shape[1] if hasattr(X, "shape") else np.shape(X)[1]
        self.n_features_in_ = getattr(self.selector_, "n_features_in_", width)
        if hasattr(self.selector_, "feature_names_in_"):
            self.feature_names_in_ = self.selector_.feature_names_in_
        return self

    @property
    def classes_(self):
        """Class labels of the fitted classifier."""
        check_is_fitted(self)
        return self.estimator_.classes_

    @available_if(_estimator_has("predict"))
    def predict(self, X):
        """Predict with the estimator fitted on the selected rows."""
        check_is_fitted(self)
        return self.estimator_.predict(X)

    @available_if(_estimator_has("predict_proba"))
    def predict_proba(self, X):
        """Class probabilities from the estimator fitted on the selected rows."""
        check_is_fitted(self)
        return self.estimator_.predict_proba(X)

    @available_if(_estimator_has("predict_log_proba"))
    def predict_log_proba(self, X):
        """Log class probabilities from the fitted estimator."""
        check_is_fitted(self)
        return self.estimator_.predict_log_proba(X)

    @available_if(_estimator_has("decision_function"))
    def decision_function(self, X):
        """Decision function of the estimator fitted on the selected rows."""
        check_is_fitted(self)
        return self.estimator_.decision_function(X)

    @available_if(_estimator_has("transform"))
    def transform(self, X):
        """Transform with the estimator fitted on the selected rows."""
        check_is_fitted(self)
        return self.estimator_.transform(X)

    @available_if(_estimator_has("score"))
    def score(self, X, y=None, sample_weight=None):
        """The fitted estimator's score on ``X``."""
        check_is_fitted(self)
        kwargs = {} if sample_weight is None else {"sample_weight": sample_weight}
        return self.estimator_.score(X, y, **kwargs)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        inner = get_tags(self.estimator)
        tags.estimator_type = inner.estimator_type
        tags.classifier_tags = inner.classifier_tags
        tags.regressor_tags = inner.regressor_tags
        tags.transformer_tags = inner.transformer_tags
        tags.target_tags.required = inner.target_tags.required
        # Sparse X works when both the selector and the estimator take it.
        try:
            selector_sparse = get_tags(self.selector).input_tags.sparse
        except AttributeError:  # a selector without scikit-learn tags
            selector_sparse = False
        tags.input_tags.sparse = inner.input_tags.sparse and selector_sparse
        return tags


class MaxVolFeatureSelector(SelectorMixin, BaseEstimator):
    """Select columns by MaxVol on the dominant right singular space.

    Column ``j`` is represented by row ``j`` of ``V_r S_r`` (its loadings on
    the principal directions); MaxVol picks the columns that span them with
    the largest volume, so the kept columns express the others with bounded
    coefficients (an interpolative decomposition of ``X``). Unsupervised:
    ``y`` is ignored.

    Parameters
    ----------
    n_features_to_select : int, float or None, default=None
        Columns to keep: a count, a fraction, or None for half of them.
    method : {"fast", "maxvol", "rect"}, default="fast"
        As in :class:`MaxVolSampler`.
    tol : float, default=1.05
        Dominance tolerance of the square MaxVol.

    Attributes
    ----------
    support_ : ndarray of shape (n_features_in_,), dtype bool
    ranking_ : ndarray of shape (n_features_in_,)
        1 for the selected columns, 2 for the others (as RFE's).
    pick_order_ : ndarray of shape (n_selected,)
        The selected columns in the order MaxVol picked them (``fast``: the
        greedy-volume order, swaps replacing entries in place).
    gains_ : ndarray of shape (n_selected,)
        The log-volume each pick adds (in the principal coordinates MaxVol
        measured); they sum to the selection's log-volume, and a prefix's
        sum to that prefix's.
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Defined when ``X`` has string column names.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from maxvol_kit import MaxVolFeatureSelector
    >>> X, _ = load_digits(return_X_y=True)
    >>> MaxVolFeatureSelector(n_features_to_select=10).fit_transform(X).shape
    (1797, 10)
    """

    _parameter_constraints: ClassVar[dict] = {
        "n_features_to_select": [
            Interval(Integral, 1, None, closed="left"),
            Interval(Real, 0, 1, closed="right"),
            None,
        ],
        "method": [StrOptions({"fast", "maxvol", "rect"})],
        "tol": [Interval(Real, 1, None, closed="left")],
    }

    def __init__(self, n_features_to_select=None, *, method="fast", tol=1.05):
        self.n_features_to_select = n_features_to_select
        self.method = method
        self.tol = tol

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Select the columns.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : ignored

        Returns
        -------
        self : MaxVolFeatureSelector
        """
        X = validate_data(self, _plain(X), dtype=_float_dtypes(X), accept_sparse="csr")
        d = X.shape[1]
        wanted = self.n_features_to_select
        k = (
            max(1, d // 2)
            if wanted is None
            else _count(wanted, d, "n_features_to_select")
        )
        if _is_sparse(X):
            Z, e = _sparse_loadings(X, k)
        else:
            X, e = rescaled(X, get_backend(X))  # the selection ignores the scale
            Xc = X - get_backend(X).xp.mean(X, axis=0)
            Z = principal_coordinates(Xc.T, None, None)  # rows: columns of X
        xp = _namespace(X)
        if Z.shape[1] == 0:
            sel, gains = np.arange(k), np.zeros(k)
        else:
            result, measured = _select(Z, k, self.method, self.tol)
            sel = _to_numpy(result.indices)
            gains = _gains(measured, sel) + e * np.log(2.0)  # in the caller's units
        self.pick_order_ = _like(sel, X, xp.int64)
        self.gains_ = _like(gains, X, X.dtype)
        support = np.zeros(d, dtype=bool)
        support[sel] = True
        self.support_ = _like(support, X, xp.bool)
        self.ranking_ = _like(np.where(support, 1, 2), X, xp.int64)
        return self

    def _get_support_mask(self):
        check_is_fitted(self)
        return _to_numpy(self.support_)

    def transform(self, X):
        """The selected columns of ``X``, on ``X``'s backend and device."""
        check_is_fitted(self)
        check_same_namespace(X, self, attribute="support_", method="transform")
        X = validate_data(
            self,
            _plain(X),
            dtype=None,
            reset=False,
            ensure_all_finite=False,
            accept_sparse=["csr", "csc"],
        )
        if not _is_foreign_array(X):
            return super().transform(X)
        columns = np.flatnonzero(self._get_support_mask())
        return get_backend(X).xp.take(X, _like(columns, X), axis=1)

    def inverse_transform(self, X):
        """Put the kept columns back in place, zeros elsewhere (any backend)."""
        if not _is_foreign_array(X):
            return super().inverse_transform(X)
        backend = get_backend(X)
        support = self._get_support_mask()
        out = backend.xp.zeros(
            (X.shape[0], support.size), dtype=X.dtype, device=backend.device
        )
        for k, j in enumerate(np.flatnonzero(support).tolist()):
            out[:, j] = X[:, k]
        return out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = False
        tags.array_api_support = True
        tags.input_tags.sparse = True
        return tags


def _sparse_svd(X, rank, center=True, drop=True):
    """Top ``rank`` singular triplets of the (centred) sparse ``X``, and ``e``.

    ``X`` is first multiplied by ``2^-e`` when it is far from 1 (as
    :func:`rescaled` does for dense input). ``scipy.sparse.linalg.svds`` of
    the operator ``X - 1 mu^T`` (never formed, so ``X`` stays sparse);
    with ``drop``, directions below ``sqrt(eps)`` of the largest are dropped,
    as for dense input. Equal to the dense factors when the rank of the
    centred ``X`` is at most ``rank``. Returns ``(U, s, Vt, e)``, largest
    first, the singular values those of ``2^-e X``.
    """
    from scipy.sparse.linalg import LinearOperator, svds

    n, d = X.shape
    peak = np.array([[float(abs(X).max())]])  # the power of two rescaled would use
    e = rescaled(peak, get_backend(peak))[1]
    X = X * 2.0**-e if e else X  # exact, as for dense input
    mu = np.asarray(X.mean(axis=0)).ravel() if center else np.zeros(d)
    if rank >= min(n, d):  # svds needs k < min(n, d): the whole spectrum
        U, s, Vt = np.linalg.svd(X.toarray() - mu, full_matrices=False)
    else:
        centred = LinearOperator(
            (n, d),
            matvec=lambda v: X @ v.ravel() - mu @ v.ravel(),  # v may be (d, 1)
            rmatvec=lambda u: X.T @ u.ravel() - mu * u.sum(),
            dtype=np.float64,
        )
        U, s, Vt = svds(centred, k=rank, random_state=0)
        order = np.argsort(s)[::-1]
        U, s, Vt = U[:, order], s[order], Vt[order]
    if not drop:
        return U[:, :rank], s[:rank], Vt[:rank], e
    keep = s > (np.sqrt(np.finfo(np.float64).eps) * s[0] if s.size else 0.0)
    return U[:, keep], s[keep], Vt[keep], e


def _sparse_loadings(X, k, extra=10):
    """Loadings ``V S`` of the centred sparse ``X``, top ``k + extra``; and ``e``."""
    _, s, Vt, e = _sparse_svd(X, k + extra)
    return Vt.T * s, e


def _check_components(n_components, X):
    n, d = X.shape
    if n_components > min(n, d):
        raise ValueError(
            f"n_components ({n_components}) must be <= min(n_samples, n_features) "
            f"(got n_samples = {n}, n_features = {d}); pass a smaller n_components."
        )


class RandomizedLowRank(
    ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator
):
    """Low-rank features: the top principal coordinates by randomized SVD.

    ``transform(X) = (X - mean_) @ components_.T``, with ``components_`` the
    top right singular vectors of the centred training data (Halko et al.
    2011). Works on NumPy and, under ``array_api_dispatch``, on torch and
    CuPy arrays. On scipy.sparse input the same factors come from
    ``scipy.sparse.linalg.svds`` of the implicitly centred matrix (``X`` is
    never densified) and ``transform`` returns a dense array.

    Parameters
    ----------
    n_components : int, default=2
    n_oversamples : int, default=10
    n_iter : int, default=4
        Power iterations.
    random_state : int, RandomState instance or None, default=None

    Attributes
    ----------
    components_ : array of shape (n_components, n_features_in_)
    singular_values_ : array of shape (n_components,)
    mean_ : array of shape (n_features_in_,)
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Defined when ``X`` has string column names.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from maxvol_kit import RandomizedLowRank
    >>> X, _ = load_digits(return_X_y=True)
    >>> RandomizedLowRank(n_components=8, random_state=0).fit_transform(X).shape
    (1797, 8)
    """

    _parameter_constraints: ClassVar[dict] = {
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "n_oversamples": [Interval(Integral, 0, None, closed="left")],
        "n_iter": [Interval(Integral, 0, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(
        self, n_components=2, *, n_oversamples=10, n_iter=4, random_state=None
    ):
        self.n_components = n_components
        self.n_oversamples = n_oversamples
        self.n_iter = n_iter
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y=None):
        """Fit the principal directions of ``X``; ``y`` is ignored."""
        X = validate_data(self, _plain(X), dtype=_float_dtypes(X), accept_sparse="csr")
        _check_components(self.n_components, X)
        self._n_features_out = self.n_components
        if _is_sparse(X):
            _, s, Vt, e = _sparse_svd(X, self.n_components, drop=False)
            self.mean_ = np.asarray(X.mean(axis=0)).ravel()
            self.components_, self.singular_values_ = Vt, s * 2.0**e
            return self
        xp = get_backend(X).xp
        self.mean_ = xp.mean(X, axis=0)
        _, s, Vt = randomized_svd(
            X - self.mean_,
            self.n_components,
            n_oversamples=self.n_oversamples,
            n_iter=self.n_iter,
            random_state=self.random_state,
        )
        self.components_ = Vt
        self.singular_values_ = s
        return self

    def transform(self, X):
        """Principal coordinates of ``X``, shape (n_samples, n_components)."""
        check_is_fitted(self)
        check_same_namespace(X, self, attribute="components_", method="transform")
        X = validate_data(
            self, _plain(X), dtype=_float_dtypes(X), reset=False, accept_sparse="csr"
        )
        if _is_sparse(X):  # X @ C^T - mu @ C^T: X is never centred in place
            return X @ self.components_.T - self.mean_ @ self.components_.T
        return (X - self.mean_) @ self.components_.T

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.array_api_support = True
        tags.input_tags.sparse = True
        return tags


class FrequentDirections(
    ClassNamePrefixFeaturesOutMixin, TransformerMixin, BaseEstimator
):
    """Streaming low-rank sketch (Frequent Directions) with ``partial_fit``.

    Keeps a sketch ``B`` of at most ``2 * sketch_size`` rows of the rows seen
    so far, in ``O(sketch_size * n_features)`` memory whatever their number,
    such that for every unit ``x`` and ``k < sketch_size``
    ``0 <= ||X x||^2 - ||B x||^2 <= ||X - X_k||_F^2 / (sketch_size - k)``
    (Liberty 2013; Ghashami et al. 2016). ``components_`` are the top right
    singular vectors of ``B`` (``center=False``: the sketch is of ``X``
    itself) or, with ``center=True``, the top eigenvectors of
    ``B^T B - n mu mu^T``, the sketch's estimate of the centred scatter
    ``(X - mu)^T (X - mu)`` from the running mean ``mu`` (as PCA centres).
    Both estimates are below the truth by at most the bound above in every
    direction, so each explained variance is too (Weyl's inequality).

    Parameters
    ----------
    sketch_size : int, default=32
    n_components : int or None, default=None
        Components kept; None means ``min(sketch_size, n_features)``.
    center : bool, default=False
        Components of the centred data, and ``transform`` subtracts ``mean_``.

    Attributes
    ----------
    sketch_ : array of shape (m, n_features_in_), m <= 2 * sketch_size
    components_ : array of shape (n_components_, n_features_in_)
        Rows beyond the rank of the sketch are zero.
    explained_variance_ : array of shape (n_components_,)
        The sketch's estimate of the variance along each component,
        ``||X v||^2 / (n - 1)`` (centred ``X`` with ``center=True``).
    explained_variance_ratio_ : array of shape (n_components_,)
        Over the total variance of the rows seen (tracked exactly).
    mean_ : array of shape (n_features_in_,)
        The mean of the rows seen (subtracted by ``transform`` when centring).
    n_components_ : int
    n_samples_seen_ : int
    n_features_in_ : int
    feature_names_in_ : ndarray of str
        Defined when ``X`` has string column names.

    Examples
    --------
    >>> import numpy as np
    >>> from maxvol_kit import FrequentDirections
    >>> X = np.random.default_rng(0).standard_normal((1000, 20))
    >>> fd = FrequentDirections(sketch_size=8)
    >>> for chunk in np.array_split(X, 10):
    ...     fd = fd.partial_fit(chunk)
    >>> fd.sketch_.shape[0] <= 16, fd.transform(X).shape
    (True, (1000, 8))
    """

    _parameter_constraints: ClassVar[dict] = {
        "sketch_size": [Interval(Integral, 1, None, closed="left")],
        "n_components": [Interval(Integral, 1, None, closed="left"), None],
        "center": ["boolean"],
    }

    def __init__(self, sketch_size=32, *, n_components=None, center=False):
        self.sketch_size = sketch_size
        self.n_components = n_components
        self.center = center

    def fit(self, X, y=None):
        """Start a new sketch from the rows of ``X``; ``y`` is ignored."""
        for attr in ("_sketch", "n_samples_seen_"):
            if hasattr(self, attr):
                delattr(self, attr)
        return self.partial_fit(X)

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y=None):
        """Stream more rows into the sketch; ``y`` is ignored.

        ``X`` may be a scipy.sparse matrix: it is streamed in dense blocks of
        ``sketch_size`` rows, so memory stays ``O(sketch_size * n_features)``.
        """
        first = not hasattr(self, "_sketch")
        X = validate_data(
            self, _plain(X), dtype=_float_dtypes(X), reset=first, accept_sparse="csr"
        )
        if first:
            self._sketch = FrequentDirectionsSketch(self.sketch_size)
            self.n_components_ = min(self.n_components or self.sketch_size, X.shape[1])
            self.n_samples_seen_ = 0
            # The sum of the rows (the mean) and of their squares, as
            # scale^2 * ssq so that no square overflows (LAPACK's dlassq).
            self._sum, self._scale, self._ssq = 0.0, 0.0, 0.0
        blocks = _dense_blocks(X, self.sketch_size) if _is_sparse(X) else [X]
        for block in blocks:
            self._stream(block)
        self._set_components()
        return self

    def _stream(self, X):
        xp = get_backend(X).xp
        self._sketch.update(X)
        self.n_samples_seen_ += X.shape[0]
        self._sum = self._sum + xp.sum(X, axis=0)
        peak = float(xp.max(xp.abs(X))) if X.shape[0] else 0.0
        if peak > self._scale:
            self._ssq *= (self._scale / peak) ** 2
            self._scale = peak
        if self._scale > 0:
            self._ssq += float(xp.sum((X / self._scale) ** 2))

    def _set_components(self):
        B = self._sketch.sketch
        backend = get_backend(B)
        xp, n = backend.xp, self.n_samples_seen_
        self.sketch_ = xp.asarray(B, copy=True)
        self.mean_ = self._sum / n
        # Everything squared is computed in units of c, a scale of the data, so
        # that nothing overflows; the variances are c^2 times what follows.
        c = max(self._scale, 1e-300)
        Bs, mean_s = B / c, self.mean_ / c
        total = self._ssq * (self._scale / c) ** 2  # sum of squares / c^2
        if self.center:  # the centred scatter's estimate, B^T B - n mu mu^T
            scatter = Bs.T @ Bs - n * (mean_s[:, None] * mean_s[None, :])
            values, vectors = xp.linalg.eigh(scatter)
            order = xp.flip(xp.argsort(values))
            values, Vt = xp.take(values, order), xp.take(vectors, order, axis=1).T
            total -= n * float(xp.sum(mean_s * mean_s))
        else:
            _, s, Vt = xp.linalg.svd(Bs, full_matrices=False)
            values = s * s
        k = self.n_components_
        comps = xp.zeros((k, B.shape[1]), dtype=B.dtype, device=backend.device)
        variance = xp.zeros((k,), dtype=B.dtype, device=backend.device)
        m = min(k, Vt.shape[0])
        comps[:m, :] = Vt[:m, :]
        variance[:m] = xp.clip(values[:m], 0, None)
        self.components_ = comps
        self.explained_variance_ratio_ = variance / max(total, 1e-300)
        with np.errstate(over="ignore"):  # a variance beyond the float range is inf
            self.explained_variance_ = variance * (c * c / max(n - 1, 1))
        self._n_features_out = k

    def transform(self, X):
        """Coordinates of ``X`` on the sketch's components."""
        check_is_fitted(self)
        check_same_namespace(X, self, attribute="components_", method="transform")
        X = validate_data(
            self, _plain(X), dtype=_float_dtypes(X), reset=False, accept_sparse="csr"
        )
        Z = X @ self.components_.T  # sparse X: a dense product, X is not densified
        if self.center:
            Z = Z - self.mean_ @ self.components_.T
        return Z

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.array_api_support = True
        tags.input_tags.sparse = True
        return tags
