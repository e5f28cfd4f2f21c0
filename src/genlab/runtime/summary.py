"""The end of `make run`: the answer and a compact table, where each report is, and how to open the MLflow UI."""

from __future__ import annotations

import functools
from pathlib import Path

REPORTS = {
    "data validation (great-expectations)": "reports/validation/",
    "representation audit": "reports/audit/",
    "the judge (classifier of the training split)": "reports/judge.json",
    "loss curves and diagnosis, per model": "reports/train/<model>.csv and .png",
    "evaluation, per model": "reports/eval/<model>.json and reports/eval/<model>/",
    "image-to-image restoration, per model": "reports/restore/<model>.json and reports/eval/<model>/restore_*.png",
    "comparison": "reports/compare/comparison.html (also .md, .csv and figures)",
}
# The columns of the compact table printed here, with their short headings; comparison.md and .csv hold every metric.
SHOWN = {"model": "model", "family": "family", "recommended": "recommended", "fid": "FID",
         "fid_to_floor": "x floor", "precision": "precision", "recall": "recall", "classes_covered": "classes",
         "sampling_seconds_per_1000": "s/1000", "num_params": "params", "test_bce": "test BCE",
         "restore_identity_kept": "restored kept"}
WIDTH = 160  # an answer line is cut (at a clause) beyond this; comparison.md has it whole


def shortened(line: str, width: int = WIDTH) -> str:
    """An answer line for the console: without Markdown's bold, cut at the last clause that fits."""
    line = line.replace("**", "")
    if len(line) <= width:
        return line
    cut = max(line.rfind(mark, 0, width) for mark in ("; ", ", ", " ("))
    return line[:cut if cut > width // 2 else width].rstrip(" ;,") + " ..."


@functools.cache
def _experiment_id() -> str:
    from genlab import tracking
    from genlab.config.params import load_params

    return tracking.setup(load_params("params.yaml").tracking.experiment)


def runs_url(base_url: str, tab: str = "runs") -> str:
    """Where the UI at `base_url` shows this project's runs, or its `models` (the experiment named in params.yaml)."""
    from genlab import tracking

    return tracking.runs_url(base_url, _experiment_id(), tab)


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
    found = None
    if table.is_file():
        import pandas as pd

        found = pd.read_csv(table)
    if report.is_file():
        title, _, rest = report.read_text().split("\n## ")[0].strip().partition("\n")
        print(f"\n{title.removeprefix('# ')}  (whole answer: {report})")
        for line in (line.removeprefix("- ") for line in rest.splitlines() if line.startswith("- ")):
            if line.startswith("**Not recommended**") and found is not None and "recommended" in found:
                # the models by name; why: in the table's verdicts and the whole answer
                rejected = ", ".join(found.loc[~found["recommended"].astype(bool), "model"])
                line = f"Not recommended: {rejected} (why: the verdict column of {table})"
            print(f"- {shortened(line)}")
        print()
    if found is not None:
        shown = found[[column for column in SHOWN if column in found]]
        shown = shown.astype(object).where(shown.notna(), None)  # empty cells, not "nan"
        if {"fid_to_floor_low", "fid_to_floor_high"} <= set(found):  # the interval that ranks them
            shown["fid_to_floor"] = [f"{value:.3g} ({low:.3g}-{high:.3g})" for value, low, high in
                                     zip(found["fid_to_floor"], found["fid_to_floor_low"], found["fid_to_floor_high"])]
        shown = shown.rename(columns=SHOWN)
        print(shown.to_markdown(index=False, floatfmt=".3g", missingval="") + "\n")
    print("Reports:")
    for what, where in REPORTS.items():
        print(f"  {what:<45} {where}")
    print("\nMLflow UI (runs, loss curves, sample grids, the comparison run, the registered champion):")
    print(f"  make ui, then open {runs_url('http://127.0.0.1:5000')}")
    print(f"  every model's metrics side by side (the Models tab): {runs_url('http://127.0.0.1:5000', 'models')}")
    print("DVC: dvc metrics show | dvc plots show | dvc exp run -S models.vae.latent_dim=4")


if __name__ == "__main__":
    main()
