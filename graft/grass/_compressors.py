"""Per-sample gradient compression: GraSS and FactGraSS.

A random linear map ``P: R^D -> R^k`` with ``E <P x, P y> = <x, y>`` keeps the
inner products of per-sample gradients (Johnson-Lindenstrauss) at a fraction
of their width, which is what gradient-based selection and data attribution
compare. The maps (mask, sparse JL, Gaussian) are in
:mod:`graft.grass._projections`.

:class:`GraSS` (Hu et al. 2025, "GraSS: scalable data attribution with
gradient sparsification and sparse projection") masks and projects the full
per-sample gradient, computed with ``torch.func``. :class:`FactGraSS` never
forms it: for a linear layer ``y_t = W a_t + c`` applied at positions ``t``
(tokens, or the pixels of an unfolded convolution), sample ``i``'s gradient is
``dW_i = sum_t b_t a_t^T`` with ``b_t = dloss_i / dy_t``, i.e. the vector
``sum_t b_t (x) a_t``. The Kronecker product ``P_out (x) P_in`` of two
independent JL maps is an unbiased JL map on such vectors, and
``(P_out (x) P_in)(b (x) a) = (P_out b) (x) (P_in a)``, so each layer only
projects its input and output-gradient factors and forms
``sum_t (P_out b_t) (x) (P_in a_t)``; one more sparse JL of all layers'
Kronecker coordinates gives the output. Layers small enough to fit their
share of the output are kept exactly instead.
"""

from __future__ import annotations

import functools
import math
import numbers
import warnings
import zlib
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from torch import nn

from graft.grass._projections import (
    GaussianProjection,
    RandomMask,
    SparseJL,
    _check_dim,
)
from maxvol_kit.utils import check_random_state

__all__ = ["FactGraSS", "GraSS", "hookable_layers"]


def _check_seed(seed):
    """An int seed; None draws one, once, so every map of a compressor agrees."""
    if seed is None:
        return int(check_random_state(None).integers(2**63))
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"seed ({seed!r}) must be an int >= 0 or None; e.g. seed=0.")
    return int(seed)


def _check_model(model):
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")


# -- NaN and inf -------------------------------------------------------------------

_DATA_FIX = "impute those values or drop those samples"
_GRADIENT_FIX = "check the loss for NaN, lower the learning rate, or drop those samples"
_LOSS_FIX = (
    "check loss_fn for NaN (e.g. a log of 0 or a division by 0), lower the "
    "learning rate, or drop those samples"
)


def _preview(rows, limit=10):
    """``rows`` as a list, cut after ``limit`` entries."""
    head = ", ".join(repr(r) for r in rows[:limit])
    return f"[{head}{', ...' if len(rows) > limit else ''}]"


class _NonFiniteError(ValueError):
    """NaN or inf in per-sample values: ``what`` for samples ``rows`` of a batch.

    The batch is ``source[start:start + n]`` and ``rows`` index ``source``,
    so :meth:`within` can place the ``inputs`` of a call in a larger data set.
    """

    def __init__(self, what, rows, start, n, fix, source="inputs"):
        self.what, self.rows, self.start, self.n = what, list(rows), start, n
        self.fix, self.source = fix, source
        super().__init__(
            f"{what} hold NaN or inf for {len(self.rows)} of the {n} samples of "
            f"{source}[{start}:{start + n}] (indices {_preview(self.rows)}); {fix}."
        )

    def __reduce__(self):
        fields = (self.what, self.rows, self.start, self.n, self.fix, self.source)
        return type(self), fields

    def within(self, source, offset):
        """The same error, ``inputs`` being ``source[offset:]``."""
        rows = [r + offset for r in self.rows]
        start = self.start + offset
        return _NonFiniteError(self.what, rows, start, self.n, self.fix, source)


def _check_rows(ok, what, fix, start=0):
    """Raise :class:`_NonFiniteError` for the samples whose entry of ``ok`` is False.

    ``fix`` is a string or a callable returning one, called on failure only.
    One host sync when every sample is fine.
    """
    if bool(ok.all()):
        return
    rows = (ok.logical_not().nonzero().flatten() + start).tolist()
    fix = fix() if callable(fix) else fix
    raise _NonFiniteError(what, rows, start, ok.shape[0], fix)


