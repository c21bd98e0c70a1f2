"""The one training engine: a ``transformers.Trainer`` run per stage.

Every method trains through ``run_stage``; what a stage trains is decided only
by ``requires_grad`` (see ``retain.methods.prepare``). Under
``accelerate launch`` the Trainer runs data-parallel (DDP over gloo on CPU).

On top of the Trainer this adds, as callbacks:

* best checkpoint: every ``eval_every`` steps the tuned-task metric is computed
  on the validation examples (sharded over processes) and the best trainable
  weights are kept, then restored at the end of the stage;
* checkpoints that hold the *whole* model state (``Trainer._save`` on a
  PeftModel would save only the adapter, losing stage-2 weights), so that
  ``--resume`` continues exactly where a killed run stopped;
* a JSONL training log, and a clean stop on a NaN/inf loss.
"""

from __future__ import annotations

import json
import os
import time
import weakref
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening, Trainer, TrainerCallback, TrainingArguments

from retain.errors import RetainError
from retain.evaluation.decoding import generate_texts
from retain.methods import Stage, param_groups, prepare, trainable_state

STATE_FILE = "retain_state.safetensors"


# ------------------------------------------------------------------ helpers
def world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world()[0] == 0


def barrier() -> None:
    if world()[1] > 1:
        torch.distributed.barrier()


def save_state(model, path: Path, only_trainable: bool = False) -> None:
    """Write a model's state (tied weights handled) atomically as safetensors."""
    from safetensors.torch import save_file

    state = {n: p.detach().cpu().contiguous() for n, p in (model.named_parameters() if only_trainable else model.state_dict().items())
             if not only_trainable or p.requires_grad}
    seen: set[int] = set()
    unique = {}
    for name, t in state.items():  # drop aliases of tied tensors (safetensors refuses shared memory)
        if t.numel() and t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        unique[name] = t
    tmp = path.with_name(path.name + ".tmp")
    save_file(unique, str(tmp))
    os.replace(tmp, path)


def load_state(model, path: Path) -> None:
    from safetensors.torch import load_file

    state = load_file(str(path))
    missing = model.load_state_dict(state, strict=False)
    if missing.unexpected_keys:
        raise RetainError(f"{path}: checkpoint does not match the model (unexpected {missing.unexpected_keys[0]})")


def sharded_generate(model, tokenizer, prompts: list[str], **kw) -> list[str]:
    """Generate on this process's share of ``prompts``; every process gets all outputs."""
    rank, size = world()
    mine = generate_texts(model, tokenizer, prompts[rank::size], **kw)
    if size == 1:
        return mine
    parts: list = [None] * size
    torch.distributed.all_gather_object(parts, mine)
    out = [""] * len(prompts)
    for r, part in enumerate(parts):
        out[r::size] = part
    return out


# ---------------------------------------------------------------- callbacks
class BestCheckpoint(TrainerCallback):
    """Evaluate every ``every`` steps; keep (and finally restore) the best trainable weights."""

    def __init__(self, evaluate, every: int, max_steps: int, stage_dir: Path, log):
        self.evaluate, self.every, self.max_steps, self.dir, self.log = evaluate, every, max_steps, stage_dir, log
        self.evals: list[dict] = []
        self.best: dict | None = None
        self.best_state: dict | None = None
        rec = stage_dir / "best.json"
        if rec.is_file():  # resuming: what the interrupted run had found
            saved = json.loads(rec.read_text())
            self.evals, self.best = saved["evals"], saved["best"]
            from safetensors.torch import load_file

            self.best_state = load_file(str(stage_dir / "best.safetensors"))

    def on_step_end(self, args, state, control, model=None, **kw):
        step = state.global_step
        if not self.every or not (step % self.every == 0 or step == self.max_steps):
            return
        if any(e["step"] == step for e in self.evals):
            return
        t = time.time()
        value = self.evaluate(model)
        entry = {"step": step, "score": value, "seconds": round(time.time() - t, 2)}
        self.evals.append(entry)
        self.log({"event": "eval", **entry})
        if self.best is None or value > self.best["score"]:
            self.best = entry
            self.best_state = trainable_state(model)
            if is_main():
                save_state(model, self.dir / "best.safetensors", only_trainable=True)
                _write_json(self.dir / "best.json", {"evals": self.evals, "best": self.best})
        elif is_main():
            _write_json(self.dir / "best.json", {"evals": self.evals, "best": self.best})

    def restore(self, model) -> None:
        if self.best_state is None:
            return
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, t in self.best_state.items():
                params[name].copy_(t)


