"""Which samples get a backward pass: the selector interface and the selectors.

- :mod:`graft.selection._protocol`: :class:`Selector` (what Graft needs of any
  selector), :class:`BatchSelector` (online mode too), :class:`Round` (what a
  round may read), :class:`RoundSelection` and :class:`Selection` (what it
  returns), :func:`batchwise_round` and :func:`check_selector`.
- :mod:`graft.selection._record`: :class:`SampleRecord`, the per-sample loss,
  embedding and epoch of the last training pass of every sample.
- :mod:`graft.selection._rounds`: the rounds over the record (GRAFT, uniform)
  and :class:`InfoBatchSelector`.
- :mod:`graft.selection._selectors`: :class:`RandomSelector`,
  :class:`GraftSelector`, :class:`SageSelector`.
- :mod:`graft._features`: per-sample features of a model (the final
  layer's input, closed-form last-layer gradients, full per-sample gradients).
- :mod:`graft.selection._dynamic_rank`: the gradient-aware rank, how many of
  a greedy pick order a gradient needs.
"""

from graft.selection._protocol import (
    BatchSelector,
    Round,
    RoundSelection,
    Selection,
    Selector,
    batchwise_round,
    check_selector,
)
from graft.selection._record import SampleRecord
from graft.selection._rounds import InfoBatchSelector
from graft.selection._selectors import GraftSelector, RandomSelector, SageSelector

__all__ = [
    "BatchSelector",
    "GraftSelector",
    "InfoBatchSelector",
    "RandomSelector",
    "Round",
    "RoundSelection",
    "SageSelector",
    "SampleRecord",
    "Selection",
    "Selector",
    "batchwise_round",
    "check_selector",
]
