"""Pipeline benchmarks on this machine: a forced `dvc repro` of the defaults with the stages as forks of
genlab's warm server and then each in a process of its own (GENLAB_FORKSERVER=0), side by side, each
stage's seconds and peak resident memory, and every model's FID over the floor from both runs; a no-op
`dvc repro`; and the tracking overhead (the same training with and without MLflow). With `--against REV`,
instead: the forced `dvc repro` (warm) of the project as it was at git revision REV and as it is now, side
by side, each stage's seconds and peak memory and every model's FID over the floor from both (issue 16's
before and after: `--against 0ed5aa4`, the code when it was taken up).

    .venv/bin/python benchmarks/pipeline.py [--repeats 3] [--model ae_sigmoid_bce] [--against REV]

Runs in a scratch copy of the project (tests/sandbox.py), never in your workspace, and
prints a Markdown report; `--json PATH` also saves the raw figures. Targets (issues 2 and 16):
full pipeline <= 180 s, each stage <= 2 GB, no-op repro < 5 s, tracking overhead < 10%.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from genlab.runtime import forkserver

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' scratch project
import sandbox

PROJECT = Path(__file__).resolve().parents[1]


class PeakMemory:
    """Polls the process tree of a running command every 50 ms and keeps each stage's peak resident set
    size (its `python -m genlab.stages.<stage> [model]` process, named as DVC names the stage)."""

    def __init__(self, pid: int) -> None:
        self.pid, self.peaks, self.done = pid, {}, threading.Event()
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    @staticmethod
    def stage_of(command: list[str]) -> str | None:
        module = next((part for part in command if part.startswith("genlab.stages.")), None)
        if module is None:
            return None
        stage = module.removeprefix("genlab.stages.")
        following = command[command.index(module) + 1:]
        return f"{stage}@{following[0]}" if following and not following[0].startswith("-") else stage

    def _poll(self) -> None:
        import psutil

        while not self.done.wait(0.05):
            try:
                children = psutil.Process(self.pid).children(recursive=True)
            except psutil.NoSuchProcess:
                return
            for child in children:
                try:
                    stage = self.stage_of(child.cmdline())
                    if stage:
                        self.peaks[stage] = max(self.peaks.get(stage, 0), child.memory_info().rss)
                except psutil.Error:
                    continue

    def stop(self) -> dict[str, float]:
        """Each stage's peak RSS in MB."""
        self.done.set()
        self.thread.join()
        return {stage: peak / 2**20 for stage, peak in self.peaks.items()}


