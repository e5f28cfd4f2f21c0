"""Which generative AI is right for you? The comparison table, its ranks and the answer in words.

Pure functions of the evaluate stage's numbers: a table with a row per model and a rank per
criterion, the lecture's closing question answered from the measured values (best quality,
best coverage, fastest sampling, exact likelihood, smallest model), and the figures. The `compare` stage
writes and logs them; genlab.evaluation.page makes them a page.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from genlab.config.params import RANKING_METRICS, CompareParams
from genlab.evaluation import copying, metrics
from genlab.evaluation.outputs import RESTORATION_GRID_FILE

SETTING_COLUMNS = ("output_activation", "loss", "decoder", "network", "optimizer", "latent_dim")
TEXT_COLUMNS = ("restore_method",)  # the way a model restores best: search, guided or encode
INTERVAL_NOTE = ("for a model trained with several seeds (`num_seeds`), the Student-t interval of the mean over "
                 "them (genlab.evaluation.seeds); for one seed, over the images drawn: a bootstrap of the test "
                 "images, the samples and the floor's images (metrics.bootstrap_intervals). Either holds "
                 "`evaluate.confidence`.")
BIAS_MARGIN = 0.02  # amplification within which a model "reproduces" the data's balance, when no noise floor is given


def comparison_table(evaluations: dict[str, dict], summaries: dict[str, dict], rank_by: str) -> pd.DataFrame:
    """One row per model: its settings, diagnosis, every metric it has and a `rank_<metric>` per
    criterion of RANKING_METRICS (1 is best; models whose intervals overlap share a rank), sorted by the value
    of `rank_by`.

    Families measure different things (a GAN has no reconstruction error): a metric a model
    lacks is left empty and ranks last.
    """
    rows = []
    for name, results in evaluations.items():
        settings = summaries[name]["params"]
        family = summaries[name]["family"]
        if "prior_over" in summaries[name]:  # a learned prior over an encoder's codes (genlab.models.latent)
            family = f"{family} prior over {summaries[name]['prior_over']}"
        if settings.get("conditional"):  # told the class (genlab.models.contract)
            guidance = settings.get("guidance_scale", 1)
            family = f"conditional {family}" + (f" (guidance {guidance:g})" if guidance != 1 else "")
        rows.append({"model": name, "family": family,
                     "likelihood": summaries[name].get("likelihood", "none")}  # genlab.models.contract
                    | {key: settings.get(key) for key in SETTING_COLUMNS}
                    | {"diagnosis": summaries[name]["diagnosis"]}
                    | {key: value for key, value in results.items()
                       if key in TEXT_COLUMNS or isinstance(value, (int, float)) and not isinstance(value, bool)})
    table = pd.DataFrame(rows)
    table = table.dropna(axis=1, how="all")  # settings no compared model has
    if rank_by not in table:
        table[rank_by] = np.nan
    for metric, higher_is_better in RANKING_METRICS.items():
        if metric in table:
            table[f"rank_{metric}"] = table["model"].map(metrics.ranks(
                dict(zip(table["model"], table[metric].astype(float))), higher_is_better, intervals(table, metric)))
    ranked = table.pop(f"rank_{rank_by}")
    table.insert(1, f"rank_{rank_by}", ranked)
    # by value, best first (the champion is the best by its value); the ranks say which differences are noise:
    # a model whose interval is wide may share the first rank while its value is far down the table
    order = table[rank_by].astype(float) * (-1 if RANKING_METRICS[rank_by] else 1)
    return (table.assign(_order=order).sort_values(["_order", "model"], na_position="last")
            .drop(columns="_order").reset_index(drop=True))


# FID is ranked by the interval of FID over the data floor: the same order (every model has the same floor), and the
# test images that every model and the floor are measured against are shared noise, which the ratio mostly
# cancels; FID's own interval holds that noise in full (it is a single run's error, not a difference's)
INTERVAL_OF = {"fid": "fid_to_floor"}


def intervals(table: pd.DataFrame, metric: str) -> dict[str, tuple[float, float]] | None:
    """Each model's (low, high) of `metric` (as INTERVAL_OF says) where the table has its `_low` and `_high`
    columns (the interval over seeds, or over the images drawn: metrics.bootstrap_intervals); else None. The
    values of FID's are FID over the floor's."""
    metric = INTERVAL_OF.get(metric, metric)
    if f"{metric}_low" not in table or f"{metric}_high" not in table:
        return None
    return {name: (float(low), float(high)) for name, low, high in
            zip(table["model"], table[f"{metric}_low"], table[f"{metric}_high"])}


def best_and_ties(table: pd.DataFrame, metric: str) -> tuple[pd.Series, pd.DataFrame | None] | None:
    """The best row by `metric`'s value, and the rows whose interval overlaps its interval (they tie within
    noise; None where the table has no interval of the metric). None when no row has the metric."""
    best, shown = _best(table, metric), INTERVAL_OF.get(metric, metric)
    if best is None or f"{shown}_low" not in table:
        return None if best is None else (best, None)
    others = table[table["model"] != best["model"]]
    low, high = others[f"{shown}_low"].astype(float), others[f"{shown}_high"].astype(float)
    overlaps = (high >= best[f"{shown}_low"]) if RANKING_METRICS[metric] else (low <= best[f"{shown}_high"])
    tied = others[overlaps.fillna(False).astype(bool)]
    return best, tied.sort_values(metric, ascending=not RANKING_METRICS[metric])


def with_interval(row, metric: str, digits: str = ".3g", suffix: str = "") -> str:
    """"1.89x (1.71-2.10)": a value and, where the row has one, its interval."""
    text = f"{row[metric]:{digits}}{suffix}"
    if pd.notna(row.get(f"{metric}_low")) and pd.notna(row.get(f"{metric}_high")):
        text += f" ({row[f'{metric}_low']:{digits}}-{row[f'{metric}_high']:{digits}})"
    return text


def champion_answer(table: pd.DataFrame, rank_by: str) -> str | None:
    """The champion by the stated rule (the best value of `compare.rank_by` among the recommended models), with its
    margin over the runner-up, and whether its interval clears the runner-up's or they tie within noise."""
    recommended = table[table["recommended"].astype(bool)] if "recommended" in table else table
    found = best_and_ties(recommended, rank_by)
    if found is None or len(recommended) < 2:
        return None
    best, tied = found
    runner = recommended[recommended["model"] != best["model"]].iloc[0]
    shown = INTERVAL_OF.get(rank_by, rank_by)

    def value(row) -> str:
        return (with_interval(row, rank_by) if shown == rank_by
                else f"{row[rank_by]:.3g} ({shown} {with_interval(row, shown)})")

    margin = abs(float(best[rank_by]) - float(runner[rank_by]))
    line = (f"**Champion: {best['model']}**, by the rule \"the best {rank_by} among the recommended models\": "
            f"{value(best)} against the runner-up {runner['model']}'s {value(runner)}, a margin of {margin:.3g}")
    if tied is None:
        return line + " (no interval of this measure: the margin is all there is)."
    if tied.empty:
        return line + "; its interval clears the runner-up's, so the order is not noise."
    return (line + f"; but its interval overlaps {'that' if len(tied) == 1 else 'those'} of {', '.join(tied['model'])}:"
            f" they tie within noise, and the champion is the rule's choice, not a measured difference.")


