"""GRAFT selection inside a Lightning ``Trainer`` run (optional integration).

:class:`GraftCallback` owns a :class:`graft.Graft` wrapper and serves its
batches to ``lightning.pytorch.Trainer.fit``: the selection rounds, the
dataset indices, the weights, the history and the state are the wrapper's,
so a Lightning run selects exactly the samples that a plain ``Graft`` loop
with the same seed and selector selects. Its loader is ``Graft.dataloader()``
itself: Lightning sets each epoch through the batch sampler's ``set_epoch``,
as it does for any sampler. The callback only hands the ``LightningModule``
to the wrapper as its model, checks that the trainer trains on its loader,
logs the epoch's figures and saves the wrapper's state in checkpoints.

This module imports ``lightning``; ``import graft`` does not.
"""

from __future__ import annotations

from typing import Any

import torch

try:
    from lightning.pytorch.callbacks import Callback
except ImportError as exc:  # pragma: no cover - depends on the install
    raise ImportError(
        "graft.lightning needs Lightning: pip install lightning "
        "(or pip install 'maxvol-kit[lightning]')."
    ) from exc

from graft.loop import Graft

__all__ = ["GraftCallback"]


class GraftCallback(Callback):
    """Train a ``LightningModule`` on the samples a GRAFT selector picks.

    The callback wraps the training dataset in a :class:`graft.Graft` and
    serves its batches through :meth:`train_dataloader`. Three changes to a
    Lightning script:

    1. ``Trainer(callbacks=[callback])``;
    2. ``trainer.fit(module, train_dataloaders=callback.train_dataloader())``
       (or return ``callback.train_dataloader()`` from the module's or the
       datamodule's ``train_dataloader``);
    3. in ``training_step``, take the data from the :class:`graft.GraftBatch`
       and return ``callback.update(batch, per_sample_losses)``, the weighted
       mean loss (it also keeps the per-sample record).

    The selection calls the ``LightningModule`` as the model, through the
    ``inputs`` / ``targets`` / ``outputs`` options (see :class:`graft.Graft`);
    its last ``nn.Linear`` is the layer whose input gives the embedding
    features. Under a multi-process strategy (DDP) each process selects in
    its shard as :class:`graft.Graft` does under ``torch.distributed`` (the
    callback joins the processes in ``setup``).

    Parameters
    ----------
    selector : selector or None
        :class:`graft.GraftSelector`, :class:`graft.RandomSelector`, or any
        object with the same ``select`` method; None trains on all data.
    dataset : torch Dataset
        The training set to select from (rows of any format).
    batch_size : int, default=128
        Samples per batch before selection.
    refresh_every : int, default=5
        Epochs between selection rounds (``mode="refresh"``).
    mode : {"refresh", "online"}, default="refresh"
        ``"refresh"``: a selection round over the whole dataset every
        ``refresh_every`` epochs, training on that subset in between;
        ``"online"``: every batch is reduced to its selection before the
        training step.
    seed : int, default=0
        Seed of every random choice (shuffling, selection); with the same
        seed the run selects as a plain :class:`graft.Graft` does.
    **graft_options
        Any other keyword of :class:`graft.Graft` (``inputs``, ``targets``,
        ``outputs``, ``collate_fn``, ``num_workers``, ``warm_start``,
        ``progress``, ``drop_last``).

    Attributes
    ----------
    graft : graft.Graft
        The wrapper that selects and serves the batches; its ``history``,
        ``record`` and ``fraction_achieved()`` report the run.

    See Also
    --------
    graft.Graft : The same selection in a plain PyTorch loop.

    Notes
    -----
    In refresh mode the number of batches is known once an epoch's round
    is made, so the loader has no length when the trainer starts and
    Lightning treats it like an iterable (``val_check_interval`` must be
    ``1.0``, an int or a time); each epoch still ends after its last batch.
    In online mode and without a selector the loader has a length and
    Lightning fetches each batch only when it trains on it, so the
    selection of a batch sees the model after the previous step, as in a
    plain loop.

    The callback's state (the current selection, the round it was made in,
    the per-sample record and the history) is saved in Lightning
    checkpoints; a run resumed with ``trainer.fit(..., ckpt_path=...)`` from
    an end-of-epoch checkpoint selects exactly as an uninterrupted one (a
    checkpoint taken within an epoch replays that epoch from its start).

    Examples
    --------
    >>> import lightning as L  # doctest: +SKIP
    >>> from graft import GraftSelector
    >>> from graft.lightning import GraftCallback
    >>> callback = GraftCallback(  # doctest: +SKIP
    ...     GraftSelector(fraction=0.3), dataset=train_set, batch_size=64
    ... )
    >>> trainer = L.Trainer(max_epochs=10, callbacks=[callback])  # doctest: +SKIP
    >>> trainer.fit(  # doctest: +SKIP
    ...     module, train_dataloaders=callback.train_dataloader()
    ... )
    >>> callback.graft.fraction_achieved()  # doctest: +SKIP
    0.29
    """

    def __init__(
        self,
        selector: Any,
        *,
        dataset: torch.utils.data.Dataset,
        batch_size: int = 128,
        refresh_every: int = 5,
        mode: str = "refresh",
        seed: int = 0,
        **graft_options: Any,
    ) -> None:
        # The model is the LightningModule, known once the trainer starts.
        self.graft = Graft(
            None,
            dataset,
            selector=selector,
            batch_size=batch_size,
            refresh_every=refresh_every,
            mode=mode,
            seed=seed,
            **graft_options,
        )
        self.graft._epoch_source = self._trainer_epoch
        self._trainer = None

    def _trainer_epoch(self):
        """The epoch Lightning is about to train (its loader may ask first)."""
        if self._trainer is None:
            raise RuntimeError(
                "GraftCallback.train_dataloader() is served by the callback during "
                "trainer.fit; add the callback with Trainer(callbacks=[callback])."
            )
        # Lightning prefetches the first batch of an epoch (setup_data) before
        # it calls the samplers' set_epoch, and on a resumed run before its
        # loop state is restored; the epoch it then passes to set_epoch is
        # this count of processed epochs, so the loader reads the same value.
        return self._trainer.fit_loop.epoch_progress.current.processed

    def train_dataloader(self, **dataloader_options: Any):
        """The loader to train on: pass it to ``trainer.fit`` or return it.

        Parameters
        ----------
        **dataloader_options
            ``torch.utils.data.DataLoader`` keywords, as for
            :meth:`graft.Graft.dataloader`.

        Returns
        -------
        graft.GraftLoader
            ``callback.graft.dataloader(**dataloader_options)``: the batches
            of the epoch the trainer is in, as :class:`graft.GraftBatch`.
        """
        loader = self.graft.dataloader(**dataloader_options)
        sized = self.graft.mode == "online" or self.graft.selector is None
        return loader if sized else _Unsized(loader)

    def update(self, batch, losses: torch.Tensor) -> torch.Tensor:
        """``callback.graft.update(batch, losses)``: the weighted mean loss."""
        return self.graft.update(batch, losses)

    # -- Lightning hooks -----------------------------------------------------

    def setup(self, trainer, pl_module, stage: str) -> None:
        """Take the ``LightningModule`` as the model that selects."""
        if stage != "fit":
            return
        # Under a multi-process strategy the process group exists only now.
        if trainer.world_size > 1:
            self.graft.set_processes(trainer.global_rank, trainer.world_size)
        self._trainer = trainer
        self.graft.model = pl_module

    def on_train_start(self, trainer, pl_module) -> None:
        """Check that the trainer trains on this callback's loader."""
        loader = trainer.train_dataloader
        sampler = getattr(loader, "batch_sampler", None)
        if loader is not None and sampler is not self.graft.batch_sampler:
            raise RuntimeError(
                "GraftCallback is in the trainer's callbacks but the trainer trains "
                f"on {type(loader).__name__}; pass "
                "train_dataloaders=callback.train_dataloader() to trainer.fit, or "
                "return callback.train_dataloader() from train_dataloader()."
            )

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        """Log the epoch's data fraction and selection time."""
        record = next(
            (h for h in self.graft.history if h["epoch"] == trainer.current_epoch),
            None,
        )
        if record is not None and "fraction" in record:
            pl_module.log("graft/fraction", float(record["fraction"]))
            pl_module.log("graft/selection_time_s", float(record["selection_time_s"]))

    def teardown(self, trainer, pl_module, stage: str) -> None:
        """Remove the record's hook and drop the reference to the model."""
        if stage == "fit":
            self.graft.close()
            self.graft.model = None
            self._trainer = None

    def state_dict(self) -> dict[str, Any]:
        """The wrapper's state: selection, round, record, history and seed."""
        return {"graft": self.graft.state_dict()}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (the seed must match)."""
        self.graft.load_state_dict(state_dict["graft"])


class _Unsized:
    """A refresh-mode loader without a length, for Lightning.

    Lightning takes the length it sees when training starts as the length of
    every epoch, but a refresh round may change the number of batches; with
    no length, each epoch ends after its last batch.
    """

    def __init__(self, loader):
        self.loader = loader
        self.batch_sampler = loader.batch_sampler

    def __iter__(self):
        return iter(self.loader)
