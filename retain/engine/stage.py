"""``run_stage``: one training stage of any method, as one ``transformers.Trainer`` run."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments

from retain.distributed import is_main
from retain.engine import memory
from retain.engine.callbacks import BestCheckpoint, LogCallback
from retain.engine.checkpoints import last_checkpoint
from retain.engine.interrupt import Interrupted, catch_sigint
from retain.engine.packing import collator, packing_is_exact, virtual_tokens
from retain.engine.prompt_packing import LAYOUTS, PromptPackingCollator, packed_prompts, prompt_packing_layout
from retain.engine.task_prompts import TaskCollator, per_example_prompts
from retain.engine.trainer import StageTrainer
from retain.errors import RetainError
from retain.methods import Stage, param_groups, prepare


def training_arguments(cfg, stage_dir: Path, steps: int, lr: float, grouped: bool) -> TrainingArguments:
    """The Trainer's arguments for one stage, from the engine options (``retain.config.EngineOptions``)."""
    from retain.distributed import keep_accelerator_state

    return TrainingArguments(
        output_dir=str(stage_dir),
        max_steps=steps,
        learning_rate=lr,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        lr_scheduler_type=cfg.scheduler,
        warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay,
        label_smoothing_factor=0.0,  # applied in StageTrainer.compute_loss (the Trainer's smoother breaks seq2seq)
        optim=cfg.optim,
        logging_steps=cfg.log_every,
        logging_nan_inf_filter=False,
        save_strategy="steps" if cfg.save_every else "no",
        save_steps=cfg.save_every or 1,
        save_total_limit=1,
        report_to=[],
        seed=cfg.seed,
        use_cpu=not torch.cuda.is_available(),
        remove_unused_columns=False,
        dataloader_num_workers=0,
        ddp_find_unused_parameters=False,
        disable_tqdm=False,
        train_sampling_strategy="group_by_length" if grouped else "random",
        include_num_input_tokens_seen="non_padding",  # real tokens trained on, in run.json
        bf16=cfg.mixed_precision == "bf16",
        fp16=cfg.mixed_precision == "fp16",
        gradient_checkpointing=cfg.gradient_checkpointing,
        gradient_checkpointing_kwargs={"use_reentrant": False} if cfg.gradient_checkpointing else None,
        deepspeed=cfg.deepspeed,  # checked before the model was loaded (distributed.check_deepspeed)
        accelerator_config={"use_configured_state": True} if keep_accelerator_state() else None,
    )


def optimizer(model, args: TrainingArguments, cfg, lr: float, prompt_lr: float):
    """The Trainer's optimizer class and options, over parameter groups (the soft prompt at its own rate)."""
    opt_cls, opt_kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    opt_kwargs = {k: v for k, v in opt_kwargs.items() if k != "lr"}
    groups = param_groups(model, lr, prompt_lr)
    for g in groups:
        g.setdefault("weight_decay", cfg.weight_decay)
    return opt_cls(groups, lr=lr, **opt_kwargs)


def check_precision(cfg) -> None:
    """Refuse, before any model is loaded, a precision setting this machine cannot run."""
    if cfg.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise RetainError("--mixed-precision fp16 needs a CUDA GPU (no GPU here); use --mixed-precision bf16 on a CPU")
    if cfg.mixed_precision == "fp16" and cfg.dtype not in ("float32", "auto"):
        raise RetainError(f"--mixed-precision fp16 scales float32 gradients; with --dtype {cfg.dtype} use --mixed-precision no")


def packing_layout(model, cfg, *, causal: bool, virtual: int) -> str | None:
    """How a stage batches its rows: ``rows`` (padding-free, no soft prompt), ``shared`` or ``copies`` (padding-free
    with a soft prompt, ``engine.prompt_packing``), or None (padded to the longest), each only where exact."""
    if not causal or not getattr(cfg, "packing", True):
        return None
    if virtual:
        return prompt_packing_layout(model)
    return "rows" if packing_is_exact(model) else None


def memory_estimate(model, cfg, rows: list[dict], *, layout: str | None, virtual: int, causal: bool) -> dict:
    """The stage's peak-memory estimate (``engine.memory``) for its batch size and the data's lengths
    (an encoder-decoder row counts its input and its target tokens)."""
    lengths = [len(r["input_ids"]) + (0 if causal else len(r["labels"])) for r in rows] or [1]
    labelled = sum(sum(1 for t in r["labels"] if t != -100) for r in rows) / max(len(rows), 1)
    b = cfg.batch_size
    if layout:
        prompt = {"shared": virtual, "copies": virtual * b}.get(layout, 0)
        shape = (1, round(b * sum(lengths) / len(lengths)) + prompt)
    else:
        shape = (b, max(lengths) + virtual)
    return memory.estimate(model, cfg, rows=shape[0], seq_len=shape[1], loss_tokens=round(b * labelled))


