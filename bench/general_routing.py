"""Does the switch's general class send general inputs to the base model, and still route every task?

The switch is trained exactly as ``retain continual --method switchcit`` trains it after the fifth CIT task:
the stored instructions of the five tasks (``retained``: 1% of each task's training inputs, at least 20,
seed 0) plus the general class's ``--general-size`` (100) instructions of the ``builtin`` pool
(``retain.continual.general``), default features (mean over 16 tokens, middle block of the base), 20
epochs. It then routes:

* the first ``--per-task`` validation inputs of every CIT task (each should go to its own adapter);
* the held-out rest of the built-in pool (general inputs the switch never saw);
* out-of-pool general inputs, from a source the pool never drew on: ``--icl-tasks`` of the shared ICL
  data (``../shared/data/icl``), half asked raw, half as 4-shot ``Input:/Output:`` prompts;
* the general suite's own prompts as ``retain continual`` scores them (built-in suite, 4-shot, 20 items per task).

    python bench/general_routing.py [--per-task 100] [--icl-per-task 25]
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._common import SHARED, write_result

TASKS = ["simp", "emdg", "inqqg", "exp", "hgen"]


def out_of_pool(tasks: list[str], per_task: int) -> list[str]:
    """Shared ICL items: even ones raw, odd ones as 4-shot prompts (demonstrations from the same task)."""
    out = []
    for name in tasks:
        rows = [json.loads(line) for line in (SHARED / "icl" / f"{name}.jsonl").read_text().splitlines() if line.strip()]
        r = random.Random(name)
        for i in range(per_task):
            q = r.choice(rows)
            if i % 2 == 0:
                out.append(q["input"])
            else:
                demos = "".join(f"Input: {d['input']}\nOutput: {d['output']}\n\n" for d in r.sample(rows, 4))
                out.append(f"{demos}Input: {q['input']}\nOutput:")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--per-task", type=int, default=100, help="validation inputs per CIT task to route")
    ap.add_argument("--icl-tasks", default="antonym,ag_news,commonsense_qa,english-french")
    ap.add_argument("--icl-per-task", type=int, default=25)
    args = ap.parse_args()

    from retain.cli import _quiet_libraries
    from retain.continual.general import read_pool, split_pool
    from retain.continual.switch import FeatureModel, Switch, retained
    from retain.data import load_jsonl
    from retain.evaluation.suite import load_suite

    _quiet_libraries()
    from retain.models import load_model

    loaded = load_model(args.model)
    loaded.model.eval().requires_grad_(False)
    features = FeatureModel(loaded.model, loaded.tokenizer, loaded.is_seq2seq)
    stored, val = {}, {}
    for name in TASKS:
        stored[name] = retained([r["input"] for r in load_jsonl(SHARED / "cit" / name / "train.jsonl")], 0.01, 20, 0)
        val[name] = [r["input"] for r in load_jsonl(SHARED / "cit" / name / "validation.jsonl")][: args.per_task]
    stored[None], held = split_pool(read_pool("builtin"), 100, 0)
    suite = []
    for t in load_suite("builtin", examples=20):
        test, _ = t.split(0, 4)
        suite += [t.prefix(t.demos(0, 4, 4)) + t.query(x) for x in test]
    switch = Switch(TASKS, stored, general=True)
    fit = switch.fit(features)
    rows = {name: {"n": len(v), "correct": sum(r == name for r in switch.route(features, v))} for name, v in val.items()}
    for label, texts in (("held-out built-in pool", held), ("out-of-pool ICL", out_of_pool(args.icl_tasks.split(","), args.icl_per_task)),
                         ("general suite, 4-shot", suite)):
        routed = switch.route(features, texts)
        rows[label] = {"n": len(texts), "correct": sum(r is None for r in routed),
                       "to_tasks": {n: routed.count(n) for n in TASKS if routed.count(n)}}
    for label, r in rows.items():
        extra = f" (else {r['to_tasks']})" if r.get("to_tasks") else ""
        print(f"{label:24s} {r['correct']:4d} / {r['n']:4d} routed {'to its adapter' if label in TASKS else 'to the base'}{extra}")
    write_result("general_routing", {"model": args.model, "fit": fit, "rows": rows,
                                     "command": "python bench/general_routing.py " + " ".join(sys.argv[1:])})


if __name__ == "__main__":
    main()