def _finite_rows(X):
    """``(n,)`` bools: row ``i`` of ``X`` (n, ...) holds no NaN or inf."""
    return torch.isfinite(X.reshape(X.shape[0], -1)).all(1)


def _check_finite(X, what, fix, start=0):
    _check_rows(_finite_rows(X), what, fix, start)


def _diverged_fix(model, fix):
    """``fix``, unless the model's parameters hold NaN or inf: then say so."""
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
    if not bad:
        return fix
    return (
        f"the model's parameters {_preview(bad, 3)} hold NaN or inf, so its "
        "training diverged: lower the learning rate and restart from a checkpoint "
        "taken before the divergence"
    )


# -- GraSS -------------------------------------------------------------------------


def _per_sample_losses(loss_fn, outputs, targets):
    """``loss_fn`` on a batch as one loss per sample, shape (n,)."""
    losses = loss_fn(outputs, targets)
    n = outputs.shape[0]
    if losses.ndim == 0 or losses.shape[0] != n:
        raise ValueError(
            f"loss_fn returned a tensor of shape {tuple(losses.shape)} for a batch "
            f"of {n}; it must return one loss per sample, shape ({n},): use "
            "reduction='none', e.g. loss_fn=lambda out, y: "
            "torch.nn.functional.cross_entropy(out, y, reduction='none')."
        )
    return losses.reshape(n, -1).sum(1)


def _cross_entropy(outputs, targets):
    return nn.functional.cross_entropy(outputs, targets, reduction="none")


def _check_model_inputs(model, inputs, targets, loss_fn):
    """The inputs' dtype is the model's; default-loss targets are class indices.

    One forward pass of one sample gives the number of classes; a custom
    ``loss_fn`` decides its own targets.
    """
    weight = next((p for p in model.parameters() if p.is_floating_point()), None)
    if (
        weight is not None
        and inputs.is_floating_point()
        and inputs.dtype != weight.dtype
    ):
        raise TypeError(
            f"inputs are {inputs.dtype} but the model's parameters are "
            f"{weight.dtype}; pass inputs.to({weight.dtype})."
        )
    if loss_fn is not None:
        return
    if targets.is_floating_point() or targets.dtype == torch.bool:
        raise TypeError(
            f"targets are {targets.dtype}; the default loss (cross-entropy) needs "
            "class indices (int64): pass targets.long(), or a loss_fn for other "
            "targets."
        )
    with torch.no_grad():
        n_classes = model(inputs[:1]).shape[-1]
    low, high = int(targets.min()), int(targets.max())
    if low < 0 or high >= n_classes:
        raise ValueError(
            f"targets hold class indices in [{low}, {high}] but the model has "
            f"{n_classes} outputs; pass labels in [0, {n_classes - 1}]."
        )


def _check_inputs(inputs, targets):
    if not isinstance(inputs, torch.Tensor) or not isinstance(targets, torch.Tensor):
        raise TypeError(
            "inputs and targets must be torch Tensors, got "
            f"{type(inputs).__name__} and {type(targets).__name__}."
        )
    if inputs.shape[0] != targets.shape[0] or inputs.shape[0] == 0:
        raise ValueError(
            f"inputs ({inputs.shape[0]} samples) and targets ({targets.shape[0]}) "
            "must hold the same, positive number of samples."
        )
    for name, X in (("inputs", inputs), ("targets", targets)):
        if X.is_floating_point() or X.is_complex():
            _check_finite(X, f"the {name}", _DATA_FIX)


class _Compressor:
    """The model, output width and seed GraSS and FactGraSS share.

    Also the checks every ``per_sample_gradients`` call starts with.
    """

    def __init__(self, model, proj_dim, seed):
        _check_model(model)
        self.model = model
        self.proj_dim = _check_dim(proj_dim, "proj_dim", "e.g. proj_dim=1024")
        self.seed = _check_seed(seed)

    def _loss_fn(self, inputs, targets, loss_fn):
        """Check a call's inputs (before any gradient); the loss to use."""
        _check_inputs(inputs, targets)
        _check_model_inputs(self.model, inputs, targets, loss_fn)
        return loss_fn or _cross_entropy


