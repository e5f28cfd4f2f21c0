"""An experiment sweep the way the README shows it: a grid queued with `dvc exp run --queue -S`,
run two at a time by `dvc queue start -j 2`, each experiment in both stores: `dvc exp show` and
MLflow (with its DVC experiment name), nothing lost when two write the SQLite store at once."""

from __future__ import annotations

import json
import sqlite3
import time

import pytest
import sandbox

pytestmark = pytest.mark.e2e


def queue_states(root) -> dict[str, str]:
    """Experiment name -> Queued, Running, Success or Failed, from `dvc queue status`."""
    shown = sandbox.run(["dvc", "queue", "status"], root).stdout
    states = {}
    for line in shown.splitlines()[1:]:  # Task  Name  Created  Status
        fields = line.split()
        if len(fields) >= 4 and fields[-1] in {"Queued", "Running", "Success", "Failed"}:
            states[fields[1]] = fields[-1]
    return states


def test_a_queued_grid_runs_two_at_a_time_and_reaches_both_stores(project):
    root, _ = project
    sandbox.run(["dvc", "exp", "run", "--queue", "-S", "models.ae_a.latent_dim=3,6",
                 "-S", "models.ae_a.learning_rate=0.02"], root)  # a grid of two: enough to run two at once
    assert list(queue_states(root).values()).count("Queued") == 2
    mark = sandbox.marked("queue")
    sandbox.run(["dvc", "queue", "start", "-j", "2"], root, env=mark)
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        states = queue_states(root)
        if not {"Queued", "Running"} & set(states.values()):
            break
        time.sleep(5)
    logs = {name: sandbox.run(["dvc", "queue", "logs", name], root).stdout[-3000:]
            for name, state in states.items() if state != "Success"}
    assert list(states.values()).count("Success") == 2, logs
    sandbox.assert_nothing_left(mark)  # each experiment's warm server went with the DVC process that ran it

    shown = json.loads(sandbox.run(["dvc", "exp", "show", "--json"], root).stdout)
    experiments = {}
    for baseline in shown:
        for experiment in baseline.get("experiments") or []:
            for revision in experiment.get("revs") or []:
                if revision.get("name") in states:  # the grid's, not earlier tests' experiments
                    model = revision["data"]["params"]["params.yaml"]["data"]["models"]["ae_a"]
                    experiments[revision["name"]] = (model["latent_dim"], model["learning_rate"])
    assert sorted(experiments.values()) == [(3, 0.02), (6, 0.02)]

    with sqlite3.connect(root / "mlflow.db") as connection:
        rows = connection.execute(
            "select t.value, r.name, r.status, r.run_uuid from runs r join tags t on r.run_uuid = t.run_uuid "
            "where t.key = 'genlab.dvc_exp_name'").fetchall()
        recorded = {(name, run): (status, run_id) for name, run, status, run_id in rows}
        for name in experiments:
            assert recorded[(name, "ae_a")][0] == "FINISHED" and recorded[(name, "comparison")][0] == "FINISHED"
            run_id = recorded[(name, "ae_a")][1]
            steps = connection.execute("select step from metrics where run_uuid = ? and key = 'train/loss' "
                                       "order by step", (run_id,)).fetchall()
            assert [step for (step,) in steps] == [1, 2, 3, 4, 5]  # every epoch, none lost to the other writer
            params = dict(connection.execute("select key, value from params where run_uuid = ?", (run_id,)))
            assert (int(params["latent_dim"]), float(params["learning_rate"])) == experiments[name]
            assert connection.execute("select value from metrics where run_uuid = ? and key = 'test/fid'",
                                      (run_id,)).fetchone()
