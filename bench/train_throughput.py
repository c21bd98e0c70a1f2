"""Training throughput: `retain train --method full` vs a plain hand-written Trainer script.

Both sides fine-tune the same model on the same examples (SST-2, completion-only
loss), same batch size, steps, learning rate and seed, so they see the same
batches in the same order. The plain side pads each batch to its longest example
(DataCollatorForSeq2Seq), as users write it. Sides alternate (A B A B ...) and
the median of each is reported. Tokens/s counts real (non-padding) tokens.

    python bench/train_throughput.py [--model smollm2-135m --steps 20 --batch-size 8 --repeats 2]

Last line: the throughput ratio retain / plain.
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
from bench._common import SHARED, write_result  # noqa: E402

TEMPLATE = "Review: {input}\nSentiment:"


def plain_trainer(model_spec, examples, args, out):
    """What a user would write: tokenize, mask the prompt, pad to the longest, Trainer."""
    import torch
    from transformers import DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from retain.models import load_model

    loaded = load_model(model_spec)
    tok = loaded.tokenizer
    rows = []
    for e in examples:
        prompt = tok(TEMPLATE.format(input=e["input"]), add_special_tokens=False)["input_ids"]
        answer = tok(" " + e["output"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        rows.append({"input_ids": prompt + answer, "attention_mask": [1] * (len(prompt) + len(answer)),
                     "labels": [-100] * len(prompt) + answer})
    targs = TrainingArguments(output_dir=str(out), max_steps=args.steps, per_device_train_batch_size=args.batch_size,
                              learning_rate=args.lr, lr_scheduler_type="constant_with_warmup", logging_steps=1,
                              save_strategy="no", report_to=[], seed=args.seed, use_cpu=not torch.cuda.is_available(),
                              disable_tqdm=True)
    trainer = Trainer(model=loaded.model, args=targs, train_dataset=rows,
                      data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100))
    t = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return seconds, losses, rows


def retain_side(model_spec, train_file, args, out):
    from retain.config import TrainConfig
    from retain.workflows.train import train

    cfg = TrainConfig(model=model_spec, method="full", train=str(train_file), output=str(out), template=TEMPLATE,
                      max_steps=args.steps, batch_size=args.batch_size, lr=args.lr, eval_every=0, save_every=0,
                      log_every=1, seed=args.seed, overwrite=True)
    train(cfg, progress=lambda m: None)
    info = json.loads((out / "run.json").read_text())
    stage = info["stages"][0]
    log = [json.loads(l) for l in (out / "train_log.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in log if e["event"] == "log" and "loss" in e]
    return stage["wall_time_s"], losses, stage["packed"]


def tokens_seen(rows, steps, batch_size, seed):
    """Real tokens in the batches the Trainer draws (its seeded random sampler)."""
    import torch

    g = torch.Generator()
    g.manual_seed(seed)
    order = []
    while len(order) < steps * batch_size:
        order += torch.randperm(len(rows), generator=g).tolist()
    return sum(len(rows[i]["input_ids"]) for i in order[: steps * batch_size])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=2e-5)
    ap.add_argument("--examples", type=int, default=800)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from retain.data import load_jsonl

    examples = load_jsonl(SHARED / "sst2" / "train.jsonl")[: args.examples]
    plain_s, retain_s = [], []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        train_file = tmp / "train.jsonl"
        train_file.write_text("".join(json.dumps(e) + "\n" for e in examples))
        for r in range(args.repeats):
            s, plain_losses, rows = plain_trainer(args.model, examples, args, tmp / f"plain{r}")
            plain_s.append(s)
            s, retain_losses, packed = retain_side(args.model, train_file, args, tmp / f"retain{r}")
            retain_s.append(s)
            print(f"repeat {r + 1}: plain {plain_s[-1]:.1f}s, retain {retain_s[-1]:.1f}s", flush=True)
    tokens = tokens_seen(rows, args.steps, args.batch_size, args.seed)
    plain_tps, retain_tps = tokens / statistics.median(plain_s), tokens / statistics.median(retain_s)
    diffs = [abs(a - b) for a, b in zip(plain_losses, retain_losses)]
    result = {
        "model": args.model, "steps": args.steps, "batch_size": args.batch_size, "real_tokens": tokens,
        "plain_seconds": plain_s, "retain_seconds": retain_s, "retain_packed": packed,
        "plain_tokens_per_s": round(plain_tps, 1), "retain_tokens_per_s": round(retain_tps, 1),
        "loss_plain": plain_losses, "loss_retain": retain_losses,
        "loss_max_abs_diff": round(max(diffs), 6), "loss_mean_plain": round(statistics.mean(plain_losses), 6),
        "loss_mean_retain": round(statistics.mean(retain_losses), 6),
        "ratio": round(retain_tps / plain_tps, 3),
        "command": "python bench/train_throughput.py " + " ".join(sys.argv[1:]),
    }
    write_result("train_throughput", result)
    print(f"plain Trainer: {plain_tps:.0f} tokens/s; retain: {retain_tps:.0f} tokens/s (packed={packed}); "
          f"loss curves: max |diff| {result['loss_max_abs_diff']:.2e} over {len(diffs)} steps")
    print(f"train_throughput ratio (retain / plain tokens/s): {result['ratio']:.2f}x")


if __name__ == "__main__":
    main()
