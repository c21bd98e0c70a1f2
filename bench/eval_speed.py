"""Throughput of the evaluation engine vs a one-prompt-at-a-time evaluator.

Both score the same k-shot items of the built-in suite with the same model:

* simple: every whole prompt (demonstrations + query) through ``model.generate``
  on its own (``retain eval --engine simple``);
* fast: prompts batched by equal token length, the shared few-shot prefix run
  once per task and its key/value cache reused (``retain eval``, the default).

The scores must be identical (the script fails otherwise). Prints a summary,
writes JSON to bench/results/eval_speed.json, and prints the throughput ratio
(fast items/s divided by simple items/s) as the last line.

    HF_HUB_OFFLINE=1 python bench/eval_speed.py [--model smollm2-135m] [--tasks 6] [--examples 20] [--shots 4]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tasks", type=int, default=6, help="first N tasks of the built-in suite")
    ap.add_argument("--examples", type=int, default=20)
    ap.add_argument("--shots", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--output", default=str(ROOT / "bench" / "results" / "eval_speed.json"))
    args = ap.parse_args()

    import torch

    from retain.cli import _quiet_libraries
    from retain.evaluation.harness import evaluate_task
    from retain.evaluation.suite import load_suite
    from retain.models import load_model

    _quiet_libraries()
    loaded = load_model(args.model)
    tasks = load_suite("builtin", examples=args.examples)[: args.tasks]
    rows, totals = [], {"fast": 0.0, "simple": 0.0}
    items = 0
    for task in tasks:
        rec = {"task": task.name}
        preds = {}
        for engine in ("simple", "fast"):
            t0 = time.perf_counter()
            r = evaluate_task(loaded.model, loaded.tokenizer, task, args.shots, engine=engine, batch_size=args.batch_size)
            dt = time.perf_counter() - t0
            totals[engine] += dt
            rec[f"{engine}_s"] = round(dt, 3)
            rec[f"{engine}_score"] = r["score"]
            preds[engine] = r["predictions"]
        rec["items"] = len(preds["fast"])
        rec["identical_predictions"] = preds["fast"] == preds["simple"]
        items += rec["items"]
        rows.append(rec)
        print(f"{task.name:18s} items {rec['items']:3d}  simple {rec['simple_s']:7.2f}s  fast {rec['fast_s']:6.2f}s  "
              f"score {rec['simple_score']:.2f} / {rec['fast_score']:.2f}  identical {rec['identical_predictions']}", flush=True)
    ratio = totals["simple"] / totals["fast"]
    same = all(r["simple_score"] == r["fast_score"] for r in rows)
    result = {"model": args.model, "shots": args.shots, "examples": args.examples, "tasks": rows, "items": items,
              "simple_s": round(totals["simple"], 2), "fast_s": round(totals["fast"], 2),
              "simple_items_per_s": round(items / totals["simple"], 3), "fast_items_per_s": round(items / totals["fast"], 3),
              "throughput_ratio": round(ratio, 2), "identical_scores": same,
              "identical_predictions": all(r["identical_predictions"] for r in rows),
              "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
                          "torch": torch.__version__, "load_avg": os.getloadavg()}}
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"items {items}: simple {totals['simple']:.1f}s ({result['simple_items_per_s']} items/s), "
          f"fast {totals['fast']:.1f}s ({result['fast_items_per_s']} items/s); identical scores: {same}; wrote {out}")
    if not same:
        sys.exit("scores differ between the engines")
    print(f"throughput ratio (fast / one-at-a-time): {ratio:.2f}x")


if __name__ == "__main__":
    main()
