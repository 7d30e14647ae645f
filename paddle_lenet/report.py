"""Figures and tables: things people would rather look at than read, written as PNG/Markdown."""

from __future__ import annotations

import math
import os
from typing import Any

import matplotlib
import matplotlib.pyplot as plt  # no matplotlib.use() here: the host's backend is its own (headless: Agg anyway)
import matplotlib.ticker
import numpy as np

from .data import ArrayData


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
        img = data.batch(i)
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


# one colour per model, the same in every figure and every study where the labels match
_PALETTE = {"LeNet": "tab:blue", "max": "tab:blue", "LeNet_nopool": "tab:orange", "nopool": "tab:orange",
            "avg": "tab:green", "lp3": "tab:red", "mixed": "tab:purple", "stochastic": "tab:brown", "soft": "tab:pink",
            "lip": "tab:olive", "dpp": "tab:cyan", "max+gap": "tab:gray", "LeNet_BN": "tab:blue",
            "LeNet_BN_strided": "tab:orange", "LeNet5_classic": "tab:green"}
_SPARE = ["#1b9e77", "#d95f02", "#7570b3", "#e7298a", "#66a61e", "#e6ab02", "#a6761d", "#666666"]


def model_colors(labels: list[str]) -> dict[str, str]:
    colors, spare = {}, iter(_SPARE * 4)
    for label in labels:
        colors[label] = _PALETTE.get(label) or next(spare)
    return colors


