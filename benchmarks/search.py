"""The lecture's study answered: a search of its autoencoder along the cheatsheet, timed, with the figures kept.

    .venv/bin/python benchmarks/search.py                                   # the digits (params.yaml's search)
    .venv/bin/python benchmarks/search.py --config configs/mnist_sample.yaml   # the real MNIST sample
    .venv/bin/python benchmarks/search.py --workers 2                       # two processes on one study

In a scratch copy of the project: `dvc repro judge` (the prepared data and the judge, timed apart), then
`dvc exp run search/dvc.yaml` (timed: the budget is a 20-trial search of one autoencoder on the digits within
3 minutes on 2 cores). Prints the search's answer, and keeps its outputs (cheatsheet.md, axes.csv, trials.csv,
the importance figure and the best trial's metrics) in benchmarks/search/<source>/ for the README.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' scratch project
import sandbox

PROJECT = Path(__file__).resolve().parents[1]
KEPT = ("cheatsheet.md", "axes.csv", "trials.csv", "importance.json", "importance.png", "history.png", "best.yaml")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=PROJECT / "params.yaml", help="a params file with `search:`")
    parser.add_argument("--trials", type=int, help="instead of the config's search.trials")
    parser.add_argument("--workers", type=int, help="instead of the config's search.workers")
    parser.add_argument("--keep", type=Path, help="folder for the outputs (default: benchmarks/search/<source>)")
    args = parser.parse_args()
    params = yaml.safe_load(args.config.read_text())
    if not params.get("search"):
        raise SystemExit(f"{args.config} has no `search:` section")
    for key in ("trials", "workers"):
        if getattr(args, key):
            params["search"][key] = getattr(args, key)
    keep = args.keep or PROJECT / "benchmarks" / "search" / params["data"]["source"]
    with tempfile.TemporaryDirectory(prefix="genlab-search-") as scratch:
        root = sandbox.copy_project(PROJECT, Path(scratch), params)
        started = time.perf_counter()
        sandbox.run(["dvc", "repro", "judge"], root)
        upstream = time.perf_counter() - started
        started = time.perf_counter()
        done = sandbox.run(["dvc", "exp", "run", "search/dvc.yaml"], root)
        seconds = time.perf_counter() - started
        found = json.loads((root / "reports/search.json").read_text())
        keep.mkdir(parents=True, exist_ok=True)
        for name in KEPT:
            if (root / "reports/search" / name).is_file():
                shutil.copy2(root / "reports/search" / name, keep / name)
        trials = (root / "reports/search/trials.csv").read_text().count("\n") - 1
        summary = found | {"source": params["data"]["source"], "model": params["search"]["model"],
                           "workers": params["search"]["workers"], "trials_run": trials,
                           "search_seconds": round(seconds, 1), "prepare_and_judge_seconds": round(upstream, 1)}
        (keep / "search.json").write_text(json.dumps(summary, indent=2) + "\n")
    print("\n".join(line for line in done.stdout.splitlines() if line.startswith("search: ")
                    and not line.startswith("search: trial")))
    print(f"\n{params['data']['source']}: {trials} trials of {params['search']['model']} in {seconds:.1f} s "
          f"(`dvc exp run search/dvc.yaml`, {params['search']['workers']} worker(s)); prepare and judge before it "
          f"{upstream:.1f} s; kept in {keep}")


if __name__ == "__main__":
    main()
