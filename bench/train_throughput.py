"""Training throughput, side by side in one run: retain against TRL's SFTTrainer and a plain Trainer script.

Every side trains the same model on the same SST-2 examples (tokenized once, by retain, loss on the output
only), with the same batch size, steps, learning rate, optimizer, schedule and seed, so the Trainer's seeded
sampler draws the same batches in the same order. Sides alternate (A B C ... A B C ...); the median of each
is reported. Tokens/s counts real (non-padding, non-prompt) tokens of those batches.

sides (``--sides``):
  plain          a hand-written Trainer script that pads each batch to its longest example
  trl_full       TRL SFTTrainer, padding_free=True, completion-only loss (the tool a user would pick)
  retain_full    retain train --method full (packed rows, logits only where a label is)
  retain_promot  retain train --method promot: stage 1 (prompt trains) and stage 2 (model trains), packed
  trl_prompt     TRL SFTTrainer with a PEFT prompt-tuning config, padded: TRL's padding-free rows would be
                 wrong for a soft prompt (PEFT prepends it once per row and drops the position ids; see
                 tests/test_prompt_packing.py), so its correct configuration is the padded one

    OMP_NUM_THREADS=1 python bench/train_throughput.py [--model smollm2-135m --steps 16 --batch-size 8 --repeats 2]

Needs ``pip install trl`` for the TRL sides (in the dev extra). Last line: retain full / TRL full tokens/s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._common import SHARED, write_result

TEMPLATE = "Review: {input}\nSentiment:"
SIDES = ("plain", "trl_full", "retain_full", "retain_promot", "trl_prompt")
TARGETS = {  # (numerator, denominator, at least)
    "retain_full/trl_full": ("retain_full", "trl_full", 1.15),
    "promot_stage2/retain_full": ("promot_stage2", "retain_full", 0.9),
    "promot_stage1/retain_full": ("promot_stage1", "retain_full", 1.3),
    "promot_stage1/trl_prompt": ("promot_stage1", "trl_prompt", 2.0),
    "retain_full/plain": ("retain_full", "plain", 1.3),
}


def _config(args):
    from retain.config import TrainConfig

    return TrainConfig(model=args.model, template=TEMPLATE, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                       prompt_length=args.prompt_length, eval_every=0, save_every=0, log_every=1, overwrite=True)


def _targs(cfg, args, out, lr):
    """The Trainer arguments every non-retain side shares with retain's (optimizer, schedule, seed, batches)."""
    import torch

    return dict(output_dir=str(out), max_steps=args.steps, per_device_train_batch_size=args.batch_size, learning_rate=lr,
                lr_scheduler_type=cfg.scheduler, warmup_steps=cfg.warmup_steps, weight_decay=cfg.weight_decay, optim=cfg.optim,
                logging_steps=1, save_strategy="no", report_to=[], seed=args.seed, use_cpu=not torch.cuda.is_available(),
                disable_tqdm=True, dataloader_num_workers=0)


def _timed(trainer) -> tuple[float, list[float]]:
    t = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t
    return seconds, [h["loss"] for h in trainer.state.log_history if "loss" in h]


def plain(args, cfg, rows, out):
    """What a user would write: pad to the longest, Trainer."""
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from retain.models import load_model

    loaded = load_model(args.model)
    trainer = Trainer(model=loaded.model, args=TrainingArguments(**_targs(cfg, args, out, args.lr)), train_dataset=rows,
                      data_collator=DataCollatorForSeq2Seq(loaded.tokenizer, padding=True, label_pad_token_id=-100))
    return {"plain": _timed(trainer)}


def _trl(args, cfg, rows, out, *, prompt: bool):
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    from retain.models import load_model

    loaded = load_model(args.model)
    data = Dataset.from_list([{"input_ids": r["input_ids"], "completion_mask": [int(t != -100) for t in r["labels"]]} for r in rows])
    peft_config = None
    if prompt:
        from peft import PromptTuningConfig, TaskType

        peft_config = PromptTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=args.prompt_length)
    # TRL's own defaults differ from the Trainer's in two ways that change the work, not the trainer: bf16 autocast
    # (6-7x slower on a CPU without bf16 arithmetic, and a different loss) and gradient checkpointing. Both are set
    # as retain's side runs them (float32, no checkpointing), so the sides compare trainers, not settings.
    sft = SFTConfig(**_targs(cfg, args, out, cfg.stage1_lr if prompt else args.lr), padding_free=not prompt,
                    completion_only_loss=True, max_length=None, dataset_num_proc=None, bf16=False,
                    gradient_checkpointing=cfg.gradient_checkpointing)
    trainer = SFTTrainer(model=loaded.model, args=sft, train_dataset=data, processing_class=loaded.tokenizer,
                         peft_config=peft_config)
    return {"trl_prompt" if prompt else "trl_full": _timed(trainer)}


def trl_full(args, cfg, rows, out):
    return _trl(args, cfg, rows, out, prompt=False)


def trl_prompt(args, cfg, rows, out):
    return _trl(args, cfg, rows, out, prompt=True)


