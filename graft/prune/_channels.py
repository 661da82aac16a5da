"""MaxVol channel pruning: keep the channels that span the activations, fold the rest.

For a pair of layers ``layer -> (per-channel ops) -> next_layer`` let ``A`` of
shape (n, C) hold the inputs that ``next_layer`` sees on some data, one column
per channel of ``layer`` (for convolutions every spatial position of every
image is a row). MaxVol on the top ``keep`` right singular vectors ``V_k`` of
``A`` (shape (C, keep)) picks channels ``J`` and the interpolative
decomposition

    A ~ A[:, J] @ T,    T = (V_k @ inv(V_k[J])).T  of shape (keep, C),

which is exact when ``rank(A) <= keep``. Then ``layer`` keeps only the output
channels ``J`` and ``next_layer`` gets ``W' = W @ T.T`` over its input
channels, so that ``next_layer'(x[J]) = next_layer(T.T @ x[J])``: the pruned
pair computes what the original computes on the span of the kept channels.
"""

from __future__ import annotations

import contextlib
import copy
import operator
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from graft._checks import check_count
from graft._features import eval_mode
from graft.loop import GraftBatch
from maxvol_kit import fast_maxvol

__all__ = ["collect_activations", "prune_channels"]

_SELECTS = ("maxvol", "magnitude")
_FOLDS = ("interpolative", "lstsq", "none")
_CHUNK = 1 << 16  # rows per step of the streaming QR of the activations


class PrunedPair(tuple):
    """``(layer, next_layer)``: the pruned layers, with what was done as attributes.

    Attributes
    ----------
    layer, next_layer : torch.nn.Module
        The new modules (also the two items of the tuple).
    batchnorm : torch.nn.Module or None
        The pruned copy of the ``batchnorm`` argument, or None.
    channels : Tensor of shape (keep,)
        The kept channels of ``layer``, ascending (int64, CPU).
    coefficients : Tensor of shape (keep, C)
        ``T``: the input of ``next_layer`` is taken as ``T.T @ x[channels]``
        (float64, CPU).
    """

    def __new__(cls, layer, next_layer, *, batchnorm, channels, coefficients):
        self = super().__new__(cls, (layer, next_layer))
        self.batchnorm = batchnorm
        self.channels = channels
        self.coefficients = coefficients
        return self

    def __getnewargs_ex__(self):
        # copy and pickle rebuild through __new__, which needs the keywords.
        extra = ("batchnorm", "channels", "coefficients")
        return (self[0], self[1]), {name: getattr(self, name) for name in extra}

    @property
    def layer(self):
        """The pruned ``layer``."""
        return self[0]

    @property
    def next_layer(self):
        """The ``next_layer`` with the coefficients folded in."""
        return self[1]


# -- checks ----------------------------------------------------------------------


def _check_pair(layer, next_layer):
    """Channels ``C`` of ``layer`` and the features per channel in ``next_layer``."""
    kinds = (nn.Linear, nn.Conv2d)
    for name, module in (("layer", layer), ("next_layer", next_layer)):
        if type(module) not in kinds:
            raise TypeError(
                f"{name} must be a torch.nn.Linear or torch.nn.Conv2d, got "
                f"{type(module).__name__}; prune Linear -> Linear, Conv2d -> Conv2d "
                "or Conv2d -> (Flatten) -> Linear pairs."
            )
        if isinstance(module, nn.Conv2d) and module.groups != 1:
            raise ValueError(
                f"{name}.groups ({module.groups}) must be 1; grouped and depthwise "
                "convolutions tie channels together and are not supported."
            )
    if isinstance(layer, nn.Linear):
        C = layer.out_features
        if isinstance(next_layer, nn.Conv2d):
            raise TypeError(
                "layer is a Linear and next_layer a Conv2d; supported pairs are "
                "Linear -> Linear, Conv2d -> Conv2d and Conv2d -> (Flatten) -> Linear."
            )
        if next_layer.in_features != C:
            raise ValueError(
                f"next_layer.in_features ({next_layer.in_features}) must equal "
                f"layer.out_features ({C}); pass the layer that consumes this "
                "layer's output."
            )
        return C, 1
    C = layer.out_channels
    if isinstance(next_layer, nn.Conv2d):
        if next_layer.in_channels != C:
            raise ValueError(
                f"next_layer.in_channels ({next_layer.in_channels}) must equal "
                f"layer.out_channels ({C}); pass the layer that consumes this "
                "layer's output."
            )
        return C, 1
    if next_layer.in_features % C != 0:
        raise ValueError(
            f"next_layer.in_features ({next_layer.in_features}) must be a multiple "
            f"of layer.out_channels ({C}): a Linear after a flattened Conv2d sees "
            "out_channels blocks of height * width features."
        )
    return C, next_layer.in_features // C


