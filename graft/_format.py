"""Where graft finds the inputs, the targets and the logits in the user's batches.

A batch is whatever the user's ``collate_fn`` makes of their dataset's rows: a
tensor, a tuple or list (``(x, y)``, ``(x, y, extra)``, ``((x1, x2), y)``), a
dict (Hugging Face rows such as ``{"pixel_values": ..., "labels": ...}``) or
a nesting of them. :class:`BatchFormat` says where the model's inputs and the
class labels are (a key, a position or a callable; by default the first and
second entries of a tuple, or common dict keys) and how a model output
becomes logits (by default a tensor, a ``"logits"`` entry or attribute, or the
first entry of a tuple). The selection rounds call the model through it, so
they read the same batches the training loop does.

The dataset indices travel with every batch: :class:`IndexedDataset` returns
``(row, index)`` and :class:`IndexedCollate` collates the rows with the
user's function and the indices into a tensor, in the worker processes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

import torch
from torch.utils.data import Dataset, default_collate

__all__ = ["BatchFormat", "Classifier", "IndexedCollate", "IndexedDataset", "take"]

INPUT_KEYS = (
    "inputs",
    "input",
    "x",
    "pixel_values",
    "input_ids",
    "image",
    "images",
    "features",
)
TARGET_KEYS = ("labels", "label", "targets", "target", "y")
# Passed along with the input key (as keywords) when a dict batch has them.
COMPANION_KEYS = ("attention_mask", "token_type_ids", "position_ids")


def _check_spec(name, spec):
    if spec is None or callable(spec) or isinstance(spec, str):
        return spec
    if isinstance(spec, int) and not isinstance(spec, bool):
        return spec
    raise TypeError(
        f"{name} must be None, a key (str), a position (int) or a callable(batch), "
        f"got {type(spec).__name__}."
    )


def _describe(batch):
    if isinstance(batch, Mapping):
        return f"a {type(batch).__name__} with keys {sorted(map(str, batch))}"
    if isinstance(batch, (tuple, list)):
        return f"a {type(batch).__name__} of {len(batch)} entries"
    return f"a {type(batch).__name__}"


class BatchFormat:
    """Find inputs, targets and logits in batches of any structure.

    Parameters
    ----------
    inputs, targets : str, int, callable or None
        A key of a dict batch, a position in a tuple batch, or
        ``callable(batch) -> inputs`` (targets: a 1-D tensor of class
        labels). None: the batch itself when it is a tensor (no targets
        then), entries 0 and 1 of a tuple or list, or the first of
        ``INPUT_KEYS`` / ``TARGET_KEYS`` in a dict; with any of
        ``COMPANION_KEYS`` beside it, the inputs are the dict of the input
        key and those (``model(input_ids=..., attention_mask=...)``).
    outputs : callable or None
        ``callable(model_output) -> logits``; None: a tensor as it is, the
        ``"logits"`` entry or attribute, or entry 0 of a tuple.
    """

    def __init__(self, inputs=None, targets=None, outputs=None):
        self.inputs_spec = _check_spec("inputs", inputs)
        self.targets_spec = _check_spec("targets", targets)
        if outputs is not None and not callable(outputs):
            raise TypeError(
                "outputs must be None or a callable(model_output) -> logits, e.g. "
                f"outputs=lambda out: out.logits; got {type(outputs).__name__}."
            )
        self.outputs_spec = outputs

    def _find(self, batch, spec, name, position, keys):
        if callable(spec):
            return spec(batch)
        sequence = isinstance(batch, (tuple, list))
        if spec is None and (isinstance(batch, torch.Tensor) or sequence):
            # A bare tensor, or rows of one tensor (TensorDataset(X)): no targets.
            alone = not sequence or len(batch) == 1
            if alone:
                return (batch if not sequence else batch[0]) if position == 0 else None
            return batch[position]
        if spec is None and isinstance(batch, Mapping):
            spec = next((k for k in keys if k in batch), None)
            companions = [k for k in COMPANION_KEYS if k in batch]
            if position == 0 and spec is not None and companions:
                return {k: batch[k] for k in (spec, *companions)}
        if isinstance(spec, str) and isinstance(batch, Mapping) and spec in batch:
            return batch[spec]
        if isinstance(spec, int) and isinstance(batch, (tuple, list)):
            if -len(batch) <= spec < len(batch):
                return batch[spec]
        raise ValueError(
            f"cannot find the {name} in {_describe(batch)} (what the collate "
            f"function made of the dataset's rows); pass {name}='key' for a dict "
            f"batch, {name}=<position> for a tuple batch, or "
            f"{name}=callable(batch) to Graft."
        )

    def inputs(self, batch):
        """What the model is called on."""
        return self._find(batch, self.inputs_spec, "inputs", 0, INPUT_KEYS)

    def targets(self, batch):
        """The class labels (1-D integer tensor), or None for a bare tensor batch."""
        return self._find(batch, self.targets_spec, "targets", 1, TARGET_KEYS)

    def call(self, model, inputs):
        """``model(**inputs)`` (dict), ``model(*inputs)`` (tuple), ``model(inputs)``."""
        if isinstance(inputs, Mapping):
            return model(**inputs)
        if isinstance(inputs, (tuple, list)):
            return model(*inputs)
        return model(inputs)

    def logits(self, output):
        """The logits tensor of a model output."""
        if self.outputs_spec is not None:
            output = self.outputs_spec(output)
        elif isinstance(output, Mapping) and "logits" in output:
            output = output["logits"]
        elif not isinstance(output, torch.Tensor) and hasattr(output, "logits"):
            output = output.logits
        elif isinstance(output, (tuple, list)) and output:
            output = output[0]
        if not isinstance(output, torch.Tensor):
            raise ValueError(
                f"the model returned {_describe(output)}, not a logits tensor; pass "
                "outputs=callable(model_output) -> logits to Graft, e.g. "
                "outputs=lambda out: out.logits."
            )
        return output


class Classifier:
    """The model as a selection calls it: ``classifier(inputs) -> logits``.

    ``named_modules`` is the model's, so layers are found by their names in
    the model; ``module`` is the model itself.
    """

    def __init__(self, module, fmt):
        self.module = module
        self.format = fmt

    def __call__(self, inputs):
        return self.format.logits(self.format.call(self.module, inputs))

    def named_modules(self, *args, **kwargs):
        return self.module.named_modules(*args, **kwargs)


def _batched(x, n):
    """A tensor with one row per sample of a batch of ``n``."""
    return isinstance(x, torch.Tensor) and x.ndim >= 1 and x.shape[0] == n


def take(x, rows, n):
    """The rows ``rows`` (1-D index tensor) of a batch of ``n`` samples.

    Tensors with ``n`` rows are indexed, dicts and tuples of fields are
    taken field by field, a list or tuple of ``n`` entries that are not all
    such tensors (one entry per sample, e.g. strings or tensors of varying
    length) is indexed entry by entry, and anything else (flags, scalars,
    shared tensors) is passed as it is.
    """
    if isinstance(x, torch.Tensor):
        return x[rows.to(x.device)] if _batched(x, n) else x
    if isinstance(x, Mapping):
        return {k: take(v, rows, n) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        if len(x) == n and not all(_batched(v, n) for v in x):
            return [x[i] for i in rows.tolist()]
        parts = [take(v, rows, n) for v in x]
        return type(x)(*parts) if hasattr(x, "_fields") else type(x)(parts)
    return x


def to_device(x, device):
    """``x`` with every tensor in it on ``device``."""
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, Mapping):
        return {k: to_device(v, device) for k, v in x.items()}
    if isinstance(x, (tuple, list)):
        parts = [to_device(v, device) for v in x]
        return type(x)(*parts) if hasattr(x, "_fields") else type(x)(parts)
    return x


class _Rows(NamedTuple):
    """A batch's rows and their dataset indices, on their way to the collate."""

    rows: list
    indices: list


class IndexedDataset(Dataset):
    """The user's rows with their dataset indices.

    DataLoaders fetch a batch with ``__getitems__`` (the user's own, e.g. a
    Hugging Face dataset's batched access, when it has one), which keeps the
    indices beside the rows; ``__getitem__`` gives ``(row, index)``.
    """

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        return self.dataset[i], i

    def __getitems__(self, indices):
        getitems = getattr(self.dataset, "__getitems__", None)
        rows = getitems(indices) if getitems else [self.dataset[i] for i in indices]
        return _Rows(rows, indices)


class IndexedCollate:
    """Collate the rows with the user's function, the indices into a tensor."""

    def __init__(self, collate_fn=None):
        self.collate_fn = collate_fn or default_collate

    def __call__(self, samples):
        if isinstance(samples, _Rows):
            rows, indices = samples
        else:  # (row, index) pairs
            rows, indices = [r for r, _ in samples], [i for _, i in samples]
        return self.collate_fn(list(rows)), torch.tensor(indices, dtype=torch.long)
