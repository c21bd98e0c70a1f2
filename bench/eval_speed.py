"""Throughput of the evaluation engine vs a one-prompt-at-a-time evaluator and vs lm-evaluation-harness.

All sides score the same k-shot items of the built-in suite with the same model
object, in one run:

* simple: every whole prompt (demonstrations + query) through ``model.generate``
  on its own (``retain eval --engine simple``);
* fast: prompts batched by equal token length, the shared few-shot prefix run
  once per task and its key/value cache reused (``retain eval``, the default);
* lm-eval (when ``lm_eval`` can be imported; ``pip install lm-eval``, not a
  retain dependency): the same tasks exported as local lm-eval tasks
  (retain.evaluation.lmeval_export: same items, same demonstrations, same
  template, greedy, stop at a newline, retain's metric), the model handed over
  in memory (``HFLM(pretrained=model)``), batch size ``--lm-eval-batch-size``,
  offline. Timed twice: its ``generate_until`` calls alone (the conservative
  figure, used for the ratio) and the whole ``simple_evaluate`` call (what a
  user waits for: building the datasets, contexts, generation, scoring).

fast and simple must score identically (the script fails otherwise); lm-eval's
scores and predictions are compared with fast's and reported. Prints a summary,
writes JSON to bench/results/eval_speed.json, and prints the throughput ratios
(fast items/s divided by simple's; and by lm-eval's) as the last line.

    HF_HUB_OFFLINE=1 python bench/eval_speed.py [--model smollm2-135m] [--tasks 6] [--examples 20] [--shots 4]
    /path/to/venv-with-lm-eval/bin/python bench/eval_speed.py ...   # adds the lm-eval column
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
    ap.add_argument("--lm-eval", choices=("auto", "off", "require"), default="auto",
                    help="auto: add lm-evaluation-harness when it can be imported; require: fail without it")
    ap.add_argument("--lm-eval-batch-size", type=int, default=None, help="default: --batch-size")
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
    fast_preds = {}
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
        fast_preds[task.name] = preds["fast"]
        items += rec["items"]
        rows.append(rec)
        print(f"{task.name:18s} items {rec['items']:3d}  simple {rec['simple_s']:7.2f}s  fast {rec['fast_s']:6.2f}s  "
              f"score {rec['simple_score']:.2f} / {rec['fast_score']:.2f}  identical {rec['identical_predictions']}", flush=True)
    ratio = totals["simple"] / totals["fast"]
    same = all(r["simple_score"] == r["fast_score"] for r in rows)
    harness = None
    if args.lm_eval != "off":
        harness = run_lm_eval(loaded.model, loaded.tokenizer, tasks, args.shots, args.lm_eval_batch_size or args.batch_size,
                              required=args.lm_eval == "require")
    if harness:
        for rec, h in zip(rows, harness["tasks"]):
            preds = h.pop("predictions")
            rec.update({"lm_eval_score": h["score"], "lm_eval_identical_predictions": preds == fast_preds[rec["task"]],
                        "lm_eval_differing_items": sum(a != b for a, b in zip(preds, fast_preds[rec["task"]]))})
            print(f"{rec['task']:18s} lm-eval score {h['score']:.2f} (fast {rec['fast_score']:.2f}), "
                  f"{rec['lm_eval_differing_items']} of {rec['items']} predictions differ", flush=True)
    result = {"model": args.model, "shots": args.shots, "examples": args.examples, "tasks": rows, "items": items,
              "simple_s": round(totals["simple"], 2), "fast_s": round(totals["fast"], 2),
              "simple_items_per_s": round(items / totals["simple"], 3), "fast_items_per_s": round(items / totals["fast"], 3),
              "throughput_ratio": round(ratio, 2), "identical_scores": same,
              "identical_predictions": all(r["identical_predictions"] for r in rows),
              "lm_eval": None if not harness else {
                  "version": harness["version"], "batch_size": harness["batch_size"],
                  "generate_s": round(harness["generate_s"], 2), "total_s": round(harness["total_s"], 2),
                  "items_per_s": round(items / harness["generate_s"], 3),
                  "ratio_fast_to_lm_eval": round(harness["generate_s"] / totals["fast"], 2),
                  "ratio_fast_to_lm_eval_total": round(harness["total_s"] / totals["fast"], 2),
                  "identical_scores": all(r["lm_eval_score"] == r["fast_score"] for r in rows),
                  "identical_predictions": all(r["lm_eval_identical_predictions"] for r in rows)},
              "machine": {"cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
                          "torch": torch.__version__, "load_avg": os.getloadavg()}}
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"items {items}: simple {totals['simple']:.1f}s ({result['simple_items_per_s']} items/s), "
          f"fast {totals['fast']:.1f}s ({result['fast_items_per_s']} items/s); identical scores: {same}; wrote {out}")
    if not same:
        sys.exit("scores differ between the engines")
    last = f"throughput ratio (fast / one-at-a-time): {ratio:.2f}x"
    if harness:
        h = result["lm_eval"]
        print(f"lm-eval {h['version']} (batch {h['batch_size']}): generate_until {h['generate_s']}s, whole simple_evaluate "
              f"{h['total_s']}s ({h['ratio_fast_to_lm_eval_total']}x fast's time); identical scores: {h['identical_scores']}, "
              f"identical predictions: {h['identical_predictions']}")
        last += f"; fast / lm-eval: {h['ratio_fast_to_lm_eval']:.2f}x"
    else:
        last += "; lm-eval: not measured (pip install lm-eval)"
    print(last)


def run_lm_eval(model, tokenizer, tasks, shots: int, batch_size: int, *, required: bool) -> dict | None:
    """The same tasks through lm-evaluation-harness, offline; per task its score and its predictions."""
    try:
        import lm_eval
        from lm_eval import simple_evaluate
    except ImportError as e:
        if required:
            sys.exit(f"lm-eval cannot be imported ({e}); pip install lm-eval")
        print(f"lm-eval not measured: cannot import it ({e}); pip install lm-eval to add it", flush=True)
        return None
    from bench._common import lm_eval_setup

    # exporting the tasks and indexing lm-eval's own task catalogue are not timed
    lm, names, manager, _ = lm_eval_setup(model, tokenizer, tasks, shots, batch_size)
    generate = lm.generate_until
    spent = [0.0]

    def timed_generate(requests, *a, **kw):
        t = time.perf_counter()
        try:
            return generate(requests, *a, **kw)
        finally:
            spent[0] += time.perf_counter() - t

    lm.generate_until = timed_generate
    t0 = time.perf_counter()
    out = simple_evaluate(model=lm, tasks=names, num_fewshot=shots, task_manager=manager, log_samples=True,
                          bootstrap_iters=0)
    total = time.perf_counter() - t0
    rows = []
    for task, name in zip(tasks, names):
        samples = sorted(out["samples"][name], key=lambda x: x["doc_id"])
        preds = [s["filtered_resps"][0].strip().split("\n")[0].strip() for s in samples]
        rows.append({"task": task.name, "score": round(out["results"][name]["score,none"], 4), "predictions": preds})
    return {"version": getattr(lm_eval, "__version__", "?"), "batch_size": batch_size, "generate_s": spent[0],
            "total_s": total, "tasks": rows}


if __name__ == "__main__":
    main()
