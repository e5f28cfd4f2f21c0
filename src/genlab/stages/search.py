"""DVC stage `search` (search/dvc.yaml, not part of `dvc repro`): "Lots of hyperparameters! What to choose?"

An Optuna search over one model entry (`search:` in params.yaml, genlab.training.search): trials that train the
entry with values drawn from `search.space`, scored on the validation split, the laggards stopped early. Writes
the best trial (`--metrics`, which `dvc exp show` lists: its objective and values) and a folder (`--out`) with
every trial (trials.csv), each axis by value (axes.csv), the answer "which of the cheatsheet's choices mattered"
(cheatsheet.md), the best entry and the one command that trains it as a DVC experiment (best.yaml), and Optuna's
figures. In MLflow the study is a run with the trials nested under it.

    dvc exp run search/dvc.yaml                       # or: dvc repro search/dvc.yaml; make search
    dvc exp run search/dvc.yaml -S search.trials=50   # a longer search

Workers: `search.workers` processes on this machine share the study (a journal file under .genlab/search/).
Across machines, point all of them at one database and one tracking server: the stage on one machine, and
`python -m genlab.stages.search --worker` (the same arguments) on the others, each with
`GENLAB_SEARCH_STORAGE=postgresql://...` and `MLFLOW_TRACKING_URI=http://...`. A rerun with the same settings
resumes an interrupted study; the journal file goes once the outputs are written.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

from genlab import tracking
from genlab.config.params import ParamsError, check_image_shape, load_params
from genlab.config.space import check_space, label, raw_value, settings_of
from genlab.data import splits
from genlab.data.sources import DataError
from genlab.runtime.files import atomic_dir, write_json
from genlab.runtime.stage import argument_parser, run_stage
from genlab.tracking import search as recorded  # MLflow itself is imported when a run is logged

JOURNAL_DIR = Path(".genlab") / "search"  # the default storage: a journal file per study, beside the workspace
STORAGE_VARIABLE = "GENLAB_SEARCH_STORAGE"
JOIN_TIMEOUT_SECONDS = 300  # how long a worker waits for the study to be created
PARENT_VARIABLE = "GENLAB_SEARCH_PARENT"  # a local worker's: the search process it ends with


def main(argv: list[str] | None = None) -> None:
    parser = argument_parser(__doc__)
    parser.add_argument("--judge", required=True, help="the judge's folder (its features score the samples)")
    parser.add_argument("--out", required=True, help="folder for the trials, the answer and the figures")
    parser.add_argument("--metrics", required=True, help="JSON of the best trial (DVC metrics)")
    parser.add_argument("--storage", default=os.environ.get(STORAGE_VARIABLE),
                        help=f"the study's storage: a database URL (postgresql://...) or a journal file "
                             f"(${STORAGE_VARIABLE}; default: {JOURNAL_DIR}/<study>.journal)")
    parser.add_argument("--study", help="the study's name (default: the model and a fingerprint of the search)")
    parser.add_argument("--worker", action="store_true",
                        help="join the study another process started, run trials until it has enough, and leave")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    if params.search is None:
        raise ParamsError(f"{args.params} has no `search:` section: name the model and the space to search "
                          f"(README, \"What to choose?\")")
    search = params.search
    base = params.models[search.model]
    prepared = splits.load_prepared(args.data)
    check_image_shape(search.model, base, prepared.image_shape)
    try:
        check_space(base, search, prepared.image_shape)
    except ValueError as error:
        raise ParamsError(str(error)) from None
    experiment_id = tracking.setup(params.tracking.experiment)
    from genlab.training import search as searching

    judge_weights = Path(args.judge) / "judge.weights.h5"
    if search.objective == "fid_to_floor" and not judge_weights.is_file():
        raise DataError(f"{judge_weights}: the objective fid_to_floor needs the judge; run `dvc repro judge`")
    if args.worker and os.environ.get(PARENT_VARIABLE):  # a local worker started by the search: it ends with it
        from genlab.runtime.parallel import die_with_parent

        die_with_parent(signal.SIGTERM, int(os.environ[PARENT_VARIABLE]))
    data_md5 = splits.data_hash(args.data)
    name = args.study or searching.study_name(search, base, data_md5, _md5(judge_weights))
    url = args.storage or str(JOURNAL_DIR / f"{name}.journal")
    try:
        storage = searching.open_storage(url, search.heartbeat_seconds, search.stale_after_seconds, on_stale=fail_run)
    except searching.StorageError as error:
        raise tracking.TrackingUnavailable(str(error)) from None
    tags = tracking.provenance_tags("search", data_md5)
    if args.worker:
        study = join(storage, name, search)
        run_id = study.user_attrs[searching.RUN_ATTR]
    else:
        study = searching.open_study(storage, name, search, create=True, sampler_seed=search.seed)
        run_id = recorded.study_run(experiment_id, name, search.model, tags,
                                             study.user_attrs.get(searching.RUN_ATTR))
        study.set_user_attr(searching.RUN_ATTR, run_id)
    trial = searching.Trial(base, search, prepared, quality(search, args.judge, prepared, params.evaluate.num_samples),
                            params.train.diagnosis,
                            recorded.TrialRecorder(experiment_id, run_id, name, search.objective, tags))
    if args.worker:
        ran = searching.work(study, trial, search.trials, wait=False, on_fail=fail_run)
        print(f"search worker: {ran} trials of study {name}")
        return
    helpers = start_workers(search.workers - 1, argv if argv is not None else sys.argv[1:], url, name)
    print(f"search: study {name} of models.{search.model}, {search.trials} trials by {search.objective} "
          f"({search.workers} worker{'s' if search.workers > 1 else ''}; storage {tracking.redacted(url)})")
    try:
        try:
            searching.work(study, trial, search.trials, wait=True, on_fail=fail_run)
        except BaseException:  # an error or Ctrl-C here: the local workers stop with it
            for helper in helpers:
                helper.terminate()
            raise
        finally:
            stop_workers(helpers)
        write_outputs(args, study, search, base, run_id)
    except BaseException as error:  # the study's run says so; a rerun with the same settings resumes the study
        recorded.end_study_run(run_id, f"{type(error).__name__}: {error}",
                                        killed=isinstance(error, KeyboardInterrupt))
        raise
    if not args.storage:
        Path(url).unlink(missing_ok=True)  # the study is in the outputs now; a rerun starts afresh


def _md5(path: Path) -> str | None:
    return hashlib.md5(path.read_bytes()).hexdigest() if path.is_file() else None


def quality(search, judge_dir: str, prepared, num_samples: int):
    """The objective fid_to_floor's measure (the judge loaded), or None for val_loss."""
    if search.objective != "fid_to_floor":
        return None
    from genlab.evaluation import judge
    from genlab.evaluation.outputs import SAMPLE_SEED
    from genlab.training.search import ValidationQuality

    return ValidationQuality(judge.load(judge_dir), prepared, num_samples, SAMPLE_SEED)


