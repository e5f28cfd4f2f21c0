"""The search's pure parts with known answers: the space in params.yaml (validated like every other key), the
values a trial draws and the entry they make, which cheatsheet point an axis is, the importance of an axis that
alone decides the objective, the answer's sentences, and the worker loop's count of trials on a shared study."""

from __future__ import annotations

import os
import re
import socket

import optuna
import pandas as pd
import pytest
import yaml
from pipeline_project import PROJECT

from genlab.config.params import ParamsError, RangeAxis, parse_params
from genlab.config.space import label, raw_value, trial_config
from genlab.evaluation import cheatsheet
from genlab.training import search


def params_with(space: dict, **search_settings) -> dict:
    params = yaml.safe_load((PROJECT / "params.yaml").read_text())
    params["search"] = {"model": "ae_sigmoid_bce", "space": space} | search_settings
    return params


def test_the_projects_search_is_the_lecture_cheatsheet():
    found = parse_params(yaml.safe_load((PROJECT / "params.yaml").read_text())).search
    points = {cheatsheet.axis_point(name, axis) for name, axis in found.space.items()}
    assert points == {"architecture", "epochs", "loss function + activation functions", "activation functions",
                      "optimization scheme", "learning rate", "batch size"}


@pytest.mark.parametrize(("space", "settings", "expected"), [
    ({"hidden_units": [[8]]}, {}, "search.space.hidden_units: a list of values to try needs at least 2"),
    ({"batch_size": 16}, {}, "search.space.batch_size: expected a list of values to try or a range"),
    ({"widths": [8, 16]}, {}, "search.space.widths: autoencoder has no such setting"),
    ({"seed": [0, 1]}, {}, "search.space.seed: not a hyperparameter to search"),
    ({"loss": ["mse", "binary_crossentropy"], "output_activation": ["sigmoid", "linear"]}, {},
     "make such settings one joint axis"),
    ({"output": [{"loss": "mse"}, {"colour": "red"}]}, {}, "['colour'] are not settings of autoencoder"),
    ({"learning_rate": {"low": 0.1, "high": 0.01}}, {}, "search.space.learning_rate: low (0.1) must be below high"),
    ({"learning_rate": {"low": 0.1, "hi": 1}}, {}, "search.space.learning_rate: unknown key(s) ['hi']"),
    ({"learning_rate": {"low": 0, "high": 0.1, "log": True}}, {}, "a log axis needs low > 0"),
    ({"optimizer": {"low": 1, "high": 2}}, {}, "a range is for a numeric setting"),
    ({"batch_size": [16, 16]}, {}, "a value is listed twice"),
    ({"latent_dim": [8, 64]}, {}, "does not fit the images: latent_dim: 64 is not a bottleneck"),
    ({"batch_size": [16, 32]}, {"model": "nobody"}, "search.model: no model 'nobody'"),
    ({"batch_size": [16, 32]}, {"trials": 1}, "search.trials"),
    ({"batch_size": [16, 32]}, {"heartbeat_seconds": 10, "stale_after_seconds": 20}, "at least 3 x heartbeat_seconds"),
    ({"output": [{"loss": "mse", "output_activation": "linear"},
                 {"loss": "binary_crossentropy", "output_activation": "sigmoid"}]}, {"objective": "val_loss"},
     "val_loss compares the trials' own losses, which differ with loss"),
    ({"batch_size": [16, 32]}, {"model": "gan", "objective": "val_loss"}, "a GAN's measure a game"),
])
def test_a_bad_search_names_the_key(space, settings, expected):
    with pytest.raises(ParamsError) as raised:
        parse_params(params_with(space, **settings))
    assert expected in str(raised.value)


def test_a_joint_axis_sets_a_loss_with_the_activation_it_fits():
    params = parse_params(params_with({"output": [{"loss": "mse", "output_activation": "linear"},
                                                  {"loss": "binary_crossentropy", "output_activation": "sigmoid"}],
                                       "hidden_units": [[16], [64, 32]], "learning_rate": {"low": 1e-4, "high": 0.1,
                                                                                           "log": True}}))
    space, base = params.search.space, params.models["ae_sigmoid_bce"]
    config = trial_config(base, {"output": space["output"][0], "hidden_units": [64, 32], "learning_rate": 0.02},
                          space)
    assert (config.loss, config.output_activation, config.hidden_units, config.learning_rate) == (
        "mse", "linear", (64, 32), 0.02)
    assert config.latent_dim == base.latent_dim and config.epochs == base.epochs  # the rest is the base entry's
    assert label(space["output"][0]) == "loss=mse output_activation=linear" and label([64, 32]) == "[64,32]"
    for value in space["output"] + space["hidden_units"]:
        axis = space["output"] if isinstance(value, dict) else space["hidden_units"]
        assert raw_value(axis, label(value)) == value
    assert isinstance(space["learning_rate"], RangeAxis) and not space["learning_rate"].integer


