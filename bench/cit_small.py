"""Continual instruction tuning on the five CIT tasks (../shared/data/cit), small budget.

Runs ``retain continual`` for switchcit, sequential, replay and multitask with the
same budget per method (steps per task, batch, max length, validation items) on
the embedded default model, then writes the comparison to docs/results/:

    docs/results/cit_small.md                 table: final average, BWT, forgetting, routing
    docs/results/cit_small.json               every method's results.json
    docs/results/cit_small_average.png        average score per stage, all methods
    docs/results/cit_small/<method>/          results.md, results.json, R.png, average.png

Full run outputs (incl. the SwitchCIT registry with its adapters) go to runs/cit_small/.
The data is read in place, never copied.

    python bench/cit_small.py                       # everything (about an hour on 2 free CPU cores)
    OMP_NUM_THREADS=1 python bench/cit_small.py     # on a shared, oversubscribed machine (2-4x faster there)
    python bench/cit_small.py --methods switchcit   # one method
    python bench/cit_small.py --aggregate-only      # rebuild docs/results from runs/cit_small
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # retain from this checkout, installed or not
DATA = Path(os.environ.get("RETAIN_SHARED_DATA", ROOT.parent / "shared" / "data")) / "cit"
TASKS = ("simp", "emdg", "inqqg", "exp", "hgen")  # the order listed in the data README
METHODS = ("switchcit", "sequential", "replay", "multitask")
LR = {"switchcit": "1e-3", "sequential-lora": "1e-3", "sequential": "1e-4", "replay": "1e-4", "multitask": "1e-4"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--max-steps", type=int, default=12, help="steps per task (multitask: x5 on the mixture)")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--eval-samples", type=int, default=100, help="validation items per task (100: standard errors of a few points)")
    ap.add_argument("--runs", default=str(ROOT / "runs" / "cit_small"))
    ap.add_argument("--docs", default=str(ROOT / "docs" / "results"))
    ap.add_argument("--aggregate-only", action="store_true")
    args = ap.parse_args()
    runs, docs = Path(args.runs), Path(args.docs)
    missing = [t for t in TASKS if not (DATA / t / "train.jsonl").is_file()]
    if missing and not args.aggregate_only:
        sys.exit(f"cit_small: task data not found under {DATA} ({', '.join(missing)}); set RETAIN_SHARED_DATA")
    if not args.aggregate_only:
        for method in args.methods:
            cmd = [sys.executable, "-m", "retain", "continual", "--model", args.model, "--method", method,
                   "--tasks", *[str(DATA / t) for t in TASKS], "--task-config", str(ROOT / "bench" / "cit_tasks.yaml"),
                   "--output", str(runs / method), "--overwrite", "--max-steps", str(args.max_steps),
                   "--batch-size", str(args.batch_size), "--max-length", str(args.max_length), "--lr", LR[method],
                   "--eval-samples", str(args.eval_samples), "--seed", "0"]
            print("$ " + shlex.join(cmd), flush=True)
            t = time.time()
            subprocess.run(cmd, check=True, cwd=ROOT)
            print(f"[cit_small] {method}: {time.time() - t:.0f}s", flush=True)
    env = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']} " if "OMP_NUM_THREADS" in os.environ else ""
    argv = [a for a in sys.argv[1:] if a != "--aggregate-only"]
    aggregate(runs, docs, env + shlex.join(["python", "bench/cit_small.py", *argv]))


def aggregate(runs: Path, docs: Path, command: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from retain.continual.report import plot_average_on

    results = {}
    for method in METHODS + ("sequential-lora",):
        f = runs / method / "results.json"
        if f.is_file():
            results[method] = json.loads(f.read_text())
            dest = docs / "cit_small" / method
            dest.mkdir(parents=True, exist_ok=True)
            for name in ("results.json", "results.md", "R.png", "average.png"):
                shutil.copyfile(runs / method / name, dest / name)
    if not results:
        sys.exit(f"cit_small: no results under {runs}")
    docs.mkdir(parents=True, exist_ok=True)
    slim = {m: {**r, "details": [{t: ({k: v for k, v in e.items() if k != "units"} if isinstance(e, dict) else e) for t, e in d.items()} for d in r.get("details", [])]}
            for m, r in results.items()}  # per-item units stay in docs/results/cit_small/METHOD/results.json
    (docs / "cit_small.json").write_text(json.dumps(slim, indent=2))
    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    for method, res in results.items():
        plot_average_on(ax, res)
    ax.legend()
    ax.set_title("CIT (5 tasks), smollm2-135m: average over tasks seen")
    fig.tight_layout()
    fig.savefig(docs / "cit_small_average.png", dpi=100)
    plt.close(fig)
    any_res = next(iter(results.values()))
    cfg = any_res["config"]
    lines = ["# Continual instruction tuning on CIT (5 tasks), small CPU budget", "",
             f"Model `{any_res['model']}`; tasks in order {', '.join(any_res['tasks'])} "
             f"(metrics {', '.join(f'{t} {m}' for t, m in zip(any_res['tasks'], any_res['metrics']))}); "
             f"{cfg['max_steps']} steps per task (multitask: {cfg['max_steps'] * len(any_res['tasks'])} on the mixture), "
             f"batch {cfg['batch_size']}, max length {cfg['max_length']}, greedy decoding, first {cfg['eval_samples']} "
             "validation items per task. Learning rates: " + ", ".join(f"{m} {r['config']['lr']:g}" for m, r in results.items()) + "."
             + _settings(results), "",
             "| method | final average ± SE | BWT [95% CI] | forgetting | routing accuracy (final) | hgen constraint met (final) | wall time |",
             "|---|---|---|---|---|---|---|"]
    for method, res in results.items():
        s = res["summary"]
        routing = res.get("routing")
        cons = res.get("constraint", {}).get("hgen")
        iv = _intervals(res)
        lines.append(f"| {method} | {_f(s['final_average'])} ± {_f(iv['final_se'])} | {_f(s['bwt'])} {_ci(iv['bwt'])} | "
                     f"{_f(s['forgetting'])} | {_f(routing[-1]['accuracy']) + '%' if routing else '–'} | "
                     f"{_f(cons[-1]) + '%' if cons else '–'} | {res['wall_time_s'] / 60:.0f} min |")
    lines += ["", "SE of the final average: sqrt(sum of the tasks' squared SEs) / 5 (closed form per task). BWT interval: "
              "paired bootstrap over each task's validation items (the same items after its own stage and after the "
              "last), 2000 resamples; **bold** where it excludes 0.", ""]
    lines += _pairwise(results)
    lines += ["![average per stage](cit_small_average.png)", ""]
    for method, res in results.items():
        lines += [f"## {method}", "", f"![R]({'cit_small/' + method + '/R.png'})", ""]
        lines += ["| after \\ task | " + " | ".join(res["tasks"]) + " |", "|---" * (len(res["tasks"]) + 1) + "|"]
        for name, row in zip(res["stages"], res["R"]):
            lines.append(f"| {name} | " + " | ".join(_f(x) for x in row) + " |")
        lines += ["", "```", res.get("command") or "", "```", ""]
    lines += ["Reproduce everything:", "", "```", command, "```", ""]
    (docs / "cit_small.md").write_text("\n".join(lines))
    print(f"[cit_small] wrote {docs / 'cit_small.md'}")


def _units(res: dict, stage: int, task: str):
    d = res.get("details", [])
    return (d[stage].get(task) or {}).get("units") if stage < len(d) else None


def _intervals(res: dict) -> dict:
    """SE of the final average; BWT's paired 95% interval (runs written before units were kept: None)."""
    from retain.evaluation import paired

    tasks, metrics, T = res["tasks"], res["metrics"], len(res["stages"])
    final = [res.get("details", [{}])[-1].get(t, {}).get("se") for t in tasks]
    out = {"final_se": (sum(e * e for e in final) ** 0.5 / len(final)) if all(e is not None for e in final) else None,
           "bwt": None}
    if T == len(tasks) and T > 1 and all(_units(res, j, t) for j, t in enumerate(tasks)):
        a = {t: (m, (), _units(res, j, t)) for j, (t, m) in enumerate(zip(tasks[:-1], metrics))}
        b = {t: (m, (), _units(res, T - 1, t)) for t, m in zip(tasks[:-1], metrics)}
        out["bwt"] = paired.paired_norm_avg(a, b)
    return out