def join(storage, name: str, search):
    """The study another process created (its MLflow run recorded), waited for up to JOIN_TIMEOUT_SECONDS."""
    from genlab.training import search as searching

    deadline = time.monotonic() + JOIN_TIMEOUT_SECONDS
    while True:
        try:
            study = searching.open_study(storage, name, search, create=False, sampler_seed=None)
            if searching.RUN_ATTR in study.user_attrs:
                return study
        except KeyError:  # optuna: no such study yet
            pass
        if time.monotonic() > deadline:
            raise ParamsError(f"no study {name!r} in the storage after {JOIN_TIMEOUT_SECONDS} s: start the search "
                              f"(the stage, without --worker) with the same params.yaml and storage first")
        time.sleep(1.0)


def fail_run(trial) -> None:
    """A trial failed because its worker died: its nested run, left running, is marked failed."""
    from genlab.training.search import RUN_ATTR, WORKER_ATTR

    print(f"search: trial {trial.number} failed: its worker {trial.user_attrs.get(WORKER_ATTR, '?')} is gone",
          file=sys.stderr)
    recorded.fail_trial_run(trial.user_attrs.get(RUN_ATTR), "its worker stopped before the trial ended")


def start_workers(count: int, argv: list[str], storage: str, study: str) -> list[subprocess.Popen]:
    """`count` worker processes on this machine, on the same study; each dies with this one (PARENT_VARIABLE).
    Each is a process of its own, not a stage DVC runs: no warm stage server, no outputs to put back."""
    command = [sys.executable, "-m", "genlab.stages.search", *argv, "--worker", "--storage", storage, "--study", study]
    environment = {key: value for key, value in os.environ.items() if key != "DVC_STAGE"} | {
        "GENLAB_FORKSERVER": "0", PARENT_VARIABLE: str(os.getpid())}
    return [subprocess.Popen(command, env=environment) for _ in range(count)]


