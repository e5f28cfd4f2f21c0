"""Which of the cheatsheet's choices mattered? A finished search's trials, read the lecture's way.

"Lots of parameters and lots of hyperparameters! What to choose?" The lecture's cheatsheet names seven choices:
the architecture (wide networks overfit, deep ones are hard to train), the number of epochs, the loss function,
the activation functions (consistent with the loss), the optimization scheme, the learning rate and the batch
size (smaller is faster but overtrains). `CHEATSHEET` says which settings of params.yaml make each choice; the
rest of a family's settings (a VAE's beta, a DDPM's timesteps) are the family's own.

The cheatsheet says what to choose; a search says what the choice changed. Per axis: its importance (fANOVA: the
share of the objective's variance over the completed trials that the axis explains, Hutter et al. 2014, through
Optuna), and per value (a categorical axis's values, a range's thirds) the trials, the best and median objective,
the share stopped early, the gap between validation and training loss (does a smaller batch overtrain?) and the
training time (is it faster?). The cheatsheet's points add up the importance of their axes. Figures are Optuna's
own: the optimization history, the importances, the intermediate values the pruner saw, and a slice per axis.
"""

from __future__ import annotations

import math

import numpy as np
import optuna
import pandas as pd

from genlab.config.space import LOSS_SETTINGS, label

CHEATSHEET: dict[str, tuple[str, ...]] = {
    "architecture": ("hidden_units", "latent_dim", "network", "conv_filters", "generator_units",
                     "discriminator_units", "discriminator_filters", "num_couplings", "time_embedding_dim",
                     "patch_size", "num_scales", "dropout"),
    "epochs": ("epochs", "early_stopping_patience"),
    "loss function": LOSS_SETTINGS,
    "activation functions": ("hidden_activation", "output_activation"),
    "optimization scheme": ("optimizer", "learning_rate_schedule", "warmup_epochs", "adam_beta_1",
                            "gradient_clip_norm", "ema_decay"),
    "learning rate": ("learning_rate",),
    "batch size": ("batch_size",),
}
FAMILY_OWN = "the family's own"

def cheatsheet_point(setting: str) -> str:
    """The cheatsheet's choice a setting makes, or "the family's own"."""
    return next((point for point, settings in CHEATSHEET.items() if setting in settings), FAMILY_OWN)


def axis_point(name: str, axis) -> str:
    """The cheatsheet's choice an axis makes: a joint axis makes its settings' ("loss function + activation
    functions")."""
    if isinstance(axis, list) and all(isinstance(value, dict) for value in axis):
        settings = dict.fromkeys(key for value in axis for key in value)
        return " + ".join(dict.fromkeys(cheatsheet_point(setting) for setting in settings))
    return cheatsheet_point(name)


FACTS = ("train_seconds", "epochs_trained", "generalization_gap", "val_pixel_mse", "num_params")


def trials_table(study: optuna.Study, space: dict) -> pd.DataFrame:
    """A row per trial: its number, state, objective, each axis's value (its label) and what it recorded."""
    rows = []
    for trial in study.get_trials(deepcopy=False):
        row = {"trial": trial.number, "state": trial.state.name.lower(), "objective": trial.value}
        row |= {name: trial.params.get(name) for name in space}
        row |= {key: trial.user_attrs.get(key) for key in (*FACTS, "diagnosis", "outcome")}
        row["pruned_at_epoch"] = (max(trial.intermediate_values) if trial.state == optuna.trial.TrialState.PRUNED
                                  and trial.intermediate_values else None)
        row["worker"], row["mlflow_run_id"] = trial.user_attrs.get("worker"), trial.user_attrs.get("mlflow_run_id")
        rows.append(row)
    return pd.DataFrame(rows)


def importances(study: optuna.Study, seed: int = 0) -> dict[str, float]:
    """Each axis's share of the objective's variance over the completed trials (fANOVA); empty with fewer than two
    completed trials or no axis that varied among them."""
    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if len(complete) < 2:
        return {}
    try:
        found = optuna.importance.get_param_importances(
            study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed), normalize=True)
    except (RuntimeError, ValueError):  # no axis varied among the completed trials
        return {}
    return {name: float(share) for name, share in found.items()}


def _bins(values: pd.Series, axis) -> pd.Series:
    """A categorical axis's values as they are; a range's in thirds (of its logarithm, for a log axis)."""
    if isinstance(axis, list):
        return values.astype(object)
    numbers = values.astype(float)
    low, high = (math.log(axis.low), math.log(axis.high)) if axis.log else (float(axis.low), float(axis.high))
    edges = np.linspace(low, high, 4)
    position = np.log(numbers) if axis.log else numbers
    which = np.clip(np.searchsorted(edges, position, side="right") - 1, 0, 2)
    shown = np.exp(edges) if axis.log else edges
    names = [f"{shown[index]:.3g}-{shown[index + 1]:.3g}" for index in range(3)]
    return pd.Series([names[index] if pd.notna(value) else None for index, value in zip(which, numbers)],
                     index=values.index, dtype=object)


