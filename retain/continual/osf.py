"""OSF, Orthogonal Subspace Fine-tuning (Nayak et al., 2025, "Sculpting Subspaces"), task after task: PEFT's own
method for continual learning (``peft.OSFConfig``), called, not rewritten.

For each task, PEFT splits every target weight matrix by its SVD into the top ``effective_rank`` singular
directions, frozen, and the rest, trained with gradients projected away from the frozen ones; after the task
the update is merged (``merge_and_unload``) and the next task decomposes the updated weights again, freezing
more of them, as the method's continual recipe does: task i of T (from 0) freezes the share
``osf_rank + i * (1 - osf_rank) / T`` of each matrix's directions (``--osf-rank``, PEFT's fractional
``effective_rank``). One model for every task, evaluated as the sequential baselines are.
"""

from __future__ import annotations

from retain.continual.measure import evaluate_plain
from retain.continual.tasks import Task


def frozen_share(first: float, task_index: int, n_tasks: int) -> float:
    """The share of singular directions frozen while learning task ``task_index`` (0-based) of ``n_tasks``."""
    return first + task_index * (1.0 - first) / n_tasks


def run_osf(ctx, tasks: list[Task], max_new: dict, previous=None) -> dict:
    from peft import OSFConfig, get_peft_model

    cfg = ctx.cfg
    model = ctx.loaded.model
    target = cfg.lora_target if cfg.lora_target == "all-linear" else [t.strip() for t in cfg.lora_target.split(",") if t.strip()]
    out = {"stages": [], "evals": []}
    for i, task in enumerate(tasks):
        share = frozen_share(cfg.osf_rank, i, len(tasks))
        wrapped = get_peft_model(model, OSFConfig(effective_rank=share, target_modules=target))
        ctx.log({"event": "osf", "task": task.name, "frozen_share": round(share, 4)})
        ctx.train(wrapped, task.name, "lora", ctx.rows(task), cfg.max_steps, select=[task])  # PEFT marks what trains
        model = wrapped.merge_and_unload()
        seen = tasks[: i + 2]
        scores = ctx.measured(f"after-{task.name}", evaluate_plain, model, ctx.tokenizer, seen, is_seq2seq=ctx.is_seq2seq,
                              n=cfg.eval_samples, max_new=max_new, batch_size=cfg.eval_batch_size, of=ctx.scored(seen, max_new))
        out["stages"].append(task.name)
        out["evals"].append(scores)
        ctx.after(task, scores, prefix=f"{share:.0%} of directions frozen, ")
        ctx.measure_general(task.name, model)
    return out