def stop_workers(workers: list[subprocess.Popen], seconds: float = 60) -> None:
    """Wait for the local workers, which end once the study has its trials; stop one that does not in `seconds`
    (SIGTERM, then SIGKILL). A worker that failed is told on the console: its trials were run by the others."""
    for worker in workers:
        try:
            worker.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            worker.terminate()
            try:
                worker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        if worker.returncode not in (0, -signal.SIGTERM):
            print(f"search: a local worker exited with status {worker.returncode}; the others ran its share",
                  file=sys.stderr)


def best_trial(study) -> dict | None:
    import optuna

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete:
        return None
    best = min(complete, key=lambda trial: (trial.value, trial.number))
    return {"trial": best.number, "objective": best.value, "values": best.params}


def apply_command(model: str, values: dict, space: dict) -> str:
    """The `dvc exp run` that trains the model with the best values, as a DVC experiment of the main pipeline."""
    import shlex

    settings = {}
    for name, value in values.items():
        settings |= settings_of(name, space[name], raw_value(space[name], value))
    return "dvc exp run " + " ".join(
        f"-S {shlex.quote(f'models.{model}.{key}={yaml.safe_dump(value, default_flow_style=True).strip()}')}"
        .replace("\n...", "") for key, value in settings.items())


def write_outputs(args, study, search, base, run_id: str) -> None:
    from genlab.evaluation import cheatsheet, plots

    table = cheatsheet.trials_table(study, search.space)
    shares = cheatsheet.importances(study, search.seed)
    values = cheatsheet.by_value(table, search.space)
    best = best_trial(study)
    answer = cheatsheet.answer(search.model, search.objective, shares, values, search.space, best)
    counted = table["state"].value_counts().to_dict()
    metrics = {"objective": search.objective, "best_value": best["objective"] if best else None,
               "best_trial": best["trial"] if best else None,
               **{f"trials_{state}": int(counted.get(state, 0)) for state in ("complete", "pruned", "fail")},
               "best": {name: label(value) for name, value in (best["values"] if best else {}).items()},
               "importance": {name: round(share, 4) for name, share in shares.items()}}
    command = apply_command(search.model, best["values"], search.space) if best else None
    with atomic_dir(args.out) as staging:
        table.to_csv(staging / "trials.csv", index=False, float_format="%.6g")
        values.to_csv(staging / "axes.csv", index=False, float_format="%.6g")
        write_json(staging / "importance.json", {"axes": shares,
                                                 "cheatsheet": cheatsheet.by_point(shares, search.space)})
        if best:
            entry = base.model_dump(mode="json", exclude_unset=True) | {"family": base.family}
            for name, value in best["values"].items():
                entry |= settings_of(name, search.space[name], raw_value(search.space[name], value))
            (staging / "best.yaml").write_text(
                f"# the best of {len(table)} trials ({search.objective} {best['objective']:.4g} on validation), "
                f"trial {best['trial']};\n# train it as a DVC experiment of the main pipeline:\n#   {command}\n"
                + yaml.safe_dump({"models": {search.model: entry}}, sort_keys=False))
        (staging / "cheatsheet.md").write_text(
            f"# Which of the cheatsheet's choices mattered for {search.model}?\n\n"
            + "".join(f"- {line}\n" for line in answer)
            + f"\n## Each axis by value\n\n{values.to_markdown(index=False, floatfmt='.4g')}\n"
            + (f"\nTrain the best as a DVC experiment:\n\n    {command}\n" if command else ""))
        for file_name, figure in cheatsheet.figures(study, search.space, shares, search.seed).items():
            plots.save(figure, staging / file_name)
    write_json(args.metrics, metrics)
    numbers = {key: value for key, value in metrics.items() if isinstance(value, (int, float)) and value is not None}
    recorded.finish_study_run(
        run_id, {f"search/{key}": value for key, value in numbers.items()}
        | {f"importance/{name}": share for name, share in shares.items()},
        {"search.model": search.model, "search.objective": search.objective, "search.trials": search.trials,
         "search.sampler": search.sampler, "search.space": yaml.safe_dump(search.model_dump(mode="json")["space"],
                                                                           default_flow_style=True).strip()},
        "\n\n".join(answer), Path(args.out))
    print("\n".join(f"search: {line}" for line in answer))
    if command:
        print(f"search: train the best as a DVC experiment: {command}")


if __name__ == "__main__":
    run_stage(main)
