"""MLflow: the only module that imports mlflow.

Where runs go: `MLFLOW_TRACKING_URI` when set (a tracking server, say), else a
SQLite store `mlflow.db` at the project root with artifacts in `mlartifacts/`
beside it. The root is `DVC_ROOT` when DVC runs the stage (the workspace of a
temporary `dvc exp run` folder is traced back to its repository), else the
current folder. Library code returns values; stages log them through here.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

TAG_PREFIX = "genlab."
DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
# MLflow 3's UI opens an experiment of this kind on its runs table (not the GenAI traces overview)
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


class TrackingUnavailable(RuntimeError):
    """The tracking server or store cannot be reached; nothing was trained."""


def project_root() -> Path:
    root = Path(os.environ.get("DVC_ROOT") or os.getcwd()).resolve()
    parts = root.parts
    if ".dvc" in parts:  # .dvc/tmp/exps/<tmp>: a queued or temp experiment logs to its repository's store
        root = Path(*parts[: parts.index(".dvc")])
    return root


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / DB_FILE}"


def redacted(uri: str) -> str:
    """A URI fit for messages and logs: a password in it (https://user:secret@host) is replaced by ***."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{parts.hostname}"
                                            + (f":{parts.port}" if parts.port else "")))


def _check_server(uri: str, timeout: float = 10.0) -> None:
    import requests

    try:
        response = requests.get(uri.rstrip("/") + "/health", timeout=timeout)
        response.raise_for_status()
    except requests.RequestException as error:
        raise TrackingUnavailable(
            f"MLflow tracking server {redacted(uri)} is unreachable ({type(error).__name__}): start it, or unset "
            f"MLFLOW_TRACKING_URI to use the local store {project_root() / DB_FILE}") from None


def setup(experiment: str) -> str:
    """Point MLflow at the store and return the experiment's id, creating it on first use."""
    import mlflow
    from filelock import FileLock

    uri = tracking_uri()
    remote = uri.startswith(("http://", "https://"))
    if remote:
        _check_server(uri)
    mlflow.set_tracking_uri(uri)
    # A new SQLite store is created by schema migrations that two processes must not run at once.
    lock = contextlib.nullcontext() if not uri.startswith("sqlite:///") else FileLock(f"{uri[len('sqlite:///'):]}.lock")
    with lock:
        found = mlflow.get_experiment_by_name(experiment)
        if found is not None:
            return found.experiment_id
        artifacts = None if remote else (project_root() / ARTIFACTS_DIR).as_uri()
        try:
            return mlflow.create_experiment(experiment, artifact_location=artifacts, tags=EXPERIMENT_TAGS)
        except mlflow.exceptions.MlflowException:  # another process created it a moment ago
            return mlflow.get_experiment_by_name(experiment).experiment_id