def not_recommended_because(row: dict, num_classes: int, settings: CompareParams) -> list[str]:
    """Why a model's samples should not be trusted, in words (none: recommended): the judge does not
    recognise them as the data's (classes missing, low confidence, FID far past the data floor), or its
    loss was still falling when training stopped; or its samples copy training images (genlab.evaluation.copying)."""
    reasons = []
    needed = settings.min_classes_covered or num_classes
    if row.get("classes_covered") is not None and row["classes_covered"] < needed:
        reasons.append(f"its samples cover {metrics.count(row['classes_covered'])} of {num_classes} classes"
                       + (" (the mean over its seeds)" if not float(row["classes_covered"]).is_integer() else ""))
    if row.get("judge_confidence") is not None and row["judge_confidence"] < settings.min_judge_confidence:
        reasons.append(f"the judge is unsure what its samples are (mean confidence {row['judge_confidence']:.2f}, "
                       f"under {settings.min_judge_confidence:g})")
    if row.get("fid_to_floor") is not None and row["fid_to_floor"] > settings.max_fid_to_floor:
        reasons.append(f"its FID is {row['fid_to_floor']:.3g}x the data floor (over {settings.max_fid_to_floor:g}x: "
                       f"far from real images)")
    copied = copying.copies(row, settings.min_heldout_ratio)
    if copied:
        reasons.append(f"its samples copy training images ({copied}, under {settings.min_heldout_ratio:g}x)")
    if row.get("diagnosis") == "still_learning" and not settings.recommend_still_learning:
        reasons.append("its loss was still falling when training stopped (still learning: more epochs would "
                       "change these numbers)")
    return reasons