class GraSS(_Compressor):
    """Compressed full per-sample gradients: mask, then sparse JL.

    ``g_i`` (all parameters, computed with ``torch.func``, ``chunk_size``
    samples at a time) -> ``RandomMask(D, mask_dim)`` -> ``SparseJL`` (or a
    Gaussian map) to ``proj_dim``. Every step is unbiased, so
    ``E <z_i, z_j> = <g_i, g_j>``.

    Parameters
    ----------
    model : torch.nn.Module
    proj_dim : int, default=1024
        Output dimension.
    seed : int or None, default=0
        Seed of every random draw (on the host).
    mask_dim : int or None, default=None
        Coordinates kept by the random mask before the projection; None keeps
        all (the sparse JL costs O(D) per sample, less than computing the
        gradient, so the mask only pays off for the Gaussian map).
    projection : {"sjlt", "gaussian"}, default="sjlt"
        The Gaussian map holds a ``mask_dim x proj_dim`` matrix.
    chunk_size : int, default=32
        Samples whose full gradients are in memory at once
        (``chunk_size x D`` floats).

    Attributes
    ----------
    n_parameters : int
        ``D``, the width of the full per-sample gradient.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from graft import GraSS
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    >>> x, y = torch.randn(5, 8), torch.tensor([0, 1, 2, 0, 1])
    >>> GraSS(model, proj_dim=32, seed=0).per_sample_gradients(x, y).shape
    torch.Size([5, 32])
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        proj_dim: int = 1024,
        seed: int | None = 0,
        mask_dim: int | None = None,
        projection: Literal["sjlt", "gaussian"] = "sjlt",
        chunk_size: int = 32,
    ) -> None:
        super().__init__(model, proj_dim, seed)
        self.chunk_size = _check_dim(chunk_size, "chunk_size", "e.g. chunk_size=32")
        self.n_parameters = sum(p.numel() for p in model.parameters())
        if self.n_parameters == 0:
            raise ValueError("model has no parameters; there is no gradient.")
        if projection not in ("sjlt", "gaussian"):
            raise ValueError(
                f"projection ({projection!r}) must be 'sjlt' or 'gaussian'."
            )
        m = self.n_parameters if mask_dim is None else mask_dim
        rng = check_random_state(self.seed)
        self.mask = RandomMask(
            self.n_parameters,
            _check_dim(m, "mask_dim", "pass None to keep every coordinate"),
            random_state=rng,
        )
        kind = SparseJL if projection == "sjlt" else GaussianProjection
        self.projection = kind(self.mask.out_dim, self.proj_dim, random_state=rng)

    def per_sample_gradients(self, inputs, targets, loss_fn=None):
        """Compressed per-sample gradients, shape (n, proj_dim).

        Parameters
        ----------
        inputs : Tensor of shape (n, ...)
        targets : Tensor of shape (n, ...)
        loss_fn : callable or None
            ``loss_fn(outputs, targets)`` -> per-sample losses (n,); default
            cross-entropy with ``reduction="none"``.

        Returns
        -------
        Tensor of shape (n, proj_dim)
            The model's ``.grad`` fields are untouched.

        Raises
        ------
        ValueError
            If the inputs, targets or per-sample gradients hold NaN or inf,
            naming the samples.
        """
        from graft._features import per_sample_gradients

        loss_fn = self._loss_fn(inputs, targets, loss_fn)

        def scalar_loss(out, y):
            return _per_sample_losses(loss_fn, out, y).sum()

        fix = functools.partial(_diverged_fix, self.model, _GRADIENT_FIX)
        out = []
        for start in range(0, inputs.shape[0], self.chunk_size):
            stop = start + self.chunk_size
            G = per_sample_gradients(
                self.model, inputs[start:stop], targets[start:stop], scalar_loss
            )
            _check_finite(G, "the per-sample gradients", fix, start)
            out.append(self.projection(self.mask(G)))
        return torch.cat(out)


# -- FactGraSS ---------------------------------------------------------------------


class _LinearKind:
    """``nn.Linear``: ``y_t = W a_t + c`` at every position ``t`` of the input."""

    factored = True

    @staticmethod
    def supports(layer):
        return True

    @staticmethod
    def dims(layer, bias):
        return layer.out_features, layer.in_features + bias

    @staticmethod
    def input_positions(layer, x):
        return x

    @staticmethod
    def output_positions(layer, g):
        return g


class _ConvKind:
    """``nn.Conv2d`` as a linear layer on the unfolded patches (``groups=1``)."""

    factored = True

    @staticmethod
    def supports(layer):
        return (
            layer.groups == 1
            and layer.padding_mode == "zeros"
            and not isinstance(layer.padding, str)
        )

    @staticmethod
    def dims(layer, bias):
        kh, kw = layer.kernel_size
        return layer.out_channels, layer.in_channels * kh * kw + bias

    @staticmethod
    def input_positions(layer, x):
        patches = nn.functional.unfold(
            x, layer.kernel_size, layer.dilation, layer.padding, layer.stride
        )
        return patches.transpose(1, 2)

    @staticmethod
    def output_positions(layer, g):
        return g.flatten(2).transpose(1, 2)


class _NormKind:
    """LayerNorm / RMSNorm with a learned scale: exact, small (``2 d`` numbers)."""

    factored = False

    @staticmethod
    def supports(layer):
        return layer.weight is not None

    @staticmethod
    def dims(layer, bias):
        return 1, layer.weight.numel() * (1 + bias)


# One entry per layer kind FactGraSS hooks; subclasses match through their MRO
# (e.g. MultiheadAttention's out_proj, a subclass of nn.Linear). RMSNorm arrived
# in torch 2.4.
_KINDS = {nn.Linear: _LinearKind, nn.Conv2d: _ConvKind, nn.LayerNorm: _NormKind}
if hasattr(nn, "RMSNorm"):
    _KINDS[nn.RMSNorm] = _NormKind


def _kind(layer):
    """The layer's kind, or None when FactGraSS cannot hook it."""
    for cls in type(layer).__mro__:
        if cls in _KINDS:
            kind = _KINDS[cls]
            return kind if kind.supports(layer) else None
    return None