def _check_keep(keep, C):
    if isinstance(keep, bool):
        raise TypeError(f"keep must be an int, got bool ({keep}).")
    try:
        keep = operator.index(keep)
    except TypeError:
        raise TypeError(
            f"keep must be an int, got {type(keep).__name__} ({keep!r}); pass a "
            f"number of channels such as keep={max(1, C // 2)}."
        ) from None
    if not 1 <= keep <= C:
        raise ValueError(
            f"keep ({keep}) must be in [1, {C}], the channels of layer; e.g. "
            f"keep={max(1, C // 2)} keeps half of them."
        )
    return keep


def _check_option(value, name, options):
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} ({value!r}) must be one of {list(options)}.")
    return value


def _check_batchnorm(batchnorm, layer, C):
    if batchnorm is None:
        return
    kind = nn.BatchNorm1d if isinstance(layer, nn.Linear) else nn.BatchNorm2d
    if type(batchnorm) is not kind:
        raise TypeError(
            f"batchnorm must be a torch.nn.{kind.__name__} after a "
            f"{type(layer).__name__}, got {type(batchnorm).__name__}."
        )
    if batchnorm.num_features != C:
        raise ValueError(
            f"batchnorm.num_features ({batchnorm.num_features}) must equal the "
            f"channels of layer ({C}); pass the BatchNorm that follows layer."
        )


def _activation_matrix(activations, layer, next_layer, C, S):
    """The (n, C) matrix of ``next_layer``'s inputs, one column per channel."""
    if not isinstance(activations, torch.Tensor):
        raise TypeError(
            f"activations must be a torch.Tensor, got {type(activations).__name__}; "
            "collect them with graft.collect_activations."
        )
    activations = activations.detach()
    shape = tuple(activations.shape)
    if isinstance(next_layer, nn.Linear) and isinstance(layer, nn.Linear):
        want = f"(n, {C})"
        if len(shape) >= 2 and shape[-1] == C:
            return _finite(activations.reshape(-1, C))
    elif isinstance(next_layer, nn.Conv2d):
        want = f"(n, {C}, height, width)"
        if len(shape) == 4 and shape[1] == C:
            return _finite(activations.permute(0, 2, 3, 1).reshape(-1, C))
    else:
        want = f"(n, {C * S}) or (n, {C}, h, w) with h * w = {S}"
        if (len(shape) == 2 and shape[1] == C * S) or (
            len(shape) == 4 and shape[1] == C and shape[2] * shape[3] == S
        ):
            blocks = activations.reshape(shape[0], C, S)
            return _finite(blocks.transpose(1, 2).reshape(-1, C))
    raise ValueError(
        f"activations of shape {shape} do not match the pair: expected {want}, "
        "the input that next_layer sees (see graft.collect_activations)."
    )


def _finite(A):
    if A.shape[0] == 0:
        raise ValueError("activations hold no samples; pass at least one.")
    if not torch.isfinite(A).all():
        raise ValueError(
            "activations contain NaN or inf; check the model and the data."
        )
    return A