def add_verdicts(table: pd.DataFrame, num_classes: int, settings: CompareParams) -> pd.DataFrame:
    """The table with `recommended` (bool) and `verdict` (why not, or "recommended") per model."""
    reasons = [not_recommended_because({key: value for key, value in row.items() if value == value}, num_classes,
                                       settings) for row in table.to_dict("records")]
    verdicts = table.copy()
    verdicts.insert(2, "recommended", [not found for found in reasons])
    verdicts.insert(3, "verdict", ["recommended" if not found else "not recommended: " + "; ".join(found)
                                   for found in reasons])
    return verdicts


def _best(table: pd.DataFrame, metric: str) -> pd.Series | None:
    if metric not in table or table[metric].isna().all():
        return None
    values = table[metric].astype(float)
    return table.loc[values.idxmax() if RANKING_METRICS[metric] else values.idxmin()]


def which_is_right_for_you(table: pd.DataFrame, num_classes: int, rank_by: str | None = None) -> list[str]:
    """The lecture's closing question, answered from the measured numbers: one line per need, and with `rank_by`
    the champion's. With a `recommended` column (add_verdicts), every recommendation comes from the recommended
    models, and the others are named first with the reasons. Where a measure has intervals, a best model is
    named only where its interval clears the others'; otherwise the models that tie within noise are named."""
    lines = []
    recommended = table[table["recommended"].astype(bool)] if "recommended" in table else table
    if len(recommended) < len(table):
        rejected = table.loc[~table["model"].isin(recommended["model"])]
        lines.append("**Not recommended**: " + "; ".join(
            f"{row['model']} ({row['verdict'].removeprefix('not recommended: ')})" for _, row in rejected.iterrows())
            + ".")
    if recommended.empty:
        lines.append("**No model is recommended**: none made samples that the judge recognises as the data's "
                     "with its training finished; train longer or tune the models above.")
    found = best_and_ties(recommended, "fid")
    if found is not None:
        quality, tied = found
        lines.append(f"**Best sample quality: {named(quality, tied)}: FID {quality['fid']:.3g}, "
                     f"{with_interval(quality, 'fid_to_floor', '.3g', 'x')} the data floor of "
                     f"{quality['data_floor_fid']:.3g} (real training images score the floor); precision "
                     f"{with_interval(quality, 'precision', '.2f')}" + tie_clause(tied, "fid_to_floor", ".3g", "x"))
    found = best_and_ties(recommended, "recall")  # recall, not density-based coverage: blurry samples near the
    if found is not None:                          # modes can reach many real neighbourhoods while missing most
        diverse, tied = found
        lines.append(f"**Best coverage of the data: {named(diverse, tied)}: recall "
                     f"{with_interval(diverse, 'recall', '.2f')} and coverage "
                     f"{with_interval(diverse, 'coverage', '.2f')} (the data floor: {diverse['data_floor_recall']:.2f} "
                     f"and {diverse['data_floor_coverage']:.2f}); its samples cover "
                     f"{metrics.count(diverse['classes_covered'])} of {num_classes} classes"
                     + tie_clause(tied, "recall", ".2f"))
    champion = champion_answer(table, rank_by) if rank_by else None
    if champion:
        lines.append(champion)
    # speed and size only count for models that work: samples of every class, when the judge says so
    covers_all = table["classes_covered"] == num_classes if "classes_covered" in table else None
    if "recommended" in table:
        usable, note = recommended, " among the recommended models"
    else:
        usable = table[covers_all] if covers_all is not None and covers_all.any() else table
        note = " among the models whose samples cover every class" if len(usable) < len(table) else ""
    fastest = _best(usable, "sampling_seconds_per_1000")
    if fastest is not None:
        slowest = table.loc[table["sampling_seconds_per_1000"].astype(float).idxmax()]
        lines.append(f"**Fastest sampling{note}: {fastest['model']}** ({fastest['family']}): "
                     f"{fastest['sampling_seconds_per_1000']:.3g} s per 1000 images, "
                     f"{slowest['sampling_seconds_per_1000'] / fastest['sampling_seconds_per_1000']:.0f}x faster "
                     f"than the slowest, {slowest['model']} ({slowest['sampling_seconds_per_1000']:.3g} s).")
    kinds = table["likelihood"] if "likelihood" in table else pd.Series("none", index=table.index)
    exact, bound = table[kinds == "exact"], table[kinds == "bound"]
    if len(exact) and "test_nll_bits_per_dim" in table:
        def caveat(row) -> str:  # a likelihood is no recommendation when the samples are not recognised
            return "" if row.get("recommended", True) else f" ({row['verdict']})"

        shown = ", ".join(f"{row['model']} {row['test_nll_bits_per_dim']:.3g}{caveat(row)}"
                          for _, row in exact.iterrows())
        lines.append(f"**Exact likelihood: {', '.join(exact['model'])}**: test NLL in bits per dimension: {shown}."
                     + (f" {', '.join(bound['model'])} {'gives' if len(bound) == 1 else 'give'} an estimate from "
                        f"a bound, not an exact value; the others here give none." if len(bound) else ""))
    else:
        lines.append("**Exact likelihood: none of these models.** Add a `family: flow` model to get one.")
    smallest = _best(usable, "num_params")
    if smallest is not None:
        lines.append(f"**Smallest model{note}: {smallest['model']}** ({smallest['family']}): "
                     f"{int(smallest['num_params']):,} parameters"
                     + (f" and {int(smallest['num_hyperparameters'])} hyperparameters"
                        if pd.notna(smallest.get("num_hyperparameters")) else "") + ".")
    if covers_all is not None:
        missing = table.loc[~covers_all, "model"].tolist()
        lines.append(f"**Class coverage**: {int(covers_all.sum())} of {len(table)} models' samples cover all "
                     f"{num_classes} "
                     f"classes (judged by the classifier)" + (f"; not: {', '.join(missing)}." if missing else "."))
    if "bias_amplification" in table:
        rows = table.set_index("model")
        values = rows["bias_amplification"].astype(float).dropna()
        noise = rows["bias_amplification_noise"].astype(float) if "bias_amplification_noise" in rows else None
        margin = {name: float(noise[name]) if noise is not None else BIAS_MARGIN for name in values.index}
        faithful = values.abs().idxmin()
        amplify = [f"{name} ({value:+.3f})" for name, value in values.items() if value > margin[name]]
        even = [f"{name} ({value:+.3f})" for name, value in values.items() if value < -margin[name]]
        reproduce = [name for name, value in values.items() if abs(value) <= margin[name]]
        lines.append(f"**Class balance (is the bias in the model?)**, judged by the classifier and corrected for "
                     f"its confusion: within chance of the training data's balance (amplification at most "
                     f"{max(margin.values()):.3f} for this many samples): {', '.join(reproduce) or 'none'}; "
                     f"amplifying it: {', '.join(amplify) or 'none'}; evening it out: {', '.join(even) or 'none'}. "
                     f"Closest: {faithful} ({values[faithful]:+.3f}).")
    restoring = restoration_answer(table)
    if restoring:
        lines.append(restoring)
    asked = conditional_answer(table)
    if asked:
        lines.append(asked)
    if "rarest_class_share_ratio" in table and table["rarest_class"].nunique() == 1:
        ratios = table.set_index("model")["rarest_class_share_ratio"].astype(float).dropna().sort_values()
        lines.append(f"**The rarest training class ({int(table['rarest_class'].iloc[0])})**: its share of the "
                     f"samples over its share of the training data (1 reproduces it, corrected for the "
                     f"classifier's confusion): " + ", ".join(f"{name} {value:.2f}" for name, value in ratios.items())
                     + ".")
    return lines


