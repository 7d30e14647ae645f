"""Statistics over seeds: is model A really better than model B, or is it noise?"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
from scipy import stats


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single run)."""
    v = np.asarray(values, dtype="float64")
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def welch(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Welch's two-sample t-test of mean(a) − mean(b), with its 95% confidence interval.

    Welch rather than Student: the two models need not have equal run-to-run variance.
    With fewer than two runs per side, or zero variance on both, there is no test (p = nan/1).
    """
    a, b = np.asarray(a, "float64"), np.asarray(b, "float64")
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return {"diff": diff, "ci95": [float("nan"), float("nan")], "p_value": float("nan"), "t": float("nan"),
                "df": float("nan")}
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return {"diff": diff, "ci95": [diff, diff], "p_value": 1.0 if diff == 0 else 0.0,
                "t": 0.0 if diff == 0 else math.copysign(math.inf, diff), "df": float(len(a) + len(b) - 2)}
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    t = diff / se
    p = float(2 * stats.t.sf(abs(t), df))
    half = float(stats.t.ppf(0.975, df) * se)
    return {"diff": diff, "ci95": [diff - half, diff + half], "p_value": p, "t": float(t), "df": float(df)}


def permutation_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Exact two-sided permutation p-value of the difference in means (all relabelings)."""
    pooled = np.concatenate([np.asarray(a, "float64"), np.asarray(b, "float64")])
    n, observed = len(a), abs(np.mean(a) - np.mean(b))
    hits = total = 0
    for idx in itertools.combinations(range(len(pooled)), n):
        mask = np.zeros(len(pooled), bool)
        mask[list(idx)] = True
        total += 1
        hits += abs(pooled[mask].mean() - pooled[~mask].mean()) >= observed - 1e-12
    return hits / total


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (step-down; controls the family-wise error rate at any alpha).

    scipy's ``false_discovery_control`` covers only FDR methods, so Holm is computed here; NaN entries
    (no test) are left out of the family and stay NaN.
    """
    idx = [i for i, p in enumerate(pvalues) if not math.isnan(p)]
    m = len(idx)
    out = [float("nan")] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def in_words(p: float, alpha: float = 0.05) -> str:
    if math.isnan(p):
        return "no test (fewer than 2 runs per model)"
    return f"significant at {alpha:.0%}" if p < alpha else f"not significant at {alpha:.0%}"
