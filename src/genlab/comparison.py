"""Which generative AI is right for you? The comparison table, its ranks and the answer in words.

Pure functions of the evaluate stage's numbers: a table with a row per model and a rank per
criterion, the lecture's closing question answered from the measured values (best quality,
best coverage, fastest sampling, exact likelihood, smallest model), and a self-contained HTML
page with the figures embedded. The `compare` stage writes and logs them.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np
import pandas as pd

from genlab import metrics
from genlab.params import RANKING_METRICS, CompareParams

SETTING_COLUMNS = ("output_activation", "loss", "decoder", "network", "optimizer", "latent_dim")
TEXT_COLUMNS = ("restore_method",)  # the way a model restores best: search, guided or encode
# Families whose likelihood is exact (the flow) or a bound (the VAE's importance-weighted estimate).
EXACT_LIKELIHOOD = ("flow",)
LIKELIHOOD_BOUND = ("vae",)
BIAS_MARGIN = 0.02  # amplification within which a model "reproduces" the data's balance, when no noise floor is given


def comparison_table(evaluations: dict[str, dict], summaries: dict[str, dict], rank_by: str) -> pd.DataFrame:
    """One row per model: its settings, diagnosis, every metric it has and a `rank_<metric>` per
    criterion of RANKING_METRICS (1 is best), sorted by `rank_by`.

    Families measure different things (a GAN has no reconstruction error): a metric a model
    lacks is left empty and ranks last.
    """
    rows = []
    for name, results in evaluations.items():
        settings = summaries[name]["params"]
        rows.append({"model": name, "family": summaries[name]["family"]}
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
            table[f"rank_{metric}"] = table["model"].map(
                metrics.ranks(dict(zip(table["model"], table[metric].astype(float))), higher_is_better))
    ranked = table.pop(f"rank_{rank_by}")
    table.insert(1, f"rank_{rank_by}", ranked)
    return table.sort_values([f"rank_{rank_by}", "model"]).reset_index(drop=True)


def not_recommended_because(row: dict, num_classes: int, settings: CompareParams) -> list[str]:
    """Why a model's samples should not be trusted, in words (none: recommended): the judge does not
    recognise them as the data's (classes missing, low confidence, FID far past the data floor), or its
    loss was still falling when training stopped."""
    reasons = []
    needed = settings.min_classes_covered or num_classes
    if row.get("classes_covered") is not None and row["classes_covered"] < needed:
        reasons.append(f"its samples cover {int(row['classes_covered'])} of {num_classes} classes")
    if row.get("judge_confidence") is not None and row["judge_confidence"] < settings.min_judge_confidence:
        reasons.append(f"the judge is unsure what its samples are (mean confidence {row['judge_confidence']:.2f}, "
                       f"under {settings.min_judge_confidence:g})")
    if row.get("fid_to_floor") is not None and row["fid_to_floor"] > settings.max_fid_to_floor:
        reasons.append(f"its FID is {row['fid_to_floor']:.3g}x the data floor (over {settings.max_fid_to_floor:g}x: "
                       f"far from real images)")
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


def which_is_right_for_you(table: pd.DataFrame, num_classes: int) -> list[str]:
    """The lecture's closing question, answered from the measured numbers: one line per need. With a
    `recommended` column (add_verdicts), every recommendation comes from the recommended models, and
    the others are named first with the reasons."""
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
    quality = _best(recommended, "fid")
    if quality is not None:
        lines.append(f"**Best sample quality: {quality['model']}** ({quality['family']}): FID {quality['fid']:.3g}, "
                     f"{quality['fid_to_floor']:.2g}x the data floor of {quality['data_floor_fid']:.3g} "
                     f"(real training images score the floor); precision {quality['precision']:.2f}.")
    diverse = _best(recommended, "recall")  # recall, not density-based coverage: blurry samples near the modes
    if diverse is not None:                # can reach many real neighbourhoods while missing most of the data
        lines.append(f"**Best coverage of the data: {diverse['model']}** ({diverse['family']}): recall "
                     f"{diverse['recall']:.2f} and coverage {diverse['coverage']:.2f} (the data floor: "
                     f"{diverse['data_floor_recall']:.2f} and {diverse['data_floor_coverage']:.2f}); its samples "
                     f"cover {int(diverse['classes_covered'])} of {num_classes} classes.")
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
    exact = table[table["family"].isin(EXACT_LIKELIHOOD)]
    bound = table[table["family"].isin(LIKELIHOOD_BOUND)]
    if len(exact) and "test_nll_bits_per_dim" in table:
        def caveat(row) -> str:  # a likelihood is no recommendation when the samples are not recognised
            return "" if row.get("recommended", True) else f" ({row['verdict']})"

        shown = ", ".join(f"{row['model']} {row['test_nll_bits_per_dim']:.3g}{caveat(row)}"
                          for _, row in exact.iterrows())
        lines.append(f"**Exact likelihood: {', '.join(exact['model'])}**: test NLL in bits per dimension: {shown}."
                     + (f" The VAE gives an estimate from its bound ({', '.join(bound['model'])}), not an exact "
                        f"value; GANs and DDPM here give none." if len(bound) else ""))
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
    if "rarest_class_share_ratio" in table and table["rarest_class"].nunique() == 1:
        ratios = table.set_index("model")["rarest_class_share_ratio"].astype(float).dropna().sort_values()
        lines.append(f"**The rarest training class ({int(table['rarest_class'].iloc[0])})**: its share of the "
                     f"samples over its share of the training data (1 reproduces it, corrected for the "
                     f"classifier's confusion): " + ", ".join(f"{name} {value:.2f}" for name, value in ratios.items())
                     + ".")
    return lines


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


def description(table: pd.DataFrame, answers: list[str], rank_by: str) -> str:
    """The comparison run's description (Markdown, shown on its page): what was compared, and the answers."""
    recommended = int(table["recommended"].sum()) if "recommended" in table else len(table)
    return (f"Which generative AI is right for you? {len(table)} models compared, {recommended} recommended, ranked "
            f"by {rank_by}. Each model's metrics are in its own run (tagged `genlab.comparison_run_id` with this "
            f"run's id) and its LoggedModel; this run holds the table, the figures and the answers.\n\n"
            + "".join(f"- {line}\n" for line in answers))


