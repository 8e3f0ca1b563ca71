"""Images a person looks at: sample grids and loss curves, as PNG files."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import PIL.Image
from diffusers.utils import make_image_grid

__all__ = ["save_image_grid", "save_loss_curve"]


def save_image_grid(images: Sequence[PIL.Image.Image], path: Path, columns: int | None = None) -> PIL.Image.Image:
    """Tile `images` into a near-square grid (or `columns` wide) and save it as PNG; return the grid."""
    columns = columns or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / columns)
    padded = list(images) + [PIL.Image.new(images[0].mode, images[0].size)] * (rows * columns - len(images))
    grid = make_image_grid(padded, rows=rows, cols=columns)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return grid


def save_loss_curve(steps: Sequence[int], losses: Sequence[float], path: Path, title: str = "training loss") -> None:
    """Plot loss against optimizer step (log scale, with a moving average when there are many points) as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4), dpi=120)
    smooth = len(losses) >= 100
    axis.plot(steps, losses, linewidth=0.8, alpha=0.4 if smooth else 1.0, label="loss")
    if smooth:  # a trailing moving average over 2% of the points
        window = len(losses) // 50
        cumulative = [0.0]
        for value in losses:
            cumulative.append(cumulative[-1] + value)
        averaged = [
            (cumulative[i + 1] - cumulative[max(0, i + 1 - window)]) / min(i + 1, window) for i in range(len(losses))
        ]
        axis.plot(steps, averaged, linewidth=1.6, label=f"moving average of {window} points")
        axis.legend()
    if all(value > 0 for value in losses):
        axis.set_yscale("log")
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("loss")
    axis.set_title(title)
    axis.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
