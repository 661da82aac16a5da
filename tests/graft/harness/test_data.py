"""The IDX reader refuses damaged or mismatched files before any training."""

import gzip

import numpy as np
import pytest

from graft.harness._data import _load_train_test, load_idx, load_mnist_like

IMAGES, LABELS = 0x00000803, 0x00000801  # uint8, 3-D / 1-D


def _idx_bytes(array, magic):
    """The IDX encoding of array: magic, big-endian int32 dims, C-order data."""
    header = magic.to_bytes(4, "big") + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    return header + np.ascontiguousarray(array).tobytes()


def _write(path, data, *, gz=None):
    """Write bytes to path, gzipped if its name ends in .gz (or gz is True)."""
    if gz if gz is not None else path.suffix == ".gz":
        data = gzip.compress(data)
    path.write_bytes(data)
    return path


def _images(n=4, h=8, w=8, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w), dtype=np.uint8)


def _write_set(directory, prefix, images, labels, *, ext=".gz"):
    """Write one split (train / t10k) as IDX files; return their paths."""
    paths = (
        directory / f"{prefix}-images-idx3-ubyte{ext}",
        directory / f"{prefix}-labels-idx1-ubyte{ext}",
    )
    _write(paths[0], _idx_bytes(images, IMAGES))
    _write(paths[1], _idx_bytes(labels.astype(np.uint8), LABELS))
    return paths


@pytest.mark.parametrize("ext", ["", ".gz"])
def test_valid_tiny_set_loads_as_written(tmp_path, ext):
    X_tr, y_tr = _images(6, 5, 7), np.array([0, 1, 2, 0, 1, 2])
    X_te, y_te = _images(3, 5, 7, seed=1), np.array([2, 0, 1])
    _write_set(tmp_path, "train", X_tr, y_tr, ext=ext)
    _write_set(tmp_path, "t10k", X_te, y_te, ext=ext)
    X, y = load_mnist_like(tmp_path, split="train")
    np.testing.assert_array_equal(X, X_tr)
    np.testing.assert_array_equal(y, y_tr)
    assert X.dtype == np.uint8 and y.dtype == np.int64
    loaded = _load_train_test(tmp_path)
    for got, want in zip(loaded, (X_tr, y_tr, X_te, y_te), strict=True):
        np.testing.assert_array_equal(got, want)


def test_gzip_without_gz_suffix_is_recognised(tmp_path):
    images = _images()
    path = _write(tmp_path / "images", _idx_bytes(images, IMAGES), gz=True)
    np.testing.assert_array_equal(load_idx(path), images)


@pytest.mark.parametrize("name", ["short", "short.gz"])
@pytest.mark.parametrize("cut", [2, 10])  # inside the magic; inside the dims
def test_short_header(tmp_path, name, cut):
    path = _write(tmp_path / name, _idx_bytes(_images(), IMAGES)[:cut])
    with pytest.raises(ValueError, match="short header") as err:
        load_idx(path)
    assert str(path) in str(err.value) and "again" in str(err.value)


def test_truncated_gzip(tmp_path):
    raw = _idx_bytes(_images(50, 28, 28), IMAGES)
    packed = gzip.compress(raw)
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(packed[: len(packed) // 2])
    with pytest.raises(ValueError, match="is truncated") as err:
        load_idx(path)
    message = str(err.value)
    assert str(path) in message and f"expected {len(raw)})" in message
    assert "download or copy it again" in message


def test_truncated_gzip_inside_the_header(tmp_path):
    path = tmp_path / "images.gz"
    path.write_bytes(gzip.compress(_idx_bytes(_images(), IMAGES))[:12])
    with pytest.raises(ValueError, match=r"is truncated.*IDX header") as err:
        load_idx(path)
    assert str(path) in str(err.value)


def test_corrupt_gzip(tmp_path):
    packed = bytearray(gzip.compress(_idx_bytes(_images(), IMAGES)))
    packed[-8] ^= 0xFF  # the CRC32
    path = tmp_path / "images.gz"
    path.write_bytes(bytes(packed))
    with pytest.raises(ValueError, match="not a valid gzip file") as err:
        load_idx(path)
    assert str(path) in str(err.value)


def test_label_count_mismatch(tmp_path):
    images, labels = _write_set(tmp_path, "train", _images(5), np.arange(4))
    with pytest.raises(ValueError, match=r"5 images but .* 4 labels") as err:
        load_mnist_like(tmp_path, split="train")
    assert str(images) in str(err.value) and str(labels) in str(err.value)


def test_train_and_test_image_sizes_differ(tmp_path):
    train = _write_set(tmp_path, "train", _images(4, 8, 8), np.arange(4))
    test = _write_set(tmp_path, "t10k", _images(4, 28, 28), np.arange(4))
    with pytest.raises(ValueError, match=r"are 8x8 but .* are 28x28") as err:
        _load_train_test(tmp_path)
    assert str(train[0]) in str(err.value) and str(test[0]) in str(err.value)


def test_test_labels_outside_the_training_classes(tmp_path):
    _write_set(tmp_path, "train", _images(4), np.array([0, 1, 0, 1]))
    test = _write_set(tmp_path, "t10k", _images(4), np.array([0, 1, 7, 9]))
    with pytest.raises(ValueError, match=r"2 class\(es\).*\(7, 9; training") as err:
        _load_train_test(tmp_path)
    assert str(test[1]) in str(err.value)


def test_graft_run_refuses_mismatched_files_before_training(tmp_path):
    pytest.importorskip("torch")
    from graft.harness import load_dataset

    _write_set(tmp_path, "train", _images(4, 8, 8), np.arange(4))
    _write_set(tmp_path, "t10k", _images(4, 28, 28), np.arange(4))
    with pytest.raises(ValueError, match="8x8 but"):
        load_dataset("auto", data_dir=tmp_path)


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        (b"\x01\x00\x08\x01", "bad magic number"),
        (b"\x00\x00\x07\x01", "data type byte 0x07"),
    ],
)
def test_bad_magic_or_type_byte(tmp_path, header, problem):
    path = _write(tmp_path / "labels.gz", header + (3).to_bytes(4, "big") + b"abc")
    with pytest.raises(ValueError, match=f"not an IDX file.*{problem}") as err:
        load_idx(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(("delta", "kind"), [(-5, "truncated"), (3, "extra bytes")])
def test_payload_size_differs_from_the_header(tmp_path, delta, kind):
    raw = _idx_bytes(_images(2, 4, 4), IMAGES)
    raw = raw[:delta] if delta < 0 else raw + b"\0" * delta
    path = _write(tmp_path / "train-images-idx3-ubyte", raw)
    with pytest.raises(ValueError, match=rf"shape \(2, 4, 4\).*32 bytes.*{kind}") as e:
        load_idx(path)
    assert str(path) in str(e.value)


def test_images_and_labels_files_swapped(tmp_path):
    _write_set(tmp_path, "train", _images(4), np.arange(4))
    images = tmp_path / "train-images-idx3-ubyte.gz"
    labels = tmp_path / "train-labels-idx1-ubyte.gz"
    a, b = images.read_bytes(), labels.read_bytes()
    images.write_bytes(b)
    labels.write_bytes(a)
    with pytest.raises(ValueError, match="images must be") as err:
        load_mnist_like(tmp_path)
    assert str(images) in str(err.value)
