"""The end of `make run`: the comparison table, where each report is, and how to open the MLflow UI."""

from __future__ import annotations

from pathlib import Path

REPORTS = {
    "data validation (great-expectations)": "reports/validation/",
    "representation audit": "reports/audit/",
    "loss curves and diagnosis, per model": "reports/train/<model>.csv and .png",
    "evaluation, per model": "reports/eval/<model>.json and reports/eval/<model>/",
    "comparison": "reports/compare/comparison.md (also .csv and figures)",
}


def main() -> None:
    table = Path("reports/compare/comparison.md")
    if table.is_file():
        print("\n" + table.read_text())
    print("Reports:")
    for what, where in REPORTS.items():
        print(f"  {what:<40} {where}")
    print("\nMLflow UI (runs, loss curves, reconstruction grids, the comparison run):")
    print("  make ui        # then open http://127.0.0.1:5000")
    print("DVC: dvc metrics show | dvc plots show | dvc exp run -S models.ae_sigmoid_bce.latent_dim=4")


if __name__ == "__main__":
    main()
