"""Data-parallel training on CPU: `accelerate launch --multi_gpu --num_processes 2 -m retain train`.

In accelerate 1.x, `--cpu` uses the single-process launcher (multi-CPU only via
mpirun and a hostfile); `--multi_gpu` launches through torchrun, and with no GPU
the Trainer runs DDP over gloo on the CPU.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import retain
from tests.conftest import sentiment_rows, write_jsonl


@pytest.mark.slow
def test_accelerate_launch_two_cpu_processes(tmp_path):
    launcher = shutil.which("accelerate") or None
    cmd = [launcher] if launcher else [sys.executable, "-m", "accelerate.commands.launch"]
    if launcher:
        cmd.append("launch")
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(32))
    val = write_jsonl(tmp_path / "val.jsonl", sentiment_rows(6, 1))
    out = tmp_path / "ddp-run"
    env = dict(os.environ, ACCELERATE_CONFIG_FILE=str(tmp_path / "none.yaml"), OMP_NUM_THREADS="1")
    proc = subprocess.run(
        cmd + ["--multi_gpu", "--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "--main_process_port", "29517", "-m", "retain", "train", "--model", "tiny-random-llama", "--method", "promot",
               "--train", str(train), "--validation", str(val), "--template", "Review: {input}\\nSentiment:",
               "--output", str(out), "--stage1-steps", "3", "--stage2-steps", "3", "--eval-every", "3",
               "--batch-size", "4", "--prompt-length", "4", "--stage2-lr", "1e-3"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    info = json.loads((out / "run.json").read_text())
    assert info["world_size"] == 2, "training did not run in two processes"
    assert [s["stage"] for s in info["stages"]] == ["stage1", "stage2"]
    run = retain.load_run(out)  # manifest verified: complete artifact
    assert run.prompted is not None
    enc = run.tokenizer("Review: the film was good\nSentiment:", return_tensors="pt")
    with torch.no_grad():
        assert torch.isfinite(run.prompted(**enc).logits).all()
    assert not (tmp_path / ".ddp-run.partial").exists()
