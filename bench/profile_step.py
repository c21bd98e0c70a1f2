"""Where a training step's time goes: torch.profiler over a few full fine-tuning steps.

Compares the naive step (padded batch, logits for every position; what a plain
Trainer does) with retain's (padding-free packing, logits only where a label is
predicted), on the same SST-2 examples. Prints the top operators of each and the
step times.

    python bench/profile_step.py [--model smollm2-135m --batch-size 8 --steps 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._common import sst2_rows, write_result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--top", type=int, default=8)
    args = ap.parse_args()

    from torch.profiler import ProfilerActivity, profile
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening, TrainingArguments

    from retain.engine import StageTrainer
    from retain.models import load_model

    loaded = load_model(args.model)
    model = loaded.model.train()
    rows = sst2_rows(loaded.tokenizer, args.batch_size)
    padded = DataCollatorForSeq2Seq(loaded.tokenizer, padding=True, label_pad_token_id=-100)(rows)
    packed = DataCollatorWithFlattening(return_position_ids=True, separator_id=-100)(rows)
    trainer = StageTrainer(model=model, args=TrainingArguments(output_dir="/tmp/retain-prof", report_to=[], use_cpu=True),
                            selective_loss=True)
    sides = {
        "naive (padded, all logits)": lambda: model(**padded, use_cache=False).loss,
        "retain (packed, label logits)": lambda: trainer.compute_loss(model, dict(packed)),
    }
    report = {}
    for name, loss_fn in sides.items():
        loss_fn().backward()  # warm-up
        model.zero_grad(set_to_none=True)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            t = time.perf_counter()
            for _ in range(args.steps):
                loss_fn().backward()
                model.zero_grad(set_to_none=True)
            seconds = (time.perf_counter() - t) / args.steps
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top)
        report[name] = {"forward_backward_s": round(seconds, 3)}
        print(f"== {name}: {seconds:.3f}s per forward+backward\n{table}")
    tokens_padded = int(padded["input_ids"].numel())
    tokens_real = int(packed["input_ids"].numel())
    report["tokens"] = {"padded": tokens_padded, "real": tokens_real}
    write_result("profile_step", {"model": args.model, "batch_size": args.batch_size, **report,
                                  "command": "python bench/profile_step.py " + " ".join(sys.argv[1:])})
    a, b = (report[k]["forward_backward_s"] for k in sides)
    print(f"padded batch {tokens_padded} tokens, packed {tokens_real} real tokens")
    print(f"profile_step: naive / retain forward+backward time: {a / b:.2f}x")


if __name__ == "__main__":
    main()