def named(best: pd.Series, tied: pd.DataFrame) -> str:
    """"vae (vae)", or where others tie with it within noise "a tie within noise: vae (vae) first"."""
    return (f"{best['model']}** ({best['family']})" if tied is None or tied.empty
            else f"a tie within noise**, {best['model']} ({best['family']}) first by its value")


def tie_clause(tied: pd.DataFrame, metric: str, digits: str, suffix: str = "") -> str:
    """The end of a line: the models whose interval overlaps the best's, with theirs; or that none does."""
    if tied is None:  # no interval measured
        return "."
    if tied.empty:
        return "; its interval clears every other recommended model's."
    return ("; within noise of it (their intervals overlap): "
            + ", ".join(f"{row['model']} {with_interval(row, metric, digits, suffix)}" for _, row in tied.iterrows())
            + ".")


def conditional_answer(table: pd.DataFrame) -> str | None:
    """Would the opposite have been acceptable? Which model draws the class asked for most often, and what every
    model's worst class costs (intra-class FID over its floor; an unconditional model's classes by the judge)."""
    if "intra_class_fid_to_floor" not in table:
        return None
    rows = table.dropna(subset=["intra_class_fid_to_floor"])
    line = ("**Within each class** (intra-class FID over each class's floor, mean and worst class): "
            + ", ".join(f"{row['model']} {row['intra_class_fid_to_floor']:.2g}x (worst: class "
                        f"{int(row['worst_fid_class'])}, {row['worst_class_fid_to_floor']:.2g}x)"
                        for _, row in rows.sort_values("intra_class_fid_to_floor").iterrows()) + "."
            if len(rows) else "**Within each class**: too few samples of each class to measure.")
    if "asked_class_accuracy" in table and table["asked_class_accuracy"].notna().any():
        conditional = table.dropna(subset=["asked_class_accuracy"]).sort_values("asked_class_accuracy",
                                                                                 ascending=False)
        line += (" **Told the class**, the judge sees the class asked for in: "
                 + ", ".join(f"{row['model']} {row['asked_class_accuracy']:.0%} (worst: class "
                             f"{int(row['worst_asked_class'])}, {row['worst_asked_class_accuracy']:.0%})"
                             for _, row in conditional.iterrows()) + ".")
    if "rarest_class_samples" in table and "rarest_class" in table and table["rarest_class"].nunique() == 1:
        rarest = int(table["rarest_class"].iloc[0])

        def of_rarest(row) -> str:
            quality = (f"{row['rarest_class_fid_to_floor']:.2g}x its floor"
                       if pd.notna(row.get("rarest_class_fid_to_floor")) else "too few to measure")
            asked = (f", the judge sees class {rarest} in {row['rarest_class_asked_accuracy']:.0%}"
                     if pd.notna(row.get("rarest_class_asked_accuracy")) else "")
            return (f"{row['model']} {int(row['rarest_class_samples'])} of {int(row['num_samples'])} samples "
                    f"({quality}{asked})")
        line += (f" **The rarest training class ({rarest})** in each model's samples, and their quality: "
                 + ", ".join(of_rarest(row) for _, row in table.iterrows()) + ".")
    return line


