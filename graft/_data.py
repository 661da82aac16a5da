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
    "corrupt",
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


def corrupt(X, y, *, duplicates=0.0, label_noise=0.0, imbalance=1.0, seed=0):
    """A training set with something to remove: imbalance, duplicates, wrong labels.

    Applied in that order, from ``numpy.random.default_rng(seed)``; the test
    set is left clean and balanced.

    Parameters
    ----------
    X : ndarray of shape (n, 1, h, w), values in [0, 1]
    y : ndarray of shape (n,), class labels 0..C-1
    duplicates : float in [0, 1)
        That share of the samples is replaced by near-duplicates of the
        others (each a random other sample of the set, shifted by up to one
        pixel each way, plus Gaussian noise of sd 0.05, clipped to [0, 1]),
        with the label of the sample it copies.
    label_noise : float in [0, 1)
        That share of the labels is replaced by a uniformly drawn other class
        (symmetric noise).
    imbalance : float >= 1
        Long tail: class ``c`` keeps ``n_c * imbalance ** (-c / (C - 1))`` of
        its samples (the largest over the smallest class is ``imbalance``).

    Returns
    -------
    X, y : ndarrays
        The corrupted set (float32 images, int64 labels).
    """
    for name, value, high in (
        ("duplicates", duplicates, 1.0),
        ("label_noise", label_noise, 1.0),
    ):
        if not 0 <= value < high:
            raise ValueError(f"{name} ({value}) must be in [0, 1); e.g. 0.3.")
    if not imbalance >= 1:
        raise ValueError(f"imbalance ({imbalance}) must be >= 1; e.g. 10.")
    rng = np.random.default_rng(seed)
    X, y = np.asarray(X, dtype=np.float32), np.asarray(y, dtype=np.int64)
    n_classes = int(y.max()) + 1
    if imbalance > 1 and n_classes > 1:
        keep = []
        for c in range(n_classes):
            rows = np.flatnonzero(y == c)
            n_keep = max(1, round(len(rows) * imbalance ** (-c / (n_classes - 1))))
            keep.append(rng.choice(rows, n_keep, replace=False))
        keep = np.sort(np.concatenate(keep))
        X, y = X[keep], y[keep]
    X, y = X.copy(), y.copy()
    n = len(y)
    if duplicates:
        copies = rng.choice(n, round(duplicates * n), replace=False)
        originals = np.setdiff1d(np.arange(n), copies)
        sources = rng.choice(originals, len(copies))
        for i, j in zip(copies, sources, strict=True):
            dy, dx = rng.integers(-1, 2, size=2)
            X[i] = np.roll(X[j], (dy, dx), axis=(-2, -1))
        X[copies] += rng.normal(0.0, 0.05, X[copies].shape).astype(np.float32)
        np.clip(X, 0.0, 1.0, out=X)
        y[copies] = y[sources]
    if label_noise:
        flip = rng.choice(n, round(label_noise * n), replace=False)
        y[flip] = (y[flip] + rng.integers(1, n_classes, len(flip))) % n_classes
    return X, y


def load_dataset(
    name="auto",
    *,
    data_dir=None,
    train_size=None,
    seed=0,
    duplicates=0.0,
    label_noise=0.0,
    imbalance=1.0,
):
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
        Seed of the train/test split (digits), of the subset and of the
        corruption.
    duplicates, label_noise, imbalance
        Corrupt the training set (:func:`corrupt`); the defaults leave it
        clean.

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
    if duplicates or label_noise or imbalance != 1:
        X_tr, y_tr = corrupt(
            X_tr,
            y_tr,
            duplicates=duplicates,
            label_noise=label_noise,
            imbalance=imbalance,
            seed=seed,
        )

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
