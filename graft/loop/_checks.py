"""The checks of Graft's arguments, of the batches it loads and of saved states."""

from __future__ import annotations

import torch
from torch.utils.data import IterableDataset


def check_model_type(model):
    if model is not None and not isinstance(model, torch.nn.Module):
        raise TypeError(
            f"model must be a torch.nn.Module, got {type(model).__name__}; wrap a "
            "function in an nn.Module whose forward calls it."
        )


def check_dataset(dataset):
    if isinstance(dataset, IterableDataset) or not hasattr(dataset, "__len__"):
        raise TypeError(
            f"dataset must be a map-style dataset (with __len__ and __getitem__), "
            f"got {type(dataset).__name__}; selection needs to address samples by "
            "index."
        )
    if len(dataset) == 0:
        raise ValueError("dataset is empty; pass a dataset with samples.")


def check_device(device):
    if device is None:
        return None
    if not isinstance(device, (str, torch.device)):
        raise TypeError(
            f"device must be a str or torch.device, got {type(device).__name__} "
            f"{device!r}; pass e.g. 'cpu', 'cuda' or None for the model's device."
        )
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ValueError(
            f"device ({device!r}) is not a torch device; pass e.g. 'cpu', 'cuda' "
            "or None for the model's device."
        ) from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device ({device}) needs CUDA, which this machine lacks; pass "
            "device=None to select on the model's device."
        )
    return device


def check_targets(targets, indices):
    """Targets of a selection batch: one class label per sample."""
    if targets is None:
        raise ValueError(
            "the batches are bare tensors, without targets, but selection needs "
            "the class labels; pass targets=callable(batch) to Graft, or return "
            "(input, target) rows."
        )
    if (
        not isinstance(targets, torch.Tensor)
        or targets.shape != indices.shape
        or targets.is_floating_point()
        or targets.is_complex()
    ):
        what = getattr(targets, "dtype", type(targets).__name__)
        shape = tuple(getattr(targets, "shape", ()))
        raise ValueError(
            f"the targets of a batch must be integer class labels, one per sample "
            f"(shape ({len(indices)},)), got {what} of shape {shape}; pass "
            "targets=<key, position or callable(batch)> to Graft."
        )
    return targets


def refuse(what):
    raise ValueError(
        f"the state's {what}; load a state saved by Graft.state_dict() for this "
        "dataset and seed."
    )


def check_state(state, seed, n):
    """Raise ValueError if ``state`` cannot continue this Graft's run."""
    keys = ("selected_indices", "selected_weights", "selected_at", "history", "seed")
    missing = [k for k in keys if not isinstance(state, dict) or k not in state]
    if missing:
        raise ValueError(
            f"the state lacks {missing}; pass a dict made by Graft.state_dict()."
        )
    if state["seed"] != seed:
        raise ValueError(
            f"the state was saved with seed={state['seed']!r} but this Graft has "
            f"seed={seed}; construct it with the same seed."
        )
    saved_n = state.get("n_samples", n)
    if saved_n != n:
        raise ValueError(
            f"the state was saved for a dataset of {saved_n!r} samples but this "
            f"Graft has {n}; load it with the same dataset."
        )
    history = state["history"]
    if not isinstance(history, list) or not all(isinstance(h, dict) for h in history):
        refuse("history must be a list of dicts")
    check_selection(state["selected_indices"], state["selected_weights"], n)
    at = state["selected_at"]
    if (state["selected_indices"] is None) != (at is None) or not (
        at is None or (isinstance(at, int) and not isinstance(at, bool) and at >= 0)
    ):
        refuse(f"selected_at ({at!r}) must be the epoch (int >= 0) of its selection")


def check_selection(indices, weights, n):
    if indices is None and weights is None:
        return
    ok = (
        isinstance(indices, torch.Tensor)
        and isinstance(weights, torch.Tensor)
        and indices.ndim == 1
        and len(indices) > 0
        and indices.dtype in (torch.int64, torch.int32)
        and weights.dtype in (torch.float32, torch.float64)
        and weights.shape == indices.shape
    )
    if not ok:
        refuse(
            "selection must be non-empty 1-D integer indices with a real weight each"
        )
    if not (0 <= int(indices.min()) and int(indices.max()) < n):
        refuse(
            f"selected indices span [{int(indices.min())}, {int(indices.max())}], "
            f"outside the dataset's [0, {n - 1}]"
        )
    if len(torch.unique(indices)) != len(indices):
        refuse("selected indices repeat a sample")
    if not (torch.isfinite(weights).all() and (weights >= 0).all()):
        refuse("selected weights must be finite and >= 0")
