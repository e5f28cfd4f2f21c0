"""The PULSE question, answered with numbers (issue 14; README, "Image-to-image, and the PULSE question").

Does restoring a degraded image turn a rare digit into a common one, and does that go away when the
data is balanced? Three runs of the whole pipeline, each in a scratch copy of the project
(`tests/sandbox.py`; nothing is written to your workspace):

- balanced: the project's params.yaml (or `--config`) as it is;
- fraction: with `data.keep_fraction: {C: F}` (only F of the training images of class C kept);
- subgroup: with `data.keep_subgroup: {c: {S: 0}}` for every class c (a stroke style removed), or for one.

`--projects balanced=DIR fraction=DIR subgroup=DIR` reads projects that have run instead. Printed per
model (each by its own best restoration method):

1. class C's identity kept (of the originals the judge recognises), upsampling and the mean over the
   tasks, balanced against biased; the rarest-class gap beside its noise level; where the errors went;
2. the biased models measured again by the balanced run's judge: after the injection the judge itself
   is trained on the biased split and hesitates to say C, which could pass for erasure;
3. the removed subgroup's test images: identity kept, the share of their restorations drawn in the same
   subgroup, and how much thicker they come back, balanced against biased;
4. every method of every model side by side (PULSE's search against posterior sampling, issue 30): fidelity,
   class C kept, and Jalal et al.'s fairness on observations that carry no class (UCPR, with its p-value, and
   against the model's own samples), balanced against biased.

    .venv/bin/python benchmarks/erasure.py [--config configs/mnist_sample.yaml] [--rare-class 8 --keep 0.1]
                                           [--subgroup-class all --subgroup thin] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # the tests' scratch project
import sandbox

PROJECT = Path(__file__).resolve().parents[1]
SUBGROUP_NUM_SAMPLES = 800  # thin strokes removed from every class leave 824 of the digits' 1257 training images


def run_projects(config: Path, variants: dict[str, dict], scratch: Path, models: list[str] | None) -> dict[str, Path]:
    """Each variant's `data` overrides applied to the config (with only `models` if given), and a full
    `dvc repro` of each copy."""
    roots = {}
    for name, overrides in variants.items():
        params = yaml.safe_load(config.read_text())
        params["data"] |= overrides
        params["models"] = {key: value for key, value in params["models"].items() if not models or key in models}
        params["priors"] = {key: value for key, value in params.get("priors", {}).items()
                            if value["encoder"] in params["models"] and (not models or key in models)}
        if (params.get("search") or {}).get("model") not in params["models"]:
            params["search"] = None  # the search is not part of `dvc repro`
        if "keep_subgroup" in overrides:  # a third of the training images fewer: the data floor needs as many
            params["evaluate"]["num_samples"] = min(params["evaluate"]["num_samples"], SUBGROUP_NUM_SAMPLES)
        root = sandbox.copy_project(PROJECT, scratch / name, params)
        print(f"{name}: dvc repro in {root} ({overrides or 'as configured'})", flush=True)
        sandbox.run(["dvc", "repro"], root, timeout=4 * 3600)
        roots[name] = root
    return roots


def restored(root: Path, model: str) -> dict:
    return json.loads((root / f"reports/eval/{model}/restoration.json").read_text())


def restorations(details: dict) -> dict:
    """The tasks that restore (not the uninformative probe of fairness), {task: {method: values}}."""
    from genlab.evaluation.restoration import PROBES

    return {task: by_method for task, by_method in details["tasks"].items() if task not in PROBES}


def class_row(details: dict, label: int, method: str | None = None) -> dict:
    """Class `label`'s kept share per task and the rarest-class gap, by `method` (the model's best one)."""
    method = method or details["summary"]["method"]
    tasks = {task: by_method[method] for task, by_method in restorations(details).items()}
    return {"method": method, "kept": {task: found["per_class"][str(label)]["kept"] for task, found in tasks.items()},
            "judge_accuracy": tasks["upsample"]["per_class"][str(label)]["judge_accuracy"],
            "gap": float(np.mean([found["rarest_class_gap"] for found in tasks.values()])),
            "noise": float(np.mean([found["rarest_class_gap_noise"] for found in tasks.values()])),
            "erased_to": tasks["upsample"]["erased_to"].get(str(label))}


def cell_row(details: dict, label: int | None, subgroup: str) -> dict:
    """The subgroup's restorations (of class `label`, or of every class for None): identity kept, the share
    drawn in the same subgroup, and (every class) the mean thickness shift, restoration minus original."""
    method = details["summary"]["method"]
    cells = {task: (by_method[method]["per_subgroup"] if label is None
                    else by_method[method]["per_class_subgroup"][str(label)]).get(subgroup, {})
             for task, by_method in restorations(details).items()}
    return {"images": cells["upsample"].get("images", 0),
            "kept": {task: cell.get("kept", float("nan")) for task, cell in cells.items()},
            "same_subgroup": {task: cell.get("same_subgroup", float("nan")) for task, cell in cells.items()},
            "thickness_shift": {task: cell.get("thickness_shift", float("nan")) for task, cell in cells.items()}}


def remeasured(biased: Path, balanced: Path, models: list[str], label: int) -> dict[str, dict]:
    """The biased models' restorations judged by the balanced run's judge (same test split, same settings)."""
    from restore import restoration_inputs  # benchmarks/restore.py: evaluate's inputs of a project

    from genlab.evaluation import restoration
    from genlab.models.registry import load_model

    _, judge, options = restoration_inputs(biased, judge_root=balanced)
    found = {}
    for name in models:
        model, _ = load_model(biased / "models" / name)
        found[name] = class_row(restoration.report(model, judge, **options)[0], label)
    return found


def method_row(details: dict, label: int, method: str) -> dict:
    """One method of a model: PSNR (mean over the restoring tasks), class `label` kept, and on the
    uninformative probe the UCPR test, the rarest class's ratio and the test against the model's own samples."""
    probe = details["tasks"].get("uninformative", {}).get(method, {})
    tasks = [by_method[method] for by_method in restorations(details).values()]
    return class_row(details, label, method) | {
        "psnr": float(np.mean([found["psnr"] for found in tasks])),
        "identity_kept": float(np.mean([found["identity_kept"] for found in tasks])),
        "ucpr_p_value": probe.get("ucpr_p_value"), "own_pr_p_value": probe.get("own_pr_p_value"),
        # class `label` is the rarest training class in both runs (narrowly so in the balanced one)
        "label_ratio": probe["ucpr_rarest_ratio"] if probe.get("ucpr_rarest") == label else float("nan")}


def shown(kept: dict) -> str:
    return f"{kept['upsample']:.2f} ({np.nanmean(list(kept.values())):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=PROJECT / "params.yaml")
    parser.add_argument("--rare-class", type=int, default=8)
    parser.add_argument("--keep", type=float, default=0.1)
    parser.add_argument("--subgroup-class", default="all", help="a class, or all: the style removed from every class")
    parser.add_argument("--subgroup", default="thin")
    parser.add_argument("--projects", nargs="*", default=[], help="name=DIR of projects that have run")
    parser.add_argument("--variants", nargs="*", default=["balanced", "fraction", "subgroup"],
                        help="which runs (balanced is always needed)")
    parser.add_argument("--models", nargs="*", help="only these models of the config (default: all)")
    parser.add_argument("--keep-projects", type=Path, help="run the projects here and keep them")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    label = args.rare_class
    cell = (None if args.subgroup_class == "all" else int(args.subgroup_class), args.subgroup)
    num_classes = yaml.safe_load(args.config.read_text())["data"].get("num_classes", 10)
    removed = {index: {args.subgroup: 0} for index in (range(num_classes) if cell[0] is None else [cell[0]])}
    variants = {"balanced": {}, "fraction": {"keep_fraction": {label: args.keep}},
                "subgroup": {"keep_subgroup": removed}}
    variants = {name: overrides for name, overrides in variants.items() if name in {"balanced", *args.variants}}
    with tempfile.TemporaryDirectory() as scratch:
        roots = {name: Path(path).resolve() for name, path in (item.split("=", 1) for item in args.projects)}
        missing = {name: overrides for name, overrides in variants.items() if name not in roots}
        where = args.keep_projects or Path(scratch)
        roots |= run_projects(args.config, missing, where, args.models) if missing else {}
        models = [name for name in yaml.safe_load((roots["balanced"] / "params.yaml").read_text())["models"]
                  if not args.models or name in args.models]
        rows, fair, cells, methods = {}, {}, {}, {}
        if "fraction" in roots:
            rows = {name: {variant: class_row(restored(roots[variant], name), label)
                           for variant in ("balanced", "fraction")} for name in models}
            methods = {name: {method: {variant: method_row(restored(roots[variant], name), label, method)
                                       for variant in ("balanced", "fraction")}
                              for method in restored(roots["balanced"], name)["tasks"]["upsample"]}
                       for name in models}
            fair = remeasured(roots["fraction"], roots["balanced"], models, label)
        if "subgroup" in roots:
            cells = {name: {variant: cell_row(restored(roots[variant], name), *cell)
                            for variant in ("balanced", "subgroup")} for name in models}

    if rows:
        print_class_table(rows, fair, models, label, args.keep)
    if cells:
        print_subgroup_table(cells, models, cell)
    if methods:
        print_method_table(methods, models, label)
    if args.json:
        args.json.write_text(json.dumps({"class": rows, "balanced_judge": fair, "subgroup": cells,
                                         "methods": methods}, indent=2))


def print_method_table(methods, models, label) -> None:
    print(f"\n4. every way to restore: fidelity and class {label} kept (upsampling), and on observations pooled to "
          f"what carries no class, class {label}'s share of the restorations over its training share and the UCPR "
          f"test (p), balanced / biased; own: the test against the model's own samples, biased\n")
    print(f"| model | method | PSNR (dB), balanced | identity kept, balanced / biased | {label}s kept, balanced / "
          f"biased | uninformative: {label}s over training share, balanced / biased | UCPR p, balanced / biased | "
          "own p, biased |")
    print("|:--|:--|--:|--:|--:|--:|--:|--:|")

    def p(value) -> str:
        return "" if value is None else f"{value:.2g}" if value >= 1e-3 else "<0.001"

    for name in models:
        for method, found in methods[name].items():
            balanced, biased = found["balanced"], found["fraction"]
            kept = f"{balanced['kept']['upsample']:.2f} / {biased['kept']['upsample']:.2f}"
            ratio = f"{balanced['label_ratio']:.2f} / {biased['label_ratio']:.2f}"
            print(f"| {name} | {method} | {balanced['psnr']:.1f} | {balanced['identity_kept']:.2f} / "
                  f"{biased['identity_kept']:.2f} | {kept} | {ratio} | {p(balanced['ucpr_p_value'])} / "
                  f"{p(biased['ucpr_p_value'])} | {p(biased['own_pr_p_value'])} |")


def print_class_table(rows, fair, models, label, keep) -> None:
    print(f"\n1-2. class {label}, {keep:g} of its training images kept: identity kept of its restorations, "
          f"upsampling (mean over the tasks)\n")
    print(f"| model | method | judge on test {label}s: balanced / biased | balanced | biased | biased, balanced "
          f"judge | rarest-class gap, biased (noise) | biased: upsampled {label}s mislabelled as |")
    print("|:--|:--|--:|--:|--:|--:|--:|:--|")
    for name in models:
        balanced, biased = rows[name]["balanced"], rows[name]["fraction"]
        errors = biased["erased_to"]
        print(f"| {name} | {biased['method']} | {balanced['judge_accuracy']:.2f} / {biased['judge_accuracy']:.2f} | "
              f"{shown(balanced['kept'])} | {shown(biased['kept'])} | {shown(fair[name]['kept'])} | "
              f"{biased['gap']:+.2f} ({biased['noise']:.2f}) | "
              + (f"{errors['to']} ({errors['share_of_errors']:.0%} of {errors['errors']})" if errors else "none")
              + " |")


def print_subgroup_table(cells, models, cell) -> None:
    who = "every class" if cell[0] is None else f"class {cell[0]}"
    print(f"\n3. {who} drawn {cell[1]}, removed from training: its test images' restorations, upsampling "
          f"(mean over the tasks)\n")
    print(f"| model | test images | identity kept, balanced | biased | still {cell[1]}, balanced | biased | "
          f"thickness shift (pixels), balanced | biased |")
    print("|:--|--:|--:|--:|--:|--:|--:|--:|")
    for name in models:
        balanced, biased = cells[name]["balanced"], cells[name]["subgroup"]
        print(f"| {name} | {balanced['images']} | {shown(balanced['kept'])} | {shown(biased['kept'])} | "
              f"{shown(balanced['same_subgroup'])} | {shown(biased['same_subgroup'])} | "
              f"{shown(balanced['thickness_shift'])} | {shown(biased['thickness_shift'])} |")


if __name__ == "__main__":
    main()
