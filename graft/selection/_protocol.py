"""The one interface of every selector, and what a selection round may read.

A selector is any object with the members of :class:`Selector`: Graft calls
``selector.select_round(round)`` once per selection round and reads the
declared attributes, never probing for optional methods. Online mode (every
batch selected as it is served) also needs ``select``, the members of
:class:`BatchSelector`. A selector declares what its rounds read:

- ``reads = "record"``: only :attr:`Round.record` (the per-sample losses and
  embeddings of the training passes) and :attr:`Round.generator`. Every
  process computes the same round from the global record and keeps its
  share, so such a round costs no forward pass and no collective.
- ``reads = "data"``: :attr:`Round.batches`, this process's shard of the
  dataset loaded with the training loader's options, and :attr:`Round.model`
  in eval mode. Each process selects within its shard; the selections are
  all-gathered.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal, NamedTuple, Protocol, runtime_checkable

import torch

from graft.selection._record import SampleRecord

__all__ = [
    "BatchSelector",
    "Round",
    "RoundSelection",
    "Selection",
    "Selector",
    "batchwise_round",
    "check_selector",
]


@dataclass(frozen=True)
class Selection:
    """One batch's selection: local indices into the batch, loss weights, rank.

    Attributes
    ----------
    indices : Tensor of shape (k,)
        Rows of the batch kept.
    weights : Tensor of shape (k,)
        Their loss weights (non-negative).
    rank : int
        The rank of the coordinates the selection was made in (the number of
        directions it covers; the number kept for a uniform draw).

    Examples
    --------
    >>> import torch
    >>> from graft import RandomSelector
    >>> sel = RandomSelector(0.25).select(
    ...     None, torch.randn(8, 3), torch.zeros(8, dtype=torch.long),
    ...     torch.Generator().manual_seed(0))
    >>> len(sel.indices), sel.weights.tolist(), sel.rank
    (2, [1.0, 1.0], 2)
    """

    indices: torch.Tensor
    weights: torch.Tensor
    rank: int


class Round(NamedTuple):
    """What a selection round may read.

    Attributes
    ----------
    epoch : int
        The epoch the selection is for.
    record : SampleRecord
        The per-sample record of the training passes, of every process.
    generator : torch.Generator
        The round's random stream: shared by all processes when the selector
        reads the record, this process's own when it reads the data.
    model : callable
        ``model(inputs) -> logits``, the user's model in eval mode (its layers
        by ``model.named_modules()``).
    batches : callable
        ``batches()`` returns a fresh iterator of ``(inputs, targets,
        dataset_indices)`` over this process's shard of the dataset.

    Examples
    --------
    >>> import torch
    >>> from graft import RandomSelector, SampleRecord
    >>> from graft.selection import Round
    >>> round = Round(epoch=0, record=SampleRecord(10), generator=torch.Generator(),
    ...               model=None, batches=lambda: iter(()))
    >>> len(RandomSelector(0.3).select_round(round).indices)
    3
    """

    epoch: int
    record: SampleRecord
    generator: torch.Generator
    model: Callable
    batches: Callable[[], Iterator[tuple]]


class RoundSelection(NamedTuple):
    """A round's result: dataset indices, their loss weights, the ranks used.

    Attributes
    ----------
    indices : Tensor of shape (k,)
        Dataset indices of the samples kept, distinct.
    weights : Tensor of shape (k,)
        Their loss weights (non-negative).
    ranks : list of int
        The rank of the coordinates of each batch or class the round selected in.

    Examples
    --------
    >>> import torch
    >>> from graft.selection import RoundSelection
    >>> indices, weights, ranks = RoundSelection(torch.arange(3), torch.ones(3), [3])
    >>> indices.tolist(), ranks
    ([0, 1, 2], [3])
    """

    indices: torch.Tensor
    weights: torch.Tensor
    ranks: list


@runtime_checkable
class Selector(Protocol):
    """What Graft needs of a selector.

    Attributes
    ----------
    fraction : float in (0, 1]
        The share of the data a round keeps (the warm-up epochs draw this
        share at random).
    reads : {"record", "data"}
        What its rounds read (see the module's docs).
    wants_embeddings : bool
        Whether the record should keep the training passes' embeddings (the
        input of the final ``nn.Linear``, hooked by Graft).
    layer : str or None
        The name of that ``nn.Linear`` (None: the model's last one).
    rounds_every_epoch : bool
        A round at every epoch, whatever ``refresh_every`` says (InfoBatch).

    Examples
    --------
    >>> from graft import GraftSelector, InfoBatchSelector
    >>> from graft.selection import Selector
    >>> isinstance(GraftSelector(0.3), Selector), GraftSelector(0.3).reads
    (True, 'record')
    >>> isinstance(InfoBatchSelector(8), Selector)
    True
    """

    fraction: float
    reads: Literal["record", "data"]
    wants_embeddings: bool
    layer: str | None
    rounds_every_epoch: bool

    def select_round(self, round: Round) -> RoundSelection:
        """One selection round over the whole dataset."""


@runtime_checkable
class BatchSelector(Selector, Protocol):
    """A :class:`Selector` that also selects within one batch (online mode).

    Examples
    --------
    >>> from graft import InfoBatchSelector, RandomSelector
    >>> from graft.selection import BatchSelector
    >>> isinstance(RandomSelector(0.3), BatchSelector)
    True
    >>> isinstance(InfoBatchSelector(8), BatchSelector)  # rounds only
    False
    """

    def select(self, model, inputs, targets, generator) -> Selection:
        """The rows of one batch to keep, with their loss weights."""


def batchwise_round(selector: BatchSelector, round: Round) -> RoundSelection:
    """A round made of ``selector.select`` on every batch of ``round.batches()``.

    For selectors whose choice is per batch, e.g. ``select_round =
    lambda self, round: batchwise_round(self, round)``.

    Parameters
    ----------
    selector : BatchSelector
    round : Round

    Returns
    -------
    RoundSelection
        The batches' selections in dataset indices, one rank per batch.

    Examples
    --------
    >>> import torch
    >>> from graft import RandomSelector
    >>> from graft.selection import Round, batchwise_round
    >>> batches = [(torch.randn(4, 2), torch.zeros(4, dtype=torch.long),
    ...             torch.arange(4) + 4 * b) for b in range(3)]
    >>> round = Round(0, None, torch.Generator().manual_seed(0), None,
    ...               lambda: iter(batches))
    >>> chosen, weights, ranks = batchwise_round(RandomSelector(0.5), round)
    >>> len(chosen), ranks
    (6, [2, 2, 2])
    """
    chosen, weights, ranks = [], [], []
    for inputs, targets, indices in round.batches():
        sel = selector.select(round.model, inputs, targets, round.generator)
        chosen.append(indices[sel.indices.cpu()])
        weights.append(sel.weights.cpu())
        ranks.append(sel.rank)
    return RoundSelection(torch.cat(chosen), torch.cat(weights), ranks)


def missing_members(selector, online=False):
    """The members of :class:`Selector` (online: :class:`BatchSelector`) it lacks."""
    members = [*Selector.__annotations__, "select_round", *(["select"] * online)]
    return [m for m in members if not hasattr(selector, m)]


def check_selector(
    selector: Selector | None, mode: Literal["refresh", "online"] = "refresh"
) -> None:
    """Raise a clear error unless ``selector`` has every member of :class:`Selector`.

    ``mode="online"`` also asks for :class:`BatchSelector`'s ``select``. None
    (train on all data) passes.

    Parameters
    ----------
    selector : Selector or None
    mode : {"refresh", "online"}, default="refresh"
        Graft's mode: online selection needs ``select``.

    Raises
    ------
    TypeError
        For a class instead of an instance, or a missing member (all named).
    ValueError
        For ``reads`` other than "record" or "data", or online mode without
        ``select``.

    Examples
    --------
    >>> from graft.selection import InfoBatchSelector, check_selector
    >>> check_selector(InfoBatchSelector(8))
    >>> check_selector(InfoBatchSelector(8), mode="online")
    Traceback (most recent call last):
    ...
    ValueError: InfoBatchSelector selects in rounds and has no per-batch ...
    """
    if selector is None:
        return
    if isinstance(selector, type):
        raise TypeError(
            f"selector must be a selector instance such as {selector.__name__}(0.3), "
            "not the class; or None for all data."
        )
    missing = missing_members(selector)
    if missing:
        raise TypeError(
            f"selector must be a selector such as GraftSelector(0.3), "
            f"RandomSelector(0.3) or SageSelector(0.3), or None for all data; "
            f"{type(selector).__name__} lacks {', '.join(missing)} (the members "
            "of graft.selection.Selector)."
        )
    if mode == "online" and missing_members(selector, online=True):
        raise ValueError(
            f"{type(selector).__name__} selects in rounds and has no per-batch "
            "select(model, inputs, targets, generator); use mode='refresh'."
        )
    if selector.reads not in ("record", "data"):
        raise ValueError(
            f"{type(selector).__name__}.reads ({selector.reads!r}) must be "
            "'record' or 'data' (what its rounds read)."
        )
