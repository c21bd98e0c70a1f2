"""Measurement after each stage, and the continual-learning summary figures.

R[i][j] is the score on task j after training stage i (None before task j is
learnt). With T stages:

* average (per stage i): mean_j<=i R[i][j]; Last (final average): the last row's mean; Avg: the mean of the
  averages per stage (its SE combines each item's scores over the stages first: the stages share their items);
* BWT = mean_{j<T} (R[T][j] - R[j][j])  (negative: forgetting);
* forgetting = mean_{j<T} (max_{i<T} R[i][j] - R[T][j]);
* FWT = mean_{j>1} (R[j-1][j] - b_j), b_j the base model's score on task j (GEM, Lopez-Paz & Ranzato 2017);
* routing accuracy (SwitchCIT): share of validation inputs sent to their own task's adapter; apart, the share of
  held-out general inputs sent to the base model (the general class).
"""

from __future__ import annotations

from math import sqrt

from retain.continual.tasks import Task, constraint_rate
from retain.data import TaskFormat, render
from retain.distributed import gather_sharded
from retain.evaluation import stats
from retain.evaluation.harness import evaluate_tuned
from retain.evaluation.metrics import SOURCE_METRICS, score, source_of


def eval_items(task: Task, n: int) -> tuple[list[str], list[str], list]:
    rows = task.validation[:n]
    return [r["input"] for r in rows], [render(task.template, r) for r in rows], [r.get("references") or r["output"] for r in rows]


def task_scores(task: Task, preds: list[str], n: int) -> dict:
    _, _, refs = eval_items(task, n)
    # per-item results, so anyone can recompute: item i is row i of the task's validation file
    unit = {"seed": 0, "trial": 0, "items": list(range(len(preds))), "predictions": list(preds), "references": refs}
    if task.metric in SOURCE_METRICS:
        unit["sources"] = [source_of(r) for r in task.validation[:n]]
    summary = stats.summarize(task.metric, [unit])
    out = {"score": round(score(task.metric, preds, refs, sources=unit.get("sources")), 4), "se": summary["se"], "metric": task.metric, "n": len(preds),
           "units": [unit],
           "examples": [{"prediction": p, "reference": r if isinstance(r, str) else r[0]} for p, r in zip(preds[:3], refs[:3])]}
    if task.constraint:
        out["constraint"] = round(constraint_rate(preds, task.validation[:n]), 2)
    return out


def evaluate_plain(model, tokenizer, tasks: list[Task], *, is_seq2seq: bool, n: int, max_new: dict, batch_size: int) -> dict:
    """One model for every task (the baselines): each task scored by the tuned-task evaluator of ``retain eval``
    (its items shared out over the processes of a launch)."""
    results = {}
    for task in tasks:
        r = evaluate_tuned(model, tokenizer, task.validation[:n], TaskFormat(task.template, None, is_seq2seq), task.metric,
                           is_seq2seq=is_seq2seq, max_new_tokens=max_new[task.name], batch_size=batch_size, desc=task.name,
                           shard=True)
        results[task.name] = task_scores(task, r["predictions"], n)
    return results


def evaluate_routed(model, tokenizer, switch, features_of, tasks: list[Task], *, is_seq2seq: bool, n: int, max_new: dict,
                    batch_size: int, upcoming: Task | None = None, general: tuple | None = None) -> tuple[dict, dict]:
    """SwitchCIT: route every validation input, then generate all tasks' inputs in one mixed pass (shared out over
    the processes of a launch). An input routed to the general class (``None``) is answered by the base model with
    no adapter and no template, as deployed. ``upcoming``: the next task, not learnt yet, scored too (for FWT; not
    counted in routing). ``general``: (held-out general inputs, their features), whose routing is reported apart."""
    import torch

    from retain.continual.generation import generate_routed

    scored = tasks + ([upcoming] if upcoming is not None else [])
    rows = [row for task in scored for row in task.validation[:n]]
    routed = switch.route_features(torch.cat([features_of(t) for t in scored]))
    by_name = {t.name: t for t in scored}
    prompts = [render(by_name[r].template if r is not None else "{input}", row) for r, row in zip(routed, rows)]
    budget = max(max_new.values())  # the base's answer to a general input: the longest task budget
    outs = gather_sharded(list(range(len(prompts))), lambda part: generate_routed(
        model, tokenizer, [prompts[i] for i in part], [routed[i] for i in part], is_seq2seq=is_seq2seq,
        max_new_tokens=[max_new[routed[i]] if routed[i] is not None else budget for i in part], batch_size=batch_size))
    results, start, truth = {}, 0, []
    for task in scored:
        k = min(n, len(task.validation))
        results[task.name] = task_scores(task, outs[start:start + k], n)
        results[task.name]["routed_correctly"] = round(100.0 * sum(r == task.name for r in routed[start:start + k]) / k, 2)
        truth += [task.name] * k if task is not upcoming else []
        start += k
    return results, routing_table(switch, truth, routed[:len(truth)], general)