def _check_channels(channels, C, keep):
    idx = np.asarray(channels)
    if idx.ndim != 1 or idx.size != keep or not np.issubdtype(idx.dtype, np.integer):
        raise ValueError(
            f"select as an array must hold keep={keep} integer channel indices, got "
            f"shape {idx.shape} and dtype {idx.dtype}."
        )
    if np.unique(idx).size != keep or idx.min() < 0 or idx.max() >= C:
        raise ValueError(
            f"select as an array must hold {keep} distinct channels in [0, {C}); "
            f"got {idx.tolist()}."
        )
    return idx.astype(np.int64)


# -- math ------------------------------------------------------------------------


def _triangular_factor(A):
    """``R`` (C, C) with ``A.T @ A = R.T @ R``, by QR over row blocks, float64.

    Every quantity below (right singular vectors, least squares over the
    columns) depends on ``A`` only through ``R``, and the blocks keep memory
    at ``_CHUNK`` rows whatever ``n`` is.
    """
    C = A.shape[1]
    R = torch.zeros((0, C), dtype=torch.float64, device=A.device)
    for start in range(0, A.shape[0], _CHUNK):
        block = A[start : start + _CHUNK].to(torch.float64)
        R = torch.linalg.qr(torch.cat([R, block]), mode="r")[1]
    R = R.cpu().numpy()
    return np.vstack([R, np.zeros((C - R.shape[0], C))]) if R.shape[0] < C else R


def _maxvol_channels(R, keep):
    """MaxVol channels on ``V_k`` and their interpolative coefficients (keep, C)."""
    V_k = np.linalg.svd(R)[2][:keep].T
    result = fast_maxvol(V_k)
    return np.asarray(result.indices), np.asarray(result.coefficients).T


def _magnitude_channels(layer, keep):
    """The ``keep`` output channels with the largest L1 norm of their weights."""
    norms = layer.weight.detach().abs().reshape(layer.weight.shape[0], -1).sum(1)
    order = torch.argsort(norms.cpu().double(), descending=True, stable=True)
    return order[:keep].numpy()


def _coefficients(R, J, fold, C):
    """``T`` (keep, C) with ``A ~ A[:, J] @ T``."""
    if fold == "none":
        return np.eye(C)[J]
    if fold == "lstsq":
        # min ||A - A[:, J] T||_F = min ||R - R[:, J] T||_F, minimum norm.
        return np.linalg.lstsq(R[:, J], R, rcond=None)[0]
    V_k = np.linalg.svd(R)[2][: len(J)].T
    return np.linalg.lstsq(V_k[J].T, V_k.T, rcond=None)[0]


# -- building the new modules ------------------------------------------------------


def _parameter(old, value):
    return nn.Parameter(value.to(old.dtype), requires_grad=old.requires_grad)


def _keep_outputs(layer, J):
    new = copy.deepcopy(layer)
    idx = torch.as_tensor(J, device=layer.weight.device)
    new.weight = _parameter(layer.weight, layer.weight.detach()[idx])
    if layer.bias is not None:
        new.bias = _parameter(layer.bias, layer.bias.detach()[idx])
    if isinstance(new, nn.Linear):
        new.out_features = len(J)
    else:
        new.out_channels = len(J)
    return new


def _keep_batchnorm(batchnorm, J):
    new = copy.deepcopy(batchnorm)
    idx = torch.as_tensor(J)
    for name in ("weight", "bias"):
        old = getattr(batchnorm, name)
        if old is not None:
            setattr(new, name, _parameter(old, old.detach()[idx.to(old.device)]))
    for name in ("running_mean", "running_var"):
        old = getattr(batchnorm, name)
        if old is not None:
            setattr(new, name, old[idx.to(old.device)].clone())
    new.num_features = len(J)
    return new


