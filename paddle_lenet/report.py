"""Figures and tables: things people would rather look at than read, written as PNG/Markdown."""

from __future__ import annotations

import math
import os
from typing import Any

import matplotlib
import matplotlib.ticker

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


def _pct(mean: float, std: float) -> str:
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def study_figures(summary: dict[str, Any], folder: str) -> list[str]:
    """Learning curves (mean ± std band over seeds), accuracy vs parameters, accuracy vs shift."""
    models = summary["models"]
    written = []
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, m in models.items():
        if "curve" in m:
            e, mu, sd = (np.asarray(m["curve"][k]) for k in ("epoch", "acc_top1_mean", "acc_top1_std"))
            ax.plot(e, mu, marker="o", ms=3, label=label)
            ax.fill_between(e, mu - sd, mu + sd, alpha=0.2)
    ax.set(xlabel="epoch", ylabel="test acc_top1", title=f"learning curves (mean ± std over {len(summary['seeds'])} seeds)")
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    written.append(_save(fig, folder, "curves.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, m in models.items():
        ax.errorbar(m["params"], 100 * m["acc_top1_mean"], yerr=100 * m["acc_top1_std"], fmt="o", capsize=3, label=label)
    ax.set(xscale="log", xlabel="parameters", ylabel="test acc_top1 (%)", title="accuracy vs parameters")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    written.append(_save(fig, folder, "acc_vs_params.png"))

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, m in models.items():
        ks = sorted(m["shift_acc"], key=int)
        ax.plot([int(k) for k in ks], [100 * m["shift_acc"][k] for k in ks], marker="o", label=label)
        ax.set_xticks([int(k) for k in ks])
    ax.set(xlabel="shift (pixels, mean of 4 directions, zero fill)", ylabel="test acc_top1 (%)",
           title="translation robustness")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    written.append(_save(fig, folder, "shift.png"))
    return written


def _save(fig: Any, folder: str, name: str) -> str:
    fig.tight_layout()
    fig.savefig(os.path.join(folder, name), dpi=110)
    plt.close(fig)
    return name


def study_markdown(summary: dict[str, Any], figures: list[str]) -> str:
    models = summary["models"]
    seeds = summary["seeds"]
    data = summary["dataset"] + (f" (first {summary['train_limit']} training images)" if summary["train_limit"] else "")
    lines = [f"# Study `{summary['study']}`", "",
             f"{data}, {summary['epochs']} epochs, {len(seeds)} seeds ({', '.join(map(str, seeds))}); "
             f"{summary['machine']}; wall time {summary['wall_seconds'] / 60:.1f} min.", ""]
    shifts = sorted(next(iter(models.values()))["shift_acc"], key=int)
    rows = [[label, m["model"], f"{m['params']:,}", f"{m['flops'] / 1e6:.2f} M", _pct(m["acc_top1_mean"], m["acc_top1_std"]),
             _pct(m["acc_top2_mean"], m["acc_top2_std"]), f"{m['train_seconds_mean']:.0f} s",
             " / ".join(f"{100 * m['shift_acc'][k]:.1f}" for k in shifts)]
            for label, m in models.items()]
    lines += [markdown_table(["model", "arch", "params", "FLOPs", "acc_top1 % (mean ± std)", "acc_top2 %",
                              "train time", f"acc_top1 % at shift {'/'.join(shifts)} px"], rows), ""]
    if summary["comparisons"]:
        lines += ["## Comparisons (acc_top1, Welch's t-test over seeds)", ""]
        rows = [[f"{c['a']} − {c['b']}", f"{100 * c['diff']:+.2f} pts",
                 f"[{100 * c['ci95'][0]:+.2f}, {100 * c['ci95'][1]:+.2f}]", f"{c['p_value']:.3g}",
                 f"{c['permutation_p']:.3g}", c["verdict"]] for c in summary["comparisons"]]
        lines += [markdown_table(["difference", "mean", "95% CI", "p (Welch)", "p (exact permutation)", "verdict"], rows), ""]
    if summary.get("paper"):
        lines += ["## Published numbers (for comparison, not reproduced here)", ""]
        lines += [markdown_table(["model", "reported"], [[k, v] for k, v in summary["paper"].items()]), ""]
    lines += ["## Figures", ""] + [f"![{f}]({f})" for f in figures] + [""]
    return "\n".join(lines)


def write_study_report(summary: dict[str, Any], folder: str) -> None:
    import json

    os.makedirs(folder, exist_ok=True)
    figures = study_figures(summary, folder)
    with open(os.path.join(folder, "summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(folder, "report.md"), "w", encoding="utf-8") as f:
        f.write(study_markdown(summary, figures))
