"""The end of `make run`: the answer and a compact table, where each report is, and how to open the MLflow UI."""

from __future__ import annotations

from pathlib import Path

REPORTS = {
    "data validation (great-expectations)": "reports/validation/",
    "representation audit": "reports/audit/",
    "the judge (classifier of the training split)": "reports/judge.json",
    "loss curves and diagnosis, per model": "reports/train/<model>.csv and .png",
    "evaluation, per model": "reports/eval/<model>.json and reports/eval/<model>/",
    "comparison": "reports/compare/comparison.html (also .md, .csv and figures)",
}
# The columns of the compact table printed here; comparison.md and .csv hold every metric.
SHOWN = ("model", "family", "recommended", "fid", "fid_to_floor", "precision", "recall", "coverage", "classes_covered",
         "sampling_seconds_per_1000", "num_params", "num_hyperparameters", "test_bce")


def runs_url(base_url: str, tab: str = "runs") -> str:
    """Where the UI at `base_url` shows this project's runs, or its `models` (the experiment named in params.yaml)."""
    from genlab import tracking
    from genlab.params import load_params

    return tracking.runs_url(base_url, tracking.setup(load_params("params.yaml").tracking.experiment), tab)


def main(argv: list[str] | None = None) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs-url", metavar="BASE_URL", help="print only the link to the runs table of the UI there")
    args = parser.parse_args(argv)
    if args.runs_url:
        print(runs_url(args.runs_url))
        return
    report = Path("reports/compare/comparison.md")
    table = Path("reports/compare/comparison.csv")
    if report.is_file():
        print("\n" + report.read_text().split("\n## ")[0].strip() + "\n")
    if table.is_file():
        import pandas as pd

        found = pd.read_csv(table)
        shown = found[[column for column in SHOWN if column in found]]
        shown = shown.astype(object).where(shown.notna(), None)  # empty cells, not "nan"
        print(shown.to_markdown(index=False, floatfmt=".4g", missingval="") + "\n")
    print("Reports:")
    for what, where in REPORTS.items():
        print(f"  {what:<45} {where}")
    print("\nMLflow UI (runs, loss curves, sample grids, the comparison run, the registered champion):")
    print(f"  make ui        # then open {runs_url('http://127.0.0.1:5000')}")
    print(f"  every model's metrics side by side (the Models tab): {runs_url('http://127.0.0.1:5000', 'models')}")
    print("DVC: dvc metrics show | dvc plots show | dvc exp run -S models.vae.latent_dim=4")


if __name__ == "__main__":
    main()