def _raise_if_stopped(trainer: StageTrainer, stage: Stage, stage_dir: Path, log, resumable: bool) -> None:
    if trainer.bad_step is not None:
        kept = last_checkpoint(stage_dir)
        log({"event": "nonfinite_loss", "step": trainer.bad_step})
        raise RetainError(
            f"stage {stage.name}: the loss became NaN/inf at step {trainer.bad_step}; training stopped"
            + (f"; last good checkpoint kept in {kept} (lower the learning rate, then rerun with --resume)"
               if kept and resumable else " (lower the learning rate)")
        )
    if trainer.stopped_by_interrupt:
        kept = last_checkpoint(stage_dir)
        log({"event": "interrupted", "step": trainer.state.global_step})
        raise Interrupted(
            f"interrupted (Ctrl-C) in stage {stage.name} at step {trainer.state.global_step}"
            + ((f"; checkpoint kept in {kept}: rerun the same command with --resume to continue" if kept
                else "; no checkpoint was kept") if resumable else "; nothing was written")
        )


def run_stage(model, tokenizer, stage: Stage, *, rows: list[dict], steps: int, lr: float, prompt_lr: float,
              cfg, stage_dir: Path, evaluate=None, log=lambda e: None, resume: bool = False,
              resumable: bool = True, observe=None, prompt_adapters: tuple[str, ...] | None = None) -> dict:
    """Train one stage; return its record (steps, evaluations, best step, wall time).

    What trains is decided only by ``requires_grad`` (``retain.methods.prepare``). ``evaluate(model) ->
    score``: the tuned-task metric, every ``cfg.eval_every`` steps; the best trainable weights are kept and
    restored at the end. ``resumable``: the caller keeps checkpoints for ``--resume`` (``retain train``);
    otherwise failure messages do not point at checkpoints or ``--resume``. ``observe(trainer, stage) ->
    [TrainerCallback]``: callbacks added to this stage's Trainer (the analyses measure the training as it runs).
    ``prompt_adapters``: rows carry ``prompt_task``, an index into these PEFT prompt adapters, and each example
    trains under its own task's prompt (multi-task; packed in ``engine.prompt_packing``, padded in
    ``engine.task_prompts``).
    """
    prepare(model, stage)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    stage_dir.mkdir(parents=True, exist_ok=True)
    causal = not getattr(getattr(model, "config", None), "is_encoder_decoder", False)
    virtual = virtual_tokens(model)
    layout = packing_layout(model, cfg, causal=causal, virtual=virtual)
    packed, in_row = layout is not None, layout in LAYOUTS  # in_row: the soft prompt sits in the packed row
    grouped = bool(getattr(cfg, "group_by_length", False)) and not packed
    args = training_arguments(cfg, stage_dir, steps, lr, grouped)
    estimate = memory_estimate(model, cfg, rows, layout=layout, virtual=virtual, causal=causal)
    if is_main():
        sys.stderr.write(f"[retain] {stage.name}: memory estimate {memory.describe(estimate)}\n")
    best = BestCheckpoint(evaluate, cfg.eval_every if evaluate else 0, steps, stage_dir, log)
    tasks = tuple(prompt_adapters) if prompt_adapters and virtual else None
    collate = PromptPackingCollator(virtual, layout) if in_row else collator(tokenizer, packed)
    collate = TaskCollator(collate) if tasks and not in_row else collate
    trainer = StageTrainer(model=model, args=args, train_dataset=rows, data_collator=collate,
                           optimizer_factory=lambda m: optimizer(m, args, cfg, lr, prompt_lr), callbacks=[best, LogCallback(log)],
                           selective_loss=causal, virtual_tokens=0 if in_row else virtual, label_smoothing=cfg.label_smoothing)
    for callback in observe(trainer, stage) if observe else ():
        trainer.add_callback(callback)
    ckpt = last_checkpoint(stage_dir) if resume else None
    log({"event": "stage_start", "stage": stage.name, "trains": stage.trains, "steps": steps, "lr": lr,
         "trainable_parameters": n_train, "packed": packed, "packing": layout or "padded", "grouped_by_length": grouped,
         "resumed_from": str(ckpt.name) if ckpt else None})
    t0 = time.time()
    in_use = memory.start_measuring()
    prompts = packed_prompts(model, tasks) if in_row else per_example_prompts(model, tasks) if tasks else contextlib.nullcontext()
    with catch_sigint(trainer), prompts:
        result = trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
    _raise_if_stopped(trainer, stage, stage_dir, log, resumable)
    best.restore(model)
    record = {
        "stage": stage.name, "trains": stage.trains, "steps": steps, "learning_rate": lr,
        "prompt_learning_rate": prompt_lr if stage.trains_prompt else None,
        "trainable_parameters": n_train, "packed": packed, "packing": layout or "padded", "grouped_by_length": grouped,
        "train_loss": round(float(result.training_loss), 6),
        "input_tokens": int(trainer.state.num_input_tokens_seen),
        "evaluations": best.evals, "best": best.best, "wall_time_s": round(time.time() - t0, 2),
        "resumed_from": ckpt.name if ckpt else None,
        "memory": {"estimate_bytes": estimate, "measured_peak": memory.measured_peak(in_use)},
        "precision": {"dtype": str(next(model.parameters()).dtype).removeprefix("torch."), "mixed_precision": cfg.mixed_precision,
                      "gradient_checkpointing": cfg.gradient_checkpointing},
    }
    model.requires_grad_(False)
    return record