def routing_table(switch, truth: list[str], routed: list, general: tuple | None) -> dict:
    """Routing accuracy on the tasks' inputs and, apart, on held-out general inputs (routed to the base: ``None``),
    with the confusion matrix (rows: true task, then ``general``; columns: ``switch.labels``)."""
    g_routed = switch.route_features(general[1]) if general and len(general[0]) else []
    rows = list(dict.fromkeys(truth)) + (["general"] if g_routed else [])
    table = routing_summary([*truth, *["general"] * len(g_routed)], [*routed, *g_routed], switch.labels, rows)
    table.update(accuracy=_percent(t == r for t, r in zip(truth, routed)), n=len(truth), n_general=len(g_routed),
                 general_accuracy=_percent(r is None for r in g_routed) if g_routed else None)
    return table


def routing_summary(truth: list[str], routed: list, labels: list, rows: list[str]) -> dict:
    """Routing accuracy (%) and the confusion counts (rows: true task, columns: routed to ``labels``)."""
    confusion = [[sum(1 for t, r in zip(truth, routed) if t == a and r == b) for b in labels] for a in rows]
    return {"accuracy": _percent(t == r for t, r in zip(truth, routed)), "labels": list(labels), "rows": list(rows),
            "confusion": confusion}


def _percent(hits) -> float:
    hits = list(hits)
    return round(100.0 * sum(hits) / len(hits), 2)


# ------------------------------------------------------------------ summary
def _mean(xs):
    xs = [x for x in xs if x is not None]
    return round(sum(xs) / len(xs), 4) if xs else None


def summarize(R: list[list[float | None]], R_se: list[list[float | None]] | None = None, *, metrics: list[str] | None = None,
              units=None, transfer: dict | None = None) -> dict:
    """The continual-learning figures of a score matrix (docs/CONTINUAL.md, "Measurement"): average per stage,
    Last (the final average) ± SE, Avg, BWT and forgetting. With ``metrics`` (one per column) and ``units(i, j)``
    (stage i's per-item units of task j, or None): BWT's paired 95% interval. With ``transfer`` ({"base": [...],
    "before": [...]}: per task j, its scores ({"score", "units"} or None) by the base model and by the system just
    before task j was learnt): FWT and its paired interval."""
    T = len(R)
    per_stage = [_mean(row) for row in R]
    last = R[-1] if R else []
    ses = [e for x, e in zip(last, R_se[-1]) if x is not None] if R_se else []
    out = {"average_per_stage": per_stage, "final_average": per_stage[-1] if per_stage else None,
           "last": per_stage[-1] if per_stage else None, "last_se": _mean_se(ses), "avg": _mean(per_stage),
           "avg_se": _avg_se(R, metrics, units) if units is not None and metrics else None,
           "bwt": None, "bwt_ci": None, "forgetting": None, "fwt": None, "fwt_ci": None}
    if T > 1 and all(len(row) >= T for row in R):
        out["bwt"] = _mean([last[j] - R[j][j] for j in range(T - 1) if last[j] is not None and R[j][j] is not None])
        out["forgetting"] = _mean([max(R[i][j] for i in range(j, T - 1) if R[i][j] is not None) - last[j]
                                   for j in range(T - 1) if last[j] is not None])
        if units is not None and metrics:
            out["bwt_ci"] = _paired_mean({j: (metrics[j], units(j, j), units(T - 1, j)) for j in range(T - 1)})
    if transfer and metrics:
        pairs = {j: (metrics[j], a, b) for j, (a, b) in enumerate(zip(transfer["base"], transfer["before"])) if j and a and b}
        if pairs:
            out["fwt"] = _mean([b["score"] - a["score"] for _, a, b in pairs.values()])
            out["fwt_ci"] = _paired_mean({j: (m, a.get("units"), b.get("units")) for j, (m, a, b) in pairs.items()})
    return out


