"""A hyperparameter search with Optuna: "Lots of hyperparameters! What to choose?"

A study holds the trials; each trial draws a value per axis of `search.space` (genlab.config.space), trains the
searched model entry with them, and is scored by the objective:

- `fid_to_floor`: the model's samples against the validation split in the judge's features, as a multiple of
  the data floor (as many training images against the same split). The test split stays unseen, as it must for
  the comparison that follows; lower is better, 1 is the data itself.
- `val_loss`: the model's own validation loss at the end: no sampling, but not comparable across losses.

Every `pruner.report_every_epochs` epochs the objective is measured and reported, and Optuna's median pruner
stops a trial that falls behind the median of those before it at that epoch. A training that diverges is
stopped too (a learning rate too high is an outcome of the search, not an error).

Workers share a study through its storage: a journal file on this machine (the default), or a database (a
PostgreSQL URL) that workers on several machines reach. Each takes trials until the study has `search.trials`
finished ones (complete or stopped early). A database keeps each running trial's heartbeat: the trial of a
worker that died is failed by the others after `stale_after_seconds`, and the study goes on without it; on one
machine, a trial whose process is gone is failed at once.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import socket
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from genlab.config.space import label, trial_config

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED)
WORKER_ATTR = "worker"  # host:pid of the process that runs a trial
RUN_ATTR = "mlflow_run_id"  # a study's MLflow run, and each trial's nested run
DATABASE_SCHEMES = ("postgresql", "mysql", "sqlite")


def study_name(search, base, data_md5: str, judge_md5: str | None) -> str:
    """The model's name and a fingerprint of what decides the trials' outcomes: the same search of the same data
    is the same study (a rerun resumes it; workers join it), any change makes a new one."""
    code = hashlib.sha1()  # genlab's own code: a fixed bug makes a new study, not a resumed one
    for path in sorted(Path(__file__).resolve().parents[1].rglob("*.py")):
        code.update(path.read_bytes())
    facts = {"search": search.model_dump(mode="json", exclude={"workers", "heartbeat_seconds",
                                                               "stale_after_seconds"}),
             "base": base.model_dump(mode="json"), "data": data_md5, "judge": judge_md5, "code": code.hexdigest()}
    return f"{search.model}-{hashlib.sha1(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:10]}"


class StorageError(ValueError):
    """The study's storage is not one genlab can use, or cannot be reached."""


def open_storage(url: str, heartbeat_seconds: float, stale_after_seconds: float,
                 on_stale: Callable[[optuna.trial.FrozenTrial], None] | None = None):
    """A database URL (postgresql://...) with heartbeats (`on_stale` is told of each trial failed for a stale one),
    or a journal file (a path, or journal:<path>)."""
    scheme = url.split("://", 1)[0].split("+", 1)[0] if "://" in url else None
    if scheme is not None and scheme not in DATABASE_SCHEMES:
        hint = " (SQLAlchemy spells it postgresql://)" if scheme == "postgres" else ""
        raise StorageError(f"search storage {url.split('://')[0]}://...: not a database genlab knows{hint}; use "
                           f"{', '.join(f'{name}://' for name in DATABASE_SCHEMES)} or a journal file's path")
    if scheme is not None:
        import sqlalchemy.exc

        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.9
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return optuna.storages.RDBStorage(
                    url, heartbeat_interval=max(1, round(heartbeat_seconds)),
                    grace_period=max(2, round(stale_after_seconds)),
                    heartbeat_stale_trial_callback=(lambda study, trial: on_stale(trial)) if on_stale else None)
        except (sqlalchemy.exc.SQLAlchemyError, ImportError) as error:
            raise StorageError(f"search storage {url.split('@')[-1]} is unreachable or its driver is missing "
                               f"({type(error).__name__}: {str(error).splitlines()[0][:300]})") from None
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    path = Path(url.removeprefix("journal:"))
    path.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(path)))


