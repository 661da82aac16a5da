"""Offline datasets: scikit-learn's bundled digits and IDX files on disk.

Nothing is downloaded at run time. Fashion-MNIST comes from the Debian package
``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist/``); MNIST and
Fashion-MNIST are read from IDX files in any directory the user names.
"""

from __future__ import annotations

import math
import os
import zlib
from pathlib import Path

import numpy as np

from graft._checks import check_count

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
_GZIP_MAGIC = b"\x1f\x8b"
_AGAIN = "download or copy it again"


def load_idx(path):
    """Read one IDX file (optionally gzipped) into a NumPy array.

    The format: two zero bytes, a type code, the number of dimensions, one
    big-endian int32 per dimension, then the data in C order. Gzip is
    recognised by its magic bytes, whatever the file is called.

    Parameters
    ----------
    path : path-like
        An IDX file, gzipped or not.

    Returns
    -------
    ndarray
        Of the header's dtype and shape, e.g. (n, 28, 28) uint8 for images.

    Raises
    ------
    ValueError
        If the file is not IDX, its gzip stream is corrupt or cut short, its
        header is incomplete, or the data does not fill the header's shape;
        the message names the file and the fix.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from graft.harness import load_idx
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "labels-idx1-ubyte"
    >>> header = bytes([0, 0, 8, 1]) + (3).to_bytes(4, "big")  # uint8, 1 dim of 3
    >>> _ = path.write_bytes(header + bytes([7, 0, 2]))
    >>> load_idx(path).tolist()
    [7, 0, 2]
    """
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == _GZIP_MAGIC:
        raw = _gunzip(path, raw)
    dtype, shape, offset = _idx_header(path, raw)
    count = math.prod(shape)
    need, have = dtype.itemsize * count, len(raw) - offset
    if have != need:
        raise ValueError(
            f"{path}: its header says shape {shape} of {dtype.name}, i.e. {need} "
            f"bytes of data, but {have} follow the {offset}-byte header "
            f"({'truncated' if have < need else 'extra bytes'}): {_AGAIN}."
        )
    return np.frombuffer(raw, dtype, count=count, offset=offset).reshape(shape)


def _gunzip(path, packed):
    """The bytes inside a gzip file (all members); ValueError if corrupt or cut."""
    parts = []
    while packed:
        stream = zlib.decompressobj(wbits=31)  # 31: gzip wrapper, CRC checked
        try:
            parts.append(stream.decompress(packed))
        except zlib.error as err:
            raise ValueError(
                f"{path} is not a valid gzip file ({err}): {_AGAIN}."
            ) from None
        if not stream.eof:
            raw = b"".join(parts)
            raise ValueError(
                f"{path} is truncated (gzip stream ended after {len(raw)} bytes"
                f"{_expected_size(raw)}): {_AGAIN}."
            )
        packed = stream.unused_data
    return b"".join(parts)


def _expected_size(raw):
    """'; expected M' from the IDX header at the start of raw, if it is there."""
    try:
        dtype, shape, offset = _idx_header("", raw)
    except ValueError:
        return ", before the end of the IDX header"
    return f"; expected {offset + dtype.itemsize * math.prod(shape)}"


def _idx_header(path, raw):
    """``(dtype, shape, data offset)`` of the IDX bytes raw, checked."""
    if len(raw) < 4:
        raise ValueError(
            f"{path} has a short header ({len(raw)} bytes; an IDX header has at "
            f"least 4): {_AGAIN}."
        )
    if raw[0] or raw[1]:
        raise ValueError(
            f"{path} is not an IDX file (bad magic number {raw[:4]!r}; IDX starts "
            f"with two zero bytes, gzip with 1f 8b): pass an MNIST or Fashion-MNIST "
            f"images/labels file, or {_AGAIN}."
        )
    if raw[2] not in _IDX_DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in _IDX_DTYPES)
        raise ValueError(
            f"{path} is not an IDX file (data type byte 0x{raw[2]:02X}; IDX knows "
            f"{known}): {_AGAIN}."
        )
    ndim, offset = raw[3], 4 + 4 * raw[3]
    if len(raw) < offset:
        raise ValueError(
            f"{path} has a short header ({len(raw)} bytes; its {ndim} dimension "
            f"fields need {offset}): {_AGAIN}."
        )
    shape = tuple(
        int.from_bytes(raw[4 * k : 4 * k + 4], "big") for k in range(1, ndim + 1)
    )
    return np.dtype(_IDX_DTYPES[raw[2]]), shape, offset


