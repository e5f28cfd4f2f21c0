"""The search space over one model entry (`search.space` in params.yaml; genlab.training.search searches it).

An axis of `search.space` is a list of values to try, or a range {low, high, log}. A value of a list is either a
setting's value (`batch_size: [16, 64, 256]`), or, under a name that is not a setting, a mapping that sets
several together (`output: [{loss: mse, output_activation: linear}, {loss: binary_crossentropy, ...}]`): the way
to search a loss with only the output activations it fits. Every two axes' combinations of values are checked
against the family's schema with the rest of params.yaml, before any trial.
"""

from __future__ import annotations

import itertools
import json
from typing import Any

from pydantic import ValidationError

NOT_SEARCHED = ("family", "seed", "seeds", "conditional")  # what the model is, not how it is trained
# the settings that choose the loss (the cheatsheet's "loss function"): a validation loss is no objective across them
LOSS_SETTINGS = ("loss", "decoder", "decoder_std", "min_snr_gamma")


def label(value: Any) -> str | int | float | bool | None:
    """A categorical value as Optuna stores it: a number, a string, a bool or None as it is; a list
    (hidden_units) as compact JSON, a mapping (a joint axis) as key=value pairs."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, dict):  # a joint axis's value: "loss=mse output_activation=linear"
        return " ".join(f"{key}={label(setting)}" for key, setting in value.items())
    return json.dumps(value, separators=(",", ":"))


def raw_value(axis, stored: Any) -> Any:
    """The value params.yaml would write for what Optuna stored (a categorical value's label)."""
    if isinstance(axis, list):
        return next(value for value in axis if label(value) == stored)
    return stored


def settings_of(name: str, axis, value: Any) -> dict[str, Any]:
    """The settings an axis's value makes: {name: value}, or a joint axis's mapping."""
    if isinstance(axis, list) and isinstance(value, dict):
        return dict(value)
    return {name: value}


def trial_config(base, values: dict[str, Any], space: dict) -> Any:
    """The base entry with an axis value each (raw values, as in params.yaml), validated by its family's schema."""
    update = {}
    for name, value in values.items():
        update |= settings_of(name, space[name], value)
    return type(base).model_validate(base.model_dump(exclude_unset=True) | {"family": base.family} | update)


def _candidates(axis) -> list[Any]:
    return list(axis) if isinstance(axis, list) else [axis.low, axis.high]


def check_space(base, search, image_shape: tuple[int, int] | None = None) -> None:
    """Every axis names a setting of the base entry's family (or is a joint axis of such settings), and every
    combination of values (a range's ends) makes a valid entry; raise ValueError naming what does not."""
    fields = type(base).model_fields
    for name, axis in search.space.items():
        if name in NOT_SEARCHED:
            raise ValueError(f"search.space.{name}: not a hyperparameter to search ({', '.join(NOT_SEARCHED)} say "
                             f"what the model is); its settings: {sorted(set(fields) - set(NOT_SEARCHED))}")
        joint = isinstance(axis, list) and all(isinstance(value, dict) for value in axis)
        if name not in fields and not joint:
            raise ValueError(f"search.space.{name}: {base.family} has no such setting; its settings: "
                             f"{sorted(set(fields) - set(NOT_SEARCHED))} (or a name for a list of mappings that "
                             f"set several together)")
        if joint:
            unknown = sorted({key for value in axis for key in value if key not in fields or key in NOT_SEARCHED})
            if unknown:
                raise ValueError(f"search.space.{name}: {unknown} are not settings of {base.family} to search")
            clashing = sorted({key for value in axis for key in value} & set(search.space))
            if clashing:
                raise ValueError(f"search.space.{name}: sets {clashing}, which are axes of their own too")
        elif not isinstance(axis, list) and name in fields:
            if not isinstance(getattr(base, name), (int, float)) or isinstance(getattr(base, name), bool):
                raise ValueError(f"search.space.{name}: a range is for a numeric setting; list its values instead")
        labels = [label(value) for value in _candidates(axis)]
        if len(set(map(json.dumps, labels))) < len(labels):
            raise ValueError(f"search.space.{name}: a value is listed twice")
    if search.objective == "val_loss":
        searched = {key for name, axis in search.space.items()
                    for key in ({key for value in axis if isinstance(value, dict) for key in value}
                                if isinstance(axis, list) else set()) | {name}}
        if base.family == "gan":
            raise ValueError("search.objective: val_loss compares the trials' own losses, and a GAN's measure a "
                             "game, not its samples; use fid_to_floor")
        if searched & set(LOSS_SETTINGS):
            raise ValueError(f"search.objective: val_loss compares the trials' own losses, which differ with "
                             f"{', '.join(sorted(searched & set(LOSS_SETTINGS)))}; use fid_to_floor")
    # every pair of axes, each with every value of the other (a range: its ends): the constraints of a family's
    # schema are between two settings; a trial that meets one among three or more is refused when it is drawn
    names = list(search.space)
    pairs = list(itertools.combinations(names, 2)) or [(name,) for name in names]
    combinations = [dict(zip(pair, values)) for pair in pairs
                    for values in itertools.product(*(_candidates(search.space[name]) for name in pair))]
    for values in combinations:
        try:
            config = trial_config(base, values, search.space)
        except ValidationError as error:
            from genlab.config.params import problems

            raise ValueError(f"search.space: models.{search.model} with {values} is not a valid entry "
                             f"({problems(error)}); "
                             f"make such settings one joint axis of the combinations that fit") from None
        problem = config.image_problem(image_shape) if image_shape is not None else None
        if problem:
            raise ValueError(f"search.space: models.{search.model} with {values} does not fit the images: {problem}")