def study_figures(summary: dict[str, Any], folder: str) -> list[str]:
    """Forest plot (mean and 95% CI per model), accuracy vs cost, learning curves (2+ epochs), shift robustness."""
    models = summary["models"]
    n_seeds = len(summary["seeds"])
    written = []
    ref = reference_label(summary)
    color = model_colors(list(models))

    # forest plot: sorted, so the ranking reads top to bottom; the reference model is marked
    stats_ = {label: _ci95(m["acc_top1_runs"]) for label, m in models.items()}
    order = sorted(models, key=lambda label: stats_[label][0])
    fig, ax = plt.subplots(figsize=(5.6, 0.38 * len(order) + 1.6))
    for y, label in enumerate(order):
        mu, half = stats_[label]
        ax.errorbar(100 * mu, y, xerr=100 * half, fmt="o", color=color[label], capsize=3)
        ax.scatter([100 * v for v in models[label]["acc_top1_runs"]], [y] * len(models[label]["acc_top1_runs"]),
                   s=9, color="gray", alpha=0.6, zorder=3)
    ax.axvline(100 * stats_[ref][0], color=color[ref], lw=0.8, ls="--")
    ax.set_yticks(range(len(order)), [f"{label} (reference)" if label == ref else label for label in order])
    ax.set(xlabel="test accuracy, top-1 (%)",
           title=f"{summary['study']}\nmean and 95% CI over {n_seeds} seed{'s' if n_seeds != 1 else ''}\ngrey dots: each run")
    ax.title.set_fontsize(9)
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
            ax.errorbar(x, 100 * mu, yerr=100 * half, fmt="o", capsize=3, color=color[label])
            ax.annotate(label, (x, 100 * mu), textcoords="offset points", xytext=(5, 4), fontsize=8)
        ax.set(xlabel=xlabel + " (axis from 0)", ylabel="test accuracy, top-1 (%)")
        if key == "train_seconds_mean" and mixed_timing_note(summary):
            ax.set_title(f"times from {len(summary['timing'])} CPU/code contexts: not comparable", fontsize=8,
                         color="firebrick")
        ax.set_xlim(left=0, right=max(m[key] / (1e6 if key == "flops" else 1.0) for m in models.values()) * 1.25)
        ax.grid(alpha=0.3)
    fig.suptitle(f"accuracy vs cost (error bars: 95% CI over {n_seeds} seeds)", fontsize=10)
    written.append(_save(fig, folder, "acc_vs_cost.png"))

    curves = {label: m["curve"] for label, m in models.items() if "curve" in m and len(m["curve"]["epoch"]) >= 2}
    if curves:  # one evaluated epoch is a dot, not a curve: the forest plot shows it
        fig, ax = plt.subplots(figsize=(6, 4))
        for label, c in curves.items():
            e, mu, sd = (np.asarray(c[k]) for k in ("epoch", "acc_top1_mean", "acc_top1_std"))
            ax.plot(e, 100 * mu, marker="o", ms=3, label=label, color=color[label])
            ax.fill_between(e, 100 * (mu - sd), 100 * (mu + sd), alpha=0.2, color=color[label])
        ax.set(xlabel="epoch", ylabel="test accuracy, top-1 (%)",
               title=f"learning curves (band: ± std over {n_seeds} seeds)")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        written.append(_save(fig, folder, "curves.png"))

    fits = {label: m for label, m in models.items() if "fit" in m and "train_acc_top1_mean" in m.get("curve", {})}
    if fits:  # train and test accuracy per epoch: where the test curve peaks, how far train runs ahead
        # one small panel per model on a shared y axis: ten models' twenty curves in one axes cannot be told apart
        cols = min(len(fits), 5)
        rows = -(-len(fits) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols + 0.6, 2.3 * rows + 0.9), sharex=True, sharey=True,
                                 squeeze=False)
        for ax, (label, m) in zip(list(axes.flat)[:len(fits)], fits.items(), strict=True):
            c, f = m["curve"], m["fit"]
            ax.plot(c["epoch"], [100 * v for v in c["train_acc_top1_mean"]], ls="--", color=color[label],
                    label="train (running, training mode)")
            ax.plot(c["epoch"], [100 * v for v in c["acc_top1_mean"]], marker="o", ms=3, color=color[label],
                    label="test")
            ax.axvline(f["best_epoch"], color="gray", lw=0.8, ls=":")
            ax.set_title(f"{label}: best test {100 * f['best_acc_top1']:.2f}%\nat epoch {f['best_epoch']}", fontsize=8)
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
        for ax in list(axes.flat)[len(fits):]:
            ax.set_visible(False)
        for ax in axes[:, 0]:
            ax.set_ylabel("accuracy, top-1 (%)", fontsize=8)
        for ax in axes[-1]:
            ax.set_xlabel("epoch", fontsize=8)
        handles, labels = axes.flat[0].get_legend_handles_labels()
        # one panel is narrower than the two entries side by side: stack them there
        ncol = 2 if cols > 1 else 1
        fig.legend(handles, ["train (dashed; running, training mode)", "test (solid; dotted line: best epoch)"],
                   loc="lower center", ncol=ncol, fontsize=8, frameon=False)
        fig.suptitle(f"train vs test (mean over {n_seeds} seeds)", fontsize=10)
        fig.tight_layout(rect=(0, 0.07 if ncol == 2 else 0.14, 1, 0.95))
        written.append(_save(fig, folder, "train_vs_test.png", tight=False))

    per_class = {label: m["per_class"] for label, m in models.items() if m.get("per_class")}
    if len(per_class) == len(models):
        written.append(_per_class_png(summary, per_class, folder))

    if not any(m["shift_acc"] for m in models.values()):  # Study.shifts: []
        return written
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, m in models.items():
        ks = sorted(m["shift_acc"], key=int)
        sd = m.get("shift_acc_std", {})
        ax.errorbar([int(k) for k in ks], [100 * m["shift_acc"][k] for k in ks],
                    yerr=[100 * sd.get(k, 0.0) for k in ks] if sd else None, marker="o", ms=4, capsize=2,
                    label=label, color=color[label])
        ax.set_xticks([int(k) for k in ks])
    ax.set(xlabel="shift (pixels; mean of 4 directions, zero fill)", ylabel="test accuracy, top-1 (%)",
           title=f"translation robustness (mean{' ± std' if any('shift_acc_std' in m for m in models.values()) else ''}"
                 f" over {n_seeds} seeds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    written.append(_save(fig, folder, "shift.png"))
    return written


def _per_class_png(summary: dict[str, Any], per_class: dict[str, dict[str, list[float]]], folder: str) -> str:
    """Where the accuracy lives: class × model (mean over seeds, a heat map that stays readable for the whole zoo),
    and beside it where each comparison's difference comes from (its per-class differences, one colour per pair)."""
    models = list(per_class)
    names = list(per_class[models[0]])
    acc = np.array([[100 * per_class[label][n][0] for label in models] for n in names])
    sd = np.array([[100 * per_class[label][n][1] for label in models] for n in names])
    pairs = [c for c in summary["comparisons"] if c.get("by_class")]
    n_seeds = len(summary["seeds"])
    fig, axes = plt.subplots(1, 2 if pairs else 1, squeeze=False,
                             figsize=(1.0 * len(models) + 2.6 + (4.2 if pairs else 0), 0.42 * len(names) + 2.2),
                             gridspec_kw={"width_ratios": [max(1.0, 0.28 * len(models)), 1.0]} if pairs else None)
    ax = axes[0][0]
    im = ax.imshow(acc, cmap="viridis", aspect="auto", vmin=min(50.0, float(acc.min())), vmax=100)
    for i in range(len(names)):
        for j in range(len(models)):
            ax.text(j, i, f"{acc[i, j]:.1f}" + (f"\n±{sd[i, j]:.1f}" if len(models) <= 4 else ""), ha="center",
                    va="center", fontsize=7, color="white" if acc[i, j] < 0.5 * (acc.min() + 100) else "black")
    ax.set_xticks(range(len(models)), models, rotation=30 if len(models) > 3 else 0, ha="right" if len(models) > 3 else "center",
                  fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_title(f"per-class test accuracy (%), mean over {n_seeds} seeds", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.05, pad=0.03, label="accuracy (%)")
    if pairs:
        ax = axes[0][1]
        color = model_colors(models)
        for k, c in enumerate(pairs):  # classes are categories: stems from zero, not a line through them
            d = [100 * c["by_class"].get(n, float("nan")) for n in names]
            y = np.arange(len(names)) + 0.6 * (k - (len(pairs) - 1) / 2) / max(1, len(pairs))
            col = color.get(c["a"], "C0")
            ax.hlines(y, 0, d, color=col, lw=1.2)
            ax.plot(d, y, "o", ms=4, color=col, label=f"{c['a']} − {c['b']}")
        ax.axvline(0, color="gray", lw=0.8)
        ax.set_yticks(range(len(names)), [""] * len(names))
        ax.set_ylim(len(names) - 0.5, -0.5)
        ax.set_xlabel("difference in the class's accuracy (points)", fontsize=8)
        ax.set_title("where each difference comes from", fontsize=9)
        ax.grid(axis="x", alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    return _save(fig, folder, "per_class.png")


def _save(fig: Any, folder: str, name: str, tight: bool = True) -> str:
    from .files import atomic_write

    if tight:  # else the caller laid the figure out itself (room for a figure-level legend)
        fig.tight_layout()
    atomic_write(os.path.join(folder, name), lambda p: fig.savefig(p, dpi=110, format="png"))
    plt.close(fig)
    return name


def mixed_blas_note(summary: dict[str, Any]) -> str | None:
    """A warning when the reported runs' matmuls took different BLAS code paths (``arithmetic.blas``), else None.

    Not refused like mixed kernels: runs recorded before the digest existed say nothing about their path, and a
    path is the machine's, not the package's. But the bits differ (measured: zoo seed 0 re-run on AMD with MKL's AVX2
    path differs from its record from the first epoch; with MKL's default path it matches it exactly), so the report
    says so, and which digests it saw.
    """
    paths = (summary.get("arithmetic") or {}).get("blas") or []
    if len(paths) < 2:
        return None
    return (f"**Mixed BLAS paths:** the runs' matmuls were computed on {len(paths)} code paths "
            f"({', '.join(paths)}; `arithmetic.blas` in each run's metrics.json), so equal seeds are not bit-equal "
            "runs across them; for one path, re-run the study's runs on one machine type (Global.overwrite=true).")


def mixed_timing_note(summary: dict[str, Any]) -> str | None:
    """A warning when the reported runs' train times were measured on more than one CPU or package code (``timing``
    in each run's metrics.json; runs recorded before it existed count as one "unrecorded" context), else None.

    Why: a study's runs may be re-run on a later sitting — a faster kernel, another machine — while the rest keep
    their records; the time column and the cost figure would then rank models by when they ran (a LIP re-run on
    faster code once plotted as the cheapest model while it is the costliest).
    """
    contexts = summary.get("timing") or []
    if len(contexts) < 2:
        return None
    return (f"**Times not comparable:** the runs' train times were measured in {len(contexts)} contexts (CPU, cores or "
            "package code differ; `timing` in each run's metrics.json), so the train time column and the cost figure "
            "are not a cost ranking. For one, re-run the study's runs on one machine with one code "
            "(Global.overwrite=true).")


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
    for note in (mixed_blas_note(summary), mixed_timing_note(summary)):
        if note:
            lines += [note, ""]
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
    for label, m in models.items():
        if "fit" in m:
            f = m["fit"]
            lines += [f"**{label}, train vs test:** best test accuracy {100 * f['best_acc_top1']:.2f}% at epoch "
                      f"{f['best_epoch']} (per seed: {', '.join(map(str, f['best_epoch_per_seed']))}); after the last "
                      f"epoch test {100 * f['final_acc_top1']:.2f}%, train {100 * f['final_train_acc_top1']:.2f}% "
                      f"(running accuracy over the epoch's batches in training mode): a gap of "
                      f"{100 * f['final_gap']:+.2f} points.", ""]
    per_class = {label: m["per_class"] for label, m in models.items() if m.get("per_class")}
    if len(per_class) == len(models):
        names = list(next(iter(per_class.values())))
        lines += ["## Per class (acc_top1 %, mean ± std over seeds)", ""]
        rows = [[n] + [_pct(*per_class[label][n]) for label in models] for n in names]
        lines += [markdown_table(["class", *models], rows), ""]
        for c in summary["comparisons"]:
            if "by_class" in c:
                top = sorted(c["by_class"].items(), key=lambda kv: -abs(kv[1]))[:3]
                lines.append(f"- {c['a']} − {c['b']} ({100 * c['diff']:+.2f} pts overall) comes most from: "
                             + ", ".join(f"{n} {100 * d:+.1f}" for n, d in top) + " (pts of that class's accuracy)")
        lines.append("")
    if summary.get("paper"):
        lines += ["## Published numbers (for comparison, not reproduced here)", ""]
        lines += [markdown_table(["model", "reported"], [[k, v] for k, v in summary["paper"].items()]), ""]
    lines += ["## Figures", ""] + [f"![{f}]({f})" for f in figures] + [""]
    return "\n".join(lines)


def summary_csv(summary: dict[str, Any]) -> str:
    """``summary.json`` as a table people load: one row per run (``kind=run``), then one per model (``kind=model``,
    means and standard deviations over its seeds)."""
    import csv
    import io

    shifts = sorted({k for m in summary["models"].values() for k in m["shift_acc"]}, key=int)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["kind", "label", "model", "seed", "runs", "params", "flops", "acc_top1", "acc_top1_std",
                *[f"shift_{k}px_acc_top1" for k in shifts]])
    for label, m in summary["models"].items():
        for seed, acc in zip(m["seeds"], m["acc_top1_runs"], strict=True):
            w.writerow(["run", label, m["model"], seed, 1, m["params"], m["flops"], f"{acc:.6f}", "", *[""] * len(shifts)])
    for label, m in summary["models"].items():
        w.writerow(["model", label, m["model"], "", m["runs"], m["params"], m["flops"], f"{m['acc_top1_mean']:.6f}",
                    f"{m['acc_top1_std']:.6f}", *[f"{m['shift_acc'].get(k, float('nan')):.6f}" for k in shifts]])
    return buf.getvalue()


def write_study_report(summary: dict[str, Any], folder: str) -> None:
    from .files import makedirs, write_json, write_text

    makedirs(folder)
    for stale in ("curves.png", "acc_vs_params.png"):  # figures an earlier version or run may have left
        path = os.path.join(folder, stale)
        if os.path.exists(path):
            os.remove(path)
    figures = study_figures(summary, folder)
    write_json(os.path.join(folder, "summary.json"), summary)
    write_text(os.path.join(folder, "summary.csv"), summary_csv(summary))
    write_text(os.path.join(folder, "report.md"), study_markdown(summary, figures))


# --------------------------------------------------------------------------- seeing why (paddle_lenet.analysis)
def _write_png(fig: Any, out: str, dpi: int = 110) -> str:
    from .files import atomic_write, makedirs

    makedirs(os.path.dirname(os.path.abspath(out)))
    fig.tight_layout()
    atomic_write(out, lambda p: fig.savefig(p, dpi=dpi, format="png"))
    plt.close(fig)
    return out


def confusion_png(result: dict[str, Any], out: str, title: str = "") -> str:
    """The confusion matrix (row-normalised colours, counts written in) beside per-class accuracy bars."""
    names = result["class_names"]
    conf = np.asarray(result["confusion_matrix"], dtype=float)
    rates = conf / np.maximum(conf.sum(1, keepdims=True), 1)
    k = len(names)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(6.2 + 0.35 * k, 0.45 * k + 1.6), gridspec_kw={"width_ratios": [3, 1.3]})
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(k):
        for j in range(k):
            if conf[i, j]:
                ax.text(j, i, f"{int(conf[i, j])}", ha="center", va="center", fontsize=7,
                        color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(k), names, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), names, fontsize=8)
    ax.set(xlabel="predicted class", ylabel="true class")
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03, label="share of the true class")
    acc = [100 * result["per_class_accuracy"][n] for n in names]
    bx.barh(range(k), acc, color="#4C72B0")
    bx.set_yticks(range(k), names, fontsize=8)
    bx.invert_yaxis()
    bx.set(xlim=(max(0.0, min(acc) - 10), 100), xlabel="accuracy per class (%)")
    for i, v in enumerate(acc):
        bx.text(v, i, f" {v:.1f}", va="center", fontsize=7)
    bx.grid(axis="x", alpha=0.3)
    fig.suptitle(title or f"confusion matrix and per-class accuracy (overall {100 * result['accuracy']:.2f}%)",
                 fontsize=10)
    return _write_png(fig, out)