def _find(directory, stem):
    for name in (f"{stem}.gz", stem):
        if (directory / name).exists():
            return directory / name
    return None


def _idx_paths(directory, split):
    """``(images, labels)`` paths of one split; FileNotFoundError if missing."""
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
    return images, labels


def _load_pair(images, labels):
    """Images and int64 labels from two IDX files, checked against each other."""
    X, y = load_idx(images), load_idx(labels)
    if X.ndim != 3 or X.dtype != np.uint8:
        raise ValueError(
            f"{images} holds {X.dtype.name} of shape {X.shape}; images must be "
            "uint8 (n, height, width): pass the images-idx3-ubyte file."
        )
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise ValueError(
            f"{labels} holds {y.dtype.name} of shape {y.shape}; labels must be "
            "integers (n,): pass the labels-idx1-ubyte file."
        )
    if len(X) != len(y):
        raise ValueError(
            f"{images} holds {len(X)} images but {labels} holds {len(y)} labels: "
            "use the images and labels files of the same set, or download or copy "
            "them again."
        )
    if len(y) == 0:
        raise ValueError(f"{labels} holds no samples: download or copy it again.")
    if y.min() < 0:
        raise ValueError(
            f"{labels} holds negative labels (min {int(y.min())}); class labels "
            "are 0, 1, ...: download or copy it again."
        )
    return X, y.astype(np.int64)


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
    ValueError
        If a file is damaged (:func:`load_idx`), or the images and labels
        files disagree on the number of samples.

    Examples
    --------
    >>> from graft.harness import load_mnist_like
    >>> X, y = load_mnist_like(split="test")  # doctest: +SKIP
    >>> X.shape, y.shape  # doctest: +SKIP
    ((10000, 28, 28), (10000,))
    """
    return _load_pair(*_idx_paths(directory, split))


def _load_train_test(directory):
    """Train and test arrays of an IDX folder, checked before any training."""
    train, test = _idx_paths(directory, "train"), _idx_paths(directory, "test")
    X_tr, y_tr = _load_pair(*train)
    X_te, y_te = _load_pair(*test)
    if X_tr.shape[1:] != X_te.shape[1:]:
        raise ValueError(
            f"train images {train[0]} are {_size(X_tr)} but test images "
            f"{test[0]} are {_size(X_te)}: use the train and test files of the "
            "same dataset."
        )
    unexpected = np.setdiff1d(y_te, y_tr)
    if unexpected.size:
        shown = ", ".join(map(str, unexpected[:10])) + ", ..." * (unexpected.size > 10)
        raise ValueError(
            f"test labels {test[1]} have {unexpected.size} class(es) the training "
            f"labels {train[1]} never have ({shown}; training classes "
            f"{np.unique(y_tr).tolist()}): no model can learn them; use the train "
            "and test files of the same dataset."
        )
    return X_tr, y_tr, X_te, y_te


def _size(images):
    """``'28x28'`` for images of shape (n, 28, 28)."""
    return "x".join(map(str, images.shape[1:]))


def load_digits_split(test_size=0.3, random_state=0):
    """scikit-learn's 8x8 digits, split into train and test (stratified).

    Returns ``(X_train, X_test, y_train, y_test)`` with pixel values in [0, 1].

    Parameters
    ----------
    test_size : float, default=0.3
    random_state : int, default=0

    Examples
    --------
    >>> from graft.harness import load_digits_split
    >>> X_train, X_test, y_train, y_test = load_digits_split()
    >>> X_train.shape, X_test.shape, float(X_train.max()) <= 1.0
    ((1257, 64), (540, 64), True)
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
    X : ndarray of shape (n, 1, h, w) (images, values in [0, 1]) or (n, d)
    y : ndarray of shape (n,), class labels 0..C-1
    duplicates : float in [0, 1)
        That share of the samples is replaced by near-duplicates of the
        others (each a random other sample of the set, plus Gaussian noise of
        sd 0.05; images are also shifted by up to one pixel each way and
        clipped to [0, 1]), with the label of the sample it copies.
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

    Examples
    --------
    >>> import numpy as np
    >>> from graft.harness import corrupt
    >>> X = np.random.default_rng(0).random((300, 1, 8, 8))
    >>> y = np.arange(300) % 3
    >>> Xc, yc = corrupt(X, y, imbalance=10.0)
    >>> np.bincount(yc).tolist()  # class 2 keeps a tenth
    [100, 32, 10]
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
            share = imbalance ** (-c / (n_classes - 1))
            n_keep = min(len(rows), max(1, round(len(rows) * share)))
            keep.append(rng.choice(rows, n_keep, replace=False))
        keep = np.sort(np.concatenate(keep))
        X, y = X[keep], y[keep]
    X, y = X.copy(), y.copy()
    n = len(y)
    if duplicates:
        copies = rng.choice(n, round(duplicates * n), replace=False)
        originals = np.setdiff1d(np.arange(n), copies)
        sources = rng.choice(originals, len(copies))
        images = X.ndim >= 3  # (n, channels, h, w): shifted by a pixel
        for i, j in zip(copies, sources, strict=True):
            dy, dx = rng.integers(-1, 2, size=2)
            X[i] = np.roll(X[j], (dy, dx), axis=(-2, -1)) if images else X[j]
        X[copies] += rng.normal(0.0, 0.05, X[copies].shape).astype(np.float32)
        if images:
            np.clip(X, 0.0, 1.0, out=X)
        y[copies] = y[sources]
    if label_noise:
        flip = rng.choice(n, round(label_noise * n), replace=False)
        y[flip] = (y[flip] + rng.integers(1, n_classes, len(flip))) % n_classes
    return X, y


