"""Uncertainty for every figure: standard errors of scores and of Norm. Avg.

Paired differences between methods (B minus A) are in :mod:`retain.evaluation.paired`,
built on the grids and the bootstrap engine here.

Input data
----------
A *unit* is one scored draw of a task::

    {"seed": int, "trial": int, "inputs": [str], "predictions": [str], "references": [str | [str]]}

(and ``sources``: [str] where the metric reads each item's source, ``sari``; ``inputs`` otherwise)

``seed`` is the training-seed index (0 for an untrained model), ``trial`` the
re-draw of demonstrations/test items. Units of two methods with the same
``trial`` hold the same items in the same order (they are *paired*).

Units of one method are arranged as a grid: training seeds x trials. A unit's
score is its metric score (mean of the per-item scores, or the corpus score for
``bleu``/``chrf``); a method's score is the mean over its units (= mean over
trials of the mean over seeds).

Standard errors (:func:`summarize`)
-----------------------------------
* one unit, per-item metric: closed form, sample std (ddof=1) / sqrt(n)
  ("closed form"; 0 for n < 2);
* one unit, corpus metric: bootstrap over items ("bootstrap");
* several units: hierarchical bootstrap ("hierarchical bootstrap"): resample
  training seeds, resample trials, then resample items within each drawn trial
  (the same items for every seed of that trial, since they are the same
  items). Units that do not form a complete seeds x trials grid are resampled
  as independent draws (units, then items within each).

Summaries (:func:`attach_summaries`) are stored in every eval result; :func:`norm_avg`
combines task summaries into the Norm. Avg. summary.

Cost: per-item metrics are vectorised (an ``n_boot x n`` index matrix per
trial; 2000 resamples of 12 tasks x 100 items take a few milliseconds). Corpus
metrics (``bleu``, ``chrf``) are resampled through sacrebleu's per-item
sufficient statistics (a resample = summed statistics -> score, as sacrebleu's
own paired bootstrap does; checked to reproduce ``metrics.score`` exactly), so
they get the full ``n_boot`` too. Where that is unavailable each resample
re-scores with ``metrics.score`` and at most ``CORPUS_BOOT`` = 200 resamples are
drawn (for a Norm. Avg. difference including such a task: for every task, as
they are resampled jointly).
Every function is deterministic given ``seed`` (numpy ``default_rng``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

SMALL_N = 30  # a task scored on fewer items gets WARN in the tables
WARN = "⚠"
CORPUS_BOOT = 200  # most resamples when a corpus metric must be re-scored on every resample

__all__ = [
    "CORPUS_BOOT",
    "SMALL_N",
    "WARN",
    "PairingError",
    "attach_summaries",
    "is_corpus_metric",
    "norm_avg",
    "summarize",
]


class PairingError(ValueError):
    """Units that cannot be paired or arranged as seeds x trials."""


# ------------------------------------------------------------------ metric access
def _metrics():
    from retain.evaluation import metrics

    return metrics


def is_corpus_metric(metric: str) -> bool:
    """True for metrics without per-item scores (bleu, chrf)."""
    return metric in tuple(getattr(_metrics(), "CORPUS_METRICS", ("bleu", "chrf")))


def _kw(options) -> dict:
    options = tuple(options or ())
    return {"options": options} if options else {}


def _per_item(metric: str, predictions, references, options, sources=None) -> np.ndarray | None:
    if is_corpus_metric(metric):
        return None
    vals = _metrics().per_item(metric, list(predictions), list(references), sources=sources, **_kw(options))
    return None if vals is None else np.asarray(vals, dtype=float)


def _sources(unit: dict):
    """A unit's source texts for a metric that reads them (sari): its ``sources``, else its ``inputs``."""
    return unit.get("sources") or unit.get("inputs")


def _score(metric: str, predictions, references, options) -> float:
    return float(_metrics().score(metric, list(predictions), list(references), **_kw(options)))


def _corpus_stats(metric: str, predictions, references):
    """Per-item sufficient statistics of a sacrebleu corpus metric: ((n, d) int array, sums -> score), or None.

    A corpus BLEU/chrF score is a function of the item statistics summed over the
    corpus (sacrebleu's own paired bootstrap resamples them the same way), so a
    resample costs one sum and one ``_compute_score_from_stats``, not a re-scoring.
    Same reference streams as ``metrics.score``; the caller checks the full sum
    reproduces ``metrics.score`` and falls back to re-scoring otherwise."""
    try:
        from sacrebleu.metrics import BLEU, CHRF

        m = {"bleu": BLEU, "chrf": CHRF}[metric]()
        refs = [[r] if isinstance(r, str) else list(r) for r in references]
        width = max(len(r) for r in refs)
        streams = [[rs[i] if i < len(rs) else rs[0] for rs in refs] for i in range(width)]
        arr = np.asarray(m._extract_corpus_statistics(list(predictions), streams), dtype=np.int64)
        if arr.ndim != 2 or arr.shape[0] != len(predictions):
            return None
        return arr, (lambda v: float(m._compute_score_from_stats(v.tolist()).score))
    except Exception:  # another sacrebleu or metric: re-score every resample
        return None


