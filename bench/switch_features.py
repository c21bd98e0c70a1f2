"""Which switch features route instructions, and at what cost?

For each setting (pooling x tokens read x block read) the SwitchCIT switch is trained exactly
as ``retain continual --method switchcit`` trains it: on the stored
instructions of the five CIT tasks (``retain.continual.switch.retained``: 1% of
each task's training inputs, at least 20, seed 0), features from the base model
(SmolLM2-135M by default), Linear-ReLU-Linear, AdamW, 20 epochs. It is then
tested on the first ``--per-task`` validation inputs of every task, and the
feature model's time per instruction is measured on those inputs.

    python bench/switch_features.py [--settings mean:16:middle,last:256:last,...] [--per-task 200]

Last line: accuracy and ms per instruction of the default (mean over 16 tokens
at the middle block) and of the paper's choice (last token of 256, final layer).
"""

from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._common import SHARED, write_result

TASKS = ["simp", "emdg", "inqqg", "exp", "hgen"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--settings", default="mean:16:middle,mean:16:last,mean:32:middle,mean:8:middle,last:32:last,last:256:last",
                    help="comma-separated pooling:tokens:layer")
    ap.add_argument("--per-task", type=int, default=200, help="validation inputs per task to route")
    args = ap.parse_args()

    from retain.cli import _quiet_libraries
    from retain.continual.switch import FeatureModel, Switch, retained
    from retain.data import load_jsonl
    from retain.models import load_model

    _quiet_libraries()
    loaded = load_model(args.model)
    loaded.model.eval().requires_grad_(False)
    stored, texts, truth = {}, [], []
    for name in TASKS:
        train = [r["input"] for r in load_jsonl(SHARED / "cit" / name / "train.jsonl")]
        stored[name] = retained(train, 0.01, 20, 0)
        val = [r["input"] for r in load_jsonl(SHARED / "cit" / name / "validation.jsonl")][: args.per_task]
        texts += val
        truth += [name] * len(val)
    rows = []
    for setting in args.settings.split(","):
        pooling, tokens, layer = setting.split(":")
        features = FeatureModel(loaded.model, loaded.tokenizer, loaded.is_seq2seq, int(tokens), pooling=pooling, layer=layer)
        switch = Switch(TASKS, stored)
        switch.fit(features)
        t0 = time.perf_counter()
        routed = switch.route(features, texts)
        ms = 1000 * (time.perf_counter() - t0) / len(texts)
        acc = 100 * sum(a == b for a, b in zip(routed, truth)) / len(truth)
        confusions = collections.Counter(f"{a}->{b}" for a, b in zip(truth, routed) if a != b)
        rows.append({"pooling": pooling, "tokens": int(tokens), "layer": layer, "accuracy": round(acc, 2), "ms_per_instruction": round(ms, 1),
                     "confusions": dict(confusions.most_common())})
        print(f"{pooling:4s} over {int(tokens):3d} tokens, {layer:6s} block: routing {acc:6.2f}% of {len(texts)}, {ms:6.1f} ms/instruction"
              + (f"  ({', '.join(f'{k} {v}' for k, v in confusions.most_common(3))})" if confusions else ""), flush=True)
    write_result("switch_features", {"model": args.model, "instructions": len(texts), "stored": {n: len(v) for n, v in stored.items()},
                                     "settings": rows, "command": "python bench/switch_features.py " + " ".join(sys.argv[1:])})
    by = {(r["pooling"], r["tokens"], r["layer"]): r for r in rows}
    parts = [f"{p} over {t} tokens ({b} block) {by[(p, t, b)]['accuracy']:.1f}% at {by[(p, t, b)]['ms_per_instruction']:.0f} ms"
             for p, t, b in (("mean", 16, "middle"), ("last", 256, "last")) if (p, t, b) in by]
    print("switch features: " + "; ".join(parts))


if __name__ == "__main__":
    main()
