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


def sample_grid(data: ArrayData, n: int, out: str, title: str = "") -> None:
    """The first ``n`` images with their labels, in the data's own colours (MNIST: light digits on black).

    The notebook shows digits with ``cm.binary`` (inverted); here pixel value 0 is black, as the model sees it.
    """
    from .files import atomic_write, makedirs

    n = max(1, min(n, len(data)))
    cols = min(n, 8)
    rows = math.ceil(n / cols)
    names = data.info.class_names
    fig, axes = plt.subplots(rows, cols, figsize=(1.5 * cols, (1.75 if names else 1.55) * rows + 0.5), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = data.images[i]
        if img.shape[0] == 1:
            ax.imshow(img[0], cmap="gray", vmin=0.0, vmax=1.0)
        else:
            ax.imshow(np.transpose(img, (1, 2, 0)))
        y = int(data.labels[i, 0])
        ax.set_title(f"{y}\n{names[y]}" if names else str(y), fontsize=8, pad=2)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    makedirs(os.path.dirname(os.path.abspath(out)))
    atomic_write(out, lambda p: fig.savefig(p, dpi=100, format="png"))
    plt.close(fig)


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _pct(mean: float, std: float) -> str:
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def _ci95(values: list[float]) -> tuple[float, float]:
    """Mean and half-width of its 95% t-interval over seeds (0 for one run)."""
    from scipy import stats

    v = np.asarray(values, "float64")
    if len(v) < 2:
        return float(v.mean()), 0.0
    return float(v.mean()), float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))


def reference_label(summary: dict[str, Any]) -> str:
    """The model the study compares the others against: the one named most often in its comparisons."""
    names = [x for c in summary["comparisons"] for x in (c["a"], c["b"])]
    return max(dict.fromkeys(names), key=names.count) if names else next(iter(summary["models"]))


def data_phrase(summary: dict[str, Any]) -> str:
    """'Fashion-MNIST, 60,000 train / 10,000 test images' — what the runs recorded, subsets named as such."""
    desc = summary.get("dataset_description", summary["dataset"])
    limited = summary.get("train_limit")
    sub = f" (the first {summary['train_samples']:,} training images)" if limited else ""
    return f"{desc}{sub}, {summary['train_samples']:,} train / {summary['test_samples']:,} test images"