def by_value(table: pd.DataFrame, space: dict) -> pd.DataFrame:
    """Per axis and value: trials, stopped early, best and median objective of the completed, median gap between
    validation and training loss, median training seconds (of the finished)."""
    finished = table[table["state"].isin(("complete", "pruned"))].copy()
    finished["epoch_seconds"] = (pd.to_numeric(finished.get("train_seconds"), errors="coerce")
                                 / pd.to_numeric(finished.get("epochs_trained"), errors="coerce"))
    rows = []
    for name, axis in space.items():
        if name not in finished or finished[name].isna().all():
            continue
        for value, group in finished.groupby(_bins(finished[name], axis), sort=False, dropna=True):
            complete = group[group["state"] == "complete"]
            rows.append({"axis": name, "value": value, "trials": len(group), "pruned": int((group["state"] == "pruned"
                                                                                            ).sum()),
                         "best": complete["objective"].min() if len(complete) else math.nan,
                         "median": complete["objective"].median() if len(complete) else math.nan,
                         "median_gap": pd.to_numeric(complete.get("generalization_gap"), errors="coerce").median(),
                         "median_seconds": pd.to_numeric(group.get("train_seconds"), errors="coerce").median(),
                         "median_epoch_seconds": group["epoch_seconds"].median()})
    return pd.DataFrame(rows, columns=["axis", "value", "trials", "pruned", "best", "median", "median_gap",
                                       "median_seconds", "median_epoch_seconds"])


def batch_size_claim(values: pd.DataFrame) -> str | None:
    """The cheatsheet's "batch size: smaller is faster but overtrains", measured: the smallest and the largest batch
    size's median gap between validation and training loss, and their median seconds per epoch."""
    rows = values[(values["axis"] == "batch_size") & values["median_gap"].notna()]
    rows = rows.assign(size=pd.to_numeric(rows["value"], errors="coerce")).dropna(subset=["size"])  # a list's values
    if len(rows) < 2:
        return None
    rows = rows.sort_values("size")
    small, large = rows.iloc[0], rows.iloc[-1]
    return (f"batch size (\"smaller is faster but overtrains\"): with {small['value']} the validation loss ended "
            f"{small['median_gap']:+.1%} off the training loss, with {large['value']} {large['median_gap']:+.1%}; "
            f"an epoch took {small['median_epoch_seconds']:.3g} s against {large['median_epoch_seconds']:.3g} s; "
            f"median {small['median']:.3g} against {large['median']:.3g}")


def by_point(shares: dict[str, float], space: dict) -> dict[str, float]:
    """The cheatsheet's points, each with the summed importance of its axes, most important first."""
    points: dict[str, float] = {}
    for name, share in shares.items():
        point = axis_point(name, space[name])
        points[point] = points.get(point, 0.0) + share
    return dict(sorted(points.items(), key=lambda item: -item[1]))


def answer(model: str, objective: str, shares: dict[str, float], values: pd.DataFrame, space: dict,
           best: dict | None) -> list[str]:
    """"Which of the cheatsheet's choices mattered for this model, and by how much", in sentences."""
    if not shares:
        return [f"{model}: too few completed trials to tell which choices mattered"]
    lines = [f"{model}, by {objective} (lower is better): "
             + ", ".join(f"{point} {share:.0%}" for point, share in by_point(shares, space).items())
             + " of the variance the search explains"]
    for name, share in sorted(shares.items(), key=lambda item: -item[1]):
        rows = values[(values["axis"] == name) & values["median"].notna()].sort_values("median")
        if len(rows) >= 2:
            first, last = rows.iloc[0], rows.iloc[-1]
            lines.append(f"{name} ({axis_point(name, space[name])}, {share:.0%}): median {first['median']:.3g} with "
                         f"{first['value']} against {last['median']:.3g} with {last['value']}")
    claim = batch_size_claim(values)
    if claim:
        lines.append(claim)
    if best is not None:
        lines.append(f"best trial {best['trial']}: {objective} {best['objective']:.4g} with "
                     + ", ".join(f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={label(value)}"
                                 for name, value in best["values"].items()))
    return lines


def figures(study: optuna.Study, space: dict, shares: dict[str, float], seed: int = 0) -> dict[str, object]:
    """Optuna's figures (matplotlib): file name -> figure."""
    import warnings

    from optuna.visualization import matplotlib as plots

    found = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        warnings.simplefilter("ignore", UserWarning)  # a slice of one value: matplotlib widens its limits
        found["history.png"] = plots.plot_optimization_history(study).figure
        if shares:
            found["importance.png"] = plots.plot_param_importances(
                study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=seed)).figure
        if any(trial.intermediate_values for trial in study.get_trials(deepcopy=False)):
            found["intermediate.png"] = plots.plot_intermediate_values(study).figure
        for name in space:
            axes = plots.plot_slice(study, params=[name])
            found[f"slice_{name}.png"] = (axes.flat[0] if isinstance(axes, np.ndarray) else axes).figure
    for figure in found.values():
        figure.set_size_inches(8, 5)
        figure.tight_layout()
    return found
