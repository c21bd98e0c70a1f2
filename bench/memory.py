"""Peak memory (RSS) of each method on the embedded default, each in its own process.

Each method runs `retain train` for a few steps on SST-2 in a child process; the
child's peak resident set size comes from the kernel (wait4 rusage). The base
line is a process that only loads the model.

    python bench/memory.py [--model smollm2-135m --steps 3 --methods full,prompt,lora,promot,joint]

Last line: peak RSS of full fine-tuning relative to prompt tuning.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench._common import SHARED, write_result


def peak_rss_mib(cmd: list[str]) -> float:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    err = proc.stderr.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err[-2000:]}")
    return usage.ru_maxrss / 1024  # KiB on Linux


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--methods", default="full,prompt,lora,promot,joint")
    ap.add_argument("--prompt-length", type=int, default=20, help="soft-prompt tokens (docs/PERFORMANCE.md's figures: 20)")
    args = ap.parse_args()

    rows = {"load only": peak_rss_mib([sys.executable, "-c", f"from retain.models import load_model; load_model({args.model!r})"])}
    with tempfile.TemporaryDirectory() as tmp:
        for method in args.methods.split(","):
            rows[method] = peak_rss_mib([
                sys.executable, "-m", "retain", "train", "--model", args.model, "--method", method,
                "--train", str(SHARED / "sst2" / "train.jsonl"), "--template", "Review: {input}\\nSentiment:",
                "--output", str(Path(tmp) / method), "--max-steps", str(args.steps), "--stage1-steps", str(args.steps),
                "--stage2-steps", str(args.steps), "--batch-size", str(args.batch_size), "--eval-every", "0",
                "--save-every", "0", "--prompt-length", str(args.prompt_length)])
            print(f"{method}: {rows[method]:.0f} MiB", flush=True)
    ratio = rows.get("full", 0) / rows["prompt"] if "prompt" in rows and "full" in rows else None
    write_result("memory", {"model": args.model, "steps": args.steps, "batch_size": args.batch_size,
                            "peak_rss_mib": {k: round(v, 1) for k, v in rows.items()}, "ratio_full_to_prompt": ratio,
                            "command": "python bench/memory.py " + " ".join(sys.argv[1:])})
    print("| method | peak RSS MiB |\n|---|---|")
    for k, v in rows.items():
        print(f"| {k} | {v:.0f} |")
    if ratio:
        print(f"memory: peak RSS full / prompt: {ratio:.2f}x")


if __name__ == "__main__":
    main()