def full_repro(root: Path, warm: bool = True, tag: str = "") -> tuple[float, dict[str, float], dict[str, float]]:
    """Wall time of a forced `dvc repro`, the seconds from each stage's start to the next's, and each
    stage's peak resident memory in MB. `warm`: the stages run as forks of genlab's warm server (the
    default; the kernel's peak RSS of each fork, which counts the libraries it shares with the server);
    otherwise each in a process of its own (GENLAB_FORKSERVER=0; polled). Each `tag` starts a server of its
    own, cold, in the run's first stage."""
    report = root / "stage-report.jsonl"
    report.unlink(missing_ok=True)
    env = sandbox.environment(root) | {forkserver.SWITCH_ENV: "1" if warm else "0", forkserver.REPORT_ENV: str(report),
                                       "GENLAB_FORKSERVER_TAG": f"benchmark-{os.getpid()}-{tag}"}  # a cold server
    started = time.perf_counter()
    marks: list[tuple[str, float]] = []
    process = subprocess.Popen(["dvc", "repro", "--force"], cwd=root, env=env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    memory = PeakMemory(process.pid)
    for line in process.stdout:
        found = re.match(r"Running stage '([^']+)'", line)
        if found:
            marks.append((found.group(1), time.perf_counter()))
    if process.wait() != 0:
        raise RuntimeError("dvc repro failed")
    total = time.perf_counter() - started
    ends = [moment for _, moment in marks[1:]] + [started + total]
    peaks = memory.stop()
    if report.exists():
        peaks = {line["stage"]: line["max_rss_mb"] for line in map(json.loads, report.read_text().splitlines())}
        report.unlink()
    return total, {stage: end - begun for (stage, begun), end in zip(marks, ends)}, peaks


def fid_to_floor(root: Path) -> dict[str, float]:
    """Each model's FID over the data floor, from the evaluate stages' metrics."""
    return {path.stem: json.loads(path.read_text())["fid_to_floor"]
            for path in sorted((root / "reports/eval").glob("*.json"))}


def print_stages(sides: dict[str, tuple[float, dict[str, float], dict[str, float]]],
                 ratio: tuple[str, str] | None = None) -> None:
    """The stage table, one column pair per side (seconds, peak RSS), and a ratio column: the seconds of
    the side `ratio[0]` over those of `ratio[1]` (by default the first two sides)."""
    names = list(sides)
    numerator, denominator = (names.index(name) for name in (ratio or names[:2]))
    print(f"# genlab benchmark ({os.cpu_count()} CPUs)\n")
    for name, (total, _, _) in sides.items():
        print(f"Forced `dvc repro` of the defaults, {name}: **{total:.1f} s** (target 180 s)\n")
    print("| stage | " + " | ".join(f"{name}: seconds | {name}: peak RSS (MB)" for name in names)
          + (" | ratio |" if len(names) > 1 else " |"))
    print("|:--|" + "--:|--:|" * len(names) + ("--:|" if len(names) > 1 else ""))
    stages = list(next(iter(sides.values()))[1])
    for stage in stages + ["total"]:
        cells, seconds = [], []
        for total, timed, peaks in sides.values():
            value = total if stage == "total" else timed.get(stage, float("nan"))
            seconds.append(value)
            cells.append(f"{value:.1f} | {'' if stage == 'total' else format(peaks.get(stage, float('nan')), '.0f')}")
        shown = f" | {seconds[numerator] / seconds[denominator]:.2f}" if len(seconds) > 1 else ""
        print(f"| {stage} | " + " | ".join(cells) + shown + " |", flush=True)


def print_quality(quality: dict[str, dict[str, float]], heading: str) -> None:
    """Each model's FID over the data floor, one column per side."""
    print(f"\n{heading}\n\n| model | " + " | ".join(quality) + " |\n|:--|" + "--:|" * len(quality))
    for model in list(quality.values())[-1]:
        print(f"| {model} | " + " | ".join(f"{found.get(model, float('nan')):.2f}" for found in quality.values())
              + " |")


def noop_repro(root: Path, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        sandbox.run(["dvc", "repro"], root)
        times.append(time.perf_counter() - started)
    return times


@contextlib.contextmanager
def tracking_disabled():
    """Replace every logging call of genlab.tracking with a no-op, for the 'without MLflow' side."""
    from genlab import tracking

    @contextlib.contextmanager
    def no_run(*args, **kwargs):
        yield "untracked"

    class NoBuffer:
        def add(self, *args, **kwargs):
            pass

        def flush(self):
            pass

    replaced = {"setup": lambda *a, **k: "0", "run": no_run, "provenance_tags": lambda *a, **k: {},
                "MetricBuffer": NoBuffer}
    replaced |= {name: (lambda *a, **k: None) for name in ("log_params", "log_metrics", "set_tags", "tag_run",
                                                           "log_image", "log_artifacts", "log_table", "log_splits",
                                                           "describe", "log_generator", "log_to_run")}
    replaced |= {"run_continuable": lambda *a, **k: False, "metric_steps": lambda *a, **k: set()}
    saved = {name: getattr(tracking, name) for name in replaced}
    for name, function in replaced.items():
        setattr(tracking, name, function)
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(tracking, name, function)


def tracking_overhead(root: Path, model: str, repeats: int) -> dict[str, list[float]]:
    """The train stage in this process, alternating with and without MLflow, `repeats` times each."""
    import yaml

    from genlab.stages import train

    # one seed: the further seeds train in a forked process, and this process has run TensorFlow already
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["models"][model]["seeds"] = 1
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    previous = Path.cwd()
    os.chdir(root)
    os.environ["DVC_ROOT"] = str(root)
    argv = [model, "--data", "data/prepared", "--out", "bench/model", "--history", "bench/history.csv",
            "--figure", "bench/loss.png"]
    with contextlib.redirect_stdout(io.StringIO()):
        train.main(argv)  # warm-up: TF graph tracing, the SQLite store's first migration
    times: dict[str, list[float]] = {"without": [], "with": []}
    for _ in range(repeats):
        for side in ("without", "with"):
            started = time.perf_counter()
            with tracking_disabled() if side == "without" else contextlib.nullcontext():
                with contextlib.redirect_stdout(io.StringIO()):  # Keras's per-epoch lines
                    train.main(argv)
            times[side].append(time.perf_counter() - started)
    os.chdir(previous)
    del os.environ["DVC_ROOT"]
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="ae_sigmoid_bce", help="the model whose training is timed for overhead")
    parser.add_argument("--json", type=Path, help="also save the raw figures here")
    parser.add_argument("--against", metavar="REV", help="a git revision whose project is run beside this one")
    args = parser.parse_args()
    if args.against:
        return before_and_after(args.against, args.json)

    with tempfile.TemporaryDirectory(prefix="genlab-bench-") as scratch:
        root = sandbox.copy_project(PROJECT, Path(scratch))
        sandbox.run(["dvc", "repro", "prepare"], root)  # the first stage of either side pays no one-off cost
        sides, quality = {}, {}
        for name, warm in (("warm", True), ("own process", False)):
            sides[name] = full_repro(root, warm=warm, tag=name.replace(' ', '-'))
            quality[name] = fid_to_floor(root)
        print_stages(sides)
        print_quality(quality, "Each model's FID over the data floor, both runs (the same seeds; a difference is "
                               "run-to-run noise):")
        sandbox.commit(root, "after repro")
        noop = noop_repro(root, args.repeats)
        overhead = tracking_overhead(root, args.model, args.repeats)

    without, with_ = statistics.median(overhead["without"]), statistics.median(overhead["with"])
    report = {"cpu_count": os.cpu_count(), "python": sys.version.split()[0],
              "sides": {name: {"full_repro_seconds": total, "stage_seconds": timed, "stage_peak_rss_mb": peaks}
                        for name, (total, timed, peaks) in sides.items()},
              "fid_to_floor": quality, "noop_repro_seconds": noop, "train_seconds": overhead,
              "tracking_overhead": with_ / without - 1}
    print(f"\nNo-op `dvc repro`: median **{statistics.median(noop):.2f} s** of {[round(t, 2) for t in noop]} "
          f"(target < 5 s)\n")
    print(f"Tracking overhead, train@{args.model} in one process, alternating: without MLflow median "
          f"{without:.2f} s {[round(t, 2) for t in overhead['without']]}, with MLflow {with_:.2f} s "
          f"{[round(t, 2) for t in overhead['with']]}: **{with_ / without - 1:+.1%}** (target < 10%)")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


def before_and_after(revision: str, json_path: Path | None) -> None:
    """The forced `dvc repro` (warm) of the project at `revision`, then of this one, in scratch copies."""
    sides, quality = {}, {}
    with tempfile.TemporaryDirectory(prefix="genlab-bench-") as scratch:
        old_tree = Path(scratch) / "tree"
        old_tree.mkdir()
        archive = subprocess.run(["git", "archive", revision], cwd=PROJECT, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(old_tree)], input=archive, check=True)
        for name, source in ((revision, old_tree), ("now", PROJECT)):
            root = sandbox.copy_project(source, Path(scratch) / name.replace("/", "_"))
            sandbox.run(["dvc", "repro", "prepare"], root)
            sides[name] = full_repro(root, warm=True, tag=name)
            quality[name] = fid_to_floor(root)
    print_stages(sides, ratio=("now", revision))
    print_quality(quality, "Each model's FID over the data floor, both runs:")
    if json_path:
        json_path.write_text(json.dumps({name: {"full_repro_seconds": total, "stage_seconds": timed,
                                                "stage_peak_rss_mb": peaks, "fid_to_floor": quality[name]}
                                         for name, (total, timed, peaks) in sides.items()}, indent=2) + "\n")


if __name__ == "__main__":
    main()
