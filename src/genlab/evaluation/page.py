"""The comparison as a page a person reads: the answer first; then a table of the figures a person compares
(quality, coverage, classes, speed, size, verdict) with a strip of each model's samples, sortable by any column;
every other metric one click away, in groups; the figures below.

One self-contained HTML file that fits a 1366-pixel window: the images are PNG data URIs, the sorting is a few
lines of inline script, and nothing is fetched, so that it opens from disk with no server and no network. The
`compare` stage writes it from the table and answers of genlab.evaluation.comparison.
"""

from __future__ import annotations

import base64
import html
import io
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from genlab.evaluation.comparison import INTERVAL_NOTE, SETTING_COLUMNS


class Column(NamedTuple):
    header: str
    key: str  # the table's column
    hint: str  # what it measures, shown on hover
    suffix: str = ""


MAIN_COLUMNS = (
    Column("quality", "fid_to_floor", "FID over the data floor's: real training images score 1; lower is better",
           "x"),
    Column("recall", "recall", "share of the real images whose neighbourhood the samples reach; higher is better"),
    Column("coverage", "coverage", "share of the real images with a sample near them; higher is better"),
    Column("classes", "classes_covered", "classes the judge finds among the samples"),
    Column("s / 1000", "sampling_seconds_per_1000", "seconds to draw 1000 samples; lower is better"),
    Column("parameters", "num_params", "the model's size; lower is smaller"),
)

# Every other column, one click away: each goes to the first group with a pattern that matches its start (a group's
# columns in the order of its patterns), and what none matches to "other", so that nothing is lost when evaluate
# measures something new
GROUPS = {
    "quality": ("fid", "kid", "precision", "recall", "density", "coverage", "judge_confidence", "intra_class_fid",
                "worst_class_fid", "worst_fid_class", "rarest_class_fid", "morphometry_", "data_floor_", "num_samples"),
    "classes and bias": ("class", "corrected_missing", "bias_", "tv_", "kl_", "min_ratio", "raw_", "rarest_class",
                         "asked_class", "worst_asked", "worst_class_mse", "worst_slant", "worst_stroke"),
    "reconstruction and likelihood": ("test_", "reconstruction_", "judge_accuracy_on_reconstructions", "noise_std"),
    "restoration": ("restore_method$", "restore_(?!seconds)",),
    "copying": ("copying_",),
    "model and training": tuple(f"{name}$" for name in (
        "verdict", "recommended", "family", "likelihood", "diagnosis", *SETTING_COLUMNS, "num_params",
        "num_hyperparameters", "epochs_trained", "num_seeds")),
    "timing": (".*seconds",),
    "ranks": ("rank_",),
}

# the words of comparison.not_recommended_because's reasons -> the verdict's short word
REASON_WORDS = {"classes": "missing classes", "judge is unsure": "unrecognised", "the data floor": "poor quality",
                "copy training images": "copies", "still falling": "still learning"}

