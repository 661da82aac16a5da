"""Small models for the offline experiments: an MLP and a small CNN."""

from __future__ import annotations

from torch import nn

__all__ = ["make_model"]


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
