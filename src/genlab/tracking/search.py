"""A hyperparameter search in MLflow: the study is a run (`search <model>`), and each trial a run nested under it
(`trial <n>`): the values it drew and the entry they made, the objective at each report (its pruning steps) and at
the end, its state and why. Each worker logs its own trials, through the tracking server that all of them reach
(or the local store); the study's run then holds Optuna's figures and the answer "which choices mattered".
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from genlab.tracking import TAG_PREFIX, _store_call

STATES = {"complete": "FINISHED", "pruned": "FINISHED", "failed": "FAILED"}


def _client():
    from mlflow.tracking import MlflowClient

    return MlflowClient()


@_store_call
def study_run(experiment_id: str, study: str, model: str, tags: dict[str, str], run_id: str | None = None) -> str:
    """The study's run (continued with `run_id`: a resumed search), left running while the trials go on."""
    client = _client()
    if run_id is not None:
        client.update_run(run_id, status="RUNNING")
        return run_id
    return client.create_run(experiment_id, run_name=f"search {model}",
                             tags=tags | {f"{TAG_PREFIX}search.study": study, f"{TAG_PREFIX}model": model}
                             ).info.run_id


class TrialRecorder:
    """A trial's nested run, created when the trial starts and ended with its state."""

    def __init__(self, experiment_id: str, study_run_id: str, study: str, objective: str, tags: dict[str, str]):
        self.experiment_id, self.parent, self.study, self.objective = experiment_id, study_run_id, study, objective
        self.tags = tags
        self.run_id: str | None = None

    @_store_call
    def start(self, number: int, values: dict[str, Any], config) -> str:
        from mlflow.entities import Param, RunTag
        from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

        from genlab.config.space import label

        client = _client()
        tags = self.tags | {MLFLOW_PARENT_RUN_ID: self.parent, f"{TAG_PREFIX}search.study": self.study,
                            f"{TAG_PREFIX}search.trial": str(number)}
        self.run_id = client.create_run(self.experiment_id, run_name=f"trial {number}").info.run_id
        drawn = {name: str(label(value)) for name, value in values.items()}
        settings = {f"entry.{key}": str(value) for key, value in config.model_dump(exclude={"encoder_model"}).items()
                    if key not in values}
        client.log_batch(self.run_id, params=[Param(key, value[:6000]) for key, value in (drawn | settings).items()],
                         tags=[RunTag(key, value) for key, value in tags.items()])
        return self.run_id

    @_store_call
    def report(self, step: int, value: float) -> None:
        _client().log_metric(self.run_id, f"search/{self.objective}", float(value), step=step)

    @_store_call
    def finish(self, state: str, value: float | None, facts: dict[str, Any]) -> None:
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        epochs = int(facts.get("epochs_trained") or 0)
        metrics = [Metric(f"trial/{key}", float(fact), now, 0) for key, fact in facts.items()
                   if isinstance(fact, (int, float)) and not isinstance(fact, bool)]
        if value is not None:
            metrics.append(Metric(f"search/{self.objective}", float(value), now, epochs))
        if state == "pruned":
            metrics.append(Metric("search/pruned_at_epoch", float(epochs), now, 0))
        tags = [RunTag(f"{TAG_PREFIX}search.state", state),
                RunTag(f"{TAG_PREFIX}search.outcome", str(facts.get("outcome", state))[:4000])]
        if "diagnosis" in facts:
            tags.append(RunTag(f"{TAG_PREFIX}diagnosis", str(facts["diagnosis"])))
        client = _client()
        client.log_batch(self.run_id, metrics=metrics, tags=tags)
        client.set_terminated(self.run_id, status=STATES[state])


@_store_call
def fail_trial_run(run_id: str | None, reason: str) -> None:
    """A trial whose worker died: its run, left running, marked failed with the reason."""
    if not run_id:
        return
    client = _client()
    if client.get_run(run_id).info.status == "RUNNING":
        client.set_tag(run_id, f"{TAG_PREFIX}search.state", "failed")
        client.set_tag(run_id, f"{TAG_PREFIX}search.outcome", reason)
        client.set_terminated(run_id, status="FAILED")


@_store_call
def end_study_run(run_id: str, reason: str, killed: bool = False) -> None:
    """The study's run, when the search failed (or was stopped): FAILED (KILLED) with the reason as a tag."""
    client = _client()
    client.set_tag(run_id, f"{TAG_PREFIX}failure", reason[:4000])
    client.set_terminated(run_id, status="KILLED" if killed else "FAILED")


@_store_call
def finish_study_run(run_id: str, metrics: dict[str, float], params: dict[str, Any], description: str,
                     folder: Path) -> None:
    """The study's results in its run: the best trial's numbers, the search's settings, the answer as the
    run's description, and the folder of figures and tables as artifacts."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

    client = _client()
    now = int(time.time() * 1000)
    logged = set(client.get_run(run_id).data.params)  # a resumed study's run has them already
    client.log_batch(run_id, metrics=[Metric(key, float(value), now, 0) for key, value in metrics.items()],
                     params=[Param(key, str(value)[:6000]) for key, value in params.items() if key not in logged],
                     tags=[RunTag(MLFLOW_RUN_NOTE, description)])
    for path in sorted(folder.iterdir()):
        client.log_artifact(run_id, str(path))
    client.set_terminated(run_id)