def copying_answer(table: pd.DataFrame, min_heldout_ratio: float) -> str | None:
    """Does any model copy its training images? The held-out test's ratio of each model in pixels (1: the unseen
    images are nearest to its samples as often as any training set of their size; 0: never), the flagged ones
    (by either space), and C_T's range (genlab.evaluation.copying)."""
    if "copying_heldout_ratio_pixels" not in table or table["copying_heldout_ratio_pixels"].isna().all():
        return None
    flagged = [row["model"] for _, row in table.iterrows() if copying.copies(row.to_dict(), min_heldout_ratio)]
    ordered = table.sort_values("copying_heldout_ratio_pixels")
    lowest = ordered.iloc[0]
    return ("**Copies of the training data** (how often a sample's nearest real image is an unseen one, over its "
            "fair share among as many training sets of the same size: 1 like unseen data, 0 a copy; under "
            f"{min_heldout_ratio:g} is copying): "
            + (f"{', '.join(flagged)} {'copies' if len(flagged) == 1 else 'copy'} and "
               f"{'is' if len(flagged) == 1 else 'are'} not recommended" if flagged else "no model copies")
            + f"; in pixels from {lowest['copying_heldout_ratio_pixels']:.2f} ({lowest['model']}) to "
            f"{ordered['copying_heldout_ratio_pixels'].iloc[-1]:.2f} ({ordered['model'].iloc[-1]}); Meehan et al. "
            f"2020's C_T from {table['copying_ct_pixels'].min():.2g} to {table['copying_ct_pixels'].max():.2g} "
            f"(below 0: nearer the training images than unseen images are, which typical samples are too).")


