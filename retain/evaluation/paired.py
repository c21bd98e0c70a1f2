"""Paired differences between methods: B minus A on one task, on Norm. Avg., for every comparison.

Units, their seeds x trials grids and the bootstrap engine are those of
:mod:`retain.evaluation.stats` (see its docstring for the input data and the cost).

Paired differences (:func:`paired`, :func:`paired_norm_avg`)
------------------------------------------------------------
B minus A. Units are matched by ``trial``. One bootstrap replicate resamples
the trials, the items within each drawn trial (the *same* item indices for A and
B) and, independently for each side, that side's training seeds (a side with
one seed, e.g. ``base``, always uses it). The interval is the percentile
interval of the replicated differences; ``significant`` = it excludes 0.
McNemar's exact test (binomial test on the discordant pairs, scipy) is added
when the per-item scores are all 0 or 100 and each side has exactly one unit.

Whole comparisons (:func:`compare_methods`)
-------------------------------------------
Every method vs ``base``, then every pair of the other methods (:func:`comparisons`),
for every shot count, keyed ``"{B} vs {A}"`` (:func:`comparison_key`).

A corpus metric that must be re-scored on every resample caps the resamples at
``stats.CORPUS_BOOT`` (for a Norm. Avg. difference including such a task: for every
task, as they are resampled jointly).
Every function is deterministic given ``seed`` (numpy ``default_rng``).
"""

from __future__ import annotations

import numpy as np

from retain.evaluation.stats import (
    PairingError,
    _boot_count,
    _draws,
    _Grid,
    _grid,
    _n,
    _nonempty,
    _replicates,
    _seed_weights,
)

__all__ = ["compare_methods", "comparison_key", "comparisons", "paired", "paired_norm_avg"]


