"""The ProMoT paper's experiment at small scale, on the embedded default model.

Fine-tune SmolLM2-135M-Instruct on SST-2 and, separately, on En-Fr (Tatoeba),
with base / full fine-tuning / ProMoT (optionally more methods) and the same
budget for every method; evaluate each 4-shot on the suite in
bench/icl_suite.yaml (9 word-level ICL tasks of ../shared/data/icl and En-De)
and on the tuned task. Data are read in place from ../shared/data (next to the
repository; override with $RETAIN_SHARED_DATA), never copied.

Writes docs/results/promot_small_<task>.md / .json / _tradeoff.png / _tasks.png
and docs/results/promot_small.md (the exact command, budget and both tables).
Training runs and weights go to --work (default /tmp/retain-bench/promot_small),
outside the repository; rerunning resumes there.

    HF_HUB_OFFLINE=1 python bench/promot_small.py [--tasks sst2,en_fr] [--steps 40] [--lr 1e-4] [--examples 30]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
SHARED = Path(os.environ.get("RETAIN_SHARED_DATA", ROOT.parent / "shared" / "data"))

EXPERIMENTS = {
    "sst2": {"template": "Review: {input}\nSentiment:", "metric": "accuracy", "max_length": 96},
    "en_fr": {"template": "English: {input}\nFrench:", "metric": "chrf", "max_length": 64},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m", help="model spec (tiny-random-llama for a smoke test)")
    ap.add_argument("--tasks", default="sst2,en_fr")
    ap.add_argument("--methods", default="base,full,promot")
    ap.add_argument("--steps", type=int, default=40, help="steps per stage, every method (promot: this many per stage)")
    ap.add_argument("--lr", type=float, default=1e-4, help="model learning rate (full FT, promot stage 2)")
    ap.add_argument("--prompt-lr", type=float, default=3e-2)
    ap.add_argument("--examples", type=int, default=100, help="test items per suite task (100: standard errors of at most 5 points)")
    ap.add_argument("--tuned-examples", type=int, default=100)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--work", default="/tmp/retain-bench/promot_small")
    ap.add_argument("--results", default=str(ROOT / "docs" / "results"))
    args = ap.parse_args()

    from retain.cli import _quiet_libraries
    from retain.config import TrainConfig
    from retain.evaluation.report import comparison_table, paired_table
    from retain.workflows.compare import compare, parse_methods
    from retain.workflows.options import CompareOptions

    _quiet_libraries()
    parse_methods(args.methods)  # a bad --methods fails here, before any training
    results_dir = Path(args.results)
    results_dir.mkdir(parents=True, exist_ok=True)
    suite = str(ROOT / "bench" / "icl_suite.yaml")
    command = "HF_HUB_OFFLINE=1 python bench/promot_small.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    tables = []
    for name in [t for t in args.tasks.split(",") if t]:
        exp = EXPERIMENTS[name]
        train, val = SHARED / name / "train.jsonl", SHARED / name / "validation.jsonl"
        cfg = TrainConfig(model=args.model, train=str(train), validation=str(val), output=str(Path(args.work) / name),
                          template=exp["template"], metric=exp["metric"], max_steps=args.steps, stage1_steps=args.steps,
                          stage2_steps=args.steps, lr=args.lr, stage2_lr=args.lr, stage1_lr=args.prompt_lr,
                          prompt_length=20,  # the default when docs/results/promot_small*.md were measured
                          batch_size=args.batch_size, max_length=exp["max_length"], eval_every=0, save_every=0, seed=0,
                          eval_batch_size=32)
        opts = CompareOptions(methods=args.methods, suite=suite, shots="4", examples=args.examples,
                              tuned_examples=args.tuned_examples, seed=0)
        t0 = time.time()
        res = compare(cfg, opts, out=Path(cfg.output), title=f"ProMoT at small scale: {name}", tuned_name=name,
                      log=lambda m: print(m, flush=True))
        wall = time.time() - t0
        out = Path(cfg.output)
        (results_dir / f"promot_small_{name}.json").write_text(json.dumps(res, indent=2, ensure_ascii=False))
        shutil.copyfile(out / "results.md", results_dir / f"promot_small_{name}.md")
        shutil.copyfile(out / "tradeoff.png", results_dir / f"promot_small_{name}_tradeoff.png")
        shutil.copyfile(out / "tasks.png", results_dir / f"promot_small_{name}_tasks.png")
        table = comparison_table(res, 4) + "\n\n" + paired_table(res, 4)
        print(table, flush=True)
        tables.append((name, table, wall, res))
        lines = [f"# ProMoT at small scale ({args.model}, CPU)", "",
                 "Command (from the repository root):", "", "```bash", command, "```", "",
                 f"Budget, the same for every method: {args.steps} optimizer steps per stage (full FT: {args.steps}; "
                 f"ProMoT: {args.steps} prompt-tuning + {args.steps} model-tuning steps), batch {args.batch_size}, AdamW, "
                 f"model lr {args.lr:g} (full FT and ProMoT stage 2), prompt lr {args.prompt_lr:g}, 20-token text-initialised "
                 "prompt, last weights kept (no checkpoint selection). "
                 f"Evaluation: 4-shot, {args.examples} items per suite task, first {args.tuned_examples} validation items "
                 "for the tuned task (0-shot in its own format; ProMoT with its prompt). Suite: bench/icl_suite.yaml.", ""]
        for name, table, wall, res in tables:
            lines += [f"## Fine-tuned on {name} ({wall / 60:.1f} min wall, 2-core machine)", "", table, "", _claim(res), "",
                      f"Plots: `promot_small_{name}_tradeoff.png`, `promot_small_{name}_tasks.png`. "
                      f"Output space for format specialization: {res.get('output_space')}.", ""]
        (results_dir / "promot_small.md").write_text("\n".join(lines))  # after every experiment
    print(f"wrote {results_dir / 'promot_small.md'}")


def _claim(res: dict) -> str:
    """Does ProMoT keep Norm. Avg. better than full FT here, at 95%?"""
    p = (res.get("paired") or {}).get("4", {}).get("promot vs full", {}).get("norm_avg")
    if not p:
        return ""
    lo, hi = p["ci"]
    verdict = ("holds at 95% (the interval excludes 0)" if lo > 0 else
               "is reversed at 95%" if hi < 0 else "does not hold at 95% (the interval includes 0)")
    return (f"Claim 'ProMoT keeps Norm. Avg. better than full FT': promot − full = {p['diff']:+.2f} "
            f"[{lo:+.2f}, {hi:+.2f}] (95% paired bootstrap over items): {verdict}.")


if __name__ == "__main__":
    main()