def _pairwise(results: dict) -> list[str]:
    """Final average of every method against every other, paired over the same validation items."""
    from retain.evaluation import paired

    names = [m for m, r in results.items() if all(_units(r, len(r["stages"]) - 1, t) for t in r["tasks"])]
    if len(names) < 2:
        return []
    lines = ["Final average, method B − method A, paired over the same items (95% bootstrap interval; **bold**: excludes 0):", "",
             "| B − A | difference [95% CI] |", "|---|---|"]
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ra, rb = results[a], results[b]
            ta = {t: (m, (), _units(ra, len(ra["stages"]) - 1, t)) for t, m in zip(ra["tasks"], ra["metrics"])}
            tb = {t: (m, (), _units(rb, len(rb["stages"]) - 1, t)) for t, m in zip(rb["tasks"], rb["metrics"])}
            p = paired.paired_norm_avg(ta, tb)
            lines.append(f"| {b} − {a} | {_ci(p, diff=True)} |")
    return lines + [""]


def _ci(p, diff: bool = False) -> str:
    if not p:
        return ""
    text = (f"{p['diff']:+.2f} " if diff else "") + f"[{p['ci'][0]:+.2f}, {p['ci'][1]:+.2f}]"
    return f"**{text}**" if p["significant"] else text


def _settings(results: dict) -> str:
    """The optimizer where the methods' runs differ (runs made before a default changed) and the switch's features."""
    parts = []
    optims = {m: r["config"].get("optim") for m, r in results.items()}
    if len(set(optims.values())) > 1:
        parts.append("optimizer " + ", ".join(f"{m} {o}" for m, o in optims.items()))
    sw = results.get("switchcit", {}).get("config")
    if sw:  # registries from before switch_pooling existed read 256 tokens, last token
        parts.append(f"switch features: {sw.get('switch_pooling', 'last')} over the first {sw.get('switch_max_length', 256)} tokens")
    return (" " + "; ".join(parts).capitalize() + ".") if parts else ""


def _f(x) -> str:
    return "–" if x is None else f"{x:.2f}"


if __name__ == "__main__":
    main()
