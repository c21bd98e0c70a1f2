"""Run a retain suite through lm-evaluation-harness, offline, and compare with retain's scores.

Needs ``pip install lm-eval`` (not a retain dependency). The suite is exported
as local lm-eval tasks (retain.evaluation.lmeval_export: ``dataset_path: json``
with local ``data_files``, retain's demonstrations via the ``first_n``
sampler, retain's metric functions so nothing is fetched from the Hub) and
the model is handed to lm-eval in memory (``HFLM(pretrained=model,
tokenizer=tok)``): a plain model, a run's tuned model without its prompt, or
the run's PeftModel with the soft prompt attached.

    HF_HUB_OFFLINE=1 python bench/lm_eval_suite.py --model smollm2-135m --tasks 3 --examples 10
    HF_HUB_OFFLINE=1 python bench/lm_eval_suite.py --run runs/demo/runs/promot --prompt off   # suite rule
    HF_HUB_OFFLINE=1 python bench/lm_eval_suite.py --run runs/demo/runs/promot --prompt on    # with the prompt
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model")
    src.add_argument("--run")
    ap.add_argument("--prompt", choices=("on", "off"), default="off", help="with a run: attach the soft prompt (on) or not (off)")
    ap.add_argument("--suite", default="builtin")
    ap.add_argument("--tasks", type=int, default=3, help="first N tasks of the suite")
    ap.add_argument("--examples", type=int, default=10)
    ap.add_argument("--shots", type=int, default=4)
    ap.add_argument("--output", default=None)
    args = ap.parse_args()

    from bench._common import lm_eval_setup
    from lm_eval import simple_evaluate

    from retain.cli import _quiet_libraries
    from retain.evaluation.harness import evaluate_task
    from retain.evaluation.suite import load_suite

    _quiet_libraries()
    if args.run:
        from retain.run import load_run

        run = load_run(args.run)
        model = run.model_for(args.prompt == "on")
        tok = run.tokenizer
        what = f"run {args.run} ({'with' if args.prompt == 'on' and run.has_prompt else 'without'} its soft prompt)"
    else:
        from retain.models import load_model

        loaded = load_model(args.model)
        model, tok = loaded.model, loaded.tokenizer
        what = f"model {args.model}"
    tasks = load_suite(args.suite, examples=args.examples)[: args.tasks]
    lm, names, manager, work = lm_eval_setup(model, tok, tasks, args.shots, batch_size=1)
    t0 = time.time()
    out = simple_evaluate(model=lm, tasks=names, num_fewshot=args.shots, task_manager=manager,
                          log_samples=False, bootstrap_iters=0)
    lm_s = time.time() - t0
    rows = []
    t0 = time.time()
    for task, name in zip(tasks, names):
        ours = evaluate_task(model, tok, task, args.shots)["score"]
        theirs = out["results"][name].get("score,none")
        rows.append({"task": task.name, "retain": ours, "lm_eval": round(theirs, 4) if theirs is not None else None})
        print(f"{task.name:18s} retain {ours:6.2f}   lm-eval {theirs if theirs is None else round(theirs, 2)}")
    result = {"what": what, "shots": args.shots, "examples": args.examples, "tasks": rows, "lm_eval_s": round(lm_s, 1),
              "retain_s": round(time.time() - t0, 1), "task_dir": str(work)}
    path = Path(args.output or ROOT / "bench" / "results" / f"lm_eval_{'run' if args.run else 'model'}_{args.prompt if args.run else 'base'}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2))
    print(f"{what}: lm-eval {lm_s:.0f}s, retain {result['retain_s']}s; wrote {path}")


if __name__ == "__main__":
    main()
