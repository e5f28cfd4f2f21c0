"""Several seeds of one model: the means and Student-t intervals over them, and what is reported."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from genlab.config.params import ParamsError, hyperparameter_count, load_params, seeds_of
from genlab.evaluation import seeds

ROOT = Path(__file__).resolve().parents[1]


def test_the_interval_of_a_mean_by_hand():
    # three values 1, 2, 3: mean 2, standard error 1/sqrt(3); t(0.975, 2 degrees of freedom) = 4.3027
    mean, low, high = seeds.interval_of_mean([1.0, 2.0, 3.0], 0.95)
    assert mean == 2.0
    assert high - mean == pytest.approx(4.302653 / np.sqrt(3), rel=1e-5)
    assert mean - low == pytest.approx(high - mean)
    assert seeds.interval_of_mean([5.0], 0.95) == (5.0, 5.0, 5.0)  # one seed has no spread
    assert np.isnan(seeds.interval_of_mean([1.0, float("nan")], 0.95)[1])


def test_intervals_of_the_mean_hold_the_true_mean_as_often_as_they_say():
    rng = np.random.default_rng(0)
    held = [low <= 10 <= high for low, high in
            (seeds.interval_of_mean(rng.normal(10, 2, size=3), 0.9)[1:] for _ in range(2000))]
    assert np.mean(held) == pytest.approx(0.9, abs=0.02)


def test_over_seeds_and_what_is_reported():
    per_seed = {0: {"fid": 2.0, "fid_low": 1.5, "fid_high": 2.6, "classes_covered": 10, "worst_fid_class": 7,
                    "class_shares": {"0": 0.1}, "recommended": True},
                1: {"fid": 3.0, "fid_low": 2.4, "fid_high": 3.9, "classes_covered": 9, "worst_fid_class": 2,
                    "class_shares": {"0": 0.2}, "recommended": True},
                2: {"fid": 4.0, "fid_low": 3.0, "fid_high": 5.0, "classes_covered": 10, "worst_fid_class": 7,
                    "class_shares": {"0": 0.3}, "recommended": True}}
    for values in per_seed.values():
        values["num_params"] = 500
    summary = seeds.over_seeds(per_seed, 0.95)
    assert summary["seeds"] == [0, 1, 2] and summary["values"]["fid"] == [2.0, 3.0, 4.0]
    assert "worst_fid_class" not in summary["mean"] and "class_shares" not in summary["mean"]  # labels, nested
    reported = seeds.reported(per_seed[0], summary, ("fid",))
    assert reported["fid"] == 3.0 and reported["classes_covered"] == pytest.approx(29 / 3)
    assert (reported["fid_low"], reported["fid_high"]) == (summary["low"]["fid"], summary["high"]["fid"])
    assert reported["worst_fid_class"] == 7 and reported["class_shares"] == {"0": 0.1}  # the first seed's
    assert reported["num_seeds"] == 3
    assert reported["num_params"] == 500 and isinstance(reported["num_params"], int)  # the same in every seed
    # one seed: the first seed's results as they were, no num_seeds
    assert seeds.reported(per_seed[0], seeds.over_seeds({0: per_seed[0]}, 0.95), ("fid",)) == per_seed[0]
    assert seeds.intervals(summary, {"fid": 3.0, "classes_covered": 9.7}) == {
        "fid_low": summary["low"]["fid"], "fid_high": summary["high"]["fid"],
        "classes_covered_low": summary["low"]["classes_covered"],
        "classes_covered_high": summary["high"]["classes_covered"]}


def test_the_seeds_of_a_model_come_from_train_or_its_own_entry(tmp_path):
    def loaded(train_seeds, **entry):
        raw = yaml.safe_load((ROOT / "params.yaml").read_text())
        raw["train"]["seeds"] = train_seeds
        raw["models"]["vae"] |= entry
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
        return load_params(tmp_path / "params.yaml")

    params = loaded(3, seed=5)
    assert seeds_of(params, params.models["vae"]) == [5, 6, 7]
    assert seeds_of(params, params.models["gan"]) == [0, 1, 2]
    params = loaded(3, seeds=1)
    assert seeds_of(params, params.models["vae"]) == [0]
    # how often a model is trained is no hyperparameter of it
    assert hyperparameter_count(params.models["vae"]) == hyperparameter_count(loaded(3).models["vae"])
    for train_seeds, entry, named in ((0, {}, "train.seeds"), (2.5, {}, "train.seeds"),
                                      (3, {"seeds": 21}, "models.vae.seeds")):
        with pytest.raises(ParamsError, match=named.replace(".", r"\.")):
            loaded(train_seeds, **entry)


def test_further_seed_folders_are_found_in_order(tmp_path):
    from genlab.training.summary import SEEDS_DIR, further_seed_dirs

    assert further_seed_dirs(tmp_path) == {}
    for seed in (10, 2, 3):
        (tmp_path / SEEDS_DIR / str(seed)).mkdir(parents=True)
    assert list(further_seed_dirs(tmp_path)) == [2, 3, 10]
