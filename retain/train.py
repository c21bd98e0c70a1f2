"""``retain train``: setup -> fit (one engine call per stage) -> save.

All input checks run before the model is loaded, so a typo costs a second,
not a model load; nothing is written until the data and flags are valid.
"""

from __future__ import annotations

import json
import platform
import shutil
import time
from pathlib import Path

import torch

from retain import __version__
from retain.config import TrainConfig, to_dict
from retain.data import TaskFormat, check_template, load_examples, load_jsonl, pick_one_shot, template_fields, tokenize
from retain.engine import barrier, is_main, run_stage, save_state, sharded_generate, load_state
from retain.errors import RetainError
from retain.evaluation.decoding import answer_budget
from retain.evaluation.metrics import resolve_metric, score
from retain.methods import METHODS, changes_base, stage_budget, uses_lora, uses_prompt, wrap
from retain.models import load_model
from retain.run import check_output, commit, staging_dir


def library_versions() -> dict:
    import accelerate
    import peft
    import transformers

    return {"retain": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "accelerate": accelerate.__version__, "python": platform.python_version()}


def validated_inputs(cfg: TrainConfig):
    """Check flags and data; returns (train examples, validation examples)."""
    if not cfg.train:
        raise RetainError("--train is required")
    if not cfg.output:
        raise RetainError("--output is required")
    cfg.template = check_template(cfg.template)
    check_output(Path(cfg.output), overwrite=cfg.overwrite, resume=cfg.resume)
    fields = template_fields(cfg.template)
    train = load_examples(cfg.train, fields=fields, flag="--train")
    val = load_jsonl(cfg.validation, fields=fields, flag="--validation") if cfg.validation else []
    return train, val


def train(cfg: TrainConfig, *, progress=print) -> Path:
    t_start = time.time()
    _warn_single_process_launch()
    out = Path(cfg.output)
    train_examples, val_examples = validated_inputs(cfg)
    loaded = load_model(cfg.model, trust_remote_code=cfg.trust_remote_code, allow_pickle=cfg.allow_pickle)
    tokenizer, is_seq2seq = loaded.tokenizer, loaded.is_seq2seq
    base_fingerprint = loaded.fingerprint
    metric = resolve_metric(cfg.metric, [e["output"] for e in train_examples])
    fmt = TaskFormat(cfg.template, pick_one_shot(train_examples, cfg.seed) if cfg.one_shot else None, is_seq2seq)
    limit = getattr(loaded.model.config, "max_position_embeddings", None) or getattr(loaded.model.config, "n_positions", None)
    max_length = cfg.max_length
    if limit:
        budget = limit - (cfg.prompt_length if uses_prompt(cfg.method) else 0)
        max_length = min(max_length, budget)
    tok = tokenize(train_examples, tokenizer, fmt, max_length)
    if tok.truncated and is_main():
        import sys

        sys.stderr.write(f"[retain] note: {tok.truncated} training examples are longer than {max_length} tokens; "
                         "their prompts were cut from the left so the output is kept\n")
    max_new = cfg.max_new_tokens or answer_budget(tokenizer, [e["output"] for e in train_examples])

    staging = staging_dir(out)
    if is_main():
        if staging.exists() and not cfg.resume:
            shutil.rmtree(staging)
        staging.mkdir(parents=True, exist_ok=True)
    barrier()
    log_path = staging / "train_log.jsonl"

    def log(entry: dict) -> None:
        if is_main():
            with open(log_path, "a") as f:
                f.write(json.dumps({"time": round(time.time() - t_start, 2), **entry}) + "\n")

    log({"event": "start", "method": cfg.method, "model": cfg.model, "examples": len(tok.rows), "truncated": tok.truncated})
    model = wrap(loaded.model, tokenizer, cfg.method, cfg, is_seq2seq)

    evaluate = None
    if val_examples and cfg.eval_every:
        sample = val_examples[: cfg.eval_samples]
        prompts = [fmt.prompt(e) for e in sample]
        refs = [e.get("references") or e["output"] for e in sample]

        def evaluate(m):
            preds = sharded_generate(m, tokenizer, prompts, is_seq2seq=is_seq2seq, max_new_tokens=max_new,
                                     batch_size=cfg.eval_batch_size)
            return round(score(metric, preds, refs), 4)

    records = []
    for stage in METHODS[cfg.method]:
        steps, lr, prompt_lr = stage_budget(cfg.method, stage, cfg)
        stage_dir = staging / "checkpoints" / stage.name
        done = stage_dir / "done.json"
        if cfg.resume and done.is_file():  # finished before the interruption
            load_state(model, stage_dir / "final.safetensors")
            records.append(json.loads(done.read_text()))
            progress(f"[retain] {stage.name}: already complete, loaded")
            continue
        progress(f"[retain] {cfg.method} {stage.name}: training {stage.trains} for {steps} steps at lr {lr:g}")
        rec = run_stage(model, tokenizer, stage, rows=tok.rows, steps=steps, lr=lr, prompt_lr=prompt_lr, cfg=cfg,
                        stage_dir=stage_dir, evaluate=evaluate, log=log, resume=cfg.resume)
        if is_main():
            save_state(model, stage_dir / "final.safetensors")
            (stage_dir / "done.json").write_text(json.dumps(rec))
        barrier()
        records.append(rec)
        best = rec["best"]
        progress(f"[retain] {stage.name}: done in {rec['wall_time_s']:.0f}s, loss {rec['train_loss']:.4f}"
                 + (f", best {metric} {best['score']:.2f} at step {best['step']}" if best else ""))

    if is_main():
        shutil.rmtree(staging / "checkpoints", ignore_errors=True)
        _save_artifacts(model, tokenizer, cfg, staging)
        info = {
            "retain_version": __version__,
            "method": cfg.method,
            "config": to_dict(cfg),
            "base": {"spec": cfg.model, "fingerprint": base_fingerprint, "is_seq2seq": is_seq2seq},
            "format": {"template": fmt.template, "one_shot": fmt.one_shot},
            "metric": metric,
            "max_new_tokens": max_new,
            "max_length": max_length,
            "examples": {"train": len(tok.rows), "validation": len(val_examples), "truncated": tok.truncated},
            "stages": records,
            "artifacts": sorted(p.name for p in staging.iterdir() if p.is_dir()),
            "world_size": _world_size(),
            "versions": library_versions(),
            "wall_time_s": round(time.time() - t_start, 2),
        }
        (staging / "run.json").write_text(json.dumps(info, indent=2))
        commit(staging, out)
    barrier()
    return out


def _warn_single_process_launch() -> None:
    """`accelerate launch --cpu --num_processes N` starts ONE process in accelerate 1.x: say so."""
    import os
    import sys

    env = os.environ
    if env.get("ACCELERATE_USE_CPU", "").lower() == "true" and "MASTER_PORT" in env and "WORLD_SIZE" not in env:
        sys.stderr.write("[retain] note: 'accelerate launch --cpu' started a single process; for data-parallel training "
                         "on CPU use 'accelerate launch --multi_gpu --num_processes N' (torchrun, gloo backend)\n")


def _world_size() -> int:
    from retain.engine import world

    return world()[1]


def _save_artifacts(model, tokenizer, cfg: TrainConfig, root: Path) -> None:
    if uses_prompt(cfg.method):
        model.save_pretrained(str(root / "prompt"))
    if uses_lora(cfg.method):
        model.save_pretrained(str(root / "lora"))
    if changes_base(cfg.method):
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        base.save_pretrained(str(root / "model"), safe_serialization=True)
        tokenizer.save_pretrained(str(root / "model"))