# ------------------------------------------------------------------ units as a grid
@dataclass
class _Grid:
    """One method's units of one task: seeds x trials."""

    metric: str
    options: tuple
    seeds: list  # seed ids (columns)
    trials: list  # trial ids (rows)
    units: list  # units[t][s]
    items: list | None = None  # per trial: (S, n_t) per-item scores; None for corpus metrics
    suff: list | None = None  # corpus metrics: per trial (S, n_t, d) sufficient statistics, or None (re-score)
    suff_fn: object = None  # summed statistics (d,) -> score
    _cells: dict = field(default_factory=dict)

    @property
    def n(self) -> list[int]:
        return [len(row[0]["predictions"]) for row in self.units]

    def cell(self, t: int, s: int, idx=None) -> float:
        """Score of unit (trial t, seed s), on the items ``idx`` (all when None)."""
        if self.items is not None:
            x = self.items[t][s]
            return float(x.mean() if idx is None else x[idx].mean())
        u = self.units[t][s]
        if idx is None:
            if (t, s) not in self._cells:
                self._cells[t, s] = _score(self.metric, u["predictions"], u["references"], self.options)
            return self._cells[t, s]
        p, r = u["predictions"], u["references"]
        return _score(self.metric, [p[i] for i in idx], [r[i] for i in idx], self.options)

    def score(self) -> float:
        return float(np.mean([[self.cell(t, s) for s in range(len(self.seeds))] for t in range(len(self.trials))]))


def _nonempty(units) -> list:
    return [u for u in (units or []) if u.get("predictions")]


def _grid(metric: str, units, options=(), *, trials=None, strict: bool = False) -> _Grid:
    """Arrange units as seeds x trials (restricted to ``trials`` if given).

    Not a complete grid (a missing seed/trial cell, a duplicate, seeds of a trial
    with different item counts): an error if ``strict``, else every unit
    becomes its own trial with one seed (independent draws)."""
    units = list(units)
    for u in units:
        if len(u["predictions"]) != len(u["references"]):
            raise ValueError(f"a unit has {len(u['predictions'])} predictions and {len(u['references'])} references")
    cells: dict = {}
    for u in units:
        cells.setdefault((int(u.get("seed", 0)), int(u.get("trial", 0))), []).append(u)
    seeds = sorted({s for s, _ in cells})
    trials = sorted({t for _, t in cells}) if trials is None else list(trials)
    ok = (all(len(v) == 1 for v in cells.values())
          and all((s, t) in cells for s in seeds for t in trials)
          and all(len({len(cells[s, t][0]["predictions"]) for s in seeds}) == 1 for t in trials))
    if ok:
        rows = [[cells[s, t][0] for s in seeds] for t in trials]
    elif strict:
        raise PairingError("units do not form a complete seeds x trials grid (one unit per seed and trial, "
                           "the same items for every seed of a trial)")
    else:
        seeds, trials, rows = [0], list(range(len(units))), [[u] for u in units]
    g = _Grid(metric, tuple(options or ()), seeds, trials, rows)
    first = _per_item(metric, rows[0][0]["predictions"], rows[0][0]["references"], options, _sources(rows[0][0])) if rows else None
    if first is not None:
        g.items = [np.stack([first if (t == 0 and s == 0) else
                             _per_item(metric, u["predictions"], u["references"], options, _sources(u)) for s, u in enumerate(row)])
                   for t, row in enumerate(rows)]
    elif rows:
        suff, fn = [], None
        for t, row in enumerate(rows):
            per_seed = []
            for s, u in enumerate(row):
                got = _corpus_stats(metric, u["predictions"], u["references"])
                if got is None or not math.isclose(got[1](got[0].sum(axis=0)), g.cell(t, s), rel_tol=1e-9, abs_tol=1e-9):
                    return g
                per_seed.append(got[0])
                fn = got[1]
            if len({a.shape[1] for a in per_seed}) != 1:
                return g
            suff.append(np.stack(per_seed))
        g.suff, g.suff_fn = suff, fn
    return g


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    """Resampled index rows (c, n) as item multiplicities (c, n)."""
    c = idx.shape[0]
    return np.bincount((np.arange(c)[:, None] * n + idx).ravel(), minlength=c * n).reshape(c, n)


# ------------------------------------------------------------------ bootstrap engine
def _draws(rng: np.random.Generator, n_items: list[int], n_boot: int) -> list:
    """Resample trials, then items within each drawn trial: [(trial, rows, slots, idx)]."""
    T = len(n_items)
    tc = np.zeros((n_boot, 1), dtype=int) if T == 1 else rng.integers(0, T, size=(n_boot, T))
    out = []
    for t, n in enumerate(n_items):
        rows, slots = np.nonzero(tc == t)
        out.append((t, rows, slots, rng.integers(0, n, size=(rows.size, n))))
    return out


