"""The stratified split, the controlled bias injection, and the prepared-data files.

`prepare` loads a source (genlab.data.sources), scales it to [0, 1] and splits it into train,
validation and test with each class's share kept; `save_prepared` writes one `.npy` per split
and array with the data's md5, which every run is tagged with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from genlab.config.params import DataParams, SplitParams
from genlab.data.sources import DataError, describe_source, load_source
from genlab.runtime.files import atomic_dir, folder_md5, read_json, write_json

SPLITS = ("train", "validation", "test")


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