def _retain(args, cfg, train_file, out, method):
    from dataclasses import replace

    from retain.workflows.train import train

    train(replace(cfg, method=method, train=str(train_file), output=str(out), max_steps=args.steps,
                  stage1_steps=args.steps, stage2_steps=args.steps, lr=args.lr if method == "full" else None),
          progress=lambda m: None)
    info = json.loads((out / "run.json").read_text())
    losses, current = {}, None
    for line in (out / "train_log.jsonl").read_text().splitlines():
        e = json.loads(line)
        current = e["stage"] if e["event"] == "stage_start" else current
        if e["event"] == "log" and "loss" in e:
            losses.setdefault(current, []).append(e["loss"])
    result = {}
    for stage in info["stages"]:
        name = "retain_full" if method == "full" else f"promot_{stage['stage']}"
        result[name] = (stage["wall_time_s"], losses.get(stage["stage"], []), stage["packing"], stage["input_tokens"])
    return result


def retain_full(args, cfg, rows, out, train_file=None):
    return _retain(args, cfg, train_file, out, "full")


def retain_promot(args, cfg, rows, out, train_file=None):
    return _retain(args, cfg, train_file, out, "promot")


def tokens_seen(rows, steps, batch_size, seed):
    """Real tokens in the batches the Trainer draws (its seeded random sampler)."""
    import torch

    g = torch.Generator()
    g.manual_seed(seed)
    order = []
    while len(order) < steps * batch_size:
        order += torch.randperm(len(rows), generator=g).tolist()
    return sum(len(rows[i]["input_ids"]) for i in order[: steps * batch_size])


def measure(args) -> dict:
    from retain.data import TaskFormat, load_jsonl, tokenize
    from retain.models import load_model

    cfg = _config(args)
    examples = load_jsonl(SHARED / "sst2" / "train.jsonl")[: args.examples]
    rows = tokenize(examples, load_model(args.model).tokenizer, TaskFormat(TEMPLATE), cfg.max_length).rows
    runs: dict[str, list] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train_file = tmp / "train.jsonl"
        train_file.write_text("".join(json.dumps(e) + "\n" for e in examples))
        for r in range(args.repeats):
            for side in args.sides:
                fn = globals()[side]
                kwargs = {"train_file": train_file} if side.startswith("retain") else {}
                for name, res in fn(args, cfg, rows, tmp / f"{side}{r}", **kwargs).items():
                    runs.setdefault(name, []).append(res)
                    print(f"repeat {r + 1}: {name} {res[0]:.1f}s", flush=True)
    return {"rows": rows, "runs": runs}


def summarize(args, rows, runs) -> dict:
    tokens = tokens_seen(rows, args.steps, args.batch_size, args.seed)
    sides = {}
    for name, results in runs.items():
        seconds = [r[0] for r in results]
        losses = results[-1][1]
        sides[name] = {"seconds": seconds, "tokens_per_s": round(tokens / statistics.median(seconds), 1),
                       "loss_mean": round(statistics.mean(losses), 6) if losses else None, "losses": losses}
        if len(results[-1]) > 2:
            sides[name].update(packing=results[-1][2], input_tokens=results[-1][3])
    ratios = {}
    for key, (num, den, target) in TARGETS.items():
        if num in sides and den in sides:
            value = round(sides[num]["tokens_per_s"] / sides[den]["tokens_per_s"], 3)
            ratios[key] = {"ratio": value, "target": target, "met": value >= target}
    return {"real_tokens": tokens, "sides": sides, "ratios": ratios}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="model spec (retain alias, path or Hub id)")
    ap.add_argument("--steps", type=int, default=16, help="optimizer steps per side (and per ProMoT stage)")
    ap.add_argument("--batch-size", type=int, default=8, help="examples per step")
    ap.add_argument("--lr", type=float, default=2e-5, help="learning rate of full fine-tuning and ProMoT stage 2")
    ap.add_argument("--prompt-length", type=int, default=20, help="soft-prompt tokens (ProMoT, TRL prompt tuning)")
    ap.add_argument("--examples", type=int, default=800, help="SST-2 training examples the sampler draws from")
    ap.add_argument("--repeats", type=int, default=2, help="rounds of all sides; the median time per side is reported")
    ap.add_argument("--seed", type=int, default=0, help="seed of every side (same batches)")
    ap.add_argument("--result-name", default="train_throughput", help="bench/results/NAME.json to write")
    ap.add_argument("--sides", type=lambda s: s.split(","), default=list(SIDES), help=f"comma-separated, from {','.join(SIDES)}")
    args = ap.parse_args()
    if unknown := set(args.sides) - set(SIDES):
        ap.error(f"--sides: unknown {sorted(unknown)}; choose from {','.join(SIDES)}")
    m = measure(args)
    result = {"model": args.model, "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
              "prompt_length": args.prompt_length, **summarize(args, m["rows"], m["runs"]),
              "command": "python bench/train_throughput.py " + " ".join(sys.argv[1:])}
    write_result(args.result_name, result)
    for name, side in result["sides"].items():
        print(f"{name:15s} {side['tokens_per_s']:8.1f} tokens/s  mean loss {side['loss_mean']}  {side.get('packing', '')}")
    for key, r in result["ratios"].items():
        print(f"{key:28s} {r['ratio']:.2f}x (target >= {r['target']}x: {'met' if r['met'] else 'NOT met'})")
    if "retain_full/trl_full" in result["ratios"]:
        print(f"train_throughput ratio (retain full / TRL full tokens/s): {result['ratios']['retain_full/trl_full']['ratio']:.2f}x")


if __name__ == "__main__":
    main()
