"""Figures and tables: things people would rather look at than read, written as PNG/Markdown."""

from __future__ import annotations

import math
import os
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from .data import ArrayData  # noqa: E402


def _label(data: ArrayData, y: int) -> str:
    names = data.info.class_names
    return f"{y} {names[y]}" if names else str(y)


def sample_grid(data: ArrayData, n: int, out: str, title: str = "") -> None:
    """The first ``n`` images with their labels; grayscale as the notebook shows them (``cm.binary``)."""
    n = max(1, min(n, len(data)))
    cols = min(n, 8)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.6 * cols, 1.8 * rows), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = data.images[i]
        if img.shape[0] == 1:
            ax.imshow(img[0], cmap=plt.cm.binary)
        else:
            ax.imshow(np.transpose(img, (1, 2, 0)))
        ax.set_title(_label(data, int(data.labels[i, 0])), fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)