_LABEL_COLUMNS = ("label", "labels", "y", "target", "class")


def load_file(path, *, test_size=0.2, seed=0):
    r"""Features and class labels from a ``.npz``, ``.csv`` or ``.npy`` pair, split.

    Parameters
    ----------
    path : path-like or (path-like, path-like)
        ``.npz`` with arrays ``X`` (n, ...) and ``y`` (n,), and optionally
        ``X_test`` and ``y_test``; or ``.csv`` with a header row, numeric
        feature columns and a label column (named ``label``, ``y``,
        ``target`` or ``class``; else the last column); or a pair of ``.npy``
        files, features then labels.
    test_size : float, default=0.2
        The stratified test share, when the file holds no test arrays.
    seed : int, default=0
        Seed of the split.

    Returns
    -------
    X_train, X_test, y_train, y_test : ndarrays
        Float32 features; labels 0..C-1 in the order of ``numpy.unique`` of
        the file's labels (any type: ints or strings).

    Examples
    --------
    >>> import tempfile, pathlib
    >>> import numpy as np
    >>> from graft.harness import load_file
    >>> path = pathlib.Path(tempfile.mkdtemp()) / "data.csv"
    >>> rows = [f"{i},{i % 3},{'ab'[i % 2]}" for i in range(20)]
    >>> _ = path.write_text("a,b,label\n" + "\n".join(rows))
    >>> X_tr, X_te, y_tr, y_te = load_file(path)
    >>> X_tr.shape, X_te.shape, sorted(set(y_tr.tolist()))
    ((16, 2), (4, 2), [0, 1])
    """
    from sklearn.model_selection import train_test_split

    X, y, test = _read_arrays(path)
    if isinstance(path, (tuple, list)):
        path = " + ".join(map(str, path))  # for the messages below
    if len(X) != len(y) or len(y) < 2:
        raise ValueError(
            f"{path}: {len(X)} rows of features and {len(y)} labels; they must match "
            "and hold at least 2 samples."
        )
    classes = np.unique(y if test is None else np.concatenate([y, test[1]]))
    encode = {c: k for k, c in enumerate(classes.tolist())}
    y = np.array([encode[c] for c in y.tolist()], dtype=np.int64)
    X = np.asarray(X, dtype=np.float32)
    if not np.isfinite(X).all():
        raise ValueError(f"{path}: the features hold NaN or inf; impute or drop them.")
    if test is None:
        counts = np.bincount(y)
        strata = y if counts.min() >= 2 else None
        return train_test_split(
            X, y, test_size=test_size, stratify=strata, random_state=seed
        )
    y_test = np.array([encode[c] for c in test[1].tolist()], dtype=np.int64)
    return X, np.asarray(test[0], dtype=np.float32), y, y_test