def open_study(storage, name: str, search, create: bool, sampler_seed: int | None) -> optuna.Study:
    """The study: created (or resumed) by the search's first process, loaded by the workers that join it.
    TPE with a constant liar, so that workers drawing at once do not draw the same values."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # a line per trial comes from genlab

    def sampler(seed: int | None):
        return (optuna.samplers.TPESampler(seed=seed, constant_liar=True) if search.sampler == "tpe"
                else optuna.samplers.RandomSampler(seed=seed))

    pruner = (optuna.pruners.MedianPruner(n_startup_trials=search.pruner.startup_trials,
                                          n_warmup_steps=search.pruner.warmup_epochs)
              if search.pruner.enabled else optuna.pruners.NopPruner())
    if not create:
        return optuna.load_study(study_name=name, storage=storage, sampler=sampler(sampler_seed), pruner=pruner)
    study = optuna.create_study(storage=storage, study_name=name, direction="minimize", sampler=sampler(sampler_seed),
                                pruner=pruner, load_if_exists=True)
    done = len(study.get_trials(deepcopy=False))
    if done and sampler_seed is not None:  # a resumed study: seeded afresh, not drawing its first trials again
        study = optuna.load_study(study_name=name, storage=storage, sampler=sampler(sampler_seed + done),
                                  pruner=pruner)
    return study


def suggest(trial: optuna.Trial, space: dict, base) -> dict[str, Any]:
    """A value per axis, as params.yaml would write it (a categorical axis's values go through their labels; a
    range draws integers for an integer setting of the base entry)."""
    values = {}
    for name, axis in space.items():
        if isinstance(axis, list):
            choices = {label(value): value for value in axis}
            values[name] = choices[trial.suggest_categorical(name, list(choices))]
        elif axis.integer and not isinstance(getattr(base, name), float):
            values[name] = trial.suggest_int(name, axis.low, axis.high, log=axis.log)
        else:
            values[name] = trial.suggest_float(name, float(axis.low), float(axis.high), log=axis.log)
    return values


class ValidationQuality:
    """FID of a model's samples against the validation split in the judge's features, over the data floor."""

    def __init__(self, judge, prepared, num_samples: int, seed: int):
        self.judge, self.prepared = judge, prepared
        self.count = min(num_samples, len(prepared.train.x))
        self.seed = seed
        self.real = judge.look(prepared.validation.x)[0]
        chosen = np.random.default_rng(seed).choice(len(prepared.train.x), self.count, replace=False)
        from genlab.evaluation import metrics

        self.floor = metrics.frechet_distance(self.real, judge.look(prepared.train.x[chosen])[0])

    def __call__(self, model) -> float:
        from genlab.evaluation import metrics
        from genlab.models.contract import class_labels, equal_shares
        from genlab.models.networks import predict_in_batches

        model.after_training(self.prepared.train)  # an autoencoder's Gaussian over its codes, as it is now
        # a conditional model asked for every class equally, as evaluate asks it
        asked = class_labels(self.count, equal_shares(model.num_classes), self.seed) if model.num_classes else None
        samples = np.asarray(model.sample(self.count, seed=self.seed, labels=asked))
        if not np.all(np.isfinite(samples)):
            return math.inf
        fake, _ = predict_in_batches(self.judge.viewer, np.clip(samples, 0, 1), 1024)  # not kept, as look's are
        return metrics.frechet_distance(self.real, fake.astype(np.float64)) / self.floor


class Trial:
    """What one trial needs: the base entry, the space, the data, the objective, and a recorder (MLflow's nested
    run of the trial, genlab.tracking.search) told of its start, its reports and its end."""

    def __init__(self, base, search, prepared, quality: ValidationQuality | None, diagnosis, recorder):
        self.base, self.search, self.prepared, self.quality = base, search, prepared, quality
        self.diagnosis, self.recorder = diagnosis, recorder

    def __call__(self, trial: optuna.Trial) -> float:
        from genlab.config.params import ParamsError

        trial.set_user_attr(WORKER_ATTR, worker_identity())  # first: a trial killed from here on is found
        values = suggest(trial, self.search.space, self.base)
        try:
            config = trial_config(self.base, values, self.search.space)
        except ValueError as error:  # a combination of three or more axes that the family refuses
            raise ParamsError(f"search.space: models.{self.search.model} with {values} is not a valid entry: "
                              f"{str(error).splitlines()[-1].strip()}") from None
        trial.set_user_attr(RUN_ATTR, self.recorder.start(trial.number, values, config))
        try:
            return self.train(trial, config)
        except optuna.TrialPruned:
            raise
        except BaseException as error:  # a bug or a stop, not an outcome: the trial fails, the search stops with it
            self.recorder.finish("failed", None, {"outcome": f"{type(error).__name__}: {error}"})
            raise

    def train(self, trial: optuna.Trial, config) -> float:
        """Train the trial's entry, reporting the objective every few epochs; its value at the end."""
        from genlab.config.params import hyperparameter_count
        from genlab.models.contract import Encoder
        from genlab.models.networks import trainable_parameters
        from genlab.models.registry import build_model
        from genlab.training import devices, fit
        from genlab.training.diagnostics import diagnose

        devices.set_seed(config.seed)
        model = build_model(config, self.prepared.image_shape, self.prepared.num_classes)
        monitored = model.monitored_loss
        every = self.search.pruner.report_every_epochs

        def objective(logs: dict[str, float]) -> float:
            return self.quality(model) if self.quality is not None else logs[f"val_{monitored}"]

        reached = [0]  # epochs done: where a stopped trial stopped

        def on_epoch(epoch: int, logs: dict[str, float]) -> None:
            step = reached[0] = epoch + 1
            if step % every or step >= config.epochs:
                return
            value = objective(logs)
            trial.report(value, step)
            self.recorder.report(step, value)
            if trial.should_prune():
                raise optuna.TrialPruned(f"behind the median at epoch {step} ({value:.4g})")

        (train_x, train_y), (val_x, val_y) = model.training_data(self.prepared.train, self.prepared.validation)
        started = time.perf_counter()
        try:
            result = fit.fit(model, train_x, val_x, targets=(train_y, val_y), epochs=config.epochs,
                             batch_size=config.batch_size, early_stopping_patience=config.early_stopping_patience,
                             on_epoch=on_epoch, seed=config.seed, learning_rate_schedule=config.learning_rate_schedule,
                             warmup_epochs=config.warmup_epochs, name=f"trial {trial.number}")
        except (optuna.TrialPruned, fit.TrainingDiverged) as stopped:
            outcome = str(stopped) if isinstance(stopped, optuna.TrialPruned) else f"diverged: {stopped}"
            self.finish(trial, "pruned", None, {"outcome": outcome, "train_seconds": time.perf_counter() - started,
                                                 "epochs_trained": reached[0]})
            raise optuna.TrialPruned(outcome) from None
        history, validation = result.history, result.history[f"val_{monitored}"]
        # with early stopping, Keras ends with the best epoch's weights (whether or not it stopped early)
        value = objective({f"val_{monitored}": min(validation) if config.early_stopping_patience else validation[-1]})
        if not math.isfinite(value):  # samples (or a validation loss) that are not finite numbers
            outcome = f"its {self.search.objective} is not a finite number"
            self.finish(trial, "pruned", None, {"outcome": outcome, "epochs_trained": reached[0]})
            raise optuna.TrialPruned(outcome)
        diagnosis = diagnose(history[monitored], history.get(f"val_{monitored}"), **self.diagnosis.model_dump())
        loss, val_loss = history[monitored][-1], history[f"val_{monitored}"][-1]
        facts = {"outcome": "complete", "train_seconds": result.seconds, "epochs_trained": len(history[monitored]),
                 "final_loss": loss, "final_val_loss": val_loss,
                 "generalization_gap": (val_loss - loss) / abs(loss) if loss else math.nan,
                 "diagnosis": diagnosis.verdict, "num_params": trainable_parameters(model),
                 **hyperparameter_count(config)}
        if isinstance(model, Encoder):  # one unit for every loss: the pixels' squared error on validation
            rebuilt = model.reconstruct(self.prepared.validation.x, self.prepared.validation.y)
            facts["val_pixel_mse"] = float(np.mean((np.clip(rebuilt, 0, 1) - self.prepared.validation.x) ** 2))
        self.finish(trial, "complete", value, facts)
        return value

    def finish(self, trial: optuna.Trial, state: str, value: float | None, facts: dict) -> None:
        for key, fact in facts.items():
            trial.set_user_attr(key, float(fact) if isinstance(fact, (int, float, np.floating)) and not isinstance(
                fact, bool) else fact)
        self.recorder.finish(state, value, facts)
        shown = f"{self.search.objective} {value:.4g}" if value is not None else facts["outcome"]
        print(f"search: trial {trial.number} {state} ({shown}) with "
              f"{', '.join(f'{key}={shown_value(fact)}' for key, fact in trial.params.items())}")


