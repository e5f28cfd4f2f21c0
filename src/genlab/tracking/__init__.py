"""MLflow: the only module that imports mlflow.

Where runs go: `MLFLOW_TRACKING_URI` when set (a tracking server, say), else a
SQLite store `mlflow.db` at the project root with artifacts in `mlartifacts/`
beside it. The root is `DVC_ROOT` when DVC runs the stage (the workspace of a
temporary `dvc exp run` folder is traced back to its repository), else the
current folder. Library code returns values; stages log them through here.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.metadata
import io
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

TAG_PREFIX = "genlab."
DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
# MLflow 3's UI opens an experiment of this kind on its runs table (not the GenAI traces overview)
EXPERIMENT_TAGS = {"mlflow.experimentKind": "custom_model_development"}


class TrackingUnavailable(RuntimeError):
    """The tracking server or store cannot be reached; nothing was trained."""


_STOPPING = (signal.SIGTERM, signal.SIGINT)
_Call = TypeVar("_Call", bound=Callable[..., Any])


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """SIGTERM and Ctrl-C that come during the block stop the stage when it ends, as they would have stopped it.

    Their handlers raise (genlab.runtime.stage's Terminated, Python's KeyboardInterrupt) at whatever line the
    main thread is on. Inside SQLAlchemy's execute, such an exception counts as the process's exit: SQLAlchemy
    closes the SQLite connection without closing the statement in progress, and a connection closed so keeps
    its lock on mlflow.db for as long as that statement lives, which the exception's traceback keeps alive.
    Marking the run KILLED then waited out MLflow's busy timeout (20 s) and failed with "database is locked"
    (a CI run's SIGTERM). So every call to the store goes through this block, and the signal's handler runs
    when the call has finished: a moment later (a model's logging: its seconds), with the store as it should
    be. Only for a SQLite store: a tracking server's requests (minutes, with their retries) stay interruptible."""
    if threading.current_thread() is not threading.main_thread() or not tracking_uri().startswith("sqlite:"):
        yield  # (signal handlers run in the main thread only)
        return
    pending: list[int] = []
    held = {}
    for signum in _STOPPING:
        handler = signal.getsignal(signum)
        if callable(handler):  # a Python handler; SIG_DFL ends the process, SIG_IGN does nothing: left as they are
            held[signum] = handler
            signal.signal(signum, lambda received, frame: pending.append(received))
    try:
        yield
    finally:
        for signum, handler in held.items():
            signal.signal(signum, handler)
        for signum in pending:  # an enclosing block's holder records it in turn
            held[signum](signum, None)


def _store_call(function: _Call) -> _Call:
    """`function` runs with SIGTERM and Ctrl-C held until it returns (`_signals_held`)."""
    @functools.wraps(function)
    def held(*args, **kwargs):
        with _signals_held():
            return function(*args, **kwargs)
    return held  # type: ignore[return-value]


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


@_store_call
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


def runs_url(base_url: str, experiment_id: str, tab: str = "runs") -> str:
    """The experiment's runs table (or its `models` tab) in the UI's model-training view: MLflow 3's UI opens
    on its GenAI view unless the URL asks for `workflowType=machine_learning` (MLflow 3.17 ignores the
    experiment-kind tag)."""
    return f"{base_url.rstrip('/')}/#/experiments/{experiment_id}/{tab}?workflowType=machine_learning"


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
    """Start (or, with `run_id`, continue) a run; yield its id. An exception marks it FAILED with the reason
    (KILLED for SIGTERM or Ctrl-C)."""
    import mlflow

    active = None
    try:
        with _signals_held():  # one that came meanwhile raises in this try: the new run is marked KILLED
            active = mlflow.start_run(run_id=run_id, experiment_id=experiment_id, run_name=run_name, tags=tags)
        yield active.info.run_id
    except BaseException as error:
        if active is None:  # MLflow could not start it
            raise
        with _signals_held():
            mlflow.set_tag(f"{TAG_PREFIX}failure", f"{type(error).__name__}: {error}"[:4000])
            mlflow.end_run(status="FAILED" if not isinstance(error, KeyboardInterrupt) else "KILLED")
        raise
    with _signals_held():
        mlflow.end_run()


@_store_call
def log_params(params: dict[str, Any]) -> None:
    import mlflow

    mlflow.log_params({key: str(value) for key, value in params.items()})


@_store_call
def log_metrics(metrics: dict[str, float], step: int | None = None, model_id: str | None = None,
                dataset: Any = None) -> None:
    """Finite values only; `model_id` links them to a LoggedModel (the experiment's Models tab shows them),
    `dataset` to the split they were measured on."""
    import mlflow

    finite = {key: float(value) for key, value in metrics.items() if np.isfinite(value)}
    mlflow.log_metrics(finite, step=step, model_id=model_id, dataset=dataset)


@_store_call
def describe(text: str) -> None:
    """The active run's description, shown at the top of its page (the tag MLflow's `description=` sets)."""
    import mlflow
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

    mlflow.set_tag(MLFLOW_RUN_NOTE, text)


EPOCH_SECONDS = "timing/epoch_seconds"


def curves(logs: dict[str, float]) -> dict[str, float]:
    """A training's per-epoch values under MLflow keys: losses in the `train/` section of the run's charts
    (`train/loss`, `train/val_loss`, the family's own), the epoch's wall time in `timing/`."""
    return {EPOCH_SECONDS if key == "epoch_seconds" else f"train/{key}": value for key, value in logs.items()}


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
            with _signals_held():
                MlflowClient().log_batch(mlflow.active_run().info.run_id, metrics=self.pending)
        self.pending = []
        self.flushed_at = time.monotonic()


class EpochLog:
    """A training's record in its MLflow run while it trains: the per-epoch values (in batches, MetricBuffer)
    and a progress grid every `grid_every` epochs. A resumed run's epochs are neither lost nor logged twice:
    those it logged before it stopped are skipped, those it lacks are filled in by `finish`."""

    def __init__(self, draw_grid: Callable[[], np.ndarray] | None, grid_every: int, resumed_run: str | None) -> None:
        self.draw_grid, self.grid_every = draw_grid, grid_every
        self.buffer = MetricBuffer()
        # epochs a resumed run logged before it stopped (after its last backup, some are trained again)
        self.logged = metric_steps(resumed_run, EPOCH_SECONDS) if resumed_run else set()

    def grid(self, step: int) -> None:
        """The progress grid (encoders: originals above reconstructions; generators: samples from one seed)."""
        log_image(self.draw_grid(), key="progress", step=step)

    def on_epoch(self, epoch: int, logs: dict[str, float]) -> None:
        if epoch + 1 in self.logged:
            return
        self.buffer.add(curves(logs), step=epoch + 1)
        if self.draw_grid is not None and (epoch + 1) % self.grid_every == 0:
            self.grid(epoch + 1)

    def finish(self, history: dict[str, list[float]], epoch_seconds: tuple[float, ...], resumed_at_epoch: int) -> None:
        """The epochs before an interruption that the run lacks (a kill loses the last few seconds' batch of
        metrics), the resume's tag, and whatever is still buffered."""
        for epoch in range(resumed_at_epoch):
            if epoch + 1 not in self.logged:
                self.buffer.add(curves({key: values[epoch] for key, values in history.items()}
                                       | {"epoch_seconds": epoch_seconds[epoch]}), step=epoch + 1)
        if resumed_at_epoch:
            set_tags({f"{TAG_PREFIX}resumed_at_epoch": str(resumed_at_epoch)})
        self.buffer.flush()


@_store_call
def log_seed_run(experiment_id: str, parent_run_id: str, model: str, seed: int, tags: dict[str, str],
                 params: dict[str, Any], history: dict[str, list[float]], epoch_seconds, trained: dict,
                 description: str) -> str:
    """A further seed's training (genlab.evaluation.seeds) as a run of its own, nested under the model's run
    (the UI lists it beneath, as `<model> seed <seed>`): its settings, per-epoch curves, diagnosis and
    description; its id. Logged after the training, which ran in a process without MLflow."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID, MLFLOW_RUN_NOTE

    client = MlflowClient()
    run_tags = tags | {MLFLOW_PARENT_RUN_ID: parent_run_id, f"{TAG_PREFIX}seed": str(seed),
                       f"{TAG_PREFIX}diagnosis": trained["diagnosis"],
                       f"{TAG_PREFIX}diagnosis_reason": trained["diagnosis_reason"], MLFLOW_RUN_NOTE: description}
    run_id = client.create_run(experiment_id, run_name=f"{model} seed {seed}").info.run_id
    now = int(time.time() * 1000)
    per_epoch = [Metric(key, float(value), now, epoch + 1)
                 for epoch in range(len(epoch_seconds))
                 for key, value in curves({key: values[epoch] for key, values in history.items()}
                                          | {"epoch_seconds": epoch_seconds[epoch]}).items() if np.isfinite(value)]
    final = [Metric("train/epochs_trained", float(trained["epochs_trained"]), now, 0),
             Metric("timing/train_seconds", float(trained["train_seconds"]), now, 0)]
    client.log_batch(run_id, metrics=per_epoch + final,
                     params=[Param(key, str(value)) for key, value in params.items()],
                     tags=[RunTag(key, value) for key, value in run_tags.items()])
    client.set_terminated(run_id)
    return run_id


@_store_call
def log_to_run(run_id: str, metrics: dict[str, float], tags: dict[str, str] | None = None) -> None:
    """Finite metrics (and tags) added to a finished run that is not the active one: a further seed's test metrics."""
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking import MlflowClient

    now = int(time.time() * 1000)
    MlflowClient().log_batch(run_id, metrics=[Metric(key, float(value), now, 0) for key, value in metrics.items()
                                              if np.isfinite(value)],
                             tags=[RunTag(key, value) for key, value in (tags or {}).items()])


def model_run_tags(stage: str, model: str, family: str, data_md5: str) -> dict[str, str]:
    """A model run's tags: its provenance, the model's name and family."""
    return provenance_tags(stage, data_md5) | {f"{TAG_PREFIX}model": model, f"{TAG_PREFIX}family": family}


@_store_call
def set_tags(tags: dict[str, str]) -> None:
    import mlflow

    mlflow.set_tags(tags)


@_store_call
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


def continuable_run(run_id: str | None, experiment_id: str) -> str | None:
    """`run_id` where that run can be continued (`run_continuable`), else None: a new run is started."""
    return run_id if run_continuable(run_id, experiment_id) else None


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


@_store_call
def metric_steps(run_id: str, key: str) -> set[int]:
    """The steps at which a run has logged `key`."""
    from mlflow.tracking import MlflowClient

    return {point.step for point in MlflowClient().get_metric_history(run_id, key)}


@_store_call
def tag_run(run_id: str, key: str, value: str) -> bool:
    """Tag another run (compare links the model runs it compares); False if the store lacks it."""
    from mlflow.tracking import MlflowClient

    if not run_exists(run_id):
        return False
    MlflowClient().set_tag(run_id, key, value)
    return True


@_store_call
def log_image(image: np.ndarray, key: str, step: int) -> None:
    """An image with a step: MLflow's UI shows how it changes over training.

    Written synchronously: MLflow's async queue costs a 1 s poll at the end of every run.
    """
    import mlflow

    mlflow.log_image(image, key=key, step=step, synchronous=True)


@_store_call
def log_artifacts(path: str | Path, artifact_path: str | None = None) -> None:
    import mlflow

    path = Path(path)
    if path.is_dir():
        mlflow.log_artifacts(str(path), artifact_path)
    elif path.is_file():
        mlflow.log_artifact(str(path), artifact_path)


@_store_call
def log_table(rows: Any, artifact_file: str) -> None:
    """A pandas DataFrame shown as a table in the run's artifacts and its experiment's artifact view
    (`artifact_file` ends in .json). A stage that runs again in the same run replaces the table:
    `mlflow.log_table` would append its rows to the old ones."""
    import tempfile

    import mlflow
    from mlflow.tracking import MlflowClient

    run_id = mlflow.active_run().info.run_id
    folder, _, file_name = artifact_file.rpartition("/")
    if artifact_file not in {item.path for item in MlflowClient().list_artifacts(run_id, folder or None)}:
        mlflow.log_table(rows, artifact_file=artifact_file)
        return
    with tempfile.TemporaryDirectory() as scratch:  # the format log_table writes, over the old file
        rows.to_json(Path(scratch) / file_name, orient="split", index=False)
        mlflow.log_artifact(str(Path(scratch) / file_name), folder or None)


@_store_call
def run_info(run_id: str) -> dict[str, Any]:
    """Status, metrics, params and tags of a run (for tests and the end-of-run summary)."""
    from mlflow.tracking import MlflowClient

    found = MlflowClient().get_run(run_id)
    return {"status": found.info.status, "metrics": dict(found.data.metrics), "params": dict(found.data.params),
            "tags": dict(found.data.tags), "artifact_uri": found.info.artifact_uri}


# --- models, datasets and the Model Registry ---------------------------------------------------------

CHAMPION_ALIAS = "champion"
PYFUNC_FILE = Path(__file__).resolve().parent / "pyfunc_model.py"  # models-from-code: MLflow runs it, no pickle
PACKAGE_DIR = Path(__file__).resolve().parents[1]  # genlab itself, copied beside the model (`code_paths`)
REQUIREMENTS = ("mlflow", "tensorflow", "keras", "numpy", "pandas", "pydantic", "pyyaml", "scipy", "matplotlib",
                "filelock", "h5py", "tqdm")


@_store_call
def log_generator(model_dir: str | Path, name: str, image_shape: tuple[int, ...], step: int,
                  tags: dict[str, str] | None = None) -> str:
    """Log the model in `model_dir` (weights and config) to the active run as an MLflow LoggedModel: a
    pyfunc generator, predict({"num_images": n, "seed": s}) -> (n, *image_shape) images (a conditional model's of
    {"class": c} too); return its id.

    Models-from-code (`pyfunc_model.py`, genlab in `code_paths`), so loading needs no pickle. `step` is the
    last epoch: MLflow links the run's metrics of that step (the final losses) to the model."""
    import mlflow
    import pandas as pd
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema, TensorSpec

    signature = ModelSignature(inputs=Schema([ColSpec("long", "num_images"), ColSpec("long", "seed"),
                                              ColSpec("long", "class", required=False)]),  # a conditional model's
                               outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *image_shape))]))
    requirements = [f"{package}=={importlib.metadata.version(package)}" for package in REQUIREMENTS]
    info = mlflow.pyfunc.log_model(
        name=name, python_model=str(PYFUNC_FILE), artifacts={"model": str(model_dir)},
        code_paths=[str(PACKAGE_DIR)], signature=signature,
        input_example=pd.DataFrame({"num_images": [2], "seed": [0]}),  # MLflow loads and calls it once
        pip_requirements=requirements, step=step, tags=tags)
    return info.model_id


