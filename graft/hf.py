"""GRAFT selection inside a Hugging Face ``transformers.Trainer`` (optional).

A ``Trainer`` owns its data loader and its loss, so the integration is a
``Trainer`` subclass, :class:`GraftTrainer`, with two overrides, and a
callback, :class:`GraftTrainerCallback`, that starts each epoch's selection:

- ``get_train_dataloader`` serves ``Graft.dataloader()``: the samples the
  selector chose, collated by the trainer's data collator, each batch a dict
  with two more entries, ``graft_weights`` and ``graft_indices``;
- ``compute_loss`` takes those two out, runs the model on the rest without
  its ``labels`` (so that it returns logits, not a mean loss), and returns
  ``Graft.update``'s weighted mean of the per-sample losses (cross-entropy
  by default, ``loss_fn(logits, labels)`` otherwise), which also keeps the
  per-sample record.

Single device (the loader is not prepared by ``accelerate``). This module
imports ``transformers``; ``import graft`` does not.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

try:
    from transformers import Trainer, TrainerCallback
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "graft.hf needs Hugging Face transformers: pip install transformers "
        "and accelerate (or pip install 'maxvol-kit[hf]')."
    ) from exc

from graft.loop import Graft, GraftBatch

__all__ = ["GraftTrainer", "GraftTrainerCallback"]

_KEYS = ("graft_weights", "graft_indices")


class GraftTrainerCallback(TrainerCallback):
    """Start each epoch of a ``Trainer`` run with ``graft.set_epoch``.

    Parameters
    ----------
    graft : graft.Graft
    """

    def __init__(self, graft: Graft) -> None:
        self.graft = graft

    def on_epoch_begin(self, args, state, control, **kwargs):
        """A selection round, if one is due, before the epoch's first batch."""
        self.graft.set_epoch(round(state.epoch or 0))


class _DictBatches:
    """``graft.dataloader()`` with each GraftBatch as the trainer's dict batch."""

    def __init__(self, loader):
        self.loader = loader

    def __len__(self):
        return len(self.loader)

    def __iter__(self):
        for batch in self.loader:
            yield {**batch.data, "graft_weights": batch.weights,
                   "graft_indices": batch.indices}  # fmt: skip


class GraftTrainer(Trainer):
    """A ``transformers.Trainer`` that trains on the samples a selector picks.

    Parameters
    ----------
    *args, **kwargs
        Those of ``transformers.Trainer`` (``model``, ``args``,
        ``train_dataset``, ``data_collator``...). ``train_dataset`` must be a
        map-style dataset of dicts (``input_ids``, ..., ``labels``).
    selector : selector or None
        Any :class:`graft.selection.Selector`; None trains on all data.
    loss_fn : callable or None, default=None
        ``loss_fn(logits, labels) -> Tensor (n,)`` of per-sample losses;
        None: cross-entropy.
    graft_options : dict or None
        More :class:`graft.Graft` options (``refresh_every``, ``mode``,
        ``warm_start``...). ``batch_size``, ``seed`` and ``collate_fn`` are
        the trainer's.

    Attributes
    ----------
    graft : graft.Graft
        The wrapper: its ``history``, ``record`` and ``state_dict``.

    Examples
    --------
    >>> import tempfile
    >>> import torch
    >>> from transformers import BertConfig, BertForSequenceClassification
    >>> from transformers import TrainingArguments
    >>> from graft import RandomSelector
    >>> from graft.hf import GraftTrainer
    >>> config = BertConfig(vocab_size=30, hidden_size=16, num_hidden_layers=1,
    ...                     num_attention_heads=2, intermediate_size=32)
    >>> model = BertForSequenceClassification(config)  # built here, no download
    >>> rows = [{"input_ids": torch.randint(0, 30, (6,)), "labels": i % 2}
    ...         for i in range(40)]
    >>> args = TrainingArguments(tempfile.mkdtemp(), num_train_epochs=1, report_to=[],
    ...                          per_device_train_batch_size=8, use_cpu=True,
    ...                          save_strategy="no")
    >>> trainer = GraftTrainer(model=model, args=args, train_dataset=rows,
    ...                        selector=RandomSelector(0.5))
    >>> _ = trainer.train()  # doctest: +ELLIPSIS
    {...'train_loss'...}
    >>> trainer.graft.fraction_achieved()
    0.5
    """

    def __init__(
        self,
        *args: Any,
        selector: Any = None,
        loss_fn: Callable | None = None,
        graft_options: dict | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        if self.train_dataset is None:
            raise ValueError("GraftTrainer needs a train_dataset to select from.")
        self.loss_fn = loss_fn
        self.graft = Graft(
            self.model,
            self.train_dataset,
            selector=selector,
            batch_size=self.args.per_device_train_batch_size,
            seed=self.args.seed,
            collate_fn=self.data_collator,
            targets="labels",
            **(graft_options or {}),
        )
        self.add_callback(GraftTrainerCallback(self.graft))

    def get_train_dataloader(self):
        """The selected samples of the epoch, as dict batches (see the module)."""
        if not self.graft.history:  # the first round: the trainer counts batches
            self.graft.set_epoch(0)
        return _DictBatches(self.graft.dataloader())

    def compute_loss(self, model, inputs, return_outputs=False, **kwargs):
        """The weighted mean of the batch's per-sample losses (``Graft.update``)."""
        weights, indices = (inputs.pop(key) for key in _KEYS)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        if self.loss_fn is not None:
            losses = self.loss_fn(logits, labels)
        else:
            losses = torch.nn.functional.cross_entropy(
                logits.float(), labels, reduction="none"
            )
        batch = GraftBatch({**inputs, "labels": labels}, weights, indices)
        loss = self.graft.update(batch, losses)
        return (loss, outputs) if return_outputs else loss
