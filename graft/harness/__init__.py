"""The experiment harness of ``graft run``: datasets, models, runs and reports.

Apart from the library: nothing in :mod:`graft`'s selection, loop, grass or
prune packages imports it (a test checks that). It is what the command line
and the benchmarks build experiments from.

- :mod:`graft.harness._data`: :func:`load_dataset` (digits or an IDX set such
  as Fashion-MNIST, train and test), :func:`load_idx`, :func:`load_mnist_like`,
  :func:`load_digits_split`, :func:`load_file` (``.npz`` / ``.csv``),
  :func:`load_image_folder` (class sub-folders), and
  :func:`corrupt` (duplicates, label noise,
  a long tail on the training set).
- :mod:`graft.harness._models`: :func:`make_model`, the MLP and the small CNN,
  and :class:`TransformerBlock` for token inputs; :func:`fit`, a few Adam steps.
- :mod:`graft.harness.cli`: ``graft run`` (:func:`build_parser`,
  :func:`run_one`, :func:`evaluate`, :func:`main`).
- :mod:`graft.harness._report`: the report (``report.json``, ``report.md``
  and the plots).
"""

from graft.harness._data import (
    corrupt,
    load_dataset,
    load_digits_split,
    load_file,
    load_idx,
    load_image_folder,
    load_mnist_like,
)
from graft.harness._models import TransformerBlock, fit, make_model
from graft.harness.cli import build_parser, evaluate, main, run_one

__all__ = [
    "TransformerBlock",
    "build_parser",
    "corrupt",
    "evaluate",
    "fit",
    "load_dataset",
    "load_digits_split",
    "load_file",
    "load_idx",
    "load_image_folder",
    "load_mnist_like",
    "main",
    "make_model",
    "run_one",
]