def _seed_weights(rng: np.random.Generator, S: int, n_boot: int) -> np.ndarray:
    """Resampled seeds as weights (n_boot, S): multiplicity / S."""
    if S == 1:
        return np.ones((n_boot, 1))
    return rng.multinomial(S, np.full(S, 1.0 / S), size=n_boot) / S


def _replicates(g: _Grid, draws: list, w: np.ndarray) -> np.ndarray:
    """The grid's score in every bootstrap replicate (n_boot,)."""
    n_boot = w.shape[0]
    v = np.zeros((n_boot, len(g.trials)))
    for t, rows, slots, idx in draws:
        if not rows.size:
            continue
        ws = w[rows]  # (c, S)
        m = np.zeros_like(ws)
        cnt = _counts(idx, idx.shape[1]) if g.suff is not None else None
        for s in range(len(g.seeds)):
            if g.items is not None:
                m[:, s] = g.items[t][s][idx].mean(axis=1)
            elif g.suff is not None:
                sums = cnt @ g.suff[t][s]  # (c, d) resampled corpus statistics
                for j in np.nonzero(ws[:, s] > 0)[0]:
                    m[j, s] = g.suff_fn(sums[j])
            else:
                for j in np.nonzero(ws[:, s] > 0)[0]:
                    m[j, s] = g.cell(t, s, idx[j])
        v[rows, slots] = (ws * m).sum(axis=1)
    return v.mean(axis=1)


def _boot_count(n_boot: int, grids) -> int:
    return min(n_boot, CORPUS_BOOT) if any(g.items is None and g.suff is None for g in grids) else n_boot


def _n(lengths: list[int]) -> int:
    return int(lengths[0]) if len(set(lengths)) == 1 else int(sum(lengths))


# ------------------------------------------------------------------ summaries
def summarize(metric: str, units, *, options=(), n_boot: int = 1000, seed: int = 0) -> dict:
    """Score and standard error of one task from its units.

    Returns ``{"score", "se", "n", "n_units", "method"}``: score = mean over units
    of the unit score; n = items per unit (the total if units differ); method =
    "closed form" | "bootstrap" | "hierarchical bootstrap" (see the module doc).
    No units (or only empty ones): score, se and method are None.
    """
    units = _nonempty(units)
    if not units:
        return {"score": None, "se": None, "n": 0, "n_units": 0, "method": None}
    g = _grid(metric, units, options)
    n = _n([len(u["predictions"]) for u in units])
    if len(units) == 1 and g.items is not None:
        x = g.items[0][0]
        se = float(x.std(ddof=1) / math.sqrt(x.size)) if x.size >= 2 else 0.0
        method = "closed form"
    else:
        rng = np.random.default_rng(seed)
        nb = _boot_count(n_boot, [g])
        draws = _draws(rng, g.n, nb)
        reps = _replicates(g, draws, _seed_weights(rng, len(g.seeds), nb))
        se = float(reps.std(ddof=1)) if reps.size > 1 else 0.0
        method = "bootstrap" if len(units) == 1 else "hierarchical bootstrap"
    return {"score": g.score(), "se": se, "n": n, "n_units": len(units), "method": method}


def norm_avg(task_summaries: dict) -> dict:
    """Norm. Avg. of task summaries: plain mean; SE = sqrt(sum se_i^2) / T (independent items).

    Tasks without a score are left out; ``se`` is None if any counted task lacks one."""
    s = [v for v in task_summaries.values() if v and v.get("score") is not None]
    if not s:
        return {"score": None, "se": None, "n_tasks": 0}
    ses = [v.get("se") for v in s]
    se = None if any(x is None for x in ses) else float(math.sqrt(sum(x * x for x in ses)) / len(s))
    return {"score": float(np.mean([v["score"] for v in s])), "se": se, "n_tasks": len(s)}


# ------------------------------------------------------------------ eval results
def attach_summaries(eval_result: dict, *, n_boot: int = 1000, seed: int = 0) -> dict:
    """Fill the summary fields of one eval result from its units (in place; returns it).

    * ``tasks[NAME]["summary"][k] = summarize(metric, units[k], options=match)`` for every k in ``units``
    * ``norm_avg_summary[k] = norm_avg({NAME: summary[k]})``
    * ``tuned["summary"] = summarize(...)`` when the tuned task has units."""
    keys: list[str] = []
    tasks = eval_result.get("tasks") or {}
    for rec in tasks.values():
        units = rec.get("units") or {}
        rec["summary"] = {k: summarize(rec["metric"], u, options=tuple(rec.get("match") or ()), n_boot=n_boot, seed=seed)
                          for k, u in units.items()}
        keys += [k for k in units if k not in keys]
    shots = [str(k) for k in eval_result.get("shots") or []]
    eval_result["norm_avg_summary"] = {k: norm_avg({n: r["summary"][k] for n, r in tasks.items() if k in r.get("summary", {})})
                                       for k in shots + [k for k in keys if k not in shots]}
    tuned = eval_result.get("tuned")
    if tuned and tuned.get("units"):
        tuned["summary"] = summarize(tuned["metric"], tuned["units"], options=tuple(tuned.get("match") or ()),
                                     n_boot=n_boot, seed=seed)
    return eval_result
