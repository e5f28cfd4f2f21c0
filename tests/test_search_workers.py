"""Several workers on one study, for real: a PostgreSQL server holds the study (and, in a database of its own, the
tracking server's store), one `mlflow server` on loopback takes every run, and two clones of the project each
run a process of the search: the stage in the first, `--worker` in the second. The second worker is killed
(SIGKILL) in the middle of a trial and started again; the study still finishes its trials, every trial ran once
with one MLflow run nested under the study's, and the killed worker's trial is failed, in Optuna and in MLflow.
Then, on one machine, `search.workers: 2`: two processes on a journal file and the local SQLite store, the
second started by the first and gone with it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time

import optuna
import pandas as pd
import pytest
import sandbox
import services
import yaml
from pipeline_project import PROJECT, tiny_params, tiny_search

pytestmark = pytest.mark.e2e

TRIALS = 6


def search_command(*extra: str) -> list[str]:
    return [sys.executable, "-m", "genlab.stages.search", "--data", "data/prepared", "--judge", "models/judge",
            "--out", "reports/search", "--metrics", "reports/search.json", *extra]


def start(root, env: dict, *extra: str) -> subprocess.Popen:
    log = (root / f"search{'-worker' if extra else ''}-{time.monotonic_ns()}.log").open("w")
    return subprocess.Popen(search_command(*extra), cwd=root, env=sandbox.environment(root) | env, stdout=log,
                            stderr=subprocess.STDOUT)


def wait_for(condition, what: str, timeout: float = 240.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_two_workers_from_two_clones_share_a_study_and_a_killed_workers_trial_fails(tmp_path):
    params = tiny_params(("ae_a",))
    params["models"]["ae_a"] |= {"epochs": 60}  # trials of a few seconds: time to kill one in the middle
    params["search"] = tiny_search(TRIALS) | {"heartbeat_seconds": 1, "stale_after_seconds": 4}
    params["search"]["pruner"] |= {"enabled": False}  # every trial runs its epochs: one is surely cut short
    first = sandbox.copy_project(PROJECT, tmp_path / "first", params)
    sandbox.run(["dvc", "repro", "judge"], first)  # the prepared data and the judge that every trial needs
    sandbox.commit(first, "the data and the judge")
    second = tmp_path / "second"
    sandbox.run(["git", "clone", "-q", str(first), str(second)], tmp_path)
    for folder in ("data/prepared", "models/judge"):  # what `dvc pull` from a shared remote would bring
        shutil.copytree(first / folder, second / folder)
    with services.postgres() as database, services.mlflow_server(database, tmp_path / "artifacts",
                                                                  tmp_path / "server.log") as address:
        studies = database.rsplit("/", 1)[0] + "/optuna"
        subprocess.run([str(services.postgres_binaries() / "createdb"), "-h", "127.0.0.1", "-p",
                        database.rsplit(":", 1)[1].split("/")[0], "-U", "postgres", "optuna"], check=True)
        env = {"MLFLOW_TRACKING_URI": address, "GENLAB_SEARCH_STORAGE": studies}
        searching = start(first, env)
        worker = start(second, env, "--worker")
        storage = optuna.storages.RDBStorage(studies)

        def running_trial_of(process):
            names = optuna.get_all_study_names(storage)
            if not names:
                return None
            trials = optuna.load_study(study_name=names[0], storage=storage).get_trials(deepcopy=False)
            return next((trial for trial in trials if trial.state == optuna.trial.TrialState.RUNNING
                         and str(trial.user_attrs.get("worker", "")).split(":")[1:2] == [str(process.pid)]
                         and trial.user_attrs.get("mlflow_run_id")), None)

        killed = wait_for(lambda: running_trial_of(worker), "a trial of the second clone's worker")
        time.sleep(1.0)  # in the middle of its epochs
        os.kill(worker.pid, signal.SIGKILL)
        worker.wait()
        again = start(second, env, "--worker")  # the worker comes back and joins the study again
        assert searching.wait(timeout=400) == 0, (first / "reports").exists()
        assert again.wait(timeout=120) == 0
        study = optuna.load_study(study_name=optuna.get_all_study_names(storage)[0], storage=storage)
        trials = study.get_trials()
        states = {trial.number: trial.state for trial in trials}
        assert states[killed.number] == optuna.trial.TrialState.FAIL
        finished = [trial for trial in trials if trial.state in (optuna.trial.TrialState.COMPLETE,
                                                                 optuna.trial.TrialState.PRUNED)]
        assert TRIALS <= len(finished) <= TRIALS + 1  # two workers that ask at the same instant may both start one
        assert len(trials) == len(finished) + 1 and sorted(states) == list(range(len(trials)))
        workers = {trial.user_attrs["worker"].split(":")[1] for trial in finished}  # host:pid:start
        assert {str(searching.pid), str(again.pid)} <= workers, workers  # both clones ran trials

        from mlflow.tracking import MlflowClient

        client = MlflowClient(address)
        (study_run,) = client.search_runs([client.get_experiment_by_name("genlab").experiment_id],
                                          "tags.`genlab.search.study` != '' and attributes.run_name = 'search ae_a'")
        nested = client.search_runs([study_run.info.experiment_id],
                                    f"tags.mlflow.parentRunId = '{study_run.info.run_id}'", max_results=100)
        by_trial = {}
        for run in nested:
            by_trial.setdefault(int(run.data.tags["genlab.search.trial"]), []).append(run)
        assert sorted(by_trial) == sorted(states) and all(len(runs) == 1 for runs in by_trial.values())
        assert by_trial[killed.number][0].info.status == "FAILED"
        assert {run[0].info.status for number, run in by_trial.items() if number != killed.number} == {"FINISHED"}
        assert study_run.info.status == "FINISHED"
        assert (first / "reports/search/trials.csv").is_file() and not (second / "reports/search").exists()

    params["search"] |= {"workers": 2, "trials": 6}  # the local store and a journal file: no services
    (first / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    mark = sandbox.marked("search-two-workers")
    sandbox.run(search_command(), first, env=mark)
    sandbox.assert_nothing_left(mark)
    trials = pd.read_csv(first / "reports/search/trials.csv")
    assert len(trials) >= 6 and set(trials["state"]) <= {"complete", "pruned"} and trials["worker"].nunique() == 2
    assert not list((first / ".genlab/search").glob("*.journal"))  # the study is in the outputs: a rerun starts afresh