def _read_arrays(path):
    """``(X, y, test or None)`` of a ``.npz`` / ``.csv`` file or ``.npy`` pair."""
    if isinstance(path, (tuple, list)):
        return *_read_npy_pair(path), None
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no such file; pass a .npz or .csv file or a .npy pair."
        )
    if path.suffix == ".npz":
        arrays = np.load(path, allow_pickle=False)
        missing = [k for k in ("X", "y") if k not in arrays]
        if missing:
            raise ValueError(
                f"{path} holds {sorted(arrays)} but lacks {missing}; save it with "
                "np.savez(path, X=features, y=labels)."
            )
        test = (arrays["X_test"], arrays["y_test"]) if "X_test" in arrays else None
        return arrays["X"], arrays["y"], test
    if path.suffix == ".csv":
        return *_read_csv(path), None
    raise ValueError(
        f"{path}: the file must be .npz or .csv (or a .npy pair), not {path.suffix!r}."
    )


def _read_npy_pair(paths):
    """Features and labels from two ``.npy`` files."""
    if len(paths) != 2:
        raise ValueError(
            f"a .npy pair is two files, features then labels; got {len(paths)}: "
            f"{[str(p) for p in paths]}."
        )
    arrays = []
    for p in map(Path, paths):
        if p.suffix != ".npy" or not p.is_file():
            raise FileNotFoundError(
                f"{p}: not a .npy file; save each array with np.save(path, array)."
            )
        arrays.append(np.load(p, allow_pickle=False))
    return tuple(arrays)


_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def load_image_folder(directory, *, test_size=0.2, seed=0):
    """Images in class sub-folders (``directory/<class>/<image>``), split in two.

    Every image is read with Pillow in the mode of the first one (``L`` for
    grey, ``RGB`` for colour) and resized to its size; the classes are the
    sub-folders in sorted order.

    Returns
    -------
    X_train, X_test : ndarrays of shape (n, channels, height, width), in [0, 1]
    y_train, y_test : ndarrays of int64
    classes : list of str

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> from graft.harness import load_image_folder
    >>> root = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ("cat", "dog"):
    ...     (root / name).mkdir()
    ...     for i in range(5):
    ...         Image.new("L", (6, 4), 40 * i).save(root / name / f"{i}.png")
    >>> X_tr, X_te, y_tr, y_te, classes = load_image_folder(root)
    >>> X_tr.shape, classes
    ((8, 1, 4, 6), ['cat', 'dog'])
    """
    from PIL import Image
    from sklearn.model_selection import train_test_split

    root = Path(directory)
    if not root.is_dir():
        raise FileNotFoundError(
            f"{root}: no such folder; pass a folder of class folders."
        )
    classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    files = [
        (f, c)
        for c, name in enumerate(classes)
        for f in sorted((root / name).iterdir())
        if f.suffix.lower() in _IMAGE_SUFFIXES
    ]
    if len(classes) < 2 or len(files) < 2:
        raise ValueError(
            f"{root} holds {len(classes)} class folder(s) and {len(files)} image(s); "
            "it needs at least two class sub-folders with images."
        )
    with Image.open(files[0][0]) as first:
        mode = "RGB" if first.mode not in ("L", "1", "I;16", "I") else "L"
        size = first.size
    images = []
    for f, _ in files:
        with Image.open(f) as image:
            images.append(
                np.asarray(image.convert(mode).resize(size), dtype=np.float32)
            )
    X = np.stack(images) / 255.0
    X = X[:, None] if X.ndim == 3 else X.transpose(0, 3, 1, 2)
    y = np.array([c for _, c in files], dtype=np.int64)
    strata = y if np.bincount(y).min() >= 2 else None
    split = train_test_split(
        X, y, test_size=test_size, stratify=strata, random_state=seed
    )
    return (*split, classes)