def model_run_to_continue(run_id: str, stage: str, model: str, data_md5: str) -> tuple[str | None, dict[str, str]]:
    """The model's training run to continue, and the tags to add; where this store lacks it (the model was
    trained against another store) None, to record the model afresh in a new run tagged with its provenance."""
    tags = {f"{TAG_PREFIX}evaluated": "true"}
    if run_exists(run_id):
        return run_id, tags
    print(f"{model}: training run {run_id} is not in this MLflow store; evaluating in a new run")
    return None, tags | provenance_tags(stage, data_md5) | {f"{TAG_PREFIX}model": model,
                                                          f"{TAG_PREFIX}training_run_id": run_id}


def existing_logged_model(model_id: str | None) -> str | None:
    """`model_id` where this store holds that LoggedModel, else None."""
    return model_id if logged_model_exists(model_id) else None


@_store_call
def logged_model_exists(model_id: str | None) -> bool:
    """Whether this store holds the LoggedModel (not when the model was trained against another store)."""
    import mlflow

    if not model_id:
        return False
    try:
        mlflow.get_logged_model(model_id)
    except mlflow.exceptions.MlflowException:
        return False
    return True


@_store_call
def register_champion(model_id: str, registered_name: str) -> str:
    """Register the LoggedModel under `registered_name`, point the `champion` alias at the new version and
    return that version."""
    import mlflow
    from mlflow.tracking import MlflowClient

    with contextlib.redirect_stderr(io.StringIO()):  # MLflow prints "Created version ..." itself: compare says it
        version = str(mlflow.register_model(f"models:/{model_id}", registered_name).version)
    MlflowClient().set_registered_model_alias(registered_name, CHAMPION_ALIAS, version)
    return version