def restoration_answer(table: pd.DataFrame) -> str | None:
    """Image-to-image: which model restores most faithfully, which keeps the most digits, and where the
    rarest training class is erased (the PULSE question), from the `restore_` columns."""
    if "restore_psnr" not in table or table["restore_psnr"].isna().all():
        return None
    rows = table.dropna(subset=["restore_psnr"])
    faithful = rows.loc[rows["restore_psnr"].astype(float).idxmax()]
    keeps = rows.loc[rows["restore_identity_kept"].astype(float).idxmax()]
    gap, noise = rows["restore_rarest_class_gap"].astype(float), rows["restore_rarest_class_gap_noise"].astype(float)
    erasing = [f"{name} ({value:.2f})" for name, value, beyond in zip(rows["model"], gap, gap > noise) if beyond]
    rarest = (f" ({int(rows['rarest_class'].iloc[0])})"
              if "rarest_class" in rows and rows["rarest_class"].nunique() == 1 else "")
    return (f"**Image-to-image (upsampling, inpainting, denoising the test images)**: most faithful "
            f"{faithful['model']} ({faithful['family']}, {faithful['restore_method']}): PSNR "
            f"{faithful['restore_psnr']:.1f} dB, SSIM {faithful['restore_ssim']:.2f}; keeps the most digits "
            f"{keeps['model']} (identity kept {keeps['restore_identity_kept']:.2f}, worst class "
            f"{keeps['restore_worst_class_kept']:.2f}). The rarest training class{rarest} comes back as itself less "
            f"often than the others by more than chance (two standard errors, about {noise.mean():.2f}) in: "
            f"{', '.join(erasing) or 'none'} (identity kept counts only the originals the judge recognises).")


FAIRNESS_KEYS = ("rdp_gap", "rdp_p_value", "pr_tv_distance", "pr_top_group", "pr_top_ratio", "pr_p_value",
                 "ucpr_tv_distance", "ucpr_imbalance", "ucpr_majority", "ucpr_majority_ratio", "ucpr_rarest",
                 "ucpr_rarest_ratio", "ucpr_top_group", "ucpr_top_ratio",
                 "ucpr_p_value", "own_pr_top_group", "own_pr_top_ratio", "own_pr_p_value", "stroke_rdp_gap",
                 "stroke_rdp_p_value", "stroke_pr_p_value", "stroke_ucpr_p_value")


SKEWED = 0.5  # training shares whose rarest class has less than this x the majority's have a majority to amplify


def fairness_table(restorations: dict[str, dict]) -> pd.DataFrame:
    """Restoration fairness (genlab.evaluation.fairness) side by side: one row per model, task and method with
    its RDP, PR and (the uninformative task) UCPR values and p-values, for the classes and the stroke subgroups."""
    rows = [{"model": name, "task": task, "method": method} | {key: values.get(key) for key in FAIRNESS_KEYS}
            for name, restored in restorations.items() for task, by_method in restored.items()
            if isinstance(by_method, dict) and task != "summary" for method, values in by_method.items()]
    return pd.DataFrame(rows, columns=["model", "task", "method", *FAIRNESS_KEYS])


