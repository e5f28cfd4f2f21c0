"""matplotlib figures: image grids, loss curves, latent maps and comparison charts.

Functions return figures (or uint8 arrays for MLflow's stepped images); callers
save or log them. The Agg backend is used, so nothing needs a screen.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure


def tile(rows: list[np.ndarray], upscale: int = 4, gap: int = 1) -> np.ndarray:
    """Stack rows of (N, H, W) images in [0, 1] into one uint8 picture, each pixel `upscale` wide."""
    count = max(len(row) for row in rows)
    height, width = rows[0].shape[1:]
    cell_h, cell_w = height * upscale + gap, width * upscale + gap
    canvas = np.full((len(rows) * cell_h + gap, count * cell_w + gap), 255, dtype=np.uint8)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            big = np.kron(np.clip(np.nan_to_num(image), 0.0, 1.0), np.ones((upscale, upscale)))
            top, left = gap + r * cell_h, gap + c * cell_w
            canvas[top:top + height * upscale, left:left + width * upscale] = (255 * (1.0 - big)).astype(np.uint8)
    return canvas  # dark strokes on white, like ink on paper


def image_rows(rows: dict[str, np.ndarray], title: str = "") -> Figure:
    """One labelled row of images per entry: the lecture's 'original / predicted' slide. Each row is one
    strip (images side by side, a grey line between them) drawn in one axes: an axes per image cost
    evaluate about 4 s of its 14."""
    count = max(len(images) for images in rows.values())
    fig, axes = plt.subplots(len(rows), 1, figsize=(0.9 * count + 1.6, 0.95 * len(rows) + 0.4), squeeze=False)
    colours = plt.get_cmap("gray_r").copy()
    colours.set_bad("#c8c8c8")  # the lines between images
    for axis, (label, images) in zip(axes[:, 0], rows.items()):
        images = np.asarray(images, dtype=np.float64)
        height, width = images.shape[1:3]
        strip = np.zeros((height, count * (width + 1) - 1))  # white where a row has fewer images
        strip[:, width::width + 1] = np.nan
        for c, image in enumerate(images):
            strip[:, c * (width + 1):c * (width + 1) + width] = np.clip(image, 0, 1)
        axis.imshow(strip, cmap=colours, vmin=0, vmax=1, interpolation="nearest")
        axis.set_xticks([]), axis.set_yticks([])
        axis.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def loss_curves(history: dict[str, list[float]], title: str, note: str = "") -> Figure:
    fig, axis = plt.subplots(figsize=(6, 3.6))
    for key, values in history.items():
        axis.plot(np.arange(1, len(values) + 1), values, label=key)
    positive = all(value > 0 for values in history.values() for value in values)
    axis.set_xlabel("epoch"), axis.set_ylabel("loss"), axis.set_yscale("log" if positive else "linear")
    axis.set_title(title, fontsize=10)
    axis.legend()
    if note:
        axis.text(0.02, 0.02, note, transform=axis.transAxes, fontsize=7, va="bottom", wrap=True)
    fig.tight_layout()
    return fig


def overlaid_curves(curves: dict[str, list[float]], ylabel: str, title: str) -> Figure:
    fig, axis = plt.subplots(figsize=(7, 4))
    for label, values in curves.items():
        axis.plot(np.arange(1, len(values) + 1), values, label=label)
    axis.set_xlabel("epoch"), axis.set_ylabel(ylabel), axis.set_yscale("log"), axis.set_title(title, fontsize=10)
    axis.legend(fontsize=7)
    fig.tight_layout()
    return fig


def latent_map(points: np.ndarray, labels: np.ndarray, title: str) -> Figure:
    """A 2-D projection of latent codes, coloured by class."""
    fig, axis = plt.subplots(figsize=(5, 4.5))
    scatter = axis.scatter(points[:, 0], points[:, 1], c=labels, cmap="tab10", s=8, alpha=0.8)
    fig.colorbar(scatter, ax=axis, label="class")
    axis.set_xlabel("PC 1"), axis.set_ylabel("PC 2"), axis.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def bar_chart(values: dict[str, dict[str, float]], title: str) -> Figure:
    """Grouped bars: values[metric][model]."""
    metrics = list(values)
    models = list(next(iter(values.values())))
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 0.35 * len(models) + 1.6), squeeze=False)
    for axis, metric in zip(axes[0], metrics):
        axis.barh(models, [values[metric][model] for model in models], color="tab:blue")
        axis.set_title(metric, fontsize=10)
        axis.invert_yaxis()
        axis.tick_params(labelsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def trilemma(models: list[str], seconds: list[float], quality: list[float], coverage: list[float],
             floor: float, title: str) -> Figure:
    """The generative trilemma: quality (FID over the data floor, lower is better) against sampling
    time, with coverage of the data (recall) as each point's colour. The best corner is bottom left
    and yellow."""
    fig, axis = plt.subplots(figsize=(7, 4.8))
    scatter = axis.scatter(seconds, quality, c=coverage, cmap="viridis", vmin=0.0, vmax=1.0, s=90,
                           edgecolors="black", linewidths=0.5)
    for name, x, y in zip(models, seconds, quality):
        axis.annotate(name, (x, y), textcoords="offset points", xytext=(6, 4), fontsize=7)
    axis.axhline(1.0, color="grey", linestyle="--", linewidth=0.8)
    axis.text(0.01, 1.0, f" data floor (FID {floor:.3g})", transform=axis.get_yaxis_transform(), fontsize=7,
              va="bottom", color="grey")
    axis.set_xscale("log"), axis.set_yscale("log")
    axis.set_xlabel("sampling time, seconds per 1000 images (log)")
    axis.set_ylabel("FID / data floor (log; 1 = as good as real data)")
    fig.colorbar(scatter, ax=axis, label="coverage of the data: recall (share of real images reached)")
    axis.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def grouped_bars(table, title: str, ylabel: str) -> Figure:
    """One group of bars per column of a DataFrame, one bar per row (class shares per split, say)."""
    fig, axis = plt.subplots(figsize=(max(6, 0.6 * table.shape[1] + 2), 3.8))
    width = 0.8 / len(table.index)
    positions = np.arange(table.shape[1])
    for index, (name, row) in enumerate(table.iterrows()):
        axis.bar(positions + index * width, row.to_numpy(dtype=float), width, label=str(name))
    axis.set_xticks(positions + 0.4 - width / 2, [str(column) for column in table.columns])
    axis.set_ylabel(ylabel), axis.set_title(title, fontsize=10), axis.legend(fontsize=7)
    fig.tight_layout()
    return fig


def distributions(values, by, measures: tuple[str, ...], title: str) -> Figure:
    """Box plots of each measure (a column of `values`) per group in `by` (the class)."""
    groups = sorted(set(by))
    fig, axes = plt.subplots(1, len(measures), figsize=(3.2 * len(measures), 3.4), squeeze=False)
    for axis, measure in zip(axes[0], measures):
        data = [values[measure][by == group].dropna().to_numpy() for group in groups]
        axis.boxplot(data, tick_labels=[str(group) for group in groups], showfliers=False)
        axis.set_title(measure, fontsize=9), axis.tick_params(labelsize=7)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def heatmap(table, title: str) -> Figure:
    """A DataFrame of counts as a heatmap with the numbers written in."""
    fig, axis = plt.subplots(figsize=(0.9 * table.shape[1] + 2.5, 0.35 * table.shape[0] + 1.5))
    values = table.to_numpy(dtype=float)
    image = axis.imshow(values, cmap="viridis", aspect="auto")
    for (row, column), value in np.ndenumerate(values):
        axis.text(column, row, f"{value:.0f}", ha="center", va="center", fontsize=7,
                  color="white" if value < values.max() / 2 else "black")
    axis.set_xticks(range(table.shape[1]), [str(column) for column in table.columns], fontsize=8)
    axis.set_yticks(range(table.shape[0]), [str(index) for index in table.index], fontsize=8)
    fig.colorbar(image, ax=axis, label="images")
    axis.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def save(fig: Figure, path: str | Path) -> Path:
    """Save as PNG atomically (a temporary file, then a rename) and free the figure."""
    from genlab.runtime.files import atomic_file

    path = Path(path)
    with atomic_file(path, "wb") as handle:
        fig.savefig(handle, dpi=110, format="png")
    plt.close(fig)
    return path