def _fold(next_layer, T, C):
    """``next_layer`` with ``W' = W @ T.T`` over its input channels (blocks)."""
    new = copy.deepcopy(next_layer)
    W = next_layer.weight.detach()
    keep = T.shape[0]
    wide = torch.float64 if W.device.type != "mps" else torch.float32
    T = torch.as_tensor(T, dtype=wide, device=W.device)
    # Linear: (out, C, 1) or (out, C, h*w) per flattened channel; conv: (out, C, kh*kw).
    blocks = W.to(wide).reshape(W.shape[0], C, -1)
    folded = torch.einsum("ocs,jc->ojs", blocks, T)
    if isinstance(new, nn.Linear):
        new.weight = _parameter(W, folded.reshape(W.shape[0], -1))
        new.in_features = new.weight.shape[1]
    else:
        new.weight = _parameter(W, folded.reshape(W.shape[0], keep, *W.shape[2:]))
        new.in_channels = keep
    return new


# -- public ------------------------------------------------------------------------


def prune_channels(
    layer: nn.Module,
    next_layer: nn.Module,
    activations: torch.Tensor,
    *,
    keep: int,
    batchnorm: nn.Module | None = None,
    select: str | Sequence[int] = "maxvol",
    fold: str = "interpolative",
) -> PrunedPair:
    """Keep ``keep`` channels of ``layer`` and fold the others into ``next_layer``.

    Let ``A`` (n, C) hold the inputs of ``next_layer`` on some data, one column
    per channel (for a convolution every spatial position of every sample is
    a row). The channels ``J`` are the MaxVol rows of ``V_k``, the top
    ``keep`` right singular vectors of ``A``, and ``T`` (keep, C) is the
    interpolative decomposition ``A ~ A[:, J] @ T``. The returned ``layer``
    computes only the channels ``J``; ``next_layer`` gets ``W' = W @ T.T``
    over its input channels (for a convolution over the input-channel axis
    of the kernel; for a Linear after a flattened convolution over each
    channel's block of ``h * w`` features).

    What is exact and what is approximate:

    - Any per-channel operation between the layers (the optional
      ``batchnorm``, ReLU and other elementwise functions, max and average
      pooling, channel-major ``nn.Flatten``) commutes with keeping a subset
      of channels, so the pruned ``layer`` followed by them produces exactly
      the columns ``J`` of what ``next_layer`` saw.
    - The folding replaces every input ``x`` of ``next_layer`` by
      ``T.T @ x[J]``. This is exact for all ``x`` in the row space of ``A``
      when ``rank(A) <= keep``, hence the pruned pair reproduces the original
      output on the data ``A`` came from (and on any input whose
      ``next_layer`` input lies in that span). Otherwise it is approximate:
      ``fold="interpolative"`` reproduces the best rank-``keep``
      approximation of ``A`` and its coefficients are bounded by MaxVol
      (``|T| <= 1.05``); ``fold="lstsq"`` minimises ``||A - A[:, J] T||_F`` on
      the data.
    - The activations must be those ``next_layer`` sees: collected after
      the BatchNorm, the nonlinearity and the pooling, at the input of
      ``next_layer`` (:func:`collect_activations` does this). A combination
      of channels does not commute with a ReLU or a max pooling, so folding
      is only meaningful after them. Zero padding of a convolution commutes
      with the combination, so padding is exact too.

    Parameters
    ----------
    layer : torch.nn.Linear or torch.nn.Conv2d
        The layer whose output channels are pruned (``groups=1``).
    next_layer : torch.nn.Linear or torch.nn.Conv2d
        The layer that consumes them: Linear -> Linear, Conv2d -> Conv2d, or
        Conv2d -> Flatten -> Linear (then ``next_layer.in_features`` is
        ``C * h * w`` in channel-major order).
    activations : Tensor
        The input of ``next_layer`` on representative data: (n, C) (or
        (..., C)) for Linear -> Linear, (n, C, H, W) for Conv2d -> Conv2d,
        (n, C * h * w) or (n, C, h, w) for Conv2d -> Linear.
    keep : int
        Channels to keep, ``1 <= keep <= C``.
    batchnorm : torch.nn.BatchNorm1d or torch.nn.BatchNorm2d, optional
        A BatchNorm between the layers; its pruned copy is returned as
        ``.batchnorm`` of the result.
    select : {"maxvol", "magnitude"} or array-like of int, default="maxvol"
        How to choose the channels: MaxVol on ``V_k``, the largest L1 norms
        of ``layer``'s filters, or the ``keep`` channels given.
    fold : {"interpolative", "lstsq", "none"}, default="interpolative"
        ``T``: the interpolative coefficients ``(V_k @ pinv(V_k[J])).T``,
        least squares on the activations, or none (the other channels are
        simply dropped: ``W' = W[:, J]``).

    Returns
    -------
    PrunedPair
        The tuple ``(layer, next_layer)`` of new modules (deep copies, same
        dtype and device as the inputs, which are not modified), with
        attributes ``batchnorm`` (pruned copy or None), ``channels`` (the
        kept channels, ascending) and ``coefficients`` (``T``).

    Raises
    ------
    TypeError
        For unsupported layer types, or ``keep`` not an int.
    ValueError
        For layers that do not fit together, ``keep`` out of range, or
        activations of the wrong shape.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from graft import prune_channels
    >>> _ = torch.manual_seed(0)
    >>> first, second = nn.Linear(3, 8).double(), nn.Linear(8, 2).double()
    >>> x = torch.randn(100, 3, dtype=torch.float64)
    >>> h = first(x).detach()  # rank 4 (3 inputs and the bias)
    >>> new_first, new_second = prune_channels(first, second, h, keep=4)
    >>> new_first.out_features, new_second.in_features
    (4, 4)
    >>> torch.allclose(new_second(new_first(x)), second(first(x)))
    True
    """
    C, S = _check_pair(layer, next_layer)
    keep = _check_keep(keep, C)
    _check_batchnorm(batchnorm, layer, C)
    fold = _check_option(fold, "fold", _FOLDS)
    if isinstance(select, str):
        _check_option(select, "select", _SELECTS)
    else:
        select = _check_channels(select, C, keep)
    A = _activation_matrix(activations, layer, next_layer, C, S)
    with torch.no_grad():
        R = _triangular_factor(A)
        if isinstance(select, str) and select == "maxvol":
            J, T = _maxvol_channels(R, keep)
            if fold != "interpolative":
                T = _coefficients(R, J, fold, C)
        else:
            J = _magnitude_channels(layer, keep) if isinstance(select, str) else select
            T = _coefficients(R, J, fold, C)
        order = np.argsort(J)
        J, T = J[order], T[order]
        return PrunedPair(
            _keep_outputs(layer, J),
            _fold(next_layer, T, C),
            batchnorm=None if batchnorm is None else _keep_batchnorm(batchnorm, J),
            channels=torch.as_tensor(J, dtype=torch.int64),
            coefficients=torch.as_tensor(T, dtype=torch.float64),
        )