def test_a_trial_draws_a_value_of_every_axis_in_its_range():
    params = parse_params(params_with({"batch_size": [16, 256], "epochs": {"low": 10, "high": 50},
                                       "learning_rate": {"low": 1e-4, "high": 0.1, "log": True},
                                       "hidden_units": [[16], [64, 32]]}))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(20):
        values = search.suggest(study.ask(), params.search.space, params.models["ae_sigmoid_bce"])
        assert values["batch_size"] in (16, 256) and values["hidden_units"] in ([16], [64, 32])
        assert isinstance(values["epochs"], int) and 10 <= values["epochs"] <= 50
        assert 1e-4 <= values["learning_rate"] <= 0.1


def test_cheatsheet_points_of_settings():
    assert cheatsheet.cheatsheet_point("batch_size") == "batch size"
    assert cheatsheet.cheatsheet_point("hidden_units") == "architecture"
    assert cheatsheet.cheatsheet_point("beta") == cheatsheet.FAMILY_OWN
    joint = [{"loss": "mse", "output_activation": "linear"}, {"loss": "binary_crossentropy"}]
    assert cheatsheet.axis_point("output", joint) == "loss function + activation functions"
    assert cheatsheet.by_point({"a": 0.5, "b": 0.2, "c": 0.3}, {"a": [1, 2], "b": [1, 2], "c": [1, 2]}) == {
        cheatsheet.FAMILY_OWN: pytest.approx(1.0)}


