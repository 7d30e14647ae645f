"""Statistics over seeds: is model A really better than model B, or is it noise — and how much could we see?

A reference tool does not stop at "p = 0.59": beside each difference it states the smallest difference the
runs could have detected (:func:`mde`) and whether the two are equal within a stated margin (:func:`tost`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
from scipy import optimize, stats

EXACT_LIMIT = 200_000  # relabellings enumerated exactly up to this many (C(2n, n): n = 10 per side is 184,756)
RESAMPLES = 100_000  # Monte-Carlo relabellings beyond it
PERMUTATION_SEED = 0


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; 0 for a single run)."""
    v = np.asarray(values, dtype="float64")
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def _welch_se_df(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return 0.0, float(len(a) + len(b) - 2)
    return se, float((va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)))


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
    se, df = _welch_se_df(a, b)
    if se == 0:
        return {"diff": diff, "ci95": [diff, diff], "p_value": 1.0 if diff == 0 else 0.0,
                "t": 0.0 if diff == 0 else math.copysign(math.inf, diff), "df": df}
    t = diff / se
    p = float(2 * stats.t.sf(abs(t), df))
    half = float(stats.t.ppf(0.975, df) * se)
    return {"diff": diff, "ci95": [diff - half, diff + half], "p_value": p, "t": float(t), "df": float(df)}


def permutation(a: Sequence[float], b: Sequence[float], exact_limit: int = EXACT_LIMIT, resamples: int = RESAMPLES,
                seed: int = PERMUTATION_SEED) -> dict[str, object]:
    """Two-sided permutation p-value of the difference in means: ``{"p", "method", "resamples"}``.

    Exact (every relabelling, vectorised) while there are at most ``exact_limit`` of them; beyond that a
    Monte-Carlo estimate from ``resamples`` random relabellings with a fixed seed, p = (hits + 1)/(resamples + 1)
    (the observed labelling counts as one), so a 30-seed comparison takes well under a second. Ties count as
    "at least as extreme" with a relative tolerance, so equal means computed in another order are not missed.
    """
    x = np.concatenate([np.asarray(a, "float64"), np.asarray(b, "float64")])
    n, total = len(a), len(x)
    observed = abs(float(np.mean(a)) - float(np.mean(b)))
    tol = 1e-9 * max(1.0, float(np.abs(x).max())) if total else 0.0
    s = x.sum()
    count = math.comb(total, n)
    if count <= exact_limit:
        hits = 0
        combos = itertools.combinations(range(total), n)
        while True:
            chunk = np.fromiter(itertools.chain.from_iterable(itertools.islice(combos, 20_000)), dtype=np.int64)
            if chunk.size == 0:
                break
            sums = x[chunk.reshape(-1, n)].sum(axis=1)
            diffs = np.abs(sums / n - (s - sums) / (total - n))
            hits += int((diffs >= observed - tol).sum())
        return {"p": hits / count, "method": "exact", "resamples": count}
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, resamples, 10_000):
        m = min(10_000, resamples - start)
        idx = np.argsort(rng.random((m, total)), axis=1)[:, :n]
        sums = x[idx].sum(axis=1)
        hits += int((np.abs(sums / n - (s - sums) / (total - n)) >= observed - tol).sum())
    return {"p": (hits + 1) / (resamples + 1), "method": f"Monte Carlo, {resamples:,} relabellings, seed {seed}",
            "resamples": resamples}


def permutation_p(a: Sequence[float], b: Sequence[float]) -> float:
    """The p-value of :func:`permutation` alone."""
    return float(permutation(a, b)["p"])


def _power(delta: float, se: float, df: float, alpha: float) -> float:
    """Power of the two-sided t-test at level alpha to detect a true difference delta (noncentral t)."""
    crit = stats.t.ppf(1 - alpha / 2, df)
    ncp = delta / se
    upper, lower = stats.nct.sf(crit, df, ncp), stats.nct.cdf(-crit, df, ncp)
    # scipy's noncentral t gives NaN far out in a tail (few degrees of freedom, large ncp): there it is 1 or 0
    upper = (1.0 if ncp > crit else 0.0) if math.isnan(upper) else upper
    lower = 0.0 if math.isnan(lower) else lower
    return float(upper + lower)


def mde(a: Sequence[float], b: Sequence[float], alpha: float = 0.05, power: float = 0.8) -> float:
    """Minimum detectable effect: the smallest true |mean(a) − mean(b)| that the two-sided Welch test at level
    ``alpha`` finds with probability ``power``, given the runs' observed spread and counts (noncentral t,
    Welch's standard error and degrees of freedom; equals statsmodels' ``TTestIndPower`` for equal spreads).
    NaN with fewer than two runs a side; 0 if every run of both agrees exactly."""
    a, b = np.asarray(a, "float64"), np.asarray(b, "float64")
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    se, df = _welch_se_df(a, b)
    if se == 0:
        return 0.0
    hi = se * 10
    while _power(hi, se, df, alpha) < power:
        hi *= 2
    return float(optimize.brentq(lambda d: _power(d, se, df, alpha) - power, 0.0, hi, xtol=1e-12 * se))


def tost(a: Sequence[float], b: Sequence[float], margin: float) -> float:
    """Two one-sided Welch t-tests of equivalence, H0: |mean(a) − mean(b)| ≥ margin; returns the larger of the
    two one-sided p-values (small: the difference lies within ±margin). NaN with fewer than two runs a side."""
    a, b = np.asarray(a, "float64"), np.asarray(b, "float64")
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    diff = float(a.mean() - b.mean())
    se, df = _welch_se_df(a, b)
    if se == 0:
        return 0.0 if abs(diff) < margin else 1.0
    p_low = stats.t.sf((diff + margin) / se, df)  # H0: diff ≤ −margin
    p_high = stats.t.cdf((diff - margin) / se, df)  # H0: diff ≥ +margin
    return float(max(p_low, p_high))


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


def verdict(p_diff: float, p_equiv: float, margin: float, mde_value: float, alpha: float = 0.05,
            scale: float = 100.0, unit: str = " points") -> str:
    """The report's words for one comparison: "different", "equivalent within ±margin", or "inconclusive (could
    only detect ≥ MDE)". ``p_diff`` and ``p_equiv`` are already adjusted over the family; ``scale`` turns
    accuracy fractions into points."""
    if math.isnan(p_diff):
        return "no test (fewer than 2 runs per model)"
    if p_diff < alpha:
        return "different"
    if not math.isnan(p_equiv) and p_equiv < alpha:
        return f"equivalent within ±{margin * scale:.2g}{unit}"
    return f"inconclusive (could only detect ≥ {mde_value * scale:.2g}{unit})"


def in_words(p: float, alpha: float = 0.05) -> str:
    if math.isnan(p):
        return "no test (fewer than 2 runs per model)"
    return f"significant at {alpha:.0%}" if p < alpha else f"not significant at {alpha:.0%}"