def shown_value(value) -> str:
    """An axis's value on the console: a real number to 4 digits (the outputs keep every digit)."""
    return f"{value:.4g}" if isinstance(value, float) else str(label(value))


def worker_identity(pid: int | None = None) -> str:
    """host:pid:start of a process (its start time in clock ticks since boot, /proc/<pid>/stat's 22nd field): a pid
    that the system gives to another process later is not taken for the same worker."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_started(pid)}"


def _started(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return "?"


def counts(study: optuna.Study) -> tuple[int, int]:
    """(finished, running) trials of the study."""
    trials = study.get_trials(deepcopy=False)
    return (sum(trial.state in FINISHED for trial in trials),
            sum(trial.state == optuna.trial.TrialState.RUNNING for trial in trials))


def fail_orphans(study: optuna.Study, on_fail: Callable[[optuna.trial.FrozenTrial], None]) -> None:
    """Fail the running trials whose worker is gone: a stale heartbeat (a database), or a process of this
    machine that no longer exists; `on_fail` is told of each (its MLflow run is marked failed)."""
    before = {trial.number for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)
    host = socket.gethostname()
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        worker_host, pid, started = (str(trial.user_attrs.get(WORKER_ATTR, "")).split(":") + ["", "", ""])[:3]
        if worker_host == host and pid.isdigit() and worker_identity(int(pid)) != f"{host}:{pid}:{started}":
            try:
                study._storage.set_trial_state_values(trial._trial_id, state=optuna.trial.TrialState.FAIL)
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # it finished meanwhile, or another worker failed it first
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,)):
        if trial.number not in before:
            on_fail(trial)


POLL_SECONDS = 1.0  # how often a process that waits for the last trials looks again


def work(study: optuna.Study, trial: Trial, budget: int, wait: bool, on_fail: Callable) -> int:
    """Run trials until the study has `budget` finished ones; with `wait`, then until no trial runs anywhere
    (the process that writes the results). The trials this process ran."""
    ran = 0
    while True:
        fail_orphans(study, on_fail)
        finished, running = counts(study)
        if finished + running < budget:
            try:
                study.optimize(trial, n_trials=1, gc_after_trial=True)
            except (optuna.exceptions.UpdateFinishedTrialError, ValueError) as error:
                if not isinstance(error, optuna.exceptions.UpdateFinishedTrialError) and "Cannot tell a" not in str(
                        error):
                    raise
                print("search: another worker failed this worker's trial (its heartbeat came late); it is skipped",
                      file=sys.stderr)
            ran += 1
        elif finished >= budget and not (wait and running):
            return ran
        else:  # the last trials run elsewhere: they finish, or fail and leave room for another
            time.sleep(POLL_SECONDS)
