"""params.yaml validation: every bad key is a ParamsError naming the key and what is allowed."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pydantic
import pytest
import yaml

from genlab.config.params import (
    AutoencoderParams,
    DataParams,
    Params,
    ParamsError,
    load_params,
    model_params,
    parse_params,
)

ROOT = Path(__file__).resolve().parents[1]
PARAMS_YAML = ROOT / "params.yaml"
MODEL = "ae_sigmoid_bce"


@pytest.fixture(scope="module")
def baseline() -> dict:
    return yaml.safe_load(PARAMS_YAML.read_text())


def mutated(baseline: dict, change) -> dict:
    """A deep copy of the valid baseline with `change(raw)` applied."""
    raw = copy.deepcopy(baseline)
    change(raw)
    return raw


def set_key(path: str, value):
    """change() that sets a dotted key path, e.g. set_key("models.m.loss", "hinge")."""

    def change(raw: dict) -> None:
        *parents, last = path.split(".")
        node = raw
        for part in parents:
            node = node[part]
        node[last] = value

    return change


def del_key(path: str):
    def change(raw: dict) -> None:
        *parents, last = path.split(".")
        node = raw
        for part in parents:
            node = node[part]
        del node[last]

    return change


def rename_model(old: str, new: str):
    def change(raw: dict) -> None:
        raw["models"][new] = raw["models"].pop(old)

    return change


def combine(*changes):
    def change(raw: dict) -> None:
        for item in changes:
            item(raw)

    return change


def error_of(raw) -> str:
    with pytest.raises(ParamsError) as info:
        parse_params(raw)
    return str(info.value)


M = f"models.{MODEL}"

# (id, change, substrings the message must contain: the key path and what is allowed)
BAD_CASES = [
    ("missing_data", del_key("data"), ["data: missing key (required)"]),
    ("missing_models", del_key("models"), ["models: missing key (required)"]),
    ("empty_models", set_key("models", {}), ["models:", "at least 1 item"]),
    ("models_not_mapping", set_key("models", ["ae"]), ["models:", "valid dictionary"]),
    ("unknown_section", set_key("trainer", {"epochs": 3}),
     ["<top level>", "unknown key(s) ['trainer']", "allowed keys", "'models'", "'data'"]),
    ("unknown_key_in_data", set_key("data.sorce", "digits"),
     ["data:", "unknown key(s) ['sorce']", "'source'"]),
    ("unknown_key_in_diagnosis", set_key("train.diagnosis.patience", 3),
     ["train.diagnosis:", "unknown key(s) ['patience']", "'window'"]),
    ("unknown_key_in_model", set_key(f"{M}.dropout", 0.5),
     [f"{M}:", "unknown key(s) ['dropout']", "'latent_dim'", "'early_stopping_patience'"]),
    ("misspelt_family", set_key(f"{M}.family", "autoencodr"),
     [f"{M}:", "unknown family 'autoencodr'", "allowed: ['autoencoder', "]),
    ("missing_family", del_key(f"{M}.family"), [f"{M}:", "unknown family None", "['autoencoder', "]),
    ("model_not_mapping", set_key(f"{M}", None), [f"{M}:", "expected a mapping with a `family`"]),
    ("unknown_optimizer", set_key(f"{M}.optimizer", "adamw"),
     [f"{M}.optimizer:", "'adam', 'adadelta', 'sgd' or 'rmsprop'", "(got 'adamw')"]),
    ("unknown_loss", set_key(f"{M}.loss", "hinge"),
     [f"{M}.loss:", "'mse'", "'binary_crossentropy'", "(got 'hinge')"]),
    ("unknown_hidden_activation", set_key(f"{M}.hidden_activation", "swish"),
     [f"{M}.hidden_activation:", "'relu'", "'leaky_relu'", "(got 'swish')"]),
    ("unknown_output_activation", set_key(f"{M}.output_activation", "Sigmoid"),
     [f"{M}.output_activation:", "'sigmoid'", "(got 'Sigmoid')"]),
    ("unknown_source", set_key("data.source", "cifar10"),
     ["data.source:", "'digits', 'mnist_sample', 'mnist', 'fashion_mnist' or 'npz'", "(got 'cifar10')"]),
    ("epochs_zero", set_key(f"{M}.epochs", 0), [f"{M}.epochs:", "greater than 0", "(got 0)"]),
    ("epochs_negative", set_key(f"{M}.epochs", -1), [f"{M}.epochs:", "greater than 0", "(got -1)"]),
    ("epochs_float", set_key(f"{M}.epochs", 10.5), [f"{M}.epochs:", "valid integer"]),
    ("batch_size_zero", set_key(f"{M}.batch_size", 0), [f"{M}.batch_size:", "greater than 0", "(got 0)"]),
    ("learning_rate_text", set_key(f"{M}.learning_rate", "abc"),
     [f"{M}.learning_rate:", "valid number", "(got 'abc')"]),
    ("learning_rate_negative", set_key(f"{M}.learning_rate", -0.01),
     [f"{M}.learning_rate:", "greater than 0", "(got -0.01)"]),
    ("learning_rate_bool", set_key(f"{M}.learning_rate", True),
     [f"{M}.learning_rate:", "expected a number, got the boolean True"]),
    ("learning_rate_nan", set_key(f"{M}.learning_rate", float("nan")), [f"{M}.learning_rate:", "finite number"]),
    ("split_sum", set_key("data.split", {"train": 0.6, "validation": 0.15, "test": 0.15}),
     ["data.split:", "must sum to 1, got 0.9"]),
    ("split_fraction_zero", set_key("data.split", {"train": 0.85, "validation": 0.0, "test": 0.15}),
     ["data.split.validation:", "greater than 0", "(got 0.0)"]),
    ("split_fraction_one", set_key("data.split", {"train": 1.0, "validation": 0.0, "test": 0.0}),
     ["data.split.train:", "less than 1", "data.split.test:"]),
    ("latent_dim_64_on_digits", set_key(f"{M}.latent_dim", 64),
     [f"{M}.latent_dim:", "64 is not a bottleneck", "64 pixels", "use 1..63"]),
    ("latent_dim_784_on_mnist", combine(set_key("data.source", "mnist"), set_key(f"{M}.latent_dim", 784)),
     [f"{M}.latent_dim:", "784 pixels", "use 1..783"]),
    ("model_named_judge", set_key("models.judge", {"family": "vae"}),
     ["models.judge: the name is taken by the judge stage's classifier"]),
    ("unknown_rank_by", set_key("compare.rank_by", "inception_score"),
     ["compare.rank_by:", "'fid'", "'coverage'", "(got 'inception_score')"]),
    ("judge_without_features", set_key("judge.hidden_units", []), ["judge.hidden_units:", "at least 1 item"]),
    ("judge_conv_too_deep_for_mnist", combine(set_key("data.source", "mnist"), set_key("judge.network", "conv"),
                                              set_key("judge.conv_filters", [8, 16, 32])),
     ["judge.conv_filters: 3 levels halve the image", "28x28 is not"]),
    ("unknown_judge_key", set_key("judge.layers", 3), ["judge:", "unknown key(s) ['layers']"]),
    ("coverage_ratio_one", set_key("evaluate.min_class_share_ratio", 1.0),
     ["evaluate.min_class_share_ratio:", "less than 1"]),
    ("bce_with_linear", set_key(f"{M}.output_activation", "linear"),
     [f"{M}:", "'binary_crossentropy' does not fit output_activation 'linear'", "needs one of ['sigmoid']"]),
    ("cce_with_sigmoid", set_key(f"{M}.loss", "categorical_crossentropy"),
     [f"{M}:", "'categorical_crossentropy' does not fit output_activation 'sigmoid'", "['softmax']"]),
    ("mse_with_softmax", combine(set_key(f"{M}.loss", "mse"), set_key(f"{M}.output_activation", "softmax")),
     [f"{M}:", "'mse' does not fit output_activation 'softmax'", "'linear'", "'sigmoid'"]),
    ("npz_without_path", set_key("data.source", "npz"), ["data:", "source 'npz' needs `path`"]),
    ("hidden_units_string", set_key(f"{M}.hidden_units", [32, "big"]),
     [f"{M}.hidden_units.1:", "valid integer", "(got 'big')"]),
    ("hidden_units_zero", set_key(f"{M}.hidden_units", [0]), [f"{M}.hidden_units.0:", "greater than 0"]),
    ("model_name_slash", rename_model(MODEL, "ae/first"),
     ["models.ae/first", "cannot name a model", "stage key train@<name>", "letters, digits, '_' and '-'"]),
    ("seed_negative", set_key(f"{M}.seed", -1), [f"{M}.seed:", "greater than or equal to 0", "(got -1)"]),
    ("num_samples_over_the_training_split", set_key("evaluate.num_samples", 5000),  # the digits' is 1,257
     ["evaluate.num_samples: 5000 is more than the about 1258 images of the training split (digits)"]),
    ("model_name_with_a_dot", rename_model(MODEL, "ae.v2"), ["models.ae.v2: 'ae.v2' cannot name a model"]),
    ("data_seed_too_big", set_key("data.seed", 2**32), ["data.seed:", "less than 4294967296"]),
    ("num_classes_one", set_key("data.num_classes", 1), ["data.num_classes:", "greater than or equal to 2"]),
    ("max_class_kl_zero", set_key("validation.max_class_kl", 0),
     ["validation.max_class_kl:", "greater than 0", "(got 0)"]),
    ("size_tolerance_negative", set_key("validation.size_tolerance", -1), ["validation.size_tolerance:"]),
    ("significance_one", set_key("audit.significance", 1), ["audit.significance:", "less than 1"]),
    ("grid_images_zero", set_key("train.grid_images", 0),
     ["train.grid_images:", "greater than or equal to 1", "(got 0)"]),
    ("window_above_one", set_key("train.diagnosis.window", 1.5),
     ["train.diagnosis.window:", "less than or equal to 1"]),
    ("rank_by_unknown", set_key("compare.rank_by", "test_mae"),
     ["compare.rank_by:", "'worst_class_fid_to_floor' or 'asked_class_accuracy'", "(got 'test_mae')"]),
    ("experiment_empty", set_key("tracking.experiment", ""), ["tracking.experiment:", "at least 1 character"]),
    ("log_model_weights_text", set_key("tracking.log_model_weights", "yes"),
     ["tracking.log_model_weights:", "valid boolean"]),
    ("section_not_mapping", set_key("validation", [0.01]),
     ["validation:", "expected a mapping with keys", "'max_class_kl'"]),
]


@pytest.mark.parametrize(("change", "expected"), [case[1:] for case in BAD_CASES], ids=[case[0] for case in BAD_CASES])
def test_bad_params_name_the_key_and_what_is_allowed(baseline, change, expected):
    message = error_of(mutated(baseline, change))
    assert message.startswith("params.yaml is invalid:")
    for fragment in expected:
        assert fragment in message, f"{fragment!r} not in:\n{message}"


def test_there_are_many_distinct_bad_cases():
    assert len({case[0] for case in BAD_CASES}) == len(BAD_CASES) >= 22


def test_every_problem_is_listed_not_just_the_first(baseline):
    raw = mutated(baseline, combine(set_key(f"{M}.epochs", 0), set_key("data.source", "cifar10"),
                                    set_key("train.grid_images", 0)))
    message = error_of(raw)
    assert f"{M}.epochs:" in message
    assert "data.source:" in message
    assert "train.grid_images:" in message
    assert len(message.splitlines()) == 4  # the heading and one line per problem


def test_top_level_not_a_mapping():
    message = error_of(["data", "models"])
    assert "<top level>: expected a mapping with keys" in message
    assert "got list" in message


def test_empty_file_lists_the_required_sections(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("# nothing yet\n")
    with pytest.raises(ParamsError) as info:
        load_params(path)
    message = str(info.value)
    assert message.startswith(f"{path} is invalid:")
    assert "data: missing key (required)" in message
    assert "models: missing key (required)" in message


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("data:\n  source: digits\nmodels: [unclosed\n  x: 1\n")
    with pytest.raises(ParamsError) as info:
        load_params(path)
    message = str(info.value)
    assert str(path) in message
    assert "YAML syntax error at line" in message


def test_yaml_tab_indentation_is_a_syntax_error(tmp_path):
    path = tmp_path / "tabs.yaml"
    path.write_text("data:\n\tsource: digits\n")
    with pytest.raises(ParamsError, match="YAML syntax error at line 2"):
        load_params(path)


def test_missing_file(tmp_path):
    path = tmp_path / "absent.yaml"
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert f"cannot read {path}" in str(info.value)
    assert "No such file" in str(info.value)


def test_directory_instead_of_file(tmp_path):
    with pytest.raises(ParamsError, match="cannot read"):
        load_params(tmp_path)


def test_load_params_errors_name_the_file(tmp_path, baseline):
    path = tmp_path / "custom.yaml"
    path.write_text(yaml.safe_dump(mutated(baseline, set_key(f"{M}.loss", "hinge"))))
    with pytest.raises(ParamsError) as info:
        load_params(path)
    assert str(info.value).startswith(f"{path} is invalid:")
    assert f"{M}.loss:" in str(info.value)


# --- what is accepted ---------------------------------------------------------------------------


def test_shipped_params_yaml_loads():
    params = load_params(PARAMS_YAML)
    assert isinstance(params, Params)
    assert params.data.source == "digits"
    assert params.data.seed == 42
    assert params.data.split.train == pytest.approx(0.7)
    assert {"ae_first_choice", "ae_linear_mse", "ae_sigmoid_mse", "ae_sigmoid_bce",
            "ae_sigmoid_bce_small"} <= set(params.models)
    assert {model.family for model in params.models.values()} >= {"autoencoder", "vae", "gan"}
    first = params.models["ae_first_choice"]
    assert (first.optimizer, first.loss, first.output_activation) == ("adadelta", "mse", "relu")
    assert first.hidden_units == (32,)
    assert params.models["ae_sigmoid_bce_small"].latent_dim == 2
    assert params.compare.rank_by == "fid" and params.compare.registered_model == "genlab-generator"


def test_yaml_exponent_without_dot_is_a_number(tmp_path, baseline):
    # PyYAML (YAML 1.1) reads `1e-3` as the string "1e-3"
    raw = mutated(baseline, del_key(f"{M}.learning_rate"))
    text = yaml.safe_dump(raw).replace(f"  {MODEL}:\n", f"  {MODEL}:\n    learning_rate: 1e-3\n")
    assert yaml.safe_load(text)["models"][MODEL]["learning_rate"] == "1e-3"
    path = tmp_path / "params.yaml"
    path.write_text(text)
    learning_rate = load_params(path).models[MODEL].learning_rate
    assert isinstance(learning_rate, float)
    assert learning_rate == pytest.approx(0.001)


@pytest.mark.parametrize("text, value", [("1e-3", 0.001), ("5E-4", 0.0005), ("+2e-2", 0.02), (".5", 0.5)])
def test_number_strings_are_accepted(baseline, text, value):
    params = parse_params(mutated(baseline, set_key(f"{M}.learning_rate", text)))
    assert params.models[MODEL].learning_rate == pytest.approx(value)


@pytest.mark.parametrize(
    "output_activation, loss",
    [("sigmoid", "mse"), ("relu", "mse"), ("linear", "mse"), ("sigmoid", "binary_crossentropy"),
     ("softmax", "categorical_crossentropy"), ("tanh", "mae")],
)
def test_lecture_table_pairs_are_accepted(baseline, output_activation, loss):
    raw = mutated(baseline, combine(set_key(f"{M}.output_activation", output_activation), set_key(f"{M}.loss", loss)))
    model = parse_params(raw).models[MODEL]
    assert (model.output_activation, model.loss) == (output_activation, loss)


def test_latent_dim_just_below_pixels_is_accepted(baseline):
    assert parse_params(mutated(baseline, set_key(f"{M}.latent_dim", 63))).models[MODEL].latent_dim == 63


def test_npz_source_skips_the_bottleneck_check(baseline):
    # an npz file's image size is unknown until it is loaded
    raw = mutated(baseline, combine(set_key("data.source", "npz"), set_key("data.path", "mine.npz"),
                                    set_key(f"{M}.latent_dim", 500)))
    params = parse_params(raw)
    assert params.data.path == "mine.npz"
    assert params.models[MODEL].latent_dim == 500


def test_optional_sections_take_defaults(baseline):
    raw = {"data": {"source": "digits"}, "models": {"m": {"family": "autoencoder"}}}
    params = parse_params(raw)
    assert params.validation.max_class_kl == pytest.approx(0.01)
    assert params.train.diagnosis.window == pytest.approx(0.2)
    assert params.tracking.experiment == "genlab"
    model = params.models["m"]
    assert (model.loss, model.output_activation, model.latent_dim) == ("binary_crossentropy", "sigmoid", 8)


def test_returned_objects_are_frozen():
    params = load_params(PARAMS_YAML)
    with pytest.raises(pydantic.ValidationError):
        params.data.seed = 1  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        params.models["ae_sigmoid_bce"].epochs = 1  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        params.train.diagnosis.window = 0.5  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        params.tracking = None  # type: ignore[misc]
    assert params.data.seed == 42


def test_direct_construction_is_validated_too():
    with pytest.raises(pydantic.ValidationError):
        DataParams(source="npz")
    with pytest.raises(pydantic.ValidationError):
        AutoencoderParams(family="autoencoder", loss="binary_crossentropy", output_activation="relu")


def test_model_params_returns_the_entry():
    params = load_params(PARAMS_YAML)
    assert model_params(params, "ae_sigmoid_bce_small") is params.models["ae_sigmoid_bce_small"]


def test_model_params_unknown_name_lists_the_models():
    params = load_params(PARAMS_YAML)
    with pytest.raises(ParamsError) as info:
        model_params(params, "nope")
    message = str(info.value)
    assert message.startswith("models.nope: no such model")
    for name in params.models:
        assert repr(name) in message


# --- a stage stops before any work ----------------------------------------------------------------


def test_stage_exits_2_on_bad_params(tmp_path, baseline):
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(mutated(baseline, set_key(f"{M}.loss", "hinge"))))
    out = tmp_path / "out"
    reports = tmp_path / "rep"
    completed = subprocess.run(
        [sys.executable, "-m", "genlab.stages.prepare", "--params", str(bad), "--out", str(out),
         "--reports", str(reports)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
    )
    assert completed.returncode == 2, completed.stderr
    assert "error (ParamsError)" in completed.stderr
    assert f"{M}.loss" in completed.stderr
    assert "'binary_crossentropy'" in completed.stderr
    assert "Traceback" not in completed.stderr
    assert not out.exists()
    assert not reports.exists()


@pytest.mark.parametrize("name", ["..", ".", "-x"])
def test_model_names_that_are_not_safe_paths_or_arguments_are_refused(baseline, name):
    with pytest.raises(ParamsError):
        parse_params(mutated(baseline, rename_model(MODEL, name)))


@pytest.mark.parametrize("name, source", [("mnist.yaml", "mnist"), ("mnist_sample.yaml", "mnist_sample")])
def test_shipped_mnist_configurations_are_the_lecture_study(name, source):
    params = load_params(Path(__file__).resolve().parents[1] / "configs" / name)
    assert params.data.source == source and params.judge.network_for((28, 28)) == "conv"
    autoencoders = [model for model in params.models.values() if model.family == "autoencoder"]
    assert sorted({model.latent_dim for model in autoencoders}) == [16, 64]
    first = params.models["ae_first_choice"]
    assert (first.optimizer, first.output_activation, first.loss) == ("adadelta", "relu", "mse")
    generative = {model.family: model for model in params.models.values() if model.family != "autoencoder"}
    assert sorted(generative) == ["diffusion", "flow", "gan", "vae"]
    assert all(model.network_for((28, 28)) == "conv" for model in generative.values())


@pytest.mark.parametrize("family", [["autoencoder"], {"a": 1}, None, 3])
def test_family_that_is_not_a_name_is_a_params_error(baseline, family):
    raw = copy.deepcopy(baseline)
    raw["models"][MODEL]["family"] = family
    with pytest.raises(ParamsError, match=f"models.{MODEL}: family: unknown family"):
        parse_params(raw)


def test_keys_of_mixed_types_are_a_params_error(baseline):
    raw = copy.deepcopy(baseline)
    raw["data"] |= {1: 2, None: 3}
    with pytest.raises(ParamsError, match=r"data: unknown key\(s\) \['1', 'None'\]"):
        parse_params(raw)


def test_a_file_that_is_not_utf8_is_a_params_error(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_bytes(b"data:\n  source: \xff\xfe digits\n")
    with pytest.raises(ParamsError, match="not UTF-8"):
        load_params(path)


def test_digits_with_a_path_is_refused(baseline):
    raw = copy.deepcopy(baseline)
    raw["data"]["path"] = "data/raw/mine.npz"
    with pytest.raises(ParamsError, match="source 'digits' is embedded"):
        parse_params(raw)


def test_npz_bottleneck_is_checked_against_the_loaded_images():
    from genlab.config.params import check_image_shape

    config = parse_params({"data": {}, "models": {"m": {"family": "autoencoder", "latent_dim": 4}}}).models["m"]
    check_image_shape("m", config, (3, 3))
    with pytest.raises(ParamsError, match=r"models.m.latent_dim: 4 is not a bottleneck .* 2x2 = 4 pixels"):
        check_image_shape("m", config, (2, 2))


def test_hyperparameters_are_the_keys_set_plus_the_shared_training_ones_inherited():
    from genlab.config.params import TrainingParams, hyperparameter_count

    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    first = params.models["ae_first_choice"]  # 10 keys besides family, of which 5 shared training settings
    shared = len(TrainingParams.model_fields) - 1  # `seeds`, how often it is trained, is no hyperparameter
    assert hyperparameter_count(first) == {"num_hyperparameters_set": 10, "num_hyperparameters": 10 + shared - 5}
    bare = parse_params({"data": {}, "models": {"m": {"family": "vae"}}}).models["m"]
    assert hyperparameter_count(bare) == {"num_hyperparameters_set": 0, "num_hyperparameters": shared}