class LogCallback(TrainerCallback):
    """Losses and learning rates into the run's JSONL log."""

    def __init__(self, log):
        self.log = log

    def on_log(self, args, state, control, logs=None, **kw):
        self.log({"event": "log", "step": state.global_step, **dict(logs or {})})


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


class _StageTrainer(Trainer):
    """A Trainer whose checkpoints hold the whole model state (base + prompt/LoRA) in
    safetensors, and which stops cleanly on a non-finite loss or on Ctrl-C."""

    interrupted = False  # set by the SIGINT handler
    bad_step: int | None = None
    stopped_by_interrupt = False

    def __init__(self, *args, selective_loss: bool = False, virtual_tokens: int = 0, label_smoothing: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.selective_loss, self.virtual_tokens, self.label_smoothing = selective_loss, virtual_tokens, label_smoothing
        self.add_callback(_Veto(self))

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Token cross-entropy (with ``--label-smoothing``) on the labelled tokens.

        Causal models: logits only where a label is predicted. The loss is on the output tokens only, so
        the LM head (a vocabulary-sized matmul per position) is applied just to positions whose next token
        is a label: the union over the batch, passed to the model as ``logits_to_keep``. Same value as the
        model's own shifted cross-entropy (see the tests). Encoder-decoder models: the labels stay in the
        inputs (the model shifts them into its decoder inputs) and the loss is taken on every logit.
        """
        if "labels" not in inputs:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        if self.selective_loss:
            labels = inputs.pop("labels")
            keep = (labels[:, 1:] != -100).any(0).nonzero().squeeze(1)
            outputs = model(**inputs, logits_to_keep=keep + self.virtual_tokens, use_cache=False)
            target = labels[:, keep + 1]
        else:
            outputs = model(**inputs, use_cache=False)
            target = inputs["labels"]
        logits = outputs.logits
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1), ignore_index=-100,
                               reduction="sum", label_smoothing=self.label_smoothing)
        self.loss_is_scaled_for_ga = num_items_in_batch is not None
        if num_items_in_batch is None:
            loss = loss / (target != -100).sum().clamp(min=1)
        else:
            loss = loss / num_items_in_batch
            if self.args.average_tokens_across_devices:  # the Trainer averages gradients over processes
                loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        flags = torch.tensor([0.0 if torch.isfinite(loss).all() else 1.0, 1.0 if self.interrupted else 0.0])
        if world()[1] > 1:  # every process must agree, or DDP would hang
            torch.distributed.all_reduce(flags, op=torch.distributed.ReduceOp.MAX)
        if flags[0] > 0 and self.bad_step is None:
            self.bad_step = self.state.global_step + 1
        elif flags[1] > 0:
            self.stopped_by_interrupt = True
        return loss

    def _save(self, output_dir=None, state_dict=None):
        out = Path(output_dir or self.args.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        save_state(self.model, out / STATE_FILE)

    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        load_state(model or self.model, Path(resume_from_checkpoint) / STATE_FILE)


class _Veto(TrainerCallback):
    """Runs after the Trainer's own flow callback: never checkpoint a step whose loss was
    not finite; on Ctrl-C, checkpoint this step and stop."""

    def __init__(self, trainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kw):
        if self.trainer.bad_step is not None:
            control.should_save = False
            control.should_training_stop = True
        elif self.trainer.stopped_by_interrupt:
            control.should_save = args.save_strategy != "no"
            control.should_training_stop = True
        return control


class Interrupted(RetainError):
    """Ctrl-C during training: a checkpoint was kept; exit code 130."""

    exit_code = 130


class _catch_sigint:
    """While training, the first Ctrl-C asks the Trainer to checkpoint and stop; a second one aborts."""

    def __init__(self, trainer):
        self.trainer = trainer

    def __enter__(self):
        import signal
        import threading

        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        import signal

        if self.trainer.interrupted:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        self.trainer.interrupted = True

    def __exit__(self, *exc):
        import signal

        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        return False


def last_checkpoint(stage_dir: Path) -> Path | None:
    """The newest complete checkpoint of a stage (one killed mid-write is skipped)."""

    def complete(p: Path) -> bool:
        try:
            json.loads((p / "trainer_state.json").read_text())
        except (OSError, ValueError):
            return False
        return (p / STATE_FILE).is_file()

    ckpts = [p for p in stage_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit() and complete(p)]
    return max(ckpts, key=lambda p: int(p.name.split("-")[1])) if ckpts else None


def _virtual_tokens(model) -> int:
    """Soft-prompt tokens PEFT prepends to every row (0 without a prompt)."""
    if not hasattr(model, "prompt_encoder"):
        return 0
    return model.peft_config[model.active_adapter].num_virtual_tokens


_PACKING_OK: "weakref.WeakKeyDictionary[torch.nn.Module, bool]" = weakref.WeakKeyDictionary()


@torch.no_grad()
def packing_is_exact(model) -> bool:
    """Does this model keep packed sequences apart (position ids restarting at 0)?

    transformers builds a block-causal mask from restarting position ids for most
    decoder models; rather than trusting a list, two short sequences are run
    packed and apart once per model, and packing is used only if the logits agree.
    """
    if model not in _PACKING_OK:
        was = model.training
        model.eval()
        try:
            emb = model.get_input_embeddings()
            a = torch.arange(3, 8, device=emb.weight.device).unsqueeze(0) % emb.num_embeddings
            b = torch.arange(11, 14, device=emb.weight.device).unsqueeze(0) % emb.num_embeddings
            la = model(input_ids=a, use_cache=False).logits
            lb = model(input_ids=b, use_cache=False).logits
            pos = torch.tensor([[0, 1, 2, 3, 4, 0, 1, 2]], device=a.device)
            lp = model(input_ids=torch.cat([a, b], 1), position_ids=pos, use_cache=False).logits
            _PACKING_OK[model] = bool(torch.allclose(lp[:, :5], la, atol=1e-4) and torch.allclose(lp[:, 5:], lb, atol=1e-4))
        except Exception:  # an architecture without position ids: pad instead
            _PACKING_OK[model] = False
        finally:
            model.train(was)
    return _PACKING_OK[model]


# -------------------------------------------------------------------- stage
def run_stage(model, tokenizer, stage: Stage, *, rows: list[dict], steps: int, lr: float, prompt_lr: float,
              cfg, stage_dir: Path, evaluate=None, log=lambda e: None, resume: bool = False,
              resumable: bool = True) -> dict:
    """Train one stage; return its record (steps, evaluations, best step, wall time).

    ``resumable``: the caller keeps checkpoints for ``--resume`` (``retain train``); otherwise failure
    messages do not point at checkpoints or ``--resume``.
    """
    prepare(model, stage)
    n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    stage_dir.mkdir(parents=True, exist_ok=True)
    causal = not getattr(getattr(model, "config", None), "is_encoder_decoder", False)
    virtual = _virtual_tokens(model)
    packed = causal and not virtual and getattr(cfg, "packing", True) and packing_is_exact(model)
    grouped = bool(getattr(cfg, "group_by_length", False)) and not packed
    args = TrainingArguments(
        output_dir=str(stage_dir),
        max_steps=steps,
        learning_rate=lr,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        lr_scheduler_type=cfg.scheduler,
        warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay,
        label_smoothing_factor=0.0,  # applied in _StageTrainer.compute_loss (the Trainer's smoother breaks seq2seq)
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
    )
    # padding-free: a batch is one row of concatenated examples with restarting position ids
    collator = (DataCollatorWithFlattening(return_position_ids=True, separator_id=-100) if packed
                else DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100))
    opt_cls, opt_kwargs = Trainer.get_optimizer_cls_and_kwargs(args, model)
    opt_kwargs = {k: v for k, v in opt_kwargs.items() if k != "lr"}
    groups = param_groups(model, lr, prompt_lr)
    for g in groups:
        g.setdefault("weight_decay", cfg.weight_decay)
    optimizer = opt_cls(groups, lr=lr, **opt_kwargs)
    best = BestCheckpoint(evaluate, cfg.eval_every if evaluate else 0, steps, stage_dir, log)
    trainer = _StageTrainer(model=model, args=args, train_dataset=rows, data_collator=collator,
                            optimizers=(optimizer, None), callbacks=[best, LogCallback(log)],
                            selective_loss=causal, virtual_tokens=virtual, label_smoothing=cfg.label_smoothing)
    ckpt = last_checkpoint(stage_dir) if resume else None
    log({"event": "stage_start", "stage": stage.name, "trains": stage.trains, "steps": steps, "lr": lr,
         "trainable_parameters": n_train, "packed": packed, "grouped_by_length": grouped,
         "resumed_from": str(ckpt.name) if ckpt else None})
    t0 = time.time()
    with _catch_sigint(trainer):
        result = trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
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
    best.restore(model)
    record = {
        "stage": stage.name, "trains": stage.trains, "steps": steps, "learning_rate": lr,
        "prompt_learning_rate": prompt_lr if stage.trains_prompt else None,
        "trainable_parameters": n_train, "packed": packed, "grouped_by_length": grouped,
        "train_loss": round(float(result.training_loss), 6),
        "input_tokens": int(trainer.state.num_input_tokens_seen),
        "evaluations": best.evals, "best": best.best, "wall_time_s": round(time.time() - t0, 2),
        "resumed_from": ckpt.name if ckpt else None,
    }
    model.requires_grad_(False)
    return record
