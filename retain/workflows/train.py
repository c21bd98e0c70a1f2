"""``retain train``: setup -> fit (one engine call per stage) -> save.

All input checks run before the model is loaded, so a typo costs a second,
not a model load; nothing is written until the data and flags are valid.
"""

from __future__ import annotations

import functools
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from retain import methods
from retain.artifacts import RUN_FILE, JsonlLog, check_output, commit, staging_dir, write_json
from retain.config import TrainConfig, to_dict
from retain.data import TaskFormat, Tokenized, check_template, load_examples, load_jsonl, pick_one_shot, template_fields, tokenize
from retain.distributed import begin, is_main, main_only, on_main, parallelism, world
from retain.engine import check_precision, load_state, run_stage, save_state
from retain.engine.checkpoints import full_state, is_sharded, part_state, save_pretrained
from retain.errors import RetainError
from retain.evaluation.decoding import answer_budget, using
from retain.evaluation.harness import evaluate_tuned
from retain.evaluation.metrics import resolve_metric
from retain.methods.lora import plain_state
from retain.models import load_model, model_options
from retain.versions import __version__, library_versions


def validated_inputs(cfg: TrainConfig):
    """Check flags and data; returns (train examples, validation examples)."""
    if not cfg.train:
        raise RetainError("--train is required")
    if not cfg.output:
        raise RetainError("--output is required")
    methods.get(cfg.method)
    check_precision(cfg)
    cfg.template = check_template(cfg.template)
    check_output(Path(cfg.output), overwrite=cfg.overwrite, resume=cfg.resume)
    fields = template_fields(cfg.template)
    train = load_examples(cfg.train, fields=fields, flag="--train")
    val = load_jsonl(cfg.validation, fields=fields, flag="--validation") if cfg.validation else []
    return train, val


@dataclass
class Setup:
    """Everything a run needs once inputs are checked and the model is loaded."""

    cfg: TrainConfig
    method: methods.Method
    loaded: object  # retain.models.Loaded
    fmt: TaskFormat
    data: Tokenized
    metric: str
    max_new: int
    max_length: int
    validation: list[dict]
    fingerprint: str  # sha256 of the base weights as loaded, before any training


def setup(cfg: TrainConfig) -> Setup:
    """Check inputs, load the model, tokenize; nothing is written."""
    _warn_single_process_launch()
    method = methods.get(cfg.method)
    cfg = method.configure(cfg)  # the settings the method fixes, recorded as used
    train_examples, val_examples = validated_inputs(cfg)
    outputs = [e["output"] for e in train_examples]
    metric = resolve_metric(cfg.metric, outputs)
    loaded = load_model(cfg.model, **model_options(cfg))
    fmt = TaskFormat(cfg.template, pick_one_shot(train_examples, cfg.seed) if cfg.one_shot else None, loaded.is_seq2seq)
    limit = getattr(loaded.model.config, "max_position_embeddings", None) or getattr(loaded.model.config, "n_positions", None)
    max_length = cfg.max_length
    if limit:
        max_length = min(max_length, limit - (cfg.prompt_length if method.uses_prompt else 0))
    data = tokenize(train_examples, loaded.tokenizer, fmt, max_length)
    if data.truncated and is_main():
        sys.stderr.write(f"[retain] note: {data.truncated} training examples are longer than {max_length} tokens; "
                         "their prompts were cut from the left so the output is kept\n")
    return Setup(cfg, method, loaded, fmt, data, metric,
                 answer_budget(loaded.tokenizer, outputs, given=cfg.max_new_tokens), max_length, val_examples, loaded.fingerprint)


def checkpoint_metric(s: Setup):
    """The tuned-task score used to keep each stage's best checkpoint (None: keep the last weights)."""
    cfg = s.cfg
    if not (s.validation and cfg.eval_every):
        return None
    sample = s.validation[: cfg.eval_samples]

    def evaluate(model) -> float:
        with using(cfg.num_beams):  # the decoding of the reported evaluation (--num-beams)
            return evaluate_tuned(model, s.loaded.tokenizer, sample, s.fmt, s.metric, is_seq2seq=s.loaded.is_seq2seq,
                                  max_new_tokens=s.max_new, batch_size=cfg.eval_batch_size, shard=True)["score"]

    return evaluate


def fit(s: Setup, model, staging: Path, log, progress, observe=None) -> list[dict]:
    """Every stage of the method, through the engine; a stage finished before an interruption is reloaded.
    ``observe(setup, trainer, stage) -> [TrainerCallback]``: callbacks that measure each stage as it trains."""
    cfg, records = s.cfg, []
    evaluate = checkpoint_metric(s)
    for stage in s.method.stages:
        steps, lr, prompt_lr = stage.budget(cfg)
        stage_dir = staging / "checkpoints" / stage.name
        done = stage_dir / "done.json"
        if cfg.resume and done.is_file():  # finished before the interruption
            load_state(model, stage_dir / "final.safetensors")
            records.append(json.loads(done.read_text()))
            progress(f"[retain] {stage.name}: already complete, loaded")
            continue
        progress(f"[retain] {cfg.method} {stage.name}: training {stage.trains} for {steps} steps at lr {lr:g}")
        rec = run_stage(model, s.loaded.tokenizer, stage, rows=s.data.rows, steps=steps, lr=lr, prompt_lr=prompt_lr, cfg=cfg,
                        stage_dir=stage_dir, evaluate=evaluate, log=log, resume=cfg.resume,
                        observe=observe and functools.partial(observe, s))
        save_state(model, stage_dir / "final.safetensors")  # every process (gathered if sharded); the main one writes
        on_main(write_json, done, rec)
        records.append(rec)
        best = rec["best"]
        progress(f"[retain] {stage.name}: done in {rec['wall_time_s']:.0f}s, loss {rec['train_loss']:.4f}"
                 + (f", best {s.metric} {best['score']:.2f} at step {best['step']}" if best else ""))
    return records