def known_study() -> tuple[optuna.Study, dict]:
    """Trials whose objective the batch size alone decides (16: 1, 256: 5); the optimizer does nothing."""
    space = {"batch_size": [16, 256], "optimizer": ["adam", "sgd"],
             "learning_rate": RangeAxis(low=1e-3, high=1e-1, log=True)}
    study = optuna.create_study()
    distributions = {"batch_size": optuna.distributions.CategoricalDistribution([16, 256]),
                     "optimizer": optuna.distributions.CategoricalDistribution(["adam", "sgd"]),
                     "learning_rate": optuna.distributions.FloatDistribution(1e-3, 1e-1, log=True)}
    for index in range(16):
        batch, optimizer, rate = (16, 256)[index % 2], ("adam", "sgd")[(index // 2) % 2], 10 ** (-3 + index / 8)
        study.add_trial(optuna.trial.create_trial(
            params={"batch_size": batch, "optimizer": optimizer, "learning_rate": min(rate, 0.1)},
            distributions=distributions, value=1.0 if batch == 16 else 5.0,
            user_attrs={"generalization_gap": 0.3 if batch == 16 else 0.1, "epochs_trained": 10,
                        "train_seconds": 4.0 if batch == 16 else 1.0}))
    study.add_trial(optuna.trial.create_trial(params={"batch_size": 256, "optimizer": "adam", "learning_rate": 0.01},
                                              distributions=distributions, state=optuna.trial.TrialState.PRUNED,
                                              intermediate_values={2: 9.0}))
    return study, space


def test_the_axis_that_decides_the_objective_is_the_one_that_mattered():
    study, space = known_study()
    shares = cheatsheet.importances(study)
    assert max(shares, key=shares.get) == "batch_size" and shares["batch_size"] > 0.9
    table = cheatsheet.trials_table(study, space)
    assert list(table["state"]).count("pruned") == 1 and table.loc[16, "pruned_at_epoch"] == 2
    values = cheatsheet.by_value(table, space).set_index(["axis", "value"])
    assert values.loc[("batch_size", 16), "median"] == 1.0 and values.loc[("batch_size", 256), "median"] == 5.0
    assert values.loc[("batch_size", 256), "pruned"] == 1 and values.loc[("batch_size", 256), "trials"] == 9
    assert values.loc[("batch_size", 16), "median_gap"] == pytest.approx(0.3)  # the smaller batch's larger gap
    assert {value for axis, value in values.index if axis == "learning_rate"} == {"0.001-0.00464", "0.00464-0.0215",
                                                                                "0.0215-0.1"}
    lines = cheatsheet.answer("ae", "fid_to_floor", shares, cheatsheet.by_value(table, space), space,
                              {"trial": 0, "objective": 1.0, "values": {"batch_size": 16}})
    assert lines[0].startswith("ae, by fid_to_floor (lower is better): batch size 100%")
    assert any(line.startswith("batch_size (batch size, 100%") and "median 1 with 16 against 5 with 256" in line
               for line in lines)
    assert lines[-1] == "best trial 0: fid_to_floor 1 with batch_size=16"
    assert lines[-2].startswith("batch size (\"smaller is faster but overtrains\"): with 16 the validation loss ended "
                                "+30.0% off the training loss, with 256 +10.0%")
    figures = cheatsheet.figures(study, space, shares)
    assert {"history.png", "importance.png", "intermediate.png", "slice_batch_size.png"} <= set(figures)


def test_too_few_completed_trials_say_so():
    study = optuna.create_study()
    assert cheatsheet.importances(study) == {}
    assert "too few completed trials" in cheatsheet.answer("ae", "val_loss", {}, None, {}, None)[0]


class Counting:
    """An objective that records each trial it runs."""

    def __init__(self):
        self.numbers = []

    def __call__(self, trial):
        self.numbers.append(trial.number)
        if trial.number == 1:
            raise optuna.TrialPruned("behind")
        return float(trial.number)


def test_workers_on_one_study_run_its_trials_once_each(tmp_path):
    """Two studies opened on one journal file (two workers' views) share its trials: together they run exactly
    the budget, and neither runs a trial twice."""
    settings = parse_params(params_with({"batch_size": [16, 32]})).search
    storage = search.open_storage(str(tmp_path / "study.journal"), 10, 60)
    first = search.open_study(storage, "s", settings, create=True, sampler_seed=0)
    second = search.open_study(search.open_storage(str(tmp_path / "study.journal"), 10, 60), "s", settings,
                               create=False, sampler_seed=None)
    a, b = Counting(), Counting()
    assert search.work(first, a, 3, wait=False, on_fail=print) == 3
    assert search.work(second, b, 5, wait=False, on_fail=print) == 2  # the study has 3: two more make 5
    assert a.numbers == [0, 1, 2] and b.numbers == [3, 4]
    assert search.counts(first) == (5, 0) and search.work(first, a, 5, wait=True, on_fail=print) == 0


def test_a_trial_whose_worker_is_gone_fails_and_is_reported(tmp_path):
    settings = parse_params(params_with({"batch_size": [16, 32]})).search
    study = search.open_study(search.open_storage(str(tmp_path / "j"), 10, 60), "s", settings, create=True,
                              sampler_seed=0)
    orphan = study.ask()
    orphan.set_user_attr(search.WORKER_ATTR, f"{socket.gethostname()}:{2 ** 22 + 12345}:1")  # no such pid
    reused = study.ask()  # this process's pid, but another process's start time: the pid was given again
    reused.set_user_attr(search.WORKER_ATTR, f"{socket.gethostname()}:{os.getpid()}:1")
    alive = study.ask()
    alive.set_user_attr(search.WORKER_ATTR, search.worker_identity())
    failed = []
    search.fail_orphans(study, lambda trial: failed.append(trial.number))
    assert failed == [orphan.number, reused.number] and search.counts(study) == (0, 1)


def test_a_database_fails_the_trial_of_a_worker_elsewhere_whose_heartbeat_stopped(tmp_path):
    """Across machines a worker's death shows only as its heartbeat stopping: after stale_after_seconds, the
    next worker to look fails its trial."""
    settings = parse_params(params_with({"batch_size": [16, 32]}, heartbeat_seconds=1,
                                        stale_after_seconds=3)).search
    stale = []
    storage = search.open_storage(f"sqlite:///{tmp_path / 'studies.db'}", 1, 2, on_stale=stale.append)
    study = search.open_study(storage, "s", settings, create=True, sampler_seed=0)
    trial = study.ask()
    trial.set_user_attr(search.WORKER_ATTR, "another-machine:1")
    storage.record_heartbeat(trial._trial_id)
    failed = []
    search.fail_orphans(study, lambda found: failed.append(found.number))
    assert failed == []  # alive a moment ago
    import time

    time.sleep(3)
    search.fail_orphans(study, lambda found: failed.append(found.number))
    assert failed == [trial.number] and search.counts(study) == (0, 0)
    assert [found.number for found in stale] == [trial.number]  # the storage's own callback: its MLflow run


@pytest.mark.parametrize(("url", "expected"), [
    ("postgres://user@db/optuna", "not a database genlab knows (SQLAlchemy spells it postgresql://)"),
    ("redis://host/0", "not a database genlab knows"),
    ("postgresql://nobody@127.0.0.1:1/optuna", "is unreachable or its driver is missing"),
])
def test_a_storage_genlab_cannot_use_says_why(url, expected):
    with pytest.raises(search.StorageError, match=re.escape(expected)):
        search.open_storage(url, 10, 60)


def test_a_batch_size_range_reads_in_thirds_without_a_claim():
    table = pd.DataFrame({"trial": [0, 1], "state": ["complete", "complete"], "objective": [1.0, 2.0],
                          "batch_size": [16, 200], "generalization_gap": [0.1, 0.2], "train_seconds": [1.0, 1.0],
                          "epochs_trained": [10, 10]})
    values = cheatsheet.by_value(table, {"batch_size": RangeAxis(low=16, high=256)})
    assert list(values["value"]) == ["16-96", "176-256"] and cheatsheet.batch_size_claim(values) is None