def markdown(table: pd.DataFrame, answers: list[str], rank_by: str, judge: dict) -> str:
    shown = table.astype(object).where(table.notna(), None)
    return (f"# Which generative AI is right for you?\n\n"
            f"Measured on the test split in the features of the judge (a classifier of the training split, "
            f"test accuracy {judge['test_accuracy']:.4f}); every model with the same number of samples.\n\n"
            + "".join(f"- {line}\n" for line in answers)
            + f"\n## Every model and metric (ranked by {rank_by}; `rank_<metric>`: 1 is best)\n\n"
            + shown.to_markdown(index=False, floatfmt=".5g", missingval="") + "\n")


def html_page(table: pd.DataFrame, answers: list[str], rank_by: str, judge: dict, figures: dict[str, Path]) -> str:
    """One self-contained page: the answers, the table, and every figure embedded as a PNG data URI."""
    def bold(line: str) -> str:
        parts = html.escape(line).split("**")
        return "".join(f"<b>{part}</b>" if index % 2 else part for index, part in enumerate(parts))

    images = "".join(
        f"<h3>{html.escape(title)}</h3><img alt='{html.escape(title)}' src='data:image/png;base64,"
        f"{base64.b64encode(path.read_bytes()).decode()}'>" for title, path in figures.items() if path.is_file())
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>genlab: model comparison</title><style>"
        "body{font-family:sans-serif;margin:2em;max-width:110em} table{border-collapse:collapse;font-size:12px}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:right} img{max-width:100%}</style></head><body>"
        "<h1>Which generative AI is right for you?</h1>"
        f"<p>Measured on the test split in the judge's features (test accuracy {judge['test_accuracy']:.4f}); "
        "every model with the same number of samples.</p><ul>"
        + "".join(f"<li>{bold(line)}</li>" for line in answers)
        + f"</ul><h2>Every model and metric (ranked by {html.escape(rank_by)})</h2>"
        + table.to_html(index=False, float_format=lambda value: f"{value:.5g}", na_rep="")
        + images + "</body></html>\n")
