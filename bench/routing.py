"""SwitchCIT routing cost: mixed-adapter generation and switch latency.

The same batch of instructions (8 per task from ../shared/data/cit, 5 tasks) is
generated (a) routed, each row with its own task's LoRA adapter in one pass
(PEFT ``adapter_names``), and (b) with a single adapter active for every row.
Both generate exactly ``--new-tokens`` tokens per row (``min_new_tokens``), so
the work is the same. The switch (feature model forward + classifier) is timed
on the same instructions and compared with generation time.

    python bench/routing.py [--registry runs/cit_small/switchcit] [--new-tokens 16 --repeats 2]

Without --registry (and no runs/cit_small/switchcit), a registry is trained
first with 2 steps per task: timing does not depend on the adapters' values.
Last line: throughput ratio mixed / single (target >= 0.7) and the switch's share.

Switch vs Arrow: PEFT's Arrow (``retain continual --method arrow``) is built over the registry's own
adapters and both routers are measured on the same instructions: routing accuracy (Arrow: the adapter
its weights favour over the instruction's tokens, ``retain.continual.arrow.arrow_routes``) and routing
cost in ms per instruction (the switch: its feature-model forward + classifier; Arrow: a prompt forward
with the router minus the same forward with one adapter, a cost it pays again on every generated token).
The table is printed and written to bench/results/routing.md (``--routers-only``: that table alone).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._common import RESULTS, ROOT, SHARED, machine, write_result

TASKS = ["simp", "emdg", "inqqg", "exp", "hgen"]


def ensure_registry(path: str | None) -> Path:
    if path:
        return Path(path)
    default = ROOT / "runs" / "cit_small" / "switchcit"
    if (default / "registry.json").is_file():
        return default
    out = Path("/tmp/retain-bench/routing-registry")
    if not (out / "registry.json").is_file():
        subprocess.run([sys.executable, "-m", "retain", "continual", "--model", "smollm2-135m", "--method", "switchcit",
                        "--tasks", *[str(SHARED / "cit" / t) for t in TASKS], "--output", str(out), "--overwrite",
                        "--max-steps", "2", "--batch-size", "2", "--max-length", "128", "--eval-samples", "2",
                        "--max-new-tokens", "4", "--eval-every", "0"], check=True)
    return out


def arrow_side(reg, prompts: list[str], truth: list[str], *, repeats: int, batch_size: int) -> dict:
    """Arrow over the registry's adapters: routing accuracy and routing cost (ms per instruction)."""
    import torch

    from retain.continual.arrow import ROUTER, arrow_model, arrow_routes
    from retain.models import load_model
    from retain.tokens import pad_right, prompt_ids

    cfg, names = reg.info.get("config", {}), [t["name"] for t in reg.tasks]
    model = arrow_model(load_model(reg.info["base"]["spec"]).model, [reg.path / "adapters" / n for n in names],
                        top_k=cfg.get("arrow_top_k", 3), temperature=cfg.get("arrow_temperature", 1.0), seed=cfg.get("seed", 0))
    routed = [names[k] for k in arrow_routes(model, reg.tokenizer, prompts, is_seq2seq=reg.is_seq2seq, max_length=256,
                                             batch_size=batch_size)]
    batches = []
    for start in range(0, len(prompts), batch_size):
        ids, mask = pad_right([prompt_ids(reg.tokenizer, p, is_seq2seq=reg.is_seq2seq) for p in prompts[start:start + batch_size]],
                              reg.tokenizer.pad_token_id)
        batches.append({"input_ids": ids, "attention_mask": mask})
    forward = model.get_base_model().get_encoder() if reg.is_seq2seq else model
    times: dict[str, list[float]] = {"router": [], "one_adapter": []}
    with torch.no_grad():
        for _ in range(repeats + 1):  # the first round builds Arrow's prototypes and warms up: not counted
            for key, adapter in (("router", ROUTER), ("one_adapter", "task_0")):
                model.set_adapter(adapter)
                t = time.perf_counter()
                for enc in batches:
                    forward(**enc)
                times[key].append(time.perf_counter() - t)
    times = {k: v[1:] for k, v in times.items()}
    extra = statistics.median(times["router"]) - statistics.median(times["one_adapter"])
    return {"accuracy": sum(a == b for a, b in zip(routed, truth)) / len(truth), "ms_per_instruction": 1000 * extra / len(prompts),
            "prefill_seconds": times}


def machine_line() -> str:
    m = machine()
    return f"{m['cpus']} CPUs, {m['torch_threads']} torch threads" + (f", {m['cuda']}" if m["cuda"] else "")