def _show(ax: Any, img: np.ndarray) -> None:
    if img.shape[0] == 1:
        ax.imshow(img[0], cmap="gray", vmin=0.0, vmax=1.0)
    else:
        ax.imshow(np.transpose(img, (1, 2, 0)))
    ax.set_xticks([])
    ax.set_yticks([])


def gallery_png(result: dict[str, Any], data: ArrayData, names: tuple[str, str], out: str, per_side: int = 8) -> str:
    """Two rows of test images: right for A and wrong for B (in every seed), and the reverse; each titled with the
    true label, the winner's probability of it and the loser's prediction."""
    sides = [("a_only", names[0], names[1]), ("b_only", names[1], names[0])]
    if not any(result[s] for s, _, _ in sides):  # nothing to show is the finding: say it, with the per-seed counts
        per = result.get("per_seed") or []
        mean = [np.mean([d[k] for d in per]) if per else float("nan") for k in ("a_only", "b_only")]
        fig, ax = plt.subplots(figsize=(6.4, 2.2))
        ax.axis("off")
        ax.text(0.5, 0.5, f"No test image is right in every one of the {result['seeds']} seeds of one model\n"
                          f"and wrong in every seed of the other.\nSeed by seed: {names[0]} right and {names[1]} wrong "
                          f"on {mean[0]:.0f} images on average,\nthe reverse on {mean[1]:.0f}: run-to-run noise, "
                          f"not a systematic difference.", ha="center", va="center", fontsize=9, wrap=True)
        ax.set_title(f"where {names[0]} and {names[1]} disagree in all {result['seeds']} seeds", fontsize=10)
        return _write_png(fig, out)
    cols = max(1, min(per_side, max(len(result[s]) for s, _, _ in sides)))
    fig, axes = plt.subplots(2, cols, figsize=(1.55 * cols + 1.2, 4.4), squeeze=False)
    for r, (side, win, lose) in enumerate(sides):
        items = result[side][:cols]
        for c in range(cols):
            ax = axes[r, c]
            if c >= len(items):
                ax.axis("off")
                continue
            it = items[c]
            _show(ax, data.batch(it["index"]))
            ax.set_title(f"{it['label']}\n{win} {it['winner_prob']:.2f}\n{lose}: {it['loser_pred']} {it['loser_prob']:.2f}",
                         fontsize=6.5, pad=2)
        count = result[f"{side}_count"]
        axes[r, 0].set_ylabel(f"{win} right,\n{lose} wrong\n({count} images)", fontsize=8)
        if not items:
            axes[r, 0].axis("on")
            axes[r, 0].set_xticks([])
            axes[r, 0].set_yticks([])
    seeds = result["seeds"]
    fig.suptitle(f"where {names[0]} and {names[1]} disagree" + (f" in all {seeds} seeds" if seeds > 1 else ""),
                 fontsize=10)
    return _write_png(fig, out)