class _Captured(Exception):
    """Raised by the capture hook to end the forward pass early."""


def _resolve(model, module, name="module"):
    if isinstance(module, str):
        try:
            return model.get_submodule(module)
        except AttributeError:
            raise ValueError(
                f"{name} ({module!r}) is not a submodule of model; pass one of "
                f"{[n for n, _ in model.named_modules() if n][:12]}."
            ) from None
    if not any(m is module for m in model.modules()):
        raise ValueError(
            f"{name} ({type(module).__name__}) is not a submodule of model; pass a "
            "module of model (or its name)."
        )
    return module


def _batches(data, batch_size):
    """Input tensors from a tensor (split in batches) or an iterable of batches."""
    if isinstance(data, torch.Tensor):
        yield from torch.split(data, batch_size)
        return
    for batch in data:
        if isinstance(batch, GraftBatch):
            batch = batch.data
        if isinstance(batch, (tuple, list)):
            batch = batch[0]
        if not isinstance(batch, torch.Tensor):
            raise TypeError(
                "data must be a Tensor of inputs or yield Tensors or (inputs, ...) "
                f"tuples, got a batch of type {type(batch).__name__}."
            )
        yield batch


def collect_activations(
    model: nn.Module,
    module: nn.Module | str,
    data: torch.Tensor | Iterable,
    *,
    max_samples: int | None = 2048,
    batch_size: int = 256,
) -> torch.Tensor:
    """The inputs ``module`` receives when ``model`` runs on ``data``.

    A forward pre-hook on ``module`` captures its first positional input and
    ends each forward pass there (the layers after it do not run). The
    model runs in eval mode (BatchNorm running statistics, no dropout)
    without gradients; the training flag of every submodule and the hooks
    are restored afterwards, also when the forward pass raises.

    Parameters
    ----------
    model : torch.nn.Module
    module : torch.nn.Module or str
        A submodule of ``model`` (or its name in ``model.named_modules()``),
        typically the ``next_layer`` of :func:`prune_channels`.
    data : Tensor or iterable of batches
        Model inputs, or a DataLoader yielding inputs or ``(inputs, ...)``
        tuples (``GraftBatch`` too). Inputs are moved to the model's device.
    max_samples : int or None, default=2048
        Stop after this many samples (None: all of ``data``).
    batch_size : int, default=256
        Batch size when ``data`` is a Tensor.

    Returns
    -------
    Tensor of shape (n_samples, *input_shape)
        The captured inputs, detached, on the model's device.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from graft import collect_activations
    >>> model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> x = torch.randn(10, 4)
    >>> h = collect_activations(model, model[2], x)
    >>> torch.equal(h, model[1](model[0](x)).detach())
    True
    """
    module = _resolve(model, module)
    if max_samples is not None:
        max_samples = check_count("max_samples", max_samples, example=2048)
    batch_size = check_count("batch_size", batch_size, example=256)
    captured, count = [], 0

    def hook(_module, args):
        captured.append(args[0].detach())
        raise _Captured

    handle = module.register_forward_pre_hook(hook)
    try:
        with _evaluating(model):
            for x in _batches(data, batch_size):
                if max_samples is not None and count >= max_samples:
                    break
                try:
                    model(_on_device(x, model))
                except _Captured:
                    count += len(captured[-1])
                else:
                    raise ValueError(
                        f"module ({type(module).__name__}) was not called in "
                        "model's forward pass; pass a module that model uses."
                    )
    finally:
        handle.remove()
    if not captured:
        raise ValueError("data is empty; pass at least one batch of inputs.")
    return torch.cat(captured)[:max_samples]