def _hookable(layer):
    return _kind(layer) is not None


def hookable_layers(model):
    """Names of the layers :class:`FactGraSS` hooks by default, in model order.

    Every ``nn.Linear``, every ``nn.Conv2d`` with ``groups=1`` and zero
    padding given as numbers, and every ``nn.LayerNorm`` / ``nn.RMSNorm``
    with a learned scale, whose weight requires a gradient.
    """
    return [
        name
        for name, layer in model.named_modules()
        if _hookable(layer) and layer.weight.requires_grad
    ]


def _resolve_layers(model, layers):
    if layers is None:
        names = hookable_layers(model)
        if not names:
            raise ValueError(
                "the model has no nn.Linear, nn.Conv2d or normalisation layer with "
                "a trainable weight for FactGraSS to hook; use GraSS(model, "
                "proj_dim=...), which compresses the full per-sample gradient."
            )
        return names
    if isinstance(layers, str):
        layers = [layers]
    modules = dict(model.named_modules())
    for name in layers:
        if name not in modules:
            raise ValueError(
                f"layers names {name!r}, which is not a module of the model; its "
                f"hookable layers are {hookable_layers(model)}."
            )
        if not _hookable(modules[name]):
            raise ValueError(
                f"layers names {name!r}, a {type(modules[name]).__name__}; FactGraSS "
                "hooks nn.Linear, nn.Conv2d (groups=1, zero padding), nn.LayerNorm "
                "and nn.RMSNorm layers. Use GraSS for other parameters."
            )
        if not modules[name].weight.requires_grad:
            raise ValueError(
                f"layers names {name!r}, whose weight does not require a gradient; "
                "leave it out or set requires_grad=True."
            )
    if not layers or len(set(layers)) != len(layers):
        raise ValueError(
            f"layers ({list(layers)!r}) must name at least one layer, each once."
        )
    return list(layers)


def _factor_dims(layer):
    """``(d_out, d_in)`` of the layer's weight as a matrix, bias as a column.

    A normalisation layer's scale and shift are one row: ``(1, d or 2 d)``.
    """
    return _kind(layer).dims(layer, int(getattr(layer, "bias", None) is not None))