def register_best(model: str, model_id: str | None, registered_name: str) -> str | None:
    """Register the best model's LoggedModel as the champion and tag the active run with it; its version, or
    None (with a word why) where this store holds no LoggedModel of it."""
    if not logged_model_exists(model_id):
        print(f"compare: {model} has no LoggedModel in this MLflow store (tracking.log_model_weights is false, or "
              f"it was trained against another store), so no champion is registered")
        return None
    version = register_champion(model_id, registered_name)
    set_tags({f"{TAG_PREFIX}champion": model, f"{TAG_PREFIX}champion_model_id": model_id,
              f"{TAG_PREFIX}champion_version": version})
    return version


@_store_call
def log_splits(prepared, data_dir: str | Path, digest: str, splits: tuple[str, ...]) -> dict[str, Any]:
    """Record the prepared splits the active run uses as MLflow datasets (contexts train, validation, test):
    named `<source>-<split>`, with the prepared data's md5 as digest (MLflow's own numpy digest reads only
    the first 10,000 values) and the DVC path of the split's file as source; return them by split, for
    `log_metrics(dataset=...)`."""
    import mlflow
    from mlflow.data.sources import LocalArtifactDatasetSource

    logged = {}
    for split in splits:
        images = getattr(prepared, split)
        dataset = mlflow.data.from_numpy(images.x, targets=images.y, name=f"{prepared.source}-{split}", digest=digest,
                                         source=LocalArtifactDatasetSource(f"{Path(data_dir).as_posix()}/x_{split}.npy"))
        mlflow.log_input(dataset, context=split, tags={f"{TAG_PREFIX}data_source": prepared.source,
                                                       f"{TAG_PREFIX}dvc_path": Path(data_dir).as_posix()})
        logged[split] = dataset
    return logged
