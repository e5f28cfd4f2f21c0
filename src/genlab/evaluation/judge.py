"""The judge: a classifier of the real training split that measures every model the same way.

"Which generative AI is right for you?" needs one ruler for all families. The judge is
trained once on the real training split (the `judge` stage); its last hidden layer gives
the features in which FID, KID, precision and recall compare generated images with the
test split, and its predictions label generated images, so that a model's class coverage
can be counted. Like the families, it is dense for the 8x8 digits and convolutional for
larger images (`network: auto`).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import keras
import numpy as np

from genlab.config.params import JudgeParams
from genlab.models.networks import build_encoder_trunk, optimizer, predict_in_batches

WEIGHTS_FILE = "judge.weights.h5"
CONFIG_FILE = "config.json"
FEATURES_LAYER = "features"


class Judge:
    """A compiled classifier and a view of it that returns (features, class probabilities)."""

    def __init__(self, classifier: keras.Model):
        self.classifier = classifier
        self.viewer = keras.Model(classifier.input, [classifier.get_layer(FEATURES_LAYER).output,
                                                      classifier.output], name="judge_view")
        self._seen: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}

    def look(self, images: np.ndarray, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """(features, probabilities) of images: (N, F) and (N, classes), in inference mode. The same images are
        looked at once: the test and training splits, measured against every seed of a model."""
        images = np.ascontiguousarray(images)
        key = (images.shape, images.dtype.str, hashlib.sha1(images.data).digest())
        if key not in self._seen:
            features, probabilities = predict_in_batches(self.viewer, images, batch_size)
            self._seen[key] = features.astype(np.float64), probabilities
        features, probabilities = self._seen[key]
        return features.copy(), probabilities.copy()

    def accuracy(self, images: np.ndarray, labels: np.ndarray) -> float:
        return float(np.mean(self.look(images)[1].argmax(axis=1) == labels))


def build(config: JudgeParams, image_shape: tuple[int, int], num_classes: int) -> Judge:
    """images -> (random shifts while training) -> (strided convolutions) -> hidden Dense layers, the last
    named `features` -> softmax."""
    conv_filters = config.conv_filters if config.network_for(image_shape) == "conv" else ()
    images = keras.Input(shape=image_shape, name="image")
    h = images
    if config.augment_shift > 0:  # random shifts while training only: 3,500 MNIST images are few for a CNN
        h = keras.layers.Reshape((*image_shape, 1))(h)
        h = keras.layers.RandomTranslation(config.augment_shift, config.augment_shift, fill_mode="constant",
                                           seed=config.seed, name="augment")(h)
        h = keras.layers.Reshape(image_shape)(h)
    h = build_encoder_trunk(h, config.hidden_units[:-1], "relu", conv_filters)
    h = keras.layers.Dropout(config.dropout, seed=config.seed)(h)
    features = keras.layers.Dense(config.hidden_units[-1], activation="relu", name=FEATURES_LAYER)(h)
    h = keras.layers.Dropout(config.dropout, seed=config.seed)(features)
    probabilities = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(h)
    classifier = keras.Model(images, probabilities, name="judge")
    classifier.compile(optimizer=optimizer(config), loss="sparse_categorical_crossentropy",
                       metrics=["accuracy"], steps_per_execution=32)
    return Judge(classifier)


def save(judge: Judge, config: JudgeParams, image_shape: tuple[int, int], num_classes: int,
         directory: str | Path) -> None:
    directory = Path(directory)
    judge.classifier.save_weights(directory / WEIGHTS_FILE)
    payload = {"judge": config.model_dump(mode="json"), "image_shape": list(image_shape), "num_classes": num_classes}
    (directory / CONFIG_FILE).write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")


def load(directory: str | Path) -> Judge:
    directory = Path(directory)
    payload = json.loads((directory / CONFIG_FILE).read_text())
    judge = build(JudgeParams.model_validate(payload["judge"]), tuple(payload["image_shape"]), payload["num_classes"])
    judge.classifier.optimizer.build(judge.classifier.trainable_variables)
    judge.classifier.load_weights(directory / WEIGHTS_FILE)
    return judge


def test_report(judge: Judge, x_test: np.ndarray, y_test: np.ndarray, num_classes: int, result, config: JudgeParams
                ) -> dict:
    """The judge's measures of itself: test accuracy overall and per class, its size, training and features."""
    from genlab.evaluation import metrics

    correct = (judge.look(x_test)[1].argmax(axis=1) == y_test).astype(np.float64)
    return {"test_accuracy": float(correct.mean()),
            "per_class_accuracy": metrics.per_class_mean(correct, y_test, num_classes),
            "num_params": judge.classifier.count_params(), "train_seconds": round(result.seconds, 3),
            "epochs_trained": len(result.history["loss"]), "feature_dim": config.hidden_units[-1]}


def per_class_table(results: dict):
    """The test accuracy per class, as a table."""
    import pandas as pd

    return pd.DataFrame({"class": list(results["per_class_accuracy"]),
                         "test_accuracy": list(results["per_class_accuracy"].values())})


def describe(results: dict) -> str:
    """The judge run's description: its accuracy and its worst class."""
    per_class = results["per_class_accuracy"]
    worst = min(per_class, key=per_class.get)
    return (f"The judge: a classifier whose features and labels measure every model. Test accuracy "
            f"{results['test_accuracy']:.4f} after {results['epochs_trained']} epochs; worst class {worst} "
            f"({per_class[worst]:.3f}).")