def _split(total, caps):
    """``total`` split as evenly as the caps allow (water filling), summing exactly."""
    if total > sum(caps):
        raise ValueError(
            f"proj_dim ({total}) exceeds the {sum(caps)} weight and bias entries "
            f"of the hooked layers (after the masks); pass proj_dim <= {sum(caps)}."
        )
    shares, left = [0] * len(caps), total
    open_ = sorted(range(len(caps)), key=lambda j: caps[j])
    while open_:
        even = left // len(open_)
        j = open_[0]
        if caps[j] <= even:
            shares[j] = caps[j]
        else:
            # Everyone left gets `even`, the first `left % n` one more.
            for rank, j in enumerate(open_):
                shares[j] = even + (rank < left - even * len(open_))
            break
        left -= shares[j]
        open_.pop(0)
    return shares


def _kron_dims(target, m_out, m_in):
    """Factor dimensions ``k_out <= m_out``, ``k_in <= m_in``, product >= target.

    Each factor keeps about the same share of its dimension.
    """
    k_out = min(m_out, max(1, round(math.sqrt(target * m_out / m_in))))
    k_in = min(m_in, max(1, math.ceil(target / k_out)))
    k_out = min(m_out, max(k_out, math.ceil(target / k_in)))
    return k_out, k_in


def _map(d, k, rng):
    """Sparse JL ``d -> k``, or None (identity) when ``k >= d``."""
    return None if k >= d else SparseJL(d, k, random_state=rng)


class _LayerCompressor:
    """One layer's factor masks and maps, and its part of the final sparse JL."""

    def __init__(self, layer, size, m_out, m_in, rng):
        self.layer = layer
        self.d_out, self.d_in = _factor_dims(layer)
        self.mask_in = RandomMask(self.d_in, m_in, random_state=rng)
        self.mask_out = RandomMask(self.d_out, m_out, random_state=rng)
        m_out, m_in = self.mask_out.out_dim, self.mask_in.out_dim
        self.k_out, self.k_in = _kron_dims(size, m_out, m_in)
        self.map_in = _map(m_in, self.k_in, rng)
        self.map_out = _map(m_out, self.k_out, rng)
        self.final = None

    def inputs(self, x):
        """Layer input (n, ...) -> projected input factor (n, T, k_in)."""
        layer = self.layer
        x = _kind(layer).input_positions(layer, x)
        a = x.reshape(x.shape[0], -1, x.shape[-1])
        if layer.bias is not None:
            a = torch.cat([a, a.new_ones(*a.shape[:2], 1)], dim=2)
        a = self.mask_in(a)
        return a if self.map_in is None else self.map_in(a)

    def outputs(self, g):
        """Output gradient (n, ...) -> projected output factor (n, T, k_out)."""
        g = _kind(self.layer).output_positions(self.layer, g)
        b = self.mask_out(g.reshape(g.shape[0], -1, g.shape[-1]))
        return b if self.map_out is None else self.map_out(b)

    @property
    def width(self):
        """Columns of :meth:`combine`'s output."""
        return self.k_out * self.k_in if self.final is None else self.final.out_dim

    def combine(self, b, a):
        """``sum_t b_t (x) a_t`` (n, k_out k_in), through the final map if any."""
        z = torch.bmm(b.transpose(1, 2), a).flatten(1)
        return z if self.final is None else self.final(z)


