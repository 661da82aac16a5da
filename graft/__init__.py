"""graft: data selection inside the training loop, built on maxvol_kit.

This package grows with the training-loop work; today it holds the offline
dataset loaders (:mod:`graft._data`).
"""

__all__: list[str] = []