# ------------------------------------------------------------------ paired differences
def _interval(diffs: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.quantile(diffs, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(lo), float(hi)


def _pair_grids(metric, units_a, units_b, options) -> tuple[_Grid, _Grid]:
    units_a, units_b = _nonempty(units_a), _nonempty(units_b)
    common = sorted({int(u.get("trial", 0)) for u in units_a} & {int(u.get("trial", 0)) for u in units_b})
    if not common:
        raise PairingError("no trial scored by both methods: nothing to pair")
    ga = _grid(metric, [u for u in units_a if int(u.get("trial", 0)) in common], options, trials=common, strict=True)
    gb = _grid(metric, [u for u in units_b if int(u.get("trial", 0)) in common], options, trials=common, strict=True)
    if ga.n != gb.n:
        raise PairingError(f"paired units differ in item counts ({ga.n} vs {gb.n}): not the same items")
    return ga, gb


def _mcnemar(ga: _Grid, gb: _Grid) -> float | None:
    if ga.items is None or len(ga.trials) != 1 or len(ga.seeds) != 1 or len(gb.seeds) != 1:
        return None
    a, b = ga.items[0][0], gb.items[0][0]
    if not (np.isin(a, (0.0, 100.0)).all() and np.isin(b, (0.0, 100.0)).all()):
        return None
    only_a = int(np.sum((a == 100.0) & (b == 0.0)))
    only_b = int(np.sum((a == 0.0) & (b == 100.0)))
    if only_a + only_b == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(only_b, only_a + only_b, 0.5).pvalue)


def _result(diff, diffs, level, n, method, **extra) -> dict:
    lo, hi = _interval(diffs, level)
    return {"diff": float(diff), "ci": [lo, hi], "significant": bool(lo > 0 or hi < 0), "n": int(n),
            "level": level, "n_boot": int(diffs.size), "method": method, **extra}


def paired(metric: str, units_a, units_b, *, options=(), n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Paired difference B - A on one task.

    Returns ``{"diff", "ci": [lo, hi], "significant", "n", "mcnemar_p", "score_a", "score_b",
    "level", "n_boot", "method"}``; n = items per trial (the total if trials differ).
    Raises PairingError (a ValueError) when the units cannot be paired (no common trial,
    different item counts, not a seeds x trials grid)."""
    ga, gb = _pair_grids(metric, units_a, units_b, options)
    rng = np.random.default_rng(seed)
    nb = _boot_count(n_boot, [ga, gb])
    draws = _draws(rng, ga.n, nb)
    wa, wb = _seed_weights(rng, len(ga.seeds), nb), _seed_weights(rng, len(gb.seeds), nb)
    diffs = _replicates(gb, draws, wb) - _replicates(ga, draws, wa)
    sa, sb = ga.score(), gb.score()
    return _result(sb - sa, diffs, level, _n(ga.n), "paired bootstrap", mcnemar_p=_mcnemar(ga, gb), score_a=sa, score_b=sb)


def paired_norm_avg(tasks_a: dict, tasks_b: dict, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Paired difference of Norm. Avg. (B - A) over the tasks both sides have.

    ``tasks_a``/``tasks_b``: ``{name: (metric, options, units)}``. Every task's
    trials and items are resampled in each replicate; a side's training seeds are
    resampled once per replicate and shared by all tasks (one seed = one model).
    Returns the shape of :func:`paired` with ``mcnemar_p`` None, plus ``n_tasks``; n = items over all tasks."""
    names = [k for k in tasks_a if k in tasks_b]
    pairs = {}
    for name in names:
        ma, oa, ua = tasks_a[name]
        _, _, ub = tasks_b[name]
        if _nonempty(ua) and _nonempty(ub):
            pairs[name] = _pair_grids(ma, ua, ub, oa)
    if not pairs:
        raise PairingError("no task scored by both methods")
    rng = np.random.default_rng(seed)
    nb = _boot_count(n_boot, [g for pair in pairs.values() for g in pair])
    seeds_a = sorted({s for ga, _ in pairs.values() for s in ga.seeds})
    seeds_b = sorted({s for _, gb in pairs.values() for s in gb.seeds})
    wa_all, wb_all = _seed_weights(rng, len(seeds_a), nb), _seed_weights(rng, len(seeds_b), nb)

    def weights(w_all, all_seeds, g):
        w = w_all[:, [all_seeds.index(s) for s in g.seeds]]
        tot = w.sum(axis=1, keepdims=True)
        return np.where(tot > 0, w / np.where(tot > 0, tot, 1.0), 1.0 / len(g.seeds))

    diffs = np.zeros(nb)
    diff = 0.0
    for ga, gb in pairs.values():
        draws = _draws(rng, ga.n, nb)
        diffs += _replicates(gb, draws, weights(wb_all, seeds_b, gb)) - _replicates(ga, draws, weights(wa_all, seeds_a, ga))
        diff += gb.score() - ga.score()
    T = len(pairs)
    n = sum(_n(ga.n) for ga, _ in pairs.values())
    return _result(diff / T, diffs / T, level, n, "paired bootstrap", mcnemar_p=None, n_tasks=T)


# ------------------------------------------------------------------ whole comparisons
def comparisons(methods: list[str]) -> list[tuple[str, str]]:
    """(A, B) pairs in table order: every method vs ``base``, then every pair of
    the other methods with A before B in ``methods``. Difference = B - A."""
    out = [("base", m) for m in methods if m != "base"] if "base" in methods else []
    rest = [m for m in methods if m != "base"]
    out += [(a, b) for i, a in enumerate(rest) for b in rest[i + 1:]]
    return out


def comparison_key(a: str, b: str) -> str:
    return f"{b} vs {a}"


def _task_args(rec: dict, key: str):
    units = (rec.get("units") or {}).get(key)
    return (rec["metric"], tuple(rec.get("match") or ()), units) if units else None


def compare_methods(results: dict, *, level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> dict:
    """Paired differences for every shot count and every comparison.

    ``results["methods"][METHOD]`` is an eval result whose tasks carry
    ``units[str(k)]`` (and ``tuned["units"]`` for the tuned task). Returns::

        {"4": {"full vs base": {"a": "base", "b": "full",
                                "tasks": {NAME: paired(...)}, "tuned": paired(...) | None,
                                "norm_avg": paired_norm_avg(...) | None,
                                "skipped": {NAME: why}}, ...}, ...}

    Key ``"{B} vs {A}"``, every ``diff`` is B - A; comparisons are ordered as
    :func:`comparisons`. A task that cannot be paired (no common trial, different
    item counts, not a seeds x trials grid) is left out of ``tasks`` and Norm. Avg.
    and listed in ``skipped``; such a tuned task gives ``"tuned": None``."""
    res = results["methods"]
    methods = list(res)
    shots = [str(k) for k in results.get("shots") or sorted({k for m in res.values() for r in m.get("tasks", {}).values()
                                                                for k in (r.get("units") or {})}, key=int)]
    kw = dict(n_boot=n_boot, seed=seed, level=level)
    tuned_cache: dict = {}

    def tuned_pair(a, b):
        if (a, b) not in tuned_cache:
            ta, tb = res[a].get("tuned") or {}, res[b].get("tuned") or {}
            out = None
            if _nonempty(ta.get("units")) and _nonempty(tb.get("units")):
                try:
                    out = paired(ta["metric"], ta["units"], tb["units"], options=tuple(ta.get("match") or ()), **kw)
                except PairingError:
                    out = None
            tuned_cache[a, b] = out
        return tuned_cache[a, b]

    out: dict = {}
    for key in shots:
        per_k = out[key] = {}
        for a, b in comparisons(methods):
            ta, tb = res[a].get("tasks", {}), res[b].get("tasks", {})
            args_a, args_b, tasks, skipped = {}, {}, {}, {}
            for name in ta:
                if name not in tb:
                    continue
                xa, xb = _task_args(ta[name], key), _task_args(tb[name], key)
                if xa is None or xb is None:
                    continue
                try:
                    tasks[name] = paired(xa[0], xa[2], xb[2], options=xa[1], **kw)
                except PairingError as e:
                    skipped[name] = str(e)
                    continue
                args_a[name], args_b[name] = xa, xb
            avg = paired_norm_avg(args_a, args_b, **kw) if tasks else None
            per_k[comparison_key(a, b)] = {"a": a, "b": b, "tasks": tasks, "tuned": tuned_pair(a, b), "norm_avg": avg,
                                           "skipped": skipped}
    return out
