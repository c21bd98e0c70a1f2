"""``retain demo``: the built-in sentiment task through ``retain compare`` (base / full / promot), 1- and 4-shot."""

from __future__ import annotations

import json
import time
from pathlib import Path

from retain.artifacts import write_text
from retain.config import TrainConfig
from retain.evaluation.builtin import DEMO_TEMPLATE, demo_task
from retain.evaluation.report import comparison_table, paired_table
from retain.workflows.compare import compare, parse_methods
from retain.workflows.options import CompareOptions, DemoOptions

# A 20-token prompt keeps the demo's rows short (it finishes in minutes on 2 CPU cores); real runs default to the
# recipe search's 100 (TrainConfig.prompt_length).
DEMO_PROMPT_LENGTH = 20


def write_data(out: Path) -> Path:
    """The demo task's train/validation JSONL in a hidden sibling of ``out`` (rewritten only if different)."""
    data = out.parent / f".{out.name}.data"
    data.mkdir(parents=True, exist_ok=True)
    for name, rows in (("train", demo_task(400, seed=7)), ("validation", demo_task(100, seed=8))):
        path = data / f"{name}.jsonl"
        text = "".join(json.dumps(r) + "\n" for r in rows)
        if not path.is_file() or path.read_text() != text:
            write_text(path, text)
    return data


def demo(o: DemoOptions, log=print) -> dict:
    methods = parse_methods(o.methods)
    t0 = time.time()
    out = Path(o.output)
    data = write_data(out)
    cfg = TrainConfig(model=o.model, train=str(data / "train.jsonl"), validation=str(data / "validation.jsonl"),
                      output=str(out), template=DEMO_TEMPLATE, max_steps=o.steps, stage1_steps=o.steps,
                      stage2_steps=o.steps, lr=o.lr, stage2_lr=o.lr, eval_every=0, max_length=64, batch_size=8,
                      prompt_length=DEMO_PROMPT_LENGTH,
                      save_every=0, log_every=10, eval_batch_size=32, overwrite=o.overwrite)
    opts = CompareOptions(methods=o.methods, suite="builtin", examples=o.examples, tuned_examples=100, seed=0)  # compare's shots
    log(f"[demo] task: synthetic reviews -> positive/negative, template {DEMO_TEMPLATE!r}; methods {','.join(methods)}; "
        f"{o.steps} steps per stage at lr {o.lr:g}; suite: builtin, {opts.shots}-shot, {o.examples} items per task")
    results = compare(cfg, opts, out=out, title="retain demo", tuned_name="demo-sentiment", log=log)
    for k in results["shots"]:
        log(f"\n{k}-shot")
        log(comparison_table(results, k))
        log("")
        log(paired_table(results, k))
    log(f"\n[demo] done in {time.time() - t0:.0f}s; table {out}/results.md, plots {out}/tradeoff.png and {out}/tasks.png")
    return results