def runs_url(base_url: str, experiment_id: str) -> str:
    """The experiment's runs table in the UI's model-training view: MLflow 3's UI opens on its GenAI view
    unless the URL asks for `workflowType=machine_learning` (MLflow 3.17 ignores the experiment-kind tag)."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/runs?workflowType=machine_learning"


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=project_root(), capture_output=True, text=True,
                              timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def provenance_tags(stage: str, data_md5: str | None = None) -> dict[str, str]:
    """What a run needs to be traced: commit, DVC stage and experiment, data hash, library versions."""
    tags = {
        "mlflow.source.git.commit": _git("rev-parse", "HEAD") or "unknown",
        # whether the code differs from that commit (pipeline outputs change during a run, so only src/)
        f"{TAG_PREFIX}source_dirty": str(bool(_git("status", "--porcelain", "--", "src"))).lower(),
        f"{TAG_PREFIX}dvc_stage": stage,
    }
    if os.environ.get("DVC_EXP_NAME"):
        tags[f"{TAG_PREFIX}dvc_exp_name"] = os.environ["DVC_EXP_NAME"]
    if data_md5:
        tags[f"{TAG_PREFIX}data_md5"] = data_md5
    for package in ("tensorflow", "keras", "numpy", "mlflow", "dvc", "genlab"):
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            tags[f"{TAG_PREFIX}version.{package}"] = importlib.metadata.version(package)
    return tags


@contextlib.contextmanager
def run(experiment_id: str | None = None, run_name: str | None = None, run_id: str | None = None,
        tags: dict[str, str] | None = None) -> Iterator[str]:
    """Start (or, with `run_id`, continue) a run; yield its id. An exception marks it FAILED with the reason."""
    import mlflow

    active = mlflow.start_run(run_id=run_id, experiment_id=experiment_id, run_name=run_name, tags=tags)
    try:
        yield active.info.run_id
    except BaseException as error:
        mlflow.set_tag(f"{TAG_PREFIX}failure", f"{type(error).__name__}: {error}"[:4000])
        mlflow.end_run(status="FAILED" if not isinstance(error, KeyboardInterrupt) else "KILLED")
        raise
    mlflow.end_run()


def log_params(params: dict[str, Any]) -> None:
    import mlflow

    mlflow.log_params({key: str(value) for key, value in params.items()})


def log_metrics(metrics: dict[str, float], step: int | None = None) -> None:
    import mlflow

    finite = {key: float(value) for key, value in metrics.items() if np.isfinite(value)}
    mlflow.log_metrics(finite, step=step)


class MetricBuffer:
    """Per-epoch metrics gathered and written in one batch every `interval` seconds (and at `flush`).

    One SQLite transaction per epoch costs more than a small model's epoch (about 20 ms); a batch
    every few seconds keeps the MLflow UI nearly live at a fraction of the cost.
    """

    def __init__(self, interval: float = 5.0) -> None:
        self.pending: list = []
        self.interval = interval
        self.flushed_at = time.monotonic()

    def add(self, metrics: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        timestamp = int(time.time() * 1000)
        self.pending += [Metric(key, float(value), timestamp, step)
                         for key, value in metrics.items() if np.isfinite(value)]
        if time.monotonic() - self.flushed_at >= self.interval:
            self.flush()

    def flush(self) -> None:
        import mlflow
        from mlflow.tracking import MlflowClient

        if self.pending and mlflow.active_run() is not None:
            MlflowClient().log_batch(mlflow.active_run().info.run_id, metrics=self.pending)
        self.pending = []
        self.flushed_at = time.monotonic()


def set_tags(tags: dict[str, str]) -> None:
    import mlflow

    mlflow.set_tags(tags)


def _run_info(run_id: str | None):
    """The run's info, or None when this store lacks it (after `mlflow.db` was removed or the URI changed)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    if not run_id:
        return None
    try:
        return MlflowClient().get_run(run_id).info
    except mlflow.exceptions.MlflowException:
        return None


def run_exists(run_id: str) -> bool:
    """Whether this store holds the run."""
    return _run_info(run_id) is not None


def run_continuable(run_id: str | None, experiment_id: str) -> bool:
    """Whether a run can be continued: it exists in this store, in this experiment, not deleted."""
    info = _run_info(run_id)
    return info is not None and info.experiment_id == experiment_id and info.lifecycle_stage == "active"


def lock_tags(stages: list[str], lock_file: str | Path = "dvc.lock") -> dict[str, str]:
    """The md5 of every input of each stage as `dvc.lock` records it, one tag per stage
    (`genlab.dvc_lock.<stage>`, with `train/vae` for `train@vae`, as MLflow keys take no @:
    "path=md5 ..."): with the commit and the library versions, what it takes to reproduce a run.
    Stages the lock does not hold yet are left out."""
    import yaml

    path = Path(lock_file)
    recorded = (yaml.safe_load(path.read_text()) or {}).get("stages", {}) if path.is_file() else {}
    return {f"{TAG_PREFIX}dvc_lock.{stage.replace('@', '/')}": " ".join(f"{dep['path']}={dep.get('md5', '?')}"
                                                      for dep in recorded[stage].get("deps", []))
            for stage in stages if stage in recorded}


def metric_steps(run_id: str, key: str) -> set[int]:
    """The steps at which a run has logged `key`."""
    from mlflow.tracking import MlflowClient

    return {point.step for point in MlflowClient().get_metric_history(run_id, key)}


def tag_run(run_id: str, key: str, value: str) -> bool:
    """Tag another run (compare links the model runs it compares); False if the store lacks it."""
    from mlflow.tracking import MlflowClient

    if not run_exists(run_id):
        return False
    MlflowClient().set_tag(run_id, key, value)
    return True