def fairness_answer(fair: pd.DataFrame, significance: float = 0.05, shown: int = 3) -> str | None:
    """Which ways of restoring are fair as Jalal et al. define it: on observations that carry no class, per method
    (search, posterior, guided, encode), which models meet CPR (the restored classes follow the training shares)
    with p-values; the `shown` that amplify a class most; and of the violations, how many only pass on the
    model's own bias (its samples' shares) and how many add one of the method's own."""
    probes = fair[(fair["task"] == "uninformative") & fair["ucpr_p_value"].notna()]
    if probes.empty:
        return None

    def p(value) -> str:
        return f"p={value:.2g}" if value >= 1e-3 else "p<0.001"

    def amplified(row) -> str:
        skewed = row["ucpr_imbalance"] < SKEWED  # a majority and a rarest class worth the name
        majority = " (the majority)" if skewed and row["ucpr_top_group"] == row["ucpr_majority"] else ""
        rarest = (f"; class {int(row['ucpr_rarest'])}, the rarest, at {row['ucpr_rarest_ratio']:.2g}x"
                  if skewed else "")
        return (f"{row['model']} {row['method']} (class {int(row['ucpr_top_group'])}{majority} at "
                f"{row['ucpr_top_ratio']:.2g}x its training share{rarest}, {p(row['ucpr_p_value'])})")

    per_method = []
    for method, rows in probes.groupby("method", sort=False):
        meet = rows[rows["ucpr_p_value"] >= significance].sort_values("ucpr_p_value", ascending=False)
        named = ", ".join(f"{row['model']} ({p(row['ucpr_p_value'])})" for _, row in meet.iterrows())
        per_method.append(f"{method}, {len(meet)} of {len(rows)}" + (f": {named}" if named else ""))
    miss = probes[probes["ucpr_p_value"] < significance].sort_values("ucpr_top_ratio", ascending=False)
    line = ("**Restoration fairness** (Jalal et al. 2021; every test image pooled to what carries no class, so that a "
            f"fair method's classes follow the training data's): meet CPR, chi-square p >= {significance:g}, by "
            f"method: {'; '.join(per_method)}. Amplify a class most: "
            + (", ".join(amplified(row) for _, row in miss.head(shown).iterrows()) or "none") + ".")
    if len(miss) and miss["own_pr_p_value"].notna().any():
        passed_on = miss[miss["own_pr_p_value"] >= significance]
        line += (f" Of the {len(miss)} that do not meet it, {len(passed_on)} stay within chance of the model's own "
                 "samples (the bias is the model's, passed on)"
                 + (": " + ", ".join(f"{row['model']} {row['method']}" for _, row in passed_on.iterrows())
                    if len(passed_on) else "")
                 + f"; {len(miss) - len(passed_on)} add a bias of the method's own.")
    return line


def description(table: pd.DataFrame, answers: list[str], rank_by: str) -> str:
    """The comparison run's description (Markdown, shown on its page): what was compared, and the answers."""
    recommended = int(table["recommended"].sum()) if "recommended" in table else len(table)
    return (f"Which generative AI is right for you? {len(table)} models compared, {recommended} recommended, ranked "
            f"by {rank_by}. Each model's metrics are in its own run (tagged `genlab.comparison_run_id` with this "
            f"run's id) and its LoggedModel; this run holds the table, the figures and the answers.\n\n"
            + "".join(f"- {line}\n" for line in answers))


def displayed(table: pd.DataFrame) -> pd.DataFrame:
    """The table as a person reads it: a metric with an interval in one column, "1.89 (1.71-2.10)", instead of
    three (the CSV keeps them apart)."""
    shown = table.astype(object).where(table.notna(), None)
    for metric in [column.removesuffix("_low") for column in table if column.endswith("_low")]:
        if metric in table and f"{metric}_high" in table:
            shown[metric] = [with_interval(row, metric, ".4g") if pd.notna(row[metric]) else None
                             for _, row in table.iterrows()]
            shown = shown.drop(columns=[f"{metric}_low", f"{metric}_high"])
    return shown


def markdown(table: pd.DataFrame, answers: list[str], rank_by: str, judge: dict) -> str:
    shown = displayed(table)
    return (f"# Which generative AI is right for you?\n\n"
            f"Measured on the test split in the features of the judge (a classifier of the training split, "
            f"test accuracy {judge['test_accuracy']:.4f}); every model with the same number of samples.\n\n"
            + "".join(f"- {line}\n" for line in answers)
            + f"\n## Every model and metric (ranked by {rank_by}; `rank_<metric>`: 1 is best, and models whose "
              f"intervals overlap share a rank)\n\nAn interval in brackets: {INTERVAL_NOTE}\n\n"
            + shown.to_markdown(index=False, floatfmt=".5g", missingval="") + "\n")


# --- the inputs, as evaluate@<model> and train@<model> wrote them --------------------------------------


def read_history(path: Path) -> dict[str, list[float]]:
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    return {key: [float(row[key]) for row in rows] for key in rows[0] if key != "epoch"} if rows else {}


