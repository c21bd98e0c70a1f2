"""The continual baselines: one model for every task, trained task after task (``sequential``,
``sequential-lora``, ``replay``) or on every task at once (``multitask``)."""

from __future__ import annotations

import random

from retain.continual.context import Context, Previous
from retain.continual.measure import evaluate_plain
from retain.continual.tasks import Task
from retain.methods.lora import attach_lora


def run_baseline(ctx: Context, tasks: list[Task], max_new: dict, previous: Previous | None = None) -> dict:
    """One model for every task: trained task after task (with replay), or on all tasks at once (joint)."""
    cfg, method = ctx.cfg, ctx.method
    model = ctx.loaded.model
    if method.trains == "lora":
        model = attach_lora(model, cfg, ctx.is_seq2seq)

    def evaluate(stage, seen):
        return ctx.measured(f"after-{stage}", evaluate_plain, model, ctx.tokenizer, seen, is_seq2seq=ctx.is_seq2seq,
                            n=cfg.eval_samples, max_new=max_new, batch_size=cfg.eval_batch_size, of=ctx.scored(seen, max_new))

    if method.joint:
        ctx.train(model, "all", method.trains, [r for t in tasks for r in ctx.rows(t)], cfg.max_steps * len(tasks), select=tasks)
        ctx.measure_general("all", model)
        return {"stages": ["all"], "evals": [evaluate("all", tasks)]}
    rng = random.Random(cfg.seed)
    buffer: list[dict] = []
    stages, evals = [], []
    for i, task in enumerate(tasks):
        rows = ctx.rows(task)
        if method.replay and buffer:
            extra = round(cfg.replay_ratio / (1 - cfg.replay_ratio) * len(rows))
            rows = rows + [rng.choice(buffer) for _ in range(extra)]
        if method.trains == "lora":
            for n, p in model.named_parameters():
                p.requires_grad_("lora_" in n)
        ctx.train(model, task.name, method.trains, rows, cfg.max_steps, select=[task])
        if method.replay:
            k = min(len(task.train), max(round(cfg.replay_fraction * len(task.train)), cfg.replay_min))
            buffer += ctx.rows(task, rng.sample(task.train, k))
        stages.append(task.name)
        evals.append(evaluate(task.name, tasks[: i + 2]))  # and the next task, not learnt yet (FWT)
        ctx.after(task, evals[-1])
        ctx.measure_general(task.name, model)
    return {"stages": stages, "evals": evals}


