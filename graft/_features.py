"""Per-sample features from a model: embeddings and per-sample gradients.

- :func:`penultimate`: the input of the final ``nn.Linear`` (the embedding)
  and the logits, captured by a forward hook that is always removed.
- :func:`last_layer_gradients`: the per-sample gradient of the cross-entropy
  loss with respect to the final layer's weight and bias, in closed form:
  ``g_i = (softmax(z_i) - e_{y_i}) (x) [h_i, 1]``, shape (n, C (h + 1)).
- :func:`per_sample_gradients`: full per-sample gradients with
  ``torch.func`` (``vmap(grad(...))`` over detached parameters).
- :func:`eval_mode`: a model in eval mode for a while, every layer's own mode
  restored after (a user may keep some layers in eval mode while training).
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

__all__ = [
    "eval_mode",
    "find_final_linear",
    "last_layer_gradients",
    "penultimate",
    "per_sample_gradients",
]


@contextlib.contextmanager
def eval_mode(model):
    """``model`` in eval mode inside the block; each module's own mode after it."""
    modes = [(m, m.training) for m in model.modules()]  # per layer
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training


def find_final_linear(model, layer=None):
    """The ``nn.Linear`` whose input is the embedding.

    ``layer`` names it (as in ``model.named_modules()``); by default the last
    ``nn.Linear`` registered in the model.
    """
    modules = dict(model.named_modules())
    if layer is not None:
        if layer not in modules:
            names = [n for n, m in modules.items() if isinstance(m, nn.Linear)]
            raise ValueError(
                f"layer ({layer!r}) is not a module of the model; its nn.Linear "
                f"layers are {names}."
            )
        return modules[layer]
    linears = [m for m in modules.values() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(
            "the model has no nn.Linear layer to take embeddings from; pass "
            "layer='name' of the layer whose input is the embedding, or "
            "features=<callable(model, inputs, targets) -> Tensor>."
        )
    return linears[-1]


@torch.no_grad()
def penultimate(model, inputs, layer=None):
    """``(embeddings, logits)``: the final Linear's input and the model output."""
    final = find_final_linear(model, layer)
    captured = {}

    def hook(module, args, output):
        captured["h"] = args[0].detach()

    handle = final.register_forward_hook(hook)
    try:
        logits = model(inputs)
    finally:
        handle.remove()
    if "h" not in captured:
        raise RuntimeError(
            "the final nn.Linear was not called in the forward pass; pass "
            "layer='name' of the layer that produces the logits."
        )
    if final.out_features != logits.shape[-1]:
        name = next(n for n, m in model.named_modules() if m is final)
        raise ValueError(
            f"the last nn.Linear registered in the model ({name!r}, out_features="
            f"{final.out_features}) does not produce the {logits.shape[-1]} logits; "
            "pass layer='name' of the final layer to the selector."
        )
    return captured["h"].flatten(1), logits.detach()


def last_layer_gradients(embeddings, logits, targets):
    """Closed-form per-sample gradients of cross-entropy w.r.t. the final layer.

    For ``z = W h + b`` and ``loss_i = CE(z_i, y_i)``:
    ``dloss_i/dW = (p_i - e_{y_i}) h_i^T`` and ``dloss_i/db = p_i - e_{y_i}``.
    Returns their concatenation per sample, shape (n, C * (h + 1)), laid out
    as ``[vec(dW) row-major, db]``.
    """
    p = torch.softmax(logits.to(embeddings.dtype), dim=1)
    delta = p.clone()
    delta[torch.arange(len(targets)), targets] -= 1.0
    dW = delta[:, :, None] * embeddings[:, None, :]
    return torch.cat([dW.flatten(1), delta], dim=1)


def per_sample_gradients(model, inputs, targets, loss_fn=None):
    """Full per-sample gradients with ``torch.func``: shape (n, n_parameters).

    ``loss_fn(outputs, targets)`` defaults to cross-entropy. Parameters are
    detached, so the model's ``.grad`` fields are untouched.
    """
    from torch.func import functional_call, grad, vmap

    loss_fn = loss_fn or nn.functional.cross_entropy
    params = {k: v.detach() for k, v in model.named_parameters()}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def loss_one(p, x, y):
        out = functional_call(model, (p, buffers), (x[None],))
        return loss_fn(out, y[None])

    grads = vmap(grad(loss_one), in_dims=(None, 0, 0))(params, inputs, targets)
    return torch.cat([g.flatten(1) for g in grads.values()], dim=1)
