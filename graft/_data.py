"""Offline datasets: scikit-learn's bundled digits and IDX files on disk.

Nothing is downloaded at run time. Fashion-MNIST comes from the Debian package
``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist/``); MNIST and
Fashion-MNIST are read from IDX files in any directory the user names.
"""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import numpy as np

__all__ = [
    "FASHION_MNIST_DIR",
    "load_dataset",
    "load_digits_split",
    "load_idx",
    "load_mnist_like",
]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

_IDX_DTYPES = {
    0x08: np.uint8,
    0x09: np.int8,
    0x0B: ">i2",
    0x0C: ">i4",
    0x0D: ">f4",
    0x0E: ">f8",
}


def load_idx(path):
    """Read one IDX file (optionally gzipped) into a NumPy array.

    The format: two zero bytes, a type code, the number of dimensions, one
    big-endian int32 per dimension, then the data in C order.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number {raw[:4]!r}).")
    ndim = raw[3]
    shape = tuple(
        int.from_bytes(raw[4 + 4 * k : 8 + 4 * k], "big") for k in range(ndim)
    )
    data = np.frombuffer(raw, dtype=_IDX_DTYPES[raw[2]], offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says {shape} but holds {data.size} values.")
    return data.reshape(shape)


def _find(directory, stem):
    for name in (f"{stem}.gz", stem):
        if (directory / name).exists():
            return directory / name
    return None


def load_mnist_like(directory=None, *, split="train"):
    """Images (n, 28, 28) uint8 and labels (n,) of MNIST or Fashion-MNIST.

    Parameters
    ----------
    directory : path-like, optional
        Folder with ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``;
        default ``$GRAFT_FASHION_MNIST`` or ``/usr/share/datasets/fashion-mnist``.
    split : {"train", "test"}

    Raises
    ------
    FileNotFoundError
        If the files are not there, with how to get them.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split ({split!r}) must be 'train' or 'test'.")
    directory = Path(
        directory or os.environ.get("GRAFT_FASHION_MNIST", FASHION_MNIST_DIR)
    )
    prefix = "train" if split == "train" else "t10k"
    images = _find(directory, f"{prefix}-images-idx3-ubyte")
    labels = _find(directory, f"{prefix}-labels-idx1-ubyte")
    if images is None or labels is None:
        raise FileNotFoundError(
            f"no {prefix}-images/labels IDX files in {directory}. Install them with "
            "'apt-get install dataset-fashion-mnist' (Debian), or pass the folder "
            "that holds them (MNIST files work too)."
        )
    return load_idx(images), load_idx(labels).astype(np.int64)


def load_digits_split(test_size=0.3, random_state=0):
    """scikit-learn's 8x8 digits, split into train and test (stratified).

    Returns ``(X_train, X_test, y_train, y_test)`` with pixel values in [0, 1].
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    return train_test_split(
        X / 16.0, y, test_size=test_size, stratify=y, random_state=random_state
    )


def load_dataset(name="auto", *, data_dir=None, train_size=None, seed=0):
    """Train and test ``TensorDataset`` s of images ``(1, h, w)`` and labels.

    Parameters
    ----------
    name : {"auto", "digits", "fashion-mnist", "mnist"}
        ``auto``: Fashion-MNIST if its files are found, else digits.
    data_dir : path-like, optional
        Folder of the IDX files (Fashion-MNIST or MNIST).
    train_size : int, optional
        Keep a random subset of this many training samples.
    seed : int
        Seed of the train/test split (digits) and of the subset.

    Returns
    -------
    train, test : TensorDataset
    info : dict
        ``name``, ``in_shape``, ``n_classes``.
    """
    import torch
    from torch.utils.data import TensorDataset

    if name == "auto":
        try:
            load_mnist_like(data_dir, split="test")
            name = "fashion-mnist"
        except FileNotFoundError:
            name = "digits"
    if name == "digits":
        X_tr, X_te, y_tr, y_te = load_digits_split(random_state=seed)
        X_tr, X_te = X_tr.reshape(-1, 1, 8, 8), X_te.reshape(-1, 1, 8, 8)
    elif name in ("fashion-mnist", "mnist"):
        X_tr, y_tr = load_mnist_like(data_dir, split="train")
        X_te, y_te = load_mnist_like(data_dir, split="test")
        X_tr = X_tr[:, None].astype(np.float32) / 255.0
        X_te = X_te[:, None].astype(np.float32) / 255.0
    else:
        raise ValueError(
            f"dataset ({name!r}) must be 'auto', 'digits', 'fashion-mnist' or 'mnist'."
        )
    if train_size is not None and train_size < len(y_tr):
        keep = np.random.default_rng(seed).choice(len(y_tr), train_size, replace=False)
        X_tr, y_tr = X_tr[np.sort(keep)], y_tr[np.sort(keep)]

    def tensors(X, y):
        return TensorDataset(
            torch.as_tensor(X, dtype=torch.float32), torch.as_tensor(y)
        )

    info = {
        "name": name,
        "in_shape": tuple(X_tr.shape[1:]),
        "n_classes": int(y_tr.max()) + 1,
    }
    return tensors(X_tr, y_tr), tensors(X_te, y_te), info
