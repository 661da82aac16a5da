"""Gradient-similarity data attribution with compressed per-sample gradients.

The score of training sample ``j`` for test sample ``i`` is the first-order
change of the test loss when training takes a gradient step on ``j``:
``s_ij = <g_test_i, g_train_j>`` (TracIn at one checkpoint, Pruthi et al.
2020), or, with ``damping = lambda``, the influence-function form
``s_ij = g_test_i^T (G^T G / n + lambda I)^{-1} g_train_j`` (Koh & Liang
2017 with the Gauss-Newton / empirical Fisher curvature ``G^T G / n`` of the
``n`` training gradients ``G``). Positive scores mark helpful training
samples (proponents): training on them lowers the test loss. The gradients
are compressed (:class:`graft.FactGraSS` by default), which keeps inner
products and, through them, the curvature in the compressed space.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import torch
from torch import nn

from graft.grass._compressors import (
    _GRADIENT_FIX,
    FactGraSS,
    GraSS,
    _check_dim,
    _check_finite,
    _NonFiniteError,
    hookable_layers,
)

__all__ = ["attribute"]


def _batches(data, batch_size, name):
    """``(inputs, targets)`` batches of a tensor pair or a dataset of pairs."""
    if isinstance(data, (tuple, list)) and len(data) == 2:
        inputs, targets = data
        if not (torch.is_tensor(inputs) and torch.is_tensor(targets)):
            raise TypeError(
                f"{name} as a pair must hold two tensors (inputs, targets), got "
                f"{type(inputs).__name__} and {type(targets).__name__}."
            )
        if len(inputs) != len(targets) or len(inputs) == 0:
            raise ValueError(
                f"{name} holds {len(inputs)} inputs and {len(targets)} targets; "
                "pass the same, positive number of each."
            )
        for start in range(0, len(inputs), batch_size):
            yield (
                inputs[start : start + batch_size],
                targets[start : start + batch_size],
            )
        return
    if not (hasattr(data, "__len__") and hasattr(data, "__getitem__")):
        raise TypeError(
            f"{name} must be a pair of tensors (inputs, targets) or a dataset of "
            f"(input, target) pairs, got {type(data).__name__}."
        )
    if len(data) == 0:
        raise ValueError(f"{name} is empty; pass a dataset with samples.")
    loader = torch.utils.data.DataLoader(data, batch_size=batch_size, shuffle=False)
    for batch in loader:
        if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
            raise TypeError(
                f"{name} must be a dataset of (input, target) pairs, but its rows "
                f"load as {type(batch).__name__}"
                f"{f' of {len(batch)}' if isinstance(batch, (tuple, list)) else ''}; "
                "pass e.g. TensorDataset(inputs, targets)."
            )
        yield batch[0], batch[1]


def _compressed(compressor, data, batch_size, loss_fn, device, name):
    """The compressed gradients of ``data``; NaN or inf raises, naming the samples."""
    rows, start = [], 0
    for inputs, targets in _batches(data, batch_size, name):
        if device is not None:
            inputs, targets = inputs.to(device), targets.to(device)
        try:
            Z = compressor.per_sample_gradients(inputs, targets, loss_fn)
            _check_finite(Z, "the compressed per-sample gradients", _GRADIENT_FIX)
        except _NonFiniteError as err:
            raise err.within(name, start) from None
        rows.append(Z)
        start += len(inputs)
    return torch.cat(rows)


_DAMPING = "damping must be None (inner products), 'auto' or a finite number > 0"


def _check_damping(damping):
    if damping is None:
        return None
    if isinstance(damping, str):
        if damping == "auto":
            return damping
        raise ValueError(f"{_DAMPING}, got {damping!r}; e.g. damping='auto'.")
    if isinstance(damping, bool) or not isinstance(damping, numbers.Real):
        raise TypeError(
            f"{_DAMPING}, got {type(damping).__name__} ({damping!r}); e.g. "
            "damping=1e-3, or damping=float(value) for a 0-d array."
        )
    if not (math.isfinite(damping) and damping > 0):
        raise ValueError(
            f"{_DAMPING}, got {damping!r}; e.g. damping=1e-3 or damping='auto' "
            "(damping=None for plain inner products)."
        )
    return float(damping)


def _default_compressor(model):
    """FactGraSS with proj_dim 1024, or all weight entries of a smaller model."""
    modules = dict(model.named_modules())
    entries = 0
    for name in hookable_layers(model):
        layer = modules[name]
        entries += layer.weight.numel() + (
            layer.bias.numel() if layer.bias is not None else 0
        )
    return FactGraSS(model, proj_dim=max(1, min(1024, entries)), seed=0)


def _peak(Z):
    return float(Z.abs().max())


def _fisher(A):
    """``A^T A / n`` (float64), or a ValueError when it overflows."""
    F = A.T @ A / A.shape[0]
    if not bool(torch.isfinite(F).all()):
        raise ValueError(
            "the curvature G^T G / n of the compressed training gradients "
            f"(max |z| = {_peak(A):.3g}) overflows float64, so no damping can be "
            "applied; scale the loss down until the gradients are of moderate size."
        )
    return F


def _auto_damping(F):
    """A tenth of the mean eigenvalue of ``F``, the documented ``"auto"``.

    ``F + lambda I`` then has condition number at most ``10 k + 1``, so its
    Cholesky factorisation succeeds for any nonzero PSD ``F``.
    """
    lam = 0.1 * float(torch.trace(F)) / F.shape[0]
    if lam > 0:
        return lam
    raise ValueError(
        "damping='auto' takes a tenth of the mean eigenvalue of G^T G / n, but "
        "the compressed training gradients are all zero (every training sample "
        "has a zero loss gradient in the compressed layers), so every score is 0; "
        "pass damping=None for inner products, or check that the model and "
        "loss_fn give the training samples a gradient."
    )


def _cholesky(F, damping):
    """Cholesky factor of ``F + damping I``, or a ValueError naming damping."""
    eye = torch.eye(F.shape[0], dtype=F.dtype, device=F.device)
    L, info = torch.linalg.cholesky_ex(F + damping * eye)
    if int(info) == 0:
        return L
    raise ValueError(
        f"damping ({damping:.3g}) is too small for the curvature G^T G / n of the "
        f"compressed training gradients (largest diagonal entry "
        f"{float(F.diagonal().max()):.3g}): G^T G / n + damping I is not positive "
        "definite in float64; pass a larger damping, e.g. damping='auto' (here "
        f"{_auto_damping(F):.3g}, a tenth of the mean eigenvalue)."
    )


def _influence(Z_test, Z_train, damping):
    """``Z_test (Z^T Z / n + lambda I)^{-1} Z_train^T`` in float64."""
    A, B = Z_train.double(), Z_test.double()
    F = _fisher(A)
    if damping == "auto":
        damping = _auto_damping(F)
    return B @ torch.cholesky_solve(A.T, _cholesky(F, damping))


def _check_scores(S, Z_train, Z_test):
    """The scores, or a ValueError when their products overflowed."""
    bad = int(torch.isfinite(S).logical_not().sum())
    if bad == 0:
        return S
    peak = max(_peak(Z_train), _peak(Z_test))
    raise ValueError(
        f"{bad} of the {S.shape[0]} x {S.shape[1]} scores are NaN or inf: the "
        f"compressed gradients reach max |z| = {peak:.3g}, and their products "
        f"overflow {str(S.dtype).removeprefix('torch.')}; scale the loss down, or "
        "compute in float64 (model.double() and float64 inputs)."
    )


def attribute(
    model: nn.Module,
    train_data,
    test_data,
    *,
    compressor: GraSS | FactGraSS | None = None,
    loss_fn: Callable | None = None,
    damping: float | str | None = None,
    batch_size: int = 128,
    device: str | torch.device | None = None,
) -> torch.Tensor:
    """Influence scores of every training sample on every test sample.

    Parameters
    ----------
    model : torch.nn.Module
        The trained model; it is put in ``eval()`` mode while the gradients
        are computed, then back in its mode.
    train_data, test_data : (inputs, targets) pair of tensors, or a dataset
        A dataset yields ``(input, target)`` pairs; it is read in order.
    compressor : object or None
        Anything with ``per_sample_gradients(inputs, targets, loss_fn)``
        returning (n, k): :class:`graft.FactGraSS` (default: ``proj_dim``
        1024, or the number of weight entries of a smaller model, ``seed``
        0) or :class:`graft.GraSS`.
    loss_fn : callable or None
        ``loss_fn(outputs, targets)`` -> per-sample losses; default
        cross-entropy with ``reduction="none"``.
    damping : None, "auto" or float > 0, default=None
        None: inner products ``<g_test, g_train>`` (TracIn). A number
        ``lambda``: ``g_test^T (G^T G / n + lambda I)^{-1} g_train`` with the
        compressed training gradients ``G``; ``"auto"`` takes ``lambda`` as a
        tenth of the mean eigenvalue of ``G^T G / n`` (well conditioned also
        when ``G`` is rank deficient; a ValueError when ``G`` is all zero).
    batch_size : int, default=128
        Samples compressed at a time.
    device : str, torch.device or None
        Where to move each batch; None leaves it where it is.

    Returns
    -------
    scores : Tensor of shape (n_test, n_train)
        Positive: the training sample helps the test sample (training on it
        lowers the test loss); negative: it hurts.

    Raises
    ------
    ValueError
        If inputs, targets, losses or (compressed) gradients hold NaN or inf,
        naming the samples (and, for FactGraSS, the layers), or if the scores
        overflow: they are never returned as NaN.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from graft import attribute
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    >>> train = (torch.randn(20, 8), torch.randint(0, 3, (20,)))
    >>> test = (torch.randn(4, 8), torch.randint(0, 3, (4,)))
    >>> attribute(model, train, test).shape
    torch.Size([4, 20])
    """
    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    batch_size = _check_dim(batch_size, "batch_size", "e.g. batch_size=128")
    damping = _check_damping(damping)
    if compressor is None:
        compressor = _default_compressor(model)
    elif not callable(getattr(compressor, "per_sample_gradients", None)):
        raise TypeError(
            "compressor must have a per_sample_gradients(inputs, targets, loss_fn) "
            f"method, like graft.FactGraSS or graft.GraSS; got {type(compressor)}."
        )
    was_training = model.training
    model.eval()
    try:
        Z_train = _compressed(
            compressor, train_data, batch_size, loss_fn, device, "train_data"
        )
        Z_test = _compressed(
            compressor, test_data, batch_size, loss_fn, device, "test_data"
        )
    finally:
        model.train(was_training)
    if damping is None:
        S = Z_test @ Z_train.T
    else:
        S = _influence(Z_test, Z_train, damping).to(Z_train.dtype)
    return _check_scores(S, Z_train, Z_test)