class _NormCompressor:
    """Exact per-sample gradients of a LayerNorm / RMSNorm's scale and shift.

    With ``x_hat_t`` the normalised input and ``b_t`` the output gradient at
    position ``t``: ``d scale = sum_t b_t * x_hat_t``, ``d shift = sum_t b_t``
    (``2 d`` numbers, so no factor maps).
    """

    def __init__(self, layer, rng):
        self.layer = layer
        self.k_out, self.k_in = _factor_dims(layer)
        self.final = None

    def _flat(self, x):
        return x.reshape(x.shape[0], -1, self.layer.weight.numel())

    def inputs(self, x):
        """Layer input (n, ...) -> normalised input (n, T, d)."""
        layer = self.layer
        axes = tuple(range(-len(layer.normalized_shape), 0))
        if isinstance(layer, nn.LayerNorm):
            centred = x - x.mean(axes, keepdim=True)
            var = centred.pow(2).mean(axes, keepdim=True)
            return self._flat(centred * torch.rsqrt(var + layer.eps))
        eps = layer.eps if layer.eps is not None else torch.finfo(x.dtype).eps
        return self._flat(x * torch.rsqrt(x.pow(2).mean(axes, keepdim=True) + eps))

    def outputs(self, g):
        """Output gradient (n, ...) -> (n, T, d)."""
        return self._flat(g)

    width = _LayerCompressor.width

    def combine(self, b, a):
        """``[sum_t b_t * x_hat_t, sum_t b_t]``, through the final map if any."""
        parts = [(b * a).sum(1)]
        if getattr(self.layer, "bias", None) is not None:
            parts.append(b.sum(1))
        z = torch.cat(parts, dim=1)
        return z if self.final is None else self.final(z)