def feature_maps_png(results: dict[str, dict[str, Any]], image: np.ndarray, out: str, channels: int = 6) -> str:
    """One row per model stage: the first ``channels`` maps of the original image, and beside them the same maps for
    the image shifted by the largest shift, with each stage's relative change. Models side by side as blocks."""
    rows = [(model, stage) for model, r in results.items() for stage in r["stages"]]
    fig, axes = plt.subplots(len(rows), 2 * channels + 1, figsize=(1.05 * (2 * channels + 1), 1.15 * len(rows) + 0.8),
                             squeeze=False)
    for r, (model, stage) in enumerate(rows):
        res = results[model]
        shift = max(res["relative_change"], key=int)
        orig, moved = res["maps"]["original"][stage], res["maps"][f"shift_{shift}"][stage]
        lo, hi = float(min(orig.min(), moved.min())), float(max(orig.max(), moved.max()))
        for c in range(channels):
            for half, arr in ((0, orig), (1, moved)):
                ax = axes[r, half * (channels + 1) + c]
                ax.set_xticks([])
                ax.set_yticks([])
                if c < arr.shape[0]:
                    im = ax.imshow(arr[c], cmap="viridis", vmin=lo, vmax=hi)
                else:
                    ax.axis("off")
        fig.colorbar(im, ax=axes[r, -1], fraction=0.12, pad=0.04).ax.tick_params(labelsize=6)
        mid = axes[r, channels]
        mid.axis("off")
        mid.text(0.5, 0.5, f"Δ {100 * res['relative_change'][shift][stage]:.0f}%", ha="center", va="center", fontsize=8)
        h, w = orig.shape[1:]
        axes[r, 0].set_ylabel(f"{model}\n{stage} {h}×{w}", fontsize=7)
    shift = max(next(iter(results.values()))["relative_change"], key=int)
    fig.suptitle(f"feature maps after each stage: the image (left) and shifted {shift} px right (right); "
                 f"Δ = relative change of the whole stage output", fontsize=9)
    return _write_png(fig, out, dpi=100)