SORTING = """
for (const button of document.querySelectorAll("table.sortable th button")) button.onclick = () => {
  const th = button.parentElement, table = th.closest("table"), column = th.cellIndex;
  const ascending = th.getAttribute("aria-sort") !== "ascending";
  for (const other of table.querySelectorAll("th")) other.removeAttribute("aria-sort");
  th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  const key = row => row.cells[column].dataset.sort ?? row.cells[column].textContent.trim();
  const rows = [...table.tBodies[0].rows].sort((a, b) => {
    const x = key(a), y = key(b);
    if (x === "" || y === "") return (x === "") - (y === "");  // missing values last, either way
    const order = isNaN(x) || isNaN(y) ? x.localeCompare(y) : x - y;
    return ascending ? order : -order;
  });
  table.tBodies[0].append(...rows);
};
"""

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;color:#222;max-width:96em;margin:0 auto;padding:.5em 1.5em 3em}
h1{font-size:1.6em;margin:.5em 0 .2em} h2{font-size:1.2em;margin:1.4em 0 .4em} nav a{margin-right:1em}
ul.answers{padding-left:1.2em;overflow-wrap:anywhere} ul.answers li{margin:.25em 0}
table{border-collapse:collapse;font-size:13px}
th,td{padding:3px 8px;border-bottom:1px solid #ddd;text-align:right;vertical-align:middle}
th{background:#f3f3f3;position:sticky;top:0;z-index:1;font-weight:600}
th button{all:unset;cursor:pointer} th button:focus-visible{outline:2px solid #4a7}
th[aria-sort=ascending] button::after{content:" \\25B2"} th[aria-sort=descending] button::after{content:" \\25BC"}
td.text,th.text{text-align:left} td.long{min-width:18em;max-width:32em} td.verdict{min-width:11em}
.ci,.note{display:block;font-size:11px;color:#777} .ci{white-space:nowrap} .ok{color:#17692f} .no{color:#a8261b}
tbody tr:hover{background:#f7f7fb} img.thumb{display:block;image-rendering:pixelated}
details{margin:.3em 0} summary{cursor:pointer;font-weight:600;padding:.2em 0}
.scroll{overflow-x:auto;max-width:100%;border:1px solid #eee}
.scroll th:first-child,.scroll td:first-child{position:sticky;left:0;background:#fff;z-index:2}
.scroll th:first-child{background:#f3f3f3} figure{margin:.5em 0} figure img{max-width:100%;height:auto}
"""


def comparison_page(table: pd.DataFrame, answers: list[str], rank_by: str, judge: dict, figures: dict[str, Path],
                    samples: dict[str, np.ndarray], open_figures: int = 2) -> str:
    """The page: the answers (`**bold**` as bold), the main table, the metric groups and the figures (each a
    PNG file, embedded; a missing one is left out; the first `open_figures` shown, the others a click away), with
    each model's `samples` as a thumbnail."""
    groups = metric_groups([column for column in metric_columns(table) if column != "model"])
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width,initial-scale=1'>"
        f"<title>genlab: which generative AI is right for you?</title><style>{STYLE}</style></head><body>"
        "<h1>Which generative AI is right for you?</h1>"
        f"<p>Measured on the test split in the judge's features (a classifier of the training split, test accuracy "
        f"{judge['test_accuracy']:.4f}); every model with the same number of samples.</p>"
        "<nav><a href='#models'>the models</a><a href='#metrics'>every metric</a><a href='#figures'>figures</a></nav>"
        "<h2>The answer</h2><ul class='answers'>" + "".join(f"<li>{bold(line)}</li>" for line in answers) + "</ul>"
        f"<h2 id='models'>The models, ranked by {html.escape(rank_by)} (click a column to sort)</h2>"
        + main_table(table, rank_by, samples)
        + f"<p class='note'>Rank: 1 is best, and models whose intervals overlap share it. Under a value, its "
          f"interval: {html.escape(INTERVAL_NOTE.replace('`', ''))} Hover a verdict for its reasons; every "
          f"reason is under model and training below.</p>"
        + "<h2 id='metrics'>Every metric</h2>"
        + "".join(group_section(table, name, columns) for name, columns in groups.items() if columns)
        + "<h2 id='figures'>Figures</h2>"
        + "".join(f"<details{' open' if index < open_figures else ''}><summary>{html.escape(title)}</summary><figure>"
                  f"<img alt='{html.escape(title)}' src='{data_uri(path.read_bytes())}'></figure></details>"
                  for index, (title, path) in enumerate(item for item in figures.items() if item[1].is_file()))
        + f"<script>{SORTING}</script></body></html>\n")


def main_table(table: pd.DataFrame, rank_by: str, samples: dict[str, np.ndarray]) -> str:
    """The figures a person compares, a row per model in the table's order."""
    rank = f"rank_{rank_by}"
    shown = [column for column in MAIN_COLUMNS if column.key in table]
    head = ((header("rank", f"rank by {rank_by}") if rank in table else "")
            + header("model", "the model, and its family", "text") + "<th class='text'>samples</th>"
            + "".join(header(column.header, f"{column.key}: {column.hint}") for column in shown)
            + (header("verdict", "recommended, or why not (hover a verdict for the reasons)", "text")
               if "verdict" in table else ""))
    rows = []
    for _, row in table.iterrows():
        name = str(row["model"])
        image = thumbnail(samples[name]) if name in samples else None
        words = verdict_words(row["verdict"]) if isinstance(row.get("verdict"), str) else []
        verdict = ("" if "verdict" not in table else  # sorted by the number of reasons, the reasons on hover
                   f"<td class='text verdict {'no' if words else 'ok'}' data-sort='{len(words)}' "
                   f"title='{html.escape(row['verdict'], quote=True)}'>{html.escape(', '.join(words) or 'recommended')}"
                   "</td>")
        rows.append(
            "<tr>" + (cell(row, rank) if rank in table else "")
            + f"<td class='text' data-sort='{html.escape(name)}'><b>{html.escape(name)}</b>"
              f"<span class='note'>{html.escape(str(row.get('family', '')))}</span></td>"
            + (f"<td><img class='thumb' alt='samples of {html.escape(name)}' src='{image}'></td>" if image
               else "<td></td>")
            + "".join(cell(row, column.key, column.suffix) for column in shown) + verdict + "</tr>")
    return f"<table class='sortable main'><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def group_section(table: pd.DataFrame, name: str, columns: list[str]) -> str:
    """A group of metrics behind one click: a table with a row per model, scrolling sideways in its own box."""
    head = header("model", "the model", "text") + "".join(
        header(html.escape(column).replace("_", "_<wbr>"), column, "text" if table[column].dtype == object else "",
               escaped=True) for column in columns)
    rows = "".join("<tr>" + f"<td class='text'>{html.escape(str(row['model']))}</td>"
                   + "".join(cell(row, column) for column in columns) + "</tr>" for _, row in table.iterrows())
    return (f"<details class='group'><summary>{html.escape(name)} ({len(columns)})</summary><div class='scroll'>"
            f"<table class='sortable'><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table></div></details>")


def header(text: str, hint: str, kind: str = "", escaped: bool = False) -> str:
    """A column header that sorts its table on a click (or Enter)."""
    return (f"<th class='{kind}' title='{html.escape(hint, quote=True)}'>"
            f"<button type='button'>{text if escaped else html.escape(text)}</button></th>")


def cell(row: pd.Series, column: str, suffix: str = "") -> str:
    """A value to four significant digits, with its interval beneath (to three) where the row has one that is not
    a constant, and the value itself as the sort key (none where it is missing: sorted last)."""
    value = row.get(column)
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return "<td data-sort=''></td>"
    if isinstance(value, (bool, np.bool_)):
        return f"<td data-sort='{int(value)}'>{'yes' if value else 'no'}</td>"
    if isinstance(value, str):
        long = " long" if len(value) > 40 else ""
        return f"<td class='text{long}'>{html.escape(value)}</td>"
    low, high = row.get(f"{column}_low"), row.get(f"{column}_high")
    shown = low is not None and high is not None and pd.notna(low) and pd.notna(high) and low != high  # not a constant
    interval = f" <span class='ci'>({number(low, 3)}\u2013{number(high, 3)})</span>" if shown else ""
    return f"<td data-sort='{float(value)!r}'>{number(value)}{suffix}{interval}</td>"


def number(value: float, digits: int = 4) -> str:
    """`digits` significant digits; whole thousands with separators (9,000 parameters, not 9e+03)."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.{digits}g}"


def metric_columns(table: pd.DataFrame) -> list[str]:
    """The table's columns but the `_low` and `_high` of an interval, which are shown under their metric."""
    folded = {f"{column}_{end}" for column in table for end in ("low", "high")
              if f"{column}_low" in table and f"{column}_high" in table}
    return [column for column in table if column not in folded]


def metric_groups(columns: list[str], patterns: dict[str, tuple[str, ...]] = GROUPS) -> dict[str, list[str]]:
    """Each column in the first group with a pattern that matches its start, ordered by its pattern (then as
    given); "other" for the rest."""
    def first_match(prefixes: tuple[str, ...], column: str) -> int | None:
        return next((index for index, prefix in enumerate(prefixes) if re.match(prefix, column)), None)

    found = {name: [] for name in [*patterns, "other"]}
    for column in columns:
        group = next((name for name, prefixes in patterns.items() if first_match(prefixes, column) is not None),
                     "other")
        found[group].append(column)
    return {name: sorted(grouped, key=lambda column: first_match(patterns.get(name, ("",)), column))
            for name, grouped in found.items()}


def verdict_words(verdict: str) -> list[str]:
    """A verdict of comparison.add_verdicts in short words, one per reason ([] where it is "recommended"); a reason
    with no word of REASON_WORDS by its first three words."""
    if not verdict.startswith("not recommended: "):
        return []
    reasons = verdict.removeprefix("not recommended: ").split("; ")
    return [next((word for phrase, word in REASON_WORDS.items() if phrase in reason),
                 " ".join(reason.split()[:3])) for reason in reasons]


def bold(line: str) -> str:
    """An answer in HTML, its `**bold**` parts bold."""
    parts = html.escape(line).split("**")
    return "".join(f"<b>{part}</b>" if index % 2 else part for index, part in enumerate(parts))


def thumbnail(images: np.ndarray, columns: int = 5, rows: int = 2, height: int = 64) -> str | None:
    """A PNG data URI of the first `rows` x `columns` images as a grid (grey images dark on white, as the figures
    draw them; a grey line between images), enlarged by a whole number to about `height` pixels; None for none."""
    from matplotlib import image as mpimg

    images = np.clip(np.asarray(images, dtype=np.float64)[:rows * columns], 0, 1)
    if len(images) == 0:
        return None
    if images.ndim == 3:
        images = images[..., None]  # B, H, W -> B, H, W, C
    if images.shape[-1] == 1:
        images = 1 - images  # ink dark on white
    B, H, W, C = images.shape
    columns = min(columns, B)
    rows = -(-B // columns)
    grid = np.ones((rows * (H + 1) - 1, columns * (W + 1) - 1, C))  # white where the last row has no image
    grid[H::H + 1], grid[:, W::W + 1] = 200 / 255, 200 / 255  # the lines between images
    for index, image in enumerate(images):
        top, left = index // columns * (H + 1), index % columns * (W + 1)
        grid[top:top + H, left:left + W] = image
    scale = max(1, round(height / grid.shape[0]))
    grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    buffer = io.BytesIO()
    mpimg.imsave(buffer, grid[..., 0] if C == 1 else grid, format="png", cmap="gray", vmin=0, vmax=1)
    return data_uri(buffer.getvalue())


def data_uri(png: bytes) -> str:
    return f"data:image/png;base64,{base64.b64encode(png).decode()}"
