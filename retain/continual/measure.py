"""Measurement after each stage, and the continual-learning summary figures.

R[i][j] is the score on task j after training stage i (None before task j is
learnt). With T stages:

* average (per stage i): mean_j<=i R[i][j]; final average: the last row's mean;
* BWT = mean_{j<T} (R[T][j] - R[j][j])  (negative: forgetting);
* forgetting = mean_{j<T} (max_{i<T} R[i][j] - R[T][j]);
* routing accuracy (SwitchCIT): share of validation inputs sent to their own task's adapter.
"""

from __future__ import annotations

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
                    batch_size: int) -> tuple[dict, dict]:
    """SwitchCIT: route every validation input, then generate all tasks' inputs in one mixed pass (shared out over
    the processes of a launch)."""
    import torch

    from retain.continual.generation import generate_routed

    texts, truth, rows = [], [], []
    for task in tasks:
        inputs, _, _ = eval_items(task, n)
        texts += inputs
        truth += [task.name] * len(inputs)
        rows += task.validation[:n]
    feats = torch.cat([features_of(t) for t in tasks])
    routed = switch.route_features(feats)
    by_name = {t.name: t for t in tasks}
    prompts = [render(by_name[r].template, row) for r, row in zip(routed, rows)]
    outs = gather_sharded(list(range(len(prompts))), lambda part: generate_routed(
        model, tokenizer, [prompts[i] for i in part], [routed[i] for i in part], is_seq2seq=is_seq2seq,
        max_new_tokens=[max_new[routed[i]] for i in part], batch_size=batch_size))
    results, start = {}, 0
    for task in tasks:
        k = min(n, len(task.validation))
        results[task.name] = task_scores(task, outs[start:start + k], n)
        results[task.name]["routed_correctly"] = round(100.0 * sum(r == task.name for r in routed[start:start + k]) / k, 2)
        start += k
    return results, routing_summary(truth, routed, switch.tasks, [t.name for t in tasks])


def routing_summary(truth: list[str], routed: list[str], labels: list[str], rows: list[str]) -> dict:
    """Routing accuracy (%) and the confusion counts (rows: true task, columns: routed to ``labels``)."""
    confusion = [[sum(1 for t, r in zip(truth, routed) if t == a and r == b) for b in labels] for a in rows]
    return {"accuracy": round(100.0 * sum(t == r for t, r in zip(truth, routed)) / len(truth), 2),
            "labels": list(labels), "rows": list(rows), "confusion": confusion}


# ------------------------------------------------------------------ summary
def _mean(xs):
    xs = [x for x in xs if x is not None]
    return round(sum(xs) / len(xs), 4) if xs else None


def summarize(R: list[list[float | None]]) -> dict:
    """Average per stage, final average, BWT and forgetting of a score matrix."""
    T = len(R)
    per_stage = [_mean(row) for row in R]
    out = {"average_per_stage": per_stage, "final_average": per_stage[-1] if per_stage else None, "bwt": None, "forgetting": None}
    square = T > 1 and all(len(row) >= T for row in R)
    if square:
        last = R[-1]
        out["bwt"] = _mean([last[j] - R[j][j] for j in range(T - 1) if last[j] is not None and R[j][j] is not None])
        out["forgetting"] = _mean([max(R[i][j] for i in range(j, T - 1) if R[i][j] is not None) - last[j]
                                   for j in range(T - 1) if last[j] is not None])
    return out
