"""The judge classifier, autoencoders as generators, and the champion as an MLflow pyfunc."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from genlab.config.params import AutoencoderParams, JudgeParams  # noqa: E402
from genlab.data.splits import Split  # noqa: E402
from genlab.evaluation import judge as judges  # noqa: E402
from genlab.models.registry import build_model, load_model, save_model  # noqa: E402
from genlab.training import devices, fit  # noqa: E402


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    found = load_digits()
    order = np.random.default_rng(0).permutation(len(found.target))  # the later writers are harder: mix them
    return (found.images[order] / 16.0).astype(np.float32), found.target[order]


def test_judge_learns_the_digits_and_survives_save_load(digits, tmp_path):
    x, y = digits
    config = JudgeParams(hidden_units=(64, 32), learning_rate=0.005, epochs=20, early_stopping_patience=None)
    devices.set_seed(0)
    judge = judges.build(config, (8, 8), 10)
    fit.fit(judge.classifier, x[:1200], x[1200:1500], epochs=config.epochs, batch_size=64,
                 targets=(y[:1200], y[1200:1500]))
    assert judge.accuracy(x[1500:], y[1500:]) > 0.9
    features, probabilities = judge.look(x[1500:])
    assert features.shape == (len(x) - 1500, 32)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    judges.save(judge, config, (8, 8), 10, tmp_path)
    reloaded_features, reloaded_probabilities = judges.load(tmp_path).look(x[1500:])
    np.testing.assert_array_equal(reloaded_features, features)
    np.testing.assert_array_equal(reloaded_probabilities, probabilities)


def test_judge_is_convolutional_for_larger_images():
    judge = judges.build(JudgeParams(conv_filters=(4, 8), hidden_units=(16,)), (16, 16), 3)
    assert any(isinstance(layer, keras.layers.Conv2D) for layer in judge.classifier.layers)
    assert judge.look(np.zeros((2, 16, 16), np.float32))[0].shape == (2, 16)


def test_autoencoder_samples_from_a_gaussian_fitted_to_its_codes(digits, tmp_path):
    x, y = digits
    config = AutoencoderParams(family="autoencoder", hidden_units=(16,), latent_dim=3, epochs=3)
    devices.set_seed(0)
    model = build_model(config, (8, 8))
    fit.fit(model, x[:512], x[512:600], epochs=3, batch_size=64)
    model.after_training(Split(x[:512], y[:512]))
    codes = model.encode(x[:512]).astype(np.float64)
    np.testing.assert_allclose(np.asarray(model.latent_mean), codes.mean(axis=0), atol=1e-5)
    scale = np.asarray(model.latent_scale, dtype=np.float64)
    np.testing.assert_allclose(scale @ scale.T, np.cov(codes, rowvar=False), atol=1e-4)
    samples = model.sample(6, seed=1)
    assert samples.shape == (6, 8, 8) and samples.min() >= 0 and samples.max() <= 1
    np.testing.assert_array_equal(samples, model.sample(6, seed=1))
    save_model(model, config, (8, 8), tmp_path)
    np.testing.assert_array_equal(load_model(tmp_path)[0].sample(6, seed=1), samples)


def test_a_model_is_a_logged_model_loaded_without_pickle_and_registered_as_champion(digits, tmp_path, monkeypatch):
    import mlflow

    from genlab import tracking

    # set, not deleted: mlflow.set_tracking_uri exports the variable, and monkeypatch then removes it
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    x, y = digits
    config = AutoencoderParams(family="autoencoder", hidden_units=(16,), latent_dim=3, epochs=1)
    model = build_model(config, (8, 8))
    fit.fit(model, x[:200], x[200:264], epochs=1, batch_size=64)
    model.after_training(Split(x[:200], y[:200]))
    (tmp_path / "model").mkdir()
    save_model(model, config, (8, 8), tmp_path / "model")
    experiment_id = tracking.setup("registry-test")
    with tracking.run(experiment_id, run_name="ae") as run_id:
        tracking.log_metrics({"train/loss": 0.5}, step=1)  # the last epoch's: MLflow links it to the model
        model_id = tracking.log_generator(tmp_path / "model", "ae", (8, 8), step=1)
        tracking.log_metrics({"test/fid": 3.0}, model_id=model_id)
    logged = mlflow.get_logged_model(model_id)
    assert logged.source_run_id == run_id and logged.name == "ae"
    assert {metric.key: metric.value for metric in logged.metrics} == {"train/loss": 0.5, "test/fid": 3.0}
    assert not list((tmp_path / "mlartifacts").rglob("*.pkl"))  # models-from-code: nothing pickled
    with tracking.run(experiment_id, run_name="comparison"):
        version = tracking.register_champion(model_id, "digits-generator")
    assert version == "1"
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")
    loaded = mlflow.pyfunc.load_model("models:/digits-generator@champion")
    images = loaded.predict({"num_images": 5, "seed": 3})
    assert np.asarray(images).shape == (5, 8, 8)
    np.testing.assert_allclose(np.asarray(images), model.sample(5, seed=3), atol=1e-6)
    np.testing.assert_allclose(loaded.unwrap_python_model().reconstruct(x[:4]), model.reconstruct(x[:4]), atol=1e-6)