@contextlib.contextmanager
def _evaluating(model):
    """``model`` in eval mode without gradients; every module's own mode restored."""
    with eval_mode(model), torch.no_grad():
        yield


def _on_device(x, model):
    """``x`` on the device of ``model``'s parameters (as is without any)."""
    param = next(model.parameters(), None)
    return x if param is None else x.to(param.device)


def _check_runs(model, data, name=None):
    """``model`` runs on a few inputs of ``data``; else a ValueError.

    ``name`` None: the model before pruning (the data does not fit it);
    else the pruned copy after the pair of layer ``name``.
    """
    x = next(_batches(data, 8))[:8]
    weight = next((p for p in model.parameters() if p.is_floating_point()), None)
    if name is None and weight is not None and x.is_floating_point():
        if x.dtype != weight.dtype:
            raise TypeError(
                f"data is {x.dtype} but the model's parameters are {weight.dtype}; "
                f"pass data.to({weight.dtype})."
            )
    try:
        with _evaluating(model):
            model(_on_device(x, model))
    except Exception as exc:  # any failure, reported with the pair
        failure = f"{type(exc).__name__}: {exc}"
        if name is None:
            raise ValueError(
                f"model fails at forward on data ({failure}); pass inputs the model "
                "accepts (its dtype, device and input shape)."
            ) from exc
        raise ValueError(
            f"after pruning {name!r} the model fails at forward ({failure}); the "
            "pair does not match the model's data flow. The model passed in is "
            "unchanged."
        ) from exc