class FactGraSS(_Compressor):
    """Compressed per-sample gradients of linear layers, never formed in full.

    For each hooked layer (``nn.Linear``; ``nn.Conv2d`` through its unfolded
    input; ``nn.LayerNorm`` and ``nn.RMSNorm``), a forward hook captures the
    layer input ``a_t`` (bias as a trailing 1) and the layer output;
    ``torch.autograd.grad`` of the summed per-sample losses gives the output
    gradients ``b_t``. Layers are then treated in one of two ways:

    - a layer with at most ``proj_dim / n_layers`` weight and bias entries
      (water-filled: what small layers leave over is shared by the others) is
      kept whole: its exact per-sample gradient ``sum_t b_t (x) a_t`` fills
      its own columns. This is typically the classifier head, which carries
      much of the gradient's norm, so keeping it exact helps most;
    - every other layer masks its factors (``mask_in``, ``mask_out``
      coordinates), maps them with sparse JL maps to ``k_in``, ``k_out``
      coordinates and forms ``sum_t (P_out b_t) (x) (P_in a_t)``
      (``k_out k_in`` per sample; the layers share ``oversample`` times the
      remaining columns evenly); one sparse JL of all these layers'
      coordinates together fills the remaining columns, so, as in
      :class:`GraSS`, its buckets go wherever the gradient mass is.

    A normalisation layer's gradient is exact before that last map:
    ``sum_t b_t * x_hat_t`` for the scale and ``sum_t b_t`` for the shift,
    ``x_hat_t`` the normalised input. Every map is unbiased:
    ``E <z_i, z_j> = <g_i, g_j>`` over the hooked parameters. No tensor
    larger than ``(n, T, max(d_in, d_out))`` or ``(n, oversample x
    proj_dim)`` is formed besides the model's own activations; the full
    per-sample gradient ``(n, d_out x d_in)`` never is.

    Parameters outside the hooked layers (embeddings, batch norm,
    ``nn.MultiheadAttention``'s projections, which it applies as functions,
    and convolutions with ``groups > 1``) are ignored: use :class:`GraSS`
    for them. Layers must take the sample index as their first input axis;
    all other leading axes (tokens, image positions) are summed over.

    Parameters
    ----------
    model : torch.nn.Module
        Call ``model.eval()`` first if it has dropout or batch norm: in
        training mode a sample's gradient depends on the random draws and on
        the other samples of the batch.
    proj_dim : int, default=1024
        Output dimension.
    seed : int or None, default=0
        Seed of every random draw (on the host).
    layers : list of str or None, default=None
        Names (as in ``model.named_modules()``) of the layers to hook; None:
        :func:`hookable_layers`.
    mask_in, mask_out : int or None, default=None
        Coordinates of the input (with the bias column) and output-gradient
        factors kept by the random masks, capped at each layer's size; None
        keeps ``min(d, 8 k)``, ``k`` that factor's projected size. A mask
        saves part of the sparse JL's O(d) pass and costs accuracy, so the
        default only masks factors much wider than their projection.
    oversample : int, default=32
        Kronecker coordinates of the shared layers over their columns:
        larger values lower the error of the factor maps (on the benchmark's
        transformer block at ``proj_dim=1024``, the off-diagonal Gram
        correlation to exact rose from 0.93 at 8 to 0.98 at 32) and cost
        ``oversample x proj_dim`` floats per sample while one batch is
        compressed, and ``T x oversample x proj_dim`` multiply-adds, little
        next to the forward pass.

    Attributes
    ----------
    layers : list of str
        The hooked layers, in order.
    factor_dims : dict of str to tuple of int
        ``(k_out, k_in)`` of each layer (the masked sizes for whole layers).
    blocks : dict of str to slice
        The output columns of each layer: its own for a whole layer, the
        shared ones for the others.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from graft import FactGraSS
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <torch._C.Generator object at ...>
    >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))
    >>> x, y = torch.randn(5, 8), torch.tensor([0, 1, 2, 0, 1])
    >>> FactGraSS(model, proj_dim=32, seed=0).per_sample_gradients(x, y).shape
    torch.Size([5, 32])
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        proj_dim: int = 1024,
        seed: int | None = 0,
        layers: Sequence[str | nn.Module] | None = None,
        mask_in: int | None = None,
        mask_out: int | None = None,
        oversample: int = 32,
    ) -> None:
        super().__init__(model, proj_dim, seed)
        self.oversample = _check_dim(oversample, "oversample", "e.g. oversample=32")
        for name, m in (("mask_in", mask_in), ("mask_out", mask_out)):
            if m is not None:
                _check_dim(m, name, "pass None for the default")
        self.layers = _resolve_layers(model, layers)
        modules = dict(model.named_modules())
        masks = [self._mask_dims(modules[n], mask_out, mask_in) for n in self.layers]
        caps = [m_out * m_in for m_out, m_in in masks]
        if self.proj_dim > sum(caps):
            raise ValueError(
                f"proj_dim ({self.proj_dim}) exceeds the {sum(caps)} weight and bias "
                f"entries of the hooked layers (after the masks); pass proj_dim <= "
                f"{sum(caps)}."
            )
        # Layers no wider than an even share are kept whole, in their own
        # columns; the others share the remaining columns through one sparse JL.
        whole = [s == c for s, c in zip(_split(self.proj_dim, caps), caps, strict=True)]
        shared_dim = self.proj_dim - sum(
            c for c, w in zip(caps, whole, strict=True) if w
        )
        shared_caps = [c for c, w in zip(caps, whole, strict=True) if not w]
        shared_sizes = iter(
            _split(min(self.oversample * shared_dim, sum(shared_caps)), shared_caps)
        )
        self._compressors = {}
        for name, cap, w, (m_out, m_in) in zip(
            self.layers, caps, whole, masks, strict=True
        ):
            rng = np.random.default_rng([self.seed, zlib.crc32(name.encode())])
            size = cap if w else next(shared_sizes)
            if not _kind(modules[name]).factored:
                self._compressors[name] = _NormCompressor(modules[name], rng)
            else:
                self._compressors[name] = _LayerCompressor(
                    modules[name], size, m_out, m_in, rng
                )
            if not w:
                # Independent draws per layer: together, one sparse JL of the
                # concatenated Kronecker coordinates of the shared layers.
                comp = self._compressors[name]
                comp.final = SparseJL(
                    comp.k_out * comp.k_in, shared_dim, random_state=rng
                )
        self.factor_dims = {n: (c.k_out, c.k_in) for n, c in self._compressors.items()}
        self.blocks, start = {}, 0
        for name, comp in self._compressors.items():
            if comp.final is None:
                self.blocks[name] = slice(start, start + comp.k_out * comp.k_in)
                start += comp.k_out * comp.k_in
        for name, comp in self._compressors.items():
            if comp.final is not None:
                self.blocks[name] = slice(start, self.proj_dim)

    def _mask_dims(self, layer, mask_out, mask_in):
        """Mask sizes: the user's (capped) or ``min(d, 8 k)`` for an even split."""
        d_out, d_in = _factor_dims(layer)
        if not _kind(layer).factored:
            return d_out, d_in
        size = max(1, self.oversample * self.proj_dim // len(self.layers))
        k_out, k_in = _kron_dims(min(d_out * d_in, size), d_out, d_in)
        m_out = min(d_out, mask_out if mask_out is not None else 8 * k_out)
        m_in = min(d_in, mask_in if mask_in is not None else 8 * k_in)
        return m_out, m_in

    def per_sample_gradients(self, inputs, targets, loss_fn=None):
        """Compressed per-sample gradients of the hooked layers, (n, proj_dim).

        Parameters
        ----------
        inputs : Tensor of shape (n, ...)
        targets : Tensor of shape (n, ...)
        loss_fn : callable or None
            ``loss_fn(outputs, targets)`` -> per-sample losses (n,) (extra
            axes are summed); default cross-entropy with ``reduction="none"``.

        Returns
        -------
        Tensor of shape (n, proj_dim)
            The model's ``.grad`` fields are untouched and the hooks are
            removed, also when the forward pass raises.

        Raises
        ------
        ValueError
            If the inputs, targets, per-sample losses or the per-sample
            gradients of a layer hold NaN or inf, naming the samples (and
            layers).
        """
        loss_fn = self._loss_fn(inputs, targets, loss_fn)
        calls = {name: [] for name in self.layers}
        modules = dict(self.model.named_modules())
        handles = []
        try:
            for name in self.layers:
                hook = self._hook(self._compressors[name], calls[name])
                handles.append(modules[name].register_forward_hook(hook))
            with torch.enable_grad():
                losses = _per_sample_losses(loss_fn, self.model(inputs), targets)
                total = losses.sum()
        finally:
            for handle in handles:
                handle.remove()
        fix = functools.partial(_diverged_fix, self.model, _LOSS_FIX)
        _check_finite(losses.detach(), "the per-sample losses", fix)
        return self._combine(calls, total, losses.shape[0])

    @staticmethod
    def _hook(compressor, calls):
        def hook(module, args, output):
            calls.append((output, compressor.inputs(args[0].detach())))

        return hook

    def _combine(self, calls, total, n):
        outputs = [out for name in self.layers for out, _ in calls[name]]
        if not outputs or not total.requires_grad:
            raise RuntimeError(
                "no hooked layer took part in the loss; check that the model "
                "calls its layers in forward, or pass layers=[...]."
            )
        for name in self.layers:
            for _, a in calls[name]:
                if a.shape[0] != n:
                    raise ValueError(
                        f"layer {name!r} saw {a.shape[0]} rows for a batch of {n} "
                        "samples; FactGraSS needs the sample index as the first axis "
                        "of every hooked layer's input. Leave the layer out with "
                        "layers=[...], or use GraSS."
                    )
        grads = iter(torch.autograd.grad(total, outputs, allow_unused=True))
        whole, shared, finite = [], 0, []
        for name in self.layers:
            comp = self._compressors[name]
            if not calls[name]:
                warnings.warn(
                    f"layer {name!r} was not called in the forward pass (e.g. the "
                    "out_proj of nn.MultiheadAttention, whose weight is used as a "
                    "function); its gradient counts as zero. Pass layers=[...] "
                    "without it to silence this.",
                    stacklevel=3,
                )
            z = total.new_zeros(n, comp.width)
            for _, a in calls[name]:
                g = next(grads)
                if g is not None:
                    z = z + comp.combine(comp.outputs(g.detach()), a)
            finite.append(_finite_rows(z))
            if comp.final is None:
                whole.append(z)
            else:
                shared = shared + z
        self._check_layers(torch.stack(finite))
        if torch.is_tensor(shared):
            whole.append(shared)
        return torch.cat(whole, dim=1).detach()

    def _check_layers(self, finite):
        """Name the layers whose per-sample gradients (``finite`` False) hold NaN."""
        if bool(finite.all()):
            return
        bad = [
            name
            for name, ok in zip(self.layers, finite.all(1).tolist(), strict=True)
            if not ok
        ]
        what = f"layer {bad[0]!r}" if len(bad) == 1 else f"layers {_preview(bad, 5)}"
        fix = functools.partial(_diverged_fix, self.model, _GRADIENT_FIX)
        _check_rows(finite.all(0), f"the per-sample gradients of {what}", fix)