def log_image(image: np.ndarray, key: str, step: int) -> None:
    """An image with a step: MLflow's UI shows how it changes over training.

    Written synchronously: MLflow's async queue costs a 1 s poll at the end of every run.
    """
    import mlflow

    mlflow.log_image(image, key=key, step=step, synchronous=True)


def log_artifacts(path: str | Path, artifact_path: str | None = None) -> None:
    import mlflow

    path = Path(path)
    if path.is_dir():
        mlflow.log_artifacts(str(path), artifact_path)
    elif path.is_file():
        mlflow.log_artifact(str(path), artifact_path)


def log_table(rows: Any, artifact_file: str) -> None:
    """A pandas DataFrame shown as a table in the run's artifacts (artifact_file ends in .json)."""
    import mlflow

    mlflow.log_table(rows, artifact_file=artifact_file)


def run_info(run_id: str) -> dict[str, Any]:
    """Status, metrics, params and tags of a run (for tests and the end-of-run summary)."""
    from mlflow.tracking import MlflowClient

    found = MlflowClient().get_run(run_id)
    return {"status": found.info.status, "metrics": dict(found.data.metrics), "params": dict(found.data.params),
            "tags": dict(found.data.tags), "artifact_uri": found.info.artifact_uri}


# --- the Model Registry: the champion as a pyfunc model that generates images ---------------------

CHAMPION_ALIAS = "champion"
_GENERATOR_CLASS: type | None = None


def _generator_model_class() -> type:
    """The pyfunc wrapper class, defined on first use so that importing this module stays free of
    mlflow's import time; it is published as `genlab.tracking.GeneratorModel` (module __getattr__),
    so that cloudpickle stores it by reference and loading imports it from genlab."""
    global _GENERATOR_CLASS
    if _GENERATOR_CLASS is None:
        import mlflow.pyfunc

        class GeneratorModel(mlflow.pyfunc.PythonModel):
            """A genlab model as an MLflow pyfunc: predict({"num_images": n, "seed": s}) -> (n, H, W) images."""

            def load_context(self, context):
                from genlab.models import load_model

                self.model, _ = load_model(context.artifacts["model"])

            def predict(self, context, model_input, params=None):
                request = model_input.iloc[0].to_dict() if hasattr(model_input, "iloc") else dict(model_input)
                count, seed = int(request["num_images"]), int(request.get("seed", 0))
                if count < 1:
                    raise ValueError(f"num_images must be at least 1, got {count}")
                return self.model.sample(count, seed=seed)

        GeneratorModel.__module__, GeneratorModel.__qualname__ = __name__, "GeneratorModel"
        _GENERATOR_CLASS = GeneratorModel
    return _GENERATOR_CLASS


def __getattr__(name: str) -> Any:
    if name == "GeneratorModel":
        return _generator_model_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register_generator(model_dir: str | Path, registered_name: str, sample: np.ndarray) -> str:
    """Log the model in `model_dir` to the active run as a pyfunc generator, register it under
    `registered_name` and point the `champion` alias at the new version; return that version."""
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.tracking import MlflowClient
    from mlflow.types import ColSpec, Schema, TensorSpec

    import mlflow

    request = pd.DataFrame({"num_images": [len(sample)], "seed": [0]})
    signature = ModelSignature(inputs=Schema([ColSpec("long", "num_images"), ColSpec("long", "seed")]),
                               outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *sample.shape[1:]))]))
    requirements = [f"{package}=={importlib.metadata.version(package)}"
                    for package in ("mlflow", "tensorflow", "keras", "numpy", "pandas", "pydantic", "pyyaml",
                                    "scipy", "matplotlib", "filelock", "h5py")]
    info = mlflow.pyfunc.log_model(
        name="generator", python_model=_generator_model_class()(), artifacts={"model": str(model_dir)},
        code_paths=[str(Path(__file__).resolve().parent)], signature=signature, input_example=request,
        pip_requirements=requirements, registered_model_name=registered_name)
    version = str(info.registered_model_version)
    MlflowClient().set_registered_model_alias(registered_name, CHAMPION_ALIAS, version)
    return version
