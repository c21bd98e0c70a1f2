"""Crashes lose nothing: SIGKILL + --resume, Ctrl-C, NaN loss."""

import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from tests.conftest import cli, sentiment_rows, write_jsonl


def _args(train, val, out, *extra):
    return ["train", "--model", "tiny-random-llama", "--method", "promot", "--train", train, "--validation", val,
            "--template", "Review: {input}\\nSentiment:", "--output", out, "--stage1-steps", 40, "--stage2-steps", 40,
            "--save-every", 5, "--eval-every", 10, "--batch-size", 4, "--prompt-length", 4, "--stage2-lr", "1e-3",
            "--log-every", 5, *extra]


def _popen(args):
    return subprocess.Popen([sys.executable, "-m", "retain", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _weights(run_dir):
    return {**{f"model.{k}": v for k, v in load_file(str(run_dir / "model" / "model.safetensors")).items()},
            **{f"prompt.{k}": v for k, v in load_file(str(run_dir / "prompt" / "adapter_model.safetensors")).items()}}


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(24))
    val = write_jsonl(tmp_path / "val.jsonl", sentiment_rows(6, 1))
    ref = tmp_path / "ref"
    cli(*_args(train, val, ref))

    out = tmp_path / "killed"
    staging = tmp_path / ".killed.partial"
    stage = random.Random(os.getpid()).choice(["stage1", "stage2"])
    target = random.Random(os.getpid()).choice([5, 10, 15, 20])
    proc = _popen(_args(train, val, out))
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (staging / "checkpoints" / stage / f"checkpoint-{target}" / "trainer_state.json").is_file():
            break  # a complete checkpoint (its state is written last)
        time.sleep(0.005)
    assert proc.poll() is None, f"run ended before it could be killed:\n{proc.stderr.read()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists() and staging.is_dir(), "a killed run must leave no output dir, only its staging dir"

    cli(*_args(train, val, out, "--resume"))
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert any(e.get("resumed_from") for e in log if e["event"] == "stage_start"), "did not resume from a checkpoint"

    a, b = _weights(ref), _weights(out)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume (killed in {stage} near step {target})"
    info_a = json.loads((ref / "run.json").read_text())
    info_b = json.loads((out / "run.json").read_text())
    best = lambda info: [(s["best"]["step"], s["best"]["score"]) for s in info["stages"]]
    assert best(info_a) == best(info_b)
    times = [e["time"] for e in log]  # the resumed process's clock continues the killed one's
    assert times == sorted(times) and times[0] < times[-1] <= info_b["wall_time_s"], times


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_keeps_a_checkpoint_and_resumes(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(24))
    val = write_jsonl(tmp_path / "val.jsonl", sentiment_rows(6, 1))
    out = tmp_path / "run"
    args = _args(train, val, out)
    args[args.index("--stage1-steps") + 1] = 400
    proc = _popen(args)
    log = tmp_path / ".run.partial" / "train_log.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if log.is_file() and '"event": "log"' in log.read_text():
            break
        time.sleep(0.01)
    assert proc.poll() is None, proc.stderr.read()[-2000:]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert "interrupted (Ctrl-C)" in last and "checkpoint kept in" in last and "--resume" in last, err
    assert not out.exists()
    ckpts = list((tmp_path / ".run.partial" / "checkpoints" / "stage1").glob("checkpoint-*"))
    assert ckpts, "no checkpoint kept on Ctrl-C"
    stopped = json.loads(log.read_text().splitlines()[-1])
    assert stopped["event"] == "stopped" and stopped["reason"] == "Interrupted", stopped
    cli(*args, "--resume")
    events = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    resumed = next(e for e in events[events.index(stopped) + 1:] if e["event"] == "start")
    wall = json.loads((out / "run.json").read_text())["wall_time_s"]
    assert stopped["time"] <= resumed["time"] < wall  # the wall time counts the interrupted process too


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(16))
    out = tmp_path / "run"
    proc = cli("train", "--model", "tiny-random-llama", "--method", "full", "--train", train, "--output", out,
               "--max-steps", 20, "--lr", "1e30", "--save-every", 1, "--log-every", 1, "--eval-every", 0,
               "--batch-size", 4, check=False)
    assert proc.returncode == 2, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert "NaN/inf" in line and "checkpoint" in line and "Traceback" not in proc.stderr
    assert not out.exists()
    ckpts = sorted((tmp_path / ".run.partial" / "checkpoints" / "finetune").glob("checkpoint-*"))
    assert ckpts, "the last good checkpoint was not kept"
    log = [json.loads(line) for line in (tmp_path / ".run.partial" / "train_log.jsonl").read_text().splitlines()]
    bad_step = next(e["step"] for e in log if e["event"] == "nonfinite_loss")
    kept_step = int(ckpts[-1].name.split("-")[1])
    assert kept_step < bad_step, "a checkpoint of a non-finite step was written"
    state = load_file(str(ckpts[-1] / "retain_state.safetensors"))
    assert all(t.isfinite().all() for t in state.values()), "the kept checkpoint holds non-finite weights"