def saliency_png(results: dict[str, dict[str, Any]], image: np.ndarray, names: list[str], out: str) -> str:
    """Per model: the image, the plain gradient and guided backpropagation of its predicted class (|value|, scaled
    per map, with a colour bar)."""
    fig, axes = plt.subplots(len(results), 3, figsize=(7.2, 2.4 * len(results) + 0.4), squeeze=False)
    for r, (model, res) in enumerate(results.items()):
        _show(axes[r, 0], image)
        p = res["probs"][res["target"]]
        axes[r, 0].set_ylabel(model, fontsize=8)
        axes[r, 0].set_title(f"predicted {names[res['target']]} ({p:.2f})", fontsize=8)
        for c, kind in ((1, "gradient"), (2, "guided")):
            g = np.abs(res[kind]).max(0)
            im = axes[r, c].imshow(g, cmap="inferno", vmin=0, vmax=float(g.max()) or 1.0)
            axes[r, c].set_xticks([])
            axes[r, c].set_yticks([])
            axes[r, c].set_title("plain gradient" if kind == "gradient" else "guided backpropagation", fontsize=8)
            fig.colorbar(im, ax=axes[r, c], fraction=0.046, pad=0.03)
    fig.suptitle("what the network looks at: |d logit / d pixel|", fontsize=10)
    return _write_png(fig, out)
