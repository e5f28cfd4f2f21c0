"""What a trained model's folder records of its training, and the words and files that show it: the summary
(`training.json`: times, epochs, the loss-curve diagnosis and the numbers behind it), the per-epoch history
that `dvc plots` draws, and the MLflow run's description."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

from genlab.runtime.files import atomic_file

if TYPE_CHECKING:  # types only: evaluate@<model> reads a training's summary without its code
    from genlab.training.diagnostics import Diagnosis
    from genlab.training.fit import FitResult

SEEDS_DIR = "seeds"  # inside a model's folder: a folder per further seed (genlab.evaluation.seeds), as the model's
RUN_FILE = "run.json"  # the MLflow run, experiment and LoggedModel of the training
SUMMARY_FILE = "training.json"


def summarize(result: FitResult, diagnosis: Diagnosis, monitored: str, num_params: int,
              hyperparameters: dict[str, int], train_images: int) -> dict:
    """The training's numbers: parameters, hyperparameters, times, epochs, the monitored loss at the end
    and the diagnosis of its curve."""
    return {"num_params": num_params, **hyperparameters,
            "train_seconds": round(result.seconds, 3),
            "seconds_per_epoch": round(result.seconds_per_epoch, 4),
            "train_images_per_second": round(train_images / result.seconds_per_epoch, 1),
            "epochs_trained": len(result.history[monitored]), "stopped_early": result.stopped_early,
            "monitored_loss": monitored, "final_loss": result.history[monitored][-1],
            "final_val_loss": result.history[f"val_{monitored}"][-1],
            "diagnosis": diagnosis.verdict, "diagnosis_reason": diagnosis.reason} | diagnosis.metrics()


def describe_training(name: str, family: str, summary: dict) -> str:
    """The run's description: the loss curve's diagnosis and the numbers behind it."""
    return (f"{family} `{name}`: {summary['diagnosis'].replace('_', ' ')} after {summary['epochs_trained']} epochs "
            f"({summary['train_seconds']:.0f} s, {summary['num_params']:,} parameters). "
            f"{summary['diagnosis_reason'][:1].upper()}{summary['diagnosis_reason'][1:]}. "
            f"Final {summary['monitored_loss']}: {summary['final_loss']:.4g} "
            f"(validation {summary['final_val_loss']:.4g}).")


def write_history(history: dict[str, list[float]], monitored: str, path: str | Path) -> None:
    """One row per epoch: the CSV that `dvc plots` draws. dvc plots draws loss and val_loss for every model:
    the monitored pair stands in where a family has no single loss (a GAN's generator loss)."""
    history = {"loss": history[monitored], "val_loss": history[f"val_{monitored}"]} | history
    keys = list(history)
    with atomic_file(path, "w") as handle:
        writer = csv.writer(handle)
        writer.writerow(["epoch", *keys])
        for epoch, values in enumerate(zip(*(history[key] for key in keys)), start=1):
            writer.writerow([epoch, *(f"{value:.8g}" for value in values)])


def further_seed_dirs(model_dir: str | Path) -> dict[int, Path]:
    """The further seeds' folders of a trained model (none for a model trained with one seed), by seed."""
    folder = Path(model_dir) / SEEDS_DIR
    found = [path for path in folder.iterdir() if path.is_dir()] if folder.is_dir() else []
    return {int(path.name): path for path in sorted(found, key=lambda path: int(path.name))}