def routing_table(switch_acc: float, switch_ms: float, arrow: dict) -> str:
    return "\n".join([
        "| router | routing accuracy (%) | routing cost (ms per instruction) | cost counted as |", "|---|---|---|---|",
        f"| switch | {100 * switch_acc:.1f} | {switch_ms:.1f} | feature-model forward + classifier, once per instruction |",
        f"| Arrow (PEFT) | {100 * arrow['accuracy']:.1f} | {arrow['ms_per_instruction']:.1f} | prompt forward with the router "
        "minus with one adapter; paid again per generated token |", ""])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--registry")
    ap.add_argument("--per-task", type=int, default=8)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--routers-only", action="store_true", help="only the switch vs Arrow table (no generation timing)")
    args = ap.parse_args()

    import torch

    from retain.continual.generation import generate_routed
    from retain.continual.registry import load_registry
    from retain.data import load_jsonl
    from retain.evaluation.decoding import generate_texts

    reg = load_registry(ensure_registry(args.registry))
    names_all = [t["name"] for t in reg.tasks]
    texts, truth = [], []
    for name in names_all:
        folder = SHARED / "cit" / name
        rows = load_jsonl(folder / "validation.jsonl")[: args.per_task] if folder.is_dir() else []
        texts += [r["input"] for r in rows]
        truth += [name] * len(rows)
    prompts = reg.prompts(texts, truth)
    if args.routers_only:
        routers(reg, texts, truth, prompts, args)
        return
    gen = dict(is_seq2seq=reg.is_seq2seq, batch_size=args.batch_size, first_line=False)
    force = dict(min_new_tokens=args.new_tokens)

    def mixed():
        return generate_routed(reg.model, reg.tokenizer, prompts, truth, max_new_tokens=args.new_tokens, **gen, **force)

    def single():
        reg.model.set_adapter(names_all[0])
        return generate_texts(reg.model, reg.tokenizer, prompts, max_new_tokens=args.new_tokens, min_new_tokens=args.new_tokens, **gen)

    def route():
        return reg.route(texts)

    times = {"mixed": [], "single": [], "route": []}
    with torch.no_grad():
        for _ in range(args.repeats):
            for name, fn in (("mixed", mixed), ("single", single), ("route", route)):
                t = time.perf_counter()
                result = fn()
                times[name].append(time.perf_counter() - t)
                if name == "route":
                    routed = result
    med = {k: statistics.median(v) for k, v in times.items()}
    n_tokens = len(prompts) * args.new_tokens
    ratio = med["single"] / med["mixed"]
    share = med["route"] / (med["mixed"] + med["route"])
    accuracy = sum(a == b for a, b in zip(routed, truth)) / len(truth)
    write_result("routing", {"registry": str(reg.path), "tasks": names_all, "instructions": len(prompts),
                             "new_tokens": args.new_tokens, "seconds": times, "mixed_tokens_per_s": n_tokens / med["mixed"],
                             "single_tokens_per_s": n_tokens / med["single"], "ratio_mixed_to_single": round(ratio, 3),
                             "switch_ms_per_instruction": 1000 * med["route"] / len(texts), "switch_share": round(share, 4),
                             "routing_accuracy": accuracy,
                             "command": "python bench/routing.py " + " ".join(sys.argv[1:])})
    print(f"{len(prompts)} instructions x {args.new_tokens} tokens: mixed ({len(names_all)} adapters) {med['mixed']:.1f}s, "
          f"single adapter {med['single']:.1f}s; switch {1000 * med['route'] / len(texts):.0f} ms/instruction "
          f"({share:.1%} of routed generation), routing accuracy {accuracy:.0%}")
    print(f"routing: mixed/single throughput {ratio:.2f}x; switch share of time {share:.1%}")
    routers(reg, texts, truth, prompts, args)


def routers(reg, texts: list[str], truth: list[str], prompts: list[str], args) -> None:
    """The switch vs Arrow table: bench/results/routing.md and routing_routers.json."""
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        routed = reg.route(texts)
        times.append(time.perf_counter() - t)
    accuracy = sum(a == b for a, b in zip(routed, truth)) / len(truth)
    switch_ms = 1000 * statistics.median(times) / len(texts)
    arrow = arrow_side(reg, prompts, truth, repeats=args.repeats, batch_size=args.batch_size)
    table = routing_table(accuracy, switch_ms, arrow)
    steps = reg.info.get("config", {}).get("max_steps")
    command = "python bench/routing.py " + " ".join(sys.argv[1:])
    (RESULTS / "routing.md").write_text(
        f"# Routing: switch vs Arrow\n\n{len(texts)} instructions ({args.per_task} per task, {len(reg.tasks)} tasks), registry "
        f"{reg.path} (adapters trained {steps} steps per task: Arrow's accuracy depends on what they learnt, its cost "
        f"does not), `{command}`, {machine_line()}.\n\n{table}")
    write_result("routing_routers", {"registry": str(reg.path), "instructions": len(texts), "switch": {
        "accuracy": accuracy, "ms_per_instruction": switch_ms, "seconds": times}, "arrow": arrow, "table": table, "command": command})
    print(table)


if __name__ == "__main__":
    main()