def _read_csv(path):
    """``(X, y)`` of a CSV file with a header row (see :func:`load_file`)."""
    import csv

    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if len(rows) < 2:
        raise ValueError(f"{path}: a header row and at least one data row needed.")
    header = [h.strip() for h in rows[0]]
    label = next((k for k, h in enumerate(header) if h.lower() in _LABEL_COLUMNS), -1)
    label %= len(header)
    try:
        X = np.array(
            [[float(v) for k, v in enumerate(r) if k != label] for r in rows[1:]]
        )
    except ValueError as exc:
        raise ValueError(
            f"{path}: every column but the label ({header[label]!r}) must be "
            f"numeric ({exc})."
        ) from None
    return X, np.array([r[label].strip() for r in rows[1:]])


def _arrays(name, data_dir, data, seed):
    """The dataset's name and ``(X_train, X_test, y_train, y_test)`` arrays."""
    pair = isinstance(data, (tuple, list))
    if data is not None and not pair and Path(data).is_dir():
        X_tr, X_te, y_tr, y_te, _ = load_image_folder(data, seed=seed)
        return Path(data).name, (X_tr, X_te, y_tr, y_te)
    if data is not None:
        X_tr, X_te, y_tr, y_te = load_file(data, seed=seed)
        mean, std = X_tr.mean(axis=0), X_tr.std(axis=0)
        std[std == 0] = 1.0
        name = Path(data[0] if pair else data).name
        return name, ((X_tr - mean) / std, (X_te - mean) / std, y_tr, y_te)
    if name == "auto":
        try:
            _idx_paths(data_dir, "test")
            name = "fashion-mnist"
        except FileNotFoundError:
            if data_dir is not None:  # a folder named and wrong: say so
                raise
            name = "digits"
    if name == "digits":
        X_tr, X_te, y_tr, y_te = load_digits_split(random_state=seed)
        return name, (X_tr.reshape(-1, 1, 8, 8), X_te.reshape(-1, 1, 8, 8), y_tr, y_te)
    if name in ("fashion-mnist", "mnist"):
        X_tr, y_tr, X_te, y_te = _load_train_test(data_dir)
        X_tr = X_tr[:, None].astype(np.float32) / 255.0
        return name, (X_tr, X_te[:, None].astype(np.float32) / 255.0, y_tr, y_te)
    raise ValueError(
        f"dataset ({name!r}) must be 'auto', 'digits', 'fashion-mnist' or 'mnist'."
    )


def load_dataset(
    name="auto",
    *,
    data_dir=None,
    data=None,
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
    data : path-like or (path-like, path-like), optional
        A ``.npz`` or ``.csv`` file or a ``.npy`` pair of features and
        labels instead (:func:`load_file`); the features are standardised
        with the training set's mean and standard deviation. A folder: images
        in class sub-folders (:func:`load_image_folder`), values in [0, 1].
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

    Raises
    ------
    ValueError
        Before any training, if an IDX file is damaged, or the files disagree:
        images and labels counts, train and test image sizes, or test labels
        outside the training classes.

    Examples
    --------
    >>> from graft.harness import load_dataset
    >>> train, test, info = load_dataset("digits", train_size=500)
    >>> len(train), info["in_shape"], info["n_classes"]
    (500, (1, 8, 8), 10)
    """
    import torch
    from torch.utils.data import TensorDataset

    if train_size is not None:
        train_size = check_count("train_size", train_size, example=5000)
    if name == "mnist" and data_dir is None:
        raise ValueError(
            "dataset 'mnist' needs data_dir, the folder of the MNIST IDX files (the "
            "default folder holds Fashion-MNIST)."
        )
    name, (X_tr, X_te, y_tr, y_te) = _arrays(name, data_dir, data, seed)
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