def restoration_columns(restored: dict, timings: dict) -> dict:
    """A model's times and its restoration summary as `restore_<key>` columns (the times of each task and
    method stay in the timings JSON)."""
    return ({key: value for key, value in timings.items() if not key.startswith("restore_")}
            | {f"restore_{key}": value for key, value in restored["summary"].items()}
            | {"restore_seconds_per_1000": timings.get("restore_seconds_per_1000")})


def restoration_rows(evaluations_dir: Path, table) -> dict[str, dict[str, np.ndarray]]:
    """Per task, the figure's rows: the original and degraded grid images, then each model's restoration
    by its own best method."""
    rows = {}
    for name, method in zip(table["model"], table.get("restore_method", [None] * len(table))):
        path = evaluations_dir / name / RESTORATION_GRID_FILE
        if not isinstance(method, str) or not path.is_file():
            continue
        with np.load(path, allow_pickle=False) as grids:
            for key in grids.files:
                task, row = key.split("/")
                if row in ("original", "degraded"):
                    rows.setdefault(task, {}).setdefault(row, grids[key])
                elif row == method:
                    rows.setdefault(task, {})[f"{name} ({method})"] = grids[key]
    return rows


def figures(table: pd.DataFrame, samples: dict[str, np.ndarray], reconstructions: dict[str, np.ndarray],
            restorations: dict[str, dict[str, np.ndarray]], histories: dict[str, dict[str, list[float]]],
            sample_seed: int) -> dict[str, tuple[str, object]]:
    """The comparison's figures: file name -> (title on the HTML page, matplotlib figure). The trilemma
    (quality against sampling time, coverage as colour), a bar chart of the main metrics, a row of samples
    per model, "original / predicted" with a row per encoder, a figure per restoration task, loss curves."""
    from genlab.evaluation import plots

    found = {}
    if "fid_to_floor" in table:
        found["trilemma.png"] = ("quality, speed and coverage (the generative trilemma)", plots.trilemma(
            list(table["model"]), list(table["sampling_seconds_per_1000"]), list(table["fid_to_floor"]),
            list(table["recall"]), float(table["data_floor_fid"].iloc[0]),
            "which generative AI is right for you? quality, speed, coverage"))
    if samples:
        found["samples.png"] = ("samples, one row per model", plots.image_rows(
            samples, f"samples, one row per model (seed {sample_seed})"))
    if len(reconstructions) > 1:
        found["reconstructions.png"] = ("original / reconstructed, one row per encoder", plots.image_rows(
            reconstructions, "original / predicted, one row per model"))
    found["loss_curves.png"] = ("loss curves", plots.overlaid_curves(
        {name: histories[name]["val_loss"] for name in table["model"] if "val_loss" in histories[name]},
        "validation loss (each model's own loss)", "loss curves"))
    charted = [metric for metric in ("fid_to_floor", "recall", "test_bce", "train_seconds") if metric in table]
    found["metrics.png"] = ("metrics", plots.bar_chart(
        {metric: dict(zip(table["model"], table[metric].fillna(0.0))) for metric in charted},
        "sample quality, coverage, reconstruction, training time"))
    for task, rows in restorations.items():
        found[f"restore_{task}.png"] = (f"{task.replace('_', ' ')}: original, degraded, one row per model",
                                        plots.image_rows(rows, f"{task.replace('_', ' ')}: original, degraded, "
                                                               f"restored by each model"))
    return found


def console_line(table: pd.DataFrame, best, rank_by: str, champion: str | None, registered_as: str,
                 report: Path) -> str:
    """compare's line on the console: how many models are recommended, the best, and where the report is."""
    rejected = list(table.loc[~table["recommended"], "model"])
    line = (f"compare: {len(table) - len(rejected)} of {len(table)} models recommended"
            + (f" (not: {', '.join(rejected)}; the reasons are in the answer)" if rejected else ""))
    if best is None:
        return f"{line}; none is registered; report in {report}"
    found = best_and_ties(table[table["recommended"].astype(bool)], rank_by)
    tied = found[1] if found is not None and found[1] is not None else table.iloc[0:0]
    return (f"{line}; best by {rank_by}: {best['model']} ({best[rank_by]:.5g}"
            + (f"; tied within noise with {', '.join(tied['model'])})" if len(tied) else ")")
            + (f", registered as {registered_as} (version {champion})" if champion else "")
            + f"; report in {report}")