def study_figures(summary: dict[str, Any], folder: str) -> list[str]:
    """Forest plot (mean and 95% CI per model), accuracy vs cost, learning curves (2+ epochs), shift robustness."""
    models = summary["models"]
    n_seeds = len(summary["seeds"])
    written = []
    ref = reference_label(summary)

    # forest plot: sorted, so the ranking reads top to bottom; the reference model is marked
    stats_ = {label: _ci95(m["acc_top1_runs"]) for label, m in models.items()}
    order = sorted(models, key=lambda label: stats_[label][0])
    fig, ax = plt.subplots(figsize=(6.4, 0.45 * len(order) + 1.6))
    for y, label in enumerate(order):
        mu, half = stats_[label]
        color = "tab:red" if label == ref else "tab:blue"
        ax.errorbar(100 * mu, y, xerr=100 * half, fmt="o", color=color, capsize=3)
        ax.scatter([100 * v for v in models[label]["acc_top1_runs"]], [y] * len(models[label]["acc_top1_runs"]),
                   s=9, color="gray", alpha=0.6, zorder=3)
    ax.axvline(100 * stats_[ref][0], color="tab:red", lw=0.8, ls="--")
    ax.set_yticks(range(len(order)), [f"{label} (reference)" if label == ref else label for label in order])
    ax.set(xlabel="test accuracy, top-1 (%)",
           title=f"{summary['study']}\nmean and 95% CI over {n_seeds} seed{'s' if n_seeds != 1 else ''}; grey dots: each run")
    ax.grid(axis="x", alpha=0.3)
    written.append(_save(fig, folder, "forest.png"))

    # accuracy vs cost: only axes on which every model has its own x (shared x values pile up unreadably)
    costs = [("train_seconds_mean", "training time per run (s)")]
    if len({m["flops"] for m in models.values()}) == len(models) > 1:
        costs.insert(0, ("flops", "forward FLOPs per image (millions)"))
    fig, axes = plt.subplots(1, len(costs), figsize=(5.4 * len(costs), 4.2), squeeze=False)
    for ax, (key, xlabel) in zip(axes[0], costs, strict=True):
        for label, m in models.items():
            x = m[key] / (1e6 if key == "flops" else 1.0)
            mu, half = stats_[label]
            ax.errorbar(x, 100 * mu, yerr=100 * half, fmt="o", capsize=3, color="tab:red" if label == ref else "tab:blue")
            ax.annotate(label, (x, 100 * mu), textcoords="offset points", xytext=(5, 4), fontsize=8)
        ax.set(xlabel=xlabel, ylabel="test accuracy, top-1 (%)")
        ax.grid(alpha=0.3)
    fig.suptitle(f"accuracy vs cost (error bars: 95% CI over {n_seeds} seeds)", fontsize=10)
    written.append(_save(fig, folder, "acc_vs_cost.png"))

    curves = {label: m["curve"] for label, m in models.items() if "curve" in m and len(m["curve"]["epoch"]) >= 2}
    if curves:  # one evaluated epoch is a dot, not a curve: the forest plot shows it
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, c in curves.items():
            e, mu, sd = (np.asarray(c[k]) for k in ("epoch", "acc_top1_mean", "acc_top1_std"))
            ax.plot(e, 100 * mu, marker="o", ms=3, label=label)
            ax.fill_between(e, 100 * (mu - sd), 100 * (mu + sd), alpha=0.2)
        ax.set(xlabel="epoch", ylabel="test accuracy, top-1 (%)",
               title=f"learning curves (band: ± std over {n_seeds} seeds)")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        written.append(_save(fig, folder, "curves.png"))

    if not any(m["shift_acc"] for m in models.values()):  # Study.shifts: []
        return written
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, m in models.items():
        ks = sorted(m["shift_acc"], key=int)
        ax.plot([int(k) for k in ks], [100 * m["shift_acc"][k] for k in ks], marker="o", label=label)
        ax.set_xticks([int(k) for k in ks])
    ax.set(xlabel="shift (pixels; mean of 4 directions, zero fill)", ylabel="test accuracy, top-1 (%)",
           title=f"translation robustness (mean over {n_seeds} seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    written.append(_save(fig, folder, "shift.png"))
    return written


def _save(fig: Any, folder: str, name: str) -> str:
    from .files import atomic_write

    fig.tight_layout()
    atomic_write(os.path.join(folder, name), lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)
    return name


def study_markdown(summary: dict[str, Any], figures: list[str]) -> str:
    models = summary["models"]
    seeds = summary["seeds"]
    epochs = summary["epochs"]
    lines = [f"# Study `{summary['study']}`", "",
             f"{data_phrase(summary)}; {epochs} epoch{'s' if epochs != 1 else ''} per run, {len(seeds)} "
             f"seed{'s' if len(seeds) != 1 else ''} ({', '.join(map(str, seeds))}); {summary['machine']}; "
             f"wall time {summary['wall_seconds'] / 60:.1f} min.", ""]
    if summary.get("missing_runs"):
        lines += [f"**Incomplete:** {len(summary['missing_runs'])} run(s) missing: "
                  f"{', '.join(summary['missing_runs'])}. Numbers below cover the finished runs only.", ""]
    shifts = sorted(next(iter(models.values()))["shift_acc"], key=int)
    params_key = "trainable_params" if all("trainable_params" in m for m in models.values()) else "params"
    rows = [[label, m["model"], f"{m[params_key]:,}", f"{m['flops'] / 1e6:.2f} M", m["runs"],
             _pct(m["acc_top1_mean"], m["acc_top1_std"]), _pct(m["acc_top2_mean"], m["acc_top2_std"])
             if "acc_top2_mean" in m else "–", f"{m['train_seconds_mean']:.0f} s",
             " / ".join(f"{100 * m['shift_acc'][k]:.1f}" for k in shifts)][: 9 if shifts else 8]
            for label, m in models.items()]
    lines += [markdown_table(["model", "arch", "trainable params" if params_key != "params" else "params", "FLOPs/img",
                              "runs", "acc_top1 % (mean ± std)", "acc_top2 % (mean ± std)", "train time/run",
                              f"acc_top1 % at shift {'/'.join(shifts)} px"][: 9 if shifts else 8], rows), ""]
    if summary["comparisons"]:
        alpha = summary.get("alpha", 0.05)
        margin = summary.get("equivalence_margin")
        methods = sorted({c.get("permutation_method", "exact") for c in summary["comparisons"]})
        lines += ["## Comparisons (acc_top1, Welch's t-test over seeds)", "",
                  f"Family: {summary.get('family', '')}. Verdicts at a family-wise {alpha:.0%}: **different** (Holm-"
                  f"adjusted Welch p < {alpha:g}); **equivalent within ±m** (two one-sided tests against the margin "
                  f"m stated in the study config, Holm-adjusted over the family); otherwise **inconclusive**, with the "
                  f"minimum detectable effect (MDE: the difference a two-sided Welch test at {alpha:g}/"
                  f"{len(summary['comparisons'])} would find with 80% power, from the observed spread and run counts). "
                  f"Differences in percentage points. Permutation p: {'; '.join(methods)}.", ""]
        rows = [[f"{c['a']} − {c['b']}", f"{100 * c['diff']:+.2f}",
                 f"[{100 * c['ci95'][0]:+.2f}, {100 * c['ci95'][1]:+.2f}]", f"{c['p_value']:.3g}",
                 f"{c.get('p_holm', c['p_value']):.3g}", f"{c['permutation_p']:.3g}",
                 f"{100 * c['mde']:.2f}" if "mde" in c else "–",
                 f"{c['p_equivalence_holm']:.3g}" if "p_equivalence_holm" in c else "–", c["verdict"]]
                for c in summary["comparisons"]]
        eq = f"p (TOST ±{100 * margin:.2g}, Holm)" if margin else "p (TOST, Holm)"
        lines += [markdown_table(["difference", "mean (pts)", "95% CI (pts)", "p (Welch)", "p (Holm)",
                                  "p (permutation)", "MDE (pts)", eq, "verdict"], rows), ""]
    if summary.get("paper"):
        lines += ["## Published numbers (for comparison, not reproduced here)", ""]
        lines += [markdown_table(["model", "reported"], [[k, v] for k, v in summary["paper"].items()]), ""]
    lines += ["## Figures", ""] + [f"![{f}]({f})" for f in figures] + [""]
    return "\n".join(lines)


def write_study_report(summary: dict[str, Any], folder: str) -> None:
    from .files import makedirs, write_json, write_text

    makedirs(folder)
    for stale in ("curves.png", "acc_vs_params.png"):  # figures an earlier version or run may have left
        path = os.path.join(folder, stale)
        if os.path.exists(path):
            os.remove(path)
    figures = study_figures(summary, folder)
    write_json(os.path.join(folder, "summary.json"), summary)
    write_text(os.path.join(folder, "report.md"), study_markdown(summary, figures))