def _avg_se(R: list[list], metrics: list[str], units) -> float | None:
    """SE of Avg. The stages score the same items of a task, so each item's scores are first summed over the
    stages with Avg's weights (1 / (stages x tasks scored at the stage)): Avg = sum over tasks of the mean of these
    per-item sums, and its SE is sqrt(sum over tasks of their variance (ddof 1) / n), the closed form of
    ``stats.summarize``. None for a corpus metric, or without one unit of per-item results per score."""
    import numpy as np

    from retain.evaluation.metrics import per_item

    rows = [(i, [j for j, x in enumerate(row) if x is not None]) for i, row in enumerate(R)]
    rows = [(i, js) for i, js in rows if js]
    combined: dict[int, np.ndarray] = {}
    for i, js in rows:
        for j in js:
            us = units(i, j)
            scores = per_item(metrics[j], us[0]["predictions"], us[0]["references"], sources=us[0].get("sources")) \
                if us and len(us) == 1 else None
            if scores is None or (j in combined and len(scores) != combined[j].size):
                return None
            combined[j] = combined.get(j, 0.0) + np.asarray(scores, dtype=float) / (len(rows) * len(js))
    if not combined:
        return None
    return round(float(sqrt(sum(c.var(ddof=1) / c.size for c in combined.values() if c.size >= 2))), 4)


def _mean_se(ses: list) -> float | None:
    """SE of a mean of independent scores: sqrt(sum se^2) / n (as ``stats.norm_avg``)."""
    if not ses or None in ses:
        return None
    return round(sqrt(sum(e * e for e in ses)) / len(ses), 4)


def _paired_mean(pairs: dict) -> list | None:
    """95% paired-bootstrap interval of the mean over tasks of (B - A), ``pairs``: {j: (metric, units A, units B)}
    (``paired.paired_norm_avg``); None when a pair lacks its per-item units or cannot be paired."""
    from retain.evaluation.paired import paired_norm_avg
    from retain.evaluation.stats import PairingError

    if not pairs or any(not a or not b for _, a, b in pairs.values()):
        return None
    try:
        res = paired_norm_avg({j: (m, (), a) for j, (m, a, _) in pairs.items()}, {j: (m, (), b) for j, (m, _, b) in pairs.items()})
    except PairingError:
        return None
    return [round(x, 4) for x in res["ci"]]


def learnt_index(names: list[str], stage: str) -> int:
    """The last task column a stage has learnt: its task's (every task for a joint stage such as multitask's 'all')."""
    return names.index(stage) if stage in names else len(names) - 1


def add_figures(res: dict, earlier: dict | None, base_scores: dict, general: dict) -> None:
    """Into a run's results: FWT's inputs (``transfer``: each task's scores by the base model, ``base_scores`` for
    this run's tasks, and by the system just before it was learnt), the general ability per stage (``general``,
    after an extended registry's earlier stages) and the summary figures with their intervals."""
    names, metrics = res["tasks"], res["metrics"]
    before = [None] * len(names)
    for stage, ev in zip(res["stages"], res["details"]):
        j = learnt_index(names, stage) + 1
        if j < len(names) and names[j] in ev and stage != "all":
            before[j] = ev[names[j]]
    old = (earlier or {}).get("transfer", {}).get("base", [])
    base = [base_scores.get(n) or (old[j] if j < len(old) else None) for j, n in enumerate(names)]
    res["transfer"] = {"base": base, "before": before}
    g = dict(general)
    if earlier and earlier.get("general"):
        g["stages"] = earlier["general"]["stages"] + g["stages"]
        g["evals"] = earlier["general"]["evals"] + g["evals"]
    res["general"] = g if g["base"] is not None or g["stages"] else None
    units = lambda i, j: (res["details"][i].get(names[j]) or {}).get("units") if i < len(res["details"]) else None
    res["summary"] = summarize(res["R"], res["R_se"], metrics=metrics, units=units, transfer=res["transfer"])
