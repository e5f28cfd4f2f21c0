"""The MLflow UI in a real browser: a real `mlflow server` on a free loopback port against the tiny
project's store, opened in headless Chromium (Debian's package) driven by Playwright.

Checks what a user reviews: the runs table in the model-training view lists every model run; a
model run shows its description, its namespaced metrics (a chart section per prefix: train, test,
bias, timing), its datasets and its LoggedModel, and its artifacts include the sample grid as an
image the browser decodes; the experiment's Models tab lists every model with its FID. Screenshots
go to reports/ui/ (git-ignored) for a person to look at.
"""

from __future__ import annotations

import json
import urllib.parse
import urllib.request

import pytest
import services
from pipeline_project import MODELS, PROJECT

from genlab import tracking

pytestmark = pytest.mark.e2e

SCREENSHOTS = PROJECT / "reports" / "ui"
MODEL_TRAINING = "workflowType=machine_learning"  # MLflow 3's "Model training" view, not the GenAI one


def api(address: str, path: str, body: dict | None = None) -> dict:
    request = urllib.request.Request(f"{address}/api/2.0/mlflow/{path}", method="POST" if body else "GET",
                                     data=json.dumps(body).encode() if body else None,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.load(response)


@pytest.fixture(scope="module")
def browser():
    with services.chromium() as launched:
        yield launched


@pytest.fixture(scope="module")
def ui(project, tmp_path_factory):
    root, _ = project
    log = tmp_path_factory.mktemp("mlflow-ui") / "server.log"
    with services.mlflow_server(f"sqlite:///{root / 'mlflow.db'}", root / "mlartifacts", log) as address:
        yield address


def test_the_ui_lists_the_model_runs_and_shows_their_metrics_and_images(ui, browser):
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    experiment = api(ui, "experiments/get-by-name?experiment_name=genlab")["experiment"]
    assert {"key": "mlflow.experimentKind", "value": "custom_model_development"} in experiment["tags"]
    runs = api(ui, "runs/search", {"experiment_ids": [experiment["experiment_id"]], "max_results": 1000,
                                   "filter": "attributes.status = 'FINISHED'"})["runs"]
    run_ids = {run["info"]["run_name"]: run["info"]["run_id"] for run in runs}
    assert set(MODELS) <= set(run_ids)

    page = browser.new_page(viewport={"width": 1600, "height": 1000})
    page.goto(tracking.runs_url(ui, experiment["experiment_id"]))  # the link that make ui and make run print
    for name in MODELS:  # the runs table in the model-training view names every model
        page.get_by_text(name, exact=True).first.wait_for(timeout=60_000)
    page.screenshot(path=SCREENSHOTS / "experiment.png")

    run_page = f"{ui}/#/experiments/{experiment['experiment_id']}/runs/{run_ids['vae_c']}"
    page.goto(f"{run_page}?{MODEL_TRAINING}")
    for shown in ("test/fid", "test/bce", "bias/amplification", "restore/identity_kept", "train/val_loss",  # metrics,
                  "digits-train", "Logged models (1)"):  # its Datasets section and its LoggedModel
        page.get_by_text(shown, exact=False).first.wait_for(timeout=60_000)
    description = api(ui, f"runs/get?run_id={run_ids['vae_c']}")["run"]["data"]["tags"]
    description = next(tag["value"] for tag in description if tag["key"] == "mlflow.note.content")
    page.get_by_text(description.split(": ", 1)[1][:40]).first.wait_for(timeout=60_000)  # shown as its description
    page.screenshot(path=SCREENSHOTS / "run.png", full_page=True)

    page.goto(f"{run_page}/model-metrics?{MODEL_TRAINING}")  # one chart section per prefix of the metric keys
    for section in ("train", "test", "interval", "bias", "restore", "timing"):
        page.get_by_text(section, exact=True).first.wait_for(timeout=60_000)
    page.screenshot(path=SCREENSHOTS / "charts.png")

    page.goto(f"{run_page}/artifacts/{urllib.parse.quote('evaluation/samples.png')}?{MODEL_TRAINING}")
    page.get_by_text("samples.png", exact=True).first.wait_for(timeout=60_000)
    page.get_by_text("restore_upsample.png", exact=True).first.wait_for(timeout=60_000)  # the restorations beside it
    shown = page.locator("img[src^='blob:']").first  # the artifact, fetched from the server and decoded
    shown.wait_for(timeout=60_000)
    assert shown.evaluate("image => image.naturalWidth") > 100
    page.screenshot(path=SCREENSHOTS / "artifact.png")
    page.close()

    wide = browser.new_page(viewport={"width": 2600, "height": 900})  # the Models tab: every model, its FID beside
    wide.goto(f"{ui}/#/experiments/{experiment['experiment_id']}/models?{MODEL_TRAINING}")
    wide.get_by_text("test/fid", exact=True).first.wait_for(timeout=60_000)
    for name in MODELS:
        wide.get_by_text(name, exact=True).first.wait_for(timeout=60_000)
        fid = api(ui, f"runs/get?run_id={run_ids[name]}")["run"]["data"]["metrics"]
        fid = next(metric["value"] for metric in fid if metric["key"] == "test/fid")
        wide.get_by_text(str(fid), exact=True).first.wait_for(timeout=60_000)
    wide.screenshot(path=SCREENSHOTS / "models.png")
    wide.close()
    assert all((SCREENSHOTS / f"{name}.png").stat().st_size > 10_000
               for name in ("experiment", "run", "charts", "artifact", "models"))
