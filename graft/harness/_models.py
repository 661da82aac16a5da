"""Small models for the offline experiments: MLP, small CNN, transformer block."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["TransformerBlock", "fit", "make_model"]


class TransformerBlock(nn.Module):
    """Pre-norm transformer block on (n, T, d) tokens with a mean-pooled head.

    Attention is built from ``nn.Linear`` layers (``q``, ``k``, ``v``, ``o``)
    so that every weight is a linear layer's, as FactGraSS factors them.

    Parameters
    ----------
    d : int, default=256
        Token width.
    heads : int, default=4
        Attention heads (``d`` must be a multiple).
    hidden : int, default=1024
        Width of the feed-forward layer.
    n_classes : int, default=10

    Examples
    --------
    >>> import torch
    >>> from graft.harness import TransformerBlock
    >>> block = TransformerBlock(d=8, heads=2, hidden=16, n_classes=3)
    >>> block(torch.randn(4, 5, 8)).shape  # 4 sequences of 5 tokens
    torch.Size([4, 3])
    """

    def __init__(self, d=256, heads=4, hidden=1024, n_classes=10):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2, self.ln3 = (nn.LayerNorm(d) for _ in range(3))
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Linear(hidden, d))
        self.head = nn.Linear(d, n_classes)

    def forward(self, x):
        n, T, d = x.shape
        h = self.ln1(x)
        q, k, v = (
            f(h).view(n, T, self.heads, -1).transpose(1, 2)
            for f in (self.q, self.k, self.v)
        )
        att = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, -1) @ v
        x = x + self.o(att.transpose(1, 2).reshape(n, T, d))
        x = x + self.mlp(self.ln2(x))
        return self.head(self.ln3(x).mean(1))


def _mlp(in_shape, n_classes):
    n_in = 1
    for s in in_shape:
        n_in *= s
    return nn.Sequential(
        nn.Flatten(),
        nn.Linear(n_in, 256),
        nn.ReLU(),
        nn.Linear(256, 128),
        nn.ReLU(),
        nn.Linear(128, n_classes),
    )


def _cnn(in_shape, n_classes):
    channels = in_shape[0]
    return nn.Sequential(
        nn.Conv2d(channels, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(32 * 16, 64),
        nn.ReLU(),
        nn.Linear(64, n_classes),
    )


def make_model(name, in_shape, n_classes):
    """``"mlp"`` (hidden 256-128) or ``"cnn"`` (two conv layers + 64-unit head).

    ``in_shape`` is one sample's shape: ``(channels, height, width)`` for the
    CNN, anything for the MLP (it flattens).

    Parameters
    ----------
    name : {"mlp", "cnn"}
    in_shape : tuple of int
    n_classes : int

    Returns
    -------
    torch.nn.Sequential
        Freshly initialised (seed torch first for a given draw).

    Examples
    --------
    >>> import torch
    >>> from graft.harness import make_model
    >>> make_model("cnn", (1, 28, 28), 10)(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    """
    builders = {"mlp": _mlp, "cnn": _cnn}
    if name not in builders:
        raise ValueError(f"model ({name!r}) must be one of {sorted(builders)}.")
    if name == "cnn" and len(in_shape) != 3:
        raise ValueError(
            f"the cnn needs images of shape (channels, height, width), got {in_shape}; "
            "use model='mlp' for flat features."
        )
    return builders[name](tuple(in_shape), n_classes)


def fit(model, x, y, *, steps, lr, batch_size=None):
    """``steps`` Adam steps on cross-entropy; the model in eval mode, no ``.grad`` left.

    Step ``i`` trains on rows ``[i * batch_size, (i + 1) * batch_size)`` of
    ``x`` and ``y`` (None: all of them, every step).

    Parameters
    ----------
    model : torch.nn.Module
    x, y : Tensor
        Inputs and class labels.
    steps : int
    lr : float
    batch_size : int or None, default=None

    Examples
    --------
    >>> import torch
    >>> from graft.harness import fit
    >>> model = fit(torch.nn.Linear(3, 2), torch.randn(8, 3), torch.arange(8) % 2,
    ...             steps=2, lr=0.1)
    >>> model.training, model.weight.grad is None
    (False, True)
    """
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for i in range(steps):
        rows = (
            slice(None)
            if batch_size is None
            else slice(i * batch_size, (i + 1) * batch_size)
        )
        loss = nn.functional.cross_entropy(model(x[rows]), y[rows])
        opt.zero_grad()
        loss.backward()
        opt.step()
    for p in model.parameters():
        p.grad = None
    return model.eval()
