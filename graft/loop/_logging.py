"""What a selection did, written where the user looks: TensorBoard, or any logger."""

from __future__ import annotations

import statistics

__all__ = ["TensorBoardLogger"]


class TensorBoardLogger:
    """An ``on_round`` callback that writes each selection's figures to TensorBoard.

    Per selection, at step ``epoch``: ``{prefix}/fraction`` (share of the
    dataset trained on), ``{prefix}/samples``, ``{prefix}/selection_time_s``
    and ``{prefix}/rank_mean`` (the mean rank of the selection's coordinates,
    when the selector reports ranks).

    Parameters
    ----------
    log_dir : str or None, default=None
        The folder of a new ``torch.utils.tensorboard.SummaryWriter`` (needs
        the ``tensorboard`` package); None: its default, ``runs/...``.
    writer : object or None, default=None
        A writer of your own with ``add_scalar(tag, value, step)`` (a
        ``SummaryWriter``, or an adapter to another logger) instead.
    prefix : str, default="graft"

    Examples
    --------
    >>> import torch
    >>> from torch.utils.data import TensorDataset
    >>> from graft import Graft, RandomSelector, TensorBoardLogger
    >>> class Printer:
    ...     def add_scalar(self, tag, value, step):
    ...         print(tag, round(value, 3), step)
    >>> data = TensorDataset(torch.randn(40, 3), torch.arange(40) % 2)
    >>> graft = Graft(torch.nn.Linear(3, 2), data, selector=RandomSelector(0.5),
    ...               on_round=TensorBoardLogger(writer=Printer()))
    >>> graft.set_epoch(0)  # doctest: +ELLIPSIS
    graft/fraction 0.5 0
    graft/samples 20 0
    graft/selection_time_s ... 0
    graft/rank_mean 20 0
    """

    def __init__(self, log_dir=None, *, writer=None, prefix="graft"):
        if writer is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as exc:
                raise ImportError(
                    "TensorBoardLogger needs TensorBoard: pip install tensorboard; or "
                    "pass writer=<an object with add_scalar(tag, value, step)>."
                ) from exc
            writer = SummaryWriter(log_dir)
        elif not callable(getattr(writer, "add_scalar", None)):
            raise TypeError(
                f"writer must have add_scalar(tag, value, step), got "
                f"{type(writer).__name__}."
            )
        self.writer, self.prefix = writer, prefix

    def __call__(self, entry):
        """Write one selection's figures (``entry``: a ``Graft.history`` entry)."""
        step = entry["epoch"]
        for key in ("fraction", "samples", "selection_time_s"):
            self.writer.add_scalar(f"{self.prefix}/{key}", entry[key], step)
        if entry.get("ranks"):
            rank = statistics.mean(entry["ranks"])
            self.writer.add_scalar(f"{self.prefix}/rank_mean", rank, step)