def train(cfg: TrainConfig, *, progress=print, observe=None) -> Path:
    """Train ``cfg.method``; under a launch of N processes every process calls this and trains its share of each
    batch, and the main process writes the run. ``observe(setup, trainer, stage)``: extra callbacks per stage
    (``retain analyze``)."""
    t_start = time.time()
    begin(cfg.deepspeed)
    progress = main_only(progress)
    out = Path(cfg.output) if cfg.output else None
    s = setup(cfg)
    staging = staging_dir(out)
    on_main(_fresh_staging, staging, keep=cfg.resume)
    log = JsonlLog(staging / "train_log.jsonl", t_start, enabled=is_main())
    log({"event": "start", "method": cfg.method, "model": cfg.model, "examples": len(s.data.rows), "truncated": s.data.truncated})
    model = methods.wrap(s.loaded.model, s.loaded.tokenizer, s.method, cfg, s.loaded.is_seq2seq)
    records = fit(s, model, staging, log, progress, observe)
    save(s, model, staging, records, t_start)
    on_main(commit, staging, out)
    return out


def _fresh_staging(staging: Path, keep: bool) -> None:
    if staging.exists() and not keep:
        shutil.rmtree(staging)
    staging.mkdir(parents=True, exist_ok=True)


def save(s: Setup, model, root: Path, records: list[dict], t_start: float) -> None:
    """The run's artifacts (``prompt/``, ``lora/``, ``model/``) and run.json. Every process calls this: the weights
    of a sharded model are gathered (``engine.checkpoints``), and the main process writes."""
    method = s.method
    on_main(shutil.rmtree, root / "checkpoints", ignore_errors=True)
    state = full_state(model) if is_sharded(model) and (method.changes_base or method.uses_lora) else None
    if method.uses_prompt:
        save_pretrained(model, root / "prompt", state)
    if method.uses_lora:
        save_pretrained(model, root / "lora", state)
    if method.changes_base:
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        base_state = state and part_state(state, model, base)
        if method.uses_lora:  # promot-lora: the LoRA is in lora/, model/ holds the plain tuned weights
            base_state = plain_state(base_state or full_state(base))
        save_pretrained(base, root / "model", base_state, safe_serialization=True)
        on_main(s.loaded.tokenizer.save_pretrained, str(root / "model"))
    on_main(lambda: write_json(root / RUN_FILE, run_info(s, root, records, time.time() - t_start)))


def run_info(s: Setup, root: Path, records: list[dict], wall: float) -> dict:
    """run.json: what was trained, how, on what, and how it went."""
    cfg = s.cfg
    return {
        "retain_version": __version__,
        "method": cfg.method,
        "config": to_dict(cfg),
        "base": {"spec": cfg.model, "fingerprint": s.fingerprint, "is_seq2seq": s.loaded.is_seq2seq},
        "format": {"template": s.fmt.template, "one_shot": s.fmt.one_shot},
        "removable": list(s.method.removable),  # parts used for the tuned task only (run.load_run)
        "metric": s.metric,
        "max_new_tokens": s.max_new,
        "max_length": s.max_length,
        "examples": {"train": len(s.data.rows), "validation": len(s.validation), "truncated": s.data.truncated},
        "stages": records,
        "memory": peak_memory(records),
        "artifacts": sorted(p.name for p in root.iterdir() if p.is_dir()),
        "world_size": world()[1],
        "parallelism": parallelism(),
        "versions": library_versions(),
        "wall_time_s": round(wall, 2),
    }


def peak_memory(records: list[dict]) -> dict:
    """The largest stage's memory: retain's estimate before it ran and the measured peak (see ``engine.memory``)."""
    mems = [r["memory"] for r in records if "memory" in r]
    return {"estimate_bytes": max((m["estimate_bytes"]["total"] for m in mems), default=None),
            "measured_peak_bytes": max((m["measured_peak"]["bytes"] for m in mems), default=None),
            "measured_how": mems[-1]["measured_peak"]["how"] if mems else None}


def _warn_single_process_launch() -> None:
    """`accelerate launch --cpu --num_processes N` starts ONE process in accelerate 1.x: say so."""
    import os

    env = os.environ
    if env.get("ACCELERATE_USE_CPU", "").lower() == "true" and "MASTER_PORT" in env and "WORLD_SIZE" not in env:
        sys.stderr.write("[retain] note: 'accelerate launch --cpu' started a single process; for data-parallel training "
                         "on CPU use 'accelerate launch --multi_gpu --num_processes N' (torchrun, gloo backend)\n")
