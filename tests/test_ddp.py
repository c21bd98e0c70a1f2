"""Several processes: `accelerate launch` of `retain train`, `compare` and `continual`, and FSDP.

In accelerate 1.x, `--cpu` uses the single-process launcher (multi-CPU only via
mpirun and a hostfile); `--multi_gpu` launches through torchrun, and with no GPU
the Trainer runs DDP over gloo on the CPU.

FSDP: torch shards over gloo on CPUs (``test_fsdp_state_on_cpu_processes`` runs retain's gathering and loading
on a model sharded by ``fully_shard``), but accelerate sets FSDP up only on GPUs; an FSDP launch on CPUs is
refused by retain with one line, and ``test_fsdp_trains_full_and_promot`` is skipped with that line as its
reason (bench/gpu_check.py runs it on GPUs).
"""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tests.conftest import sentiment_rows, write_jsonl

import retain
from retain.artifacts import verify_manifest

TEMPLATE = "Review: {input}\\nSentiment:"
ROOT = Path(__file__).resolve().parents[1]
FSDP_CONFIG = ROOT / "examples" / "accelerate_fsdp.yaml"


def free_port() -> int:
    with socket.socket() as s:  # another test run may hold a fixed port
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(tmp_path, *args, processes: int = 2, config: Path | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """``accelerate launch`` of ``python -m retain ARGS`` over ``processes`` processes: DDP (``--multi_gpu``; over gloo
    on CPUs), or as ``config`` (an accelerate config file) says."""
    launcher = shutil.which("accelerate")
    cmd = [launcher, "launch"] if launcher else [sys.executable, "-m", "accelerate.commands.launch"]
    if config is None:
        cmd += ["--multi_gpu"] if processes > 1 else []
        cmd += ["--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    else:
        cmd += ["--config_file", str(config)]
    cmd += ["--num_processes", str(processes), "--main_process_port", str(free_port()), "-m", "retain", *map(str, args)]
    env = dict(os.environ, ACCELERATE_CONFIG_FILE=str(tmp_path / "none.yaml"), OMP_NUM_THREADS="1")
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)


def train_args(tmp_path, method: str, out: Path) -> list:
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(32))
    val = write_jsonl(tmp_path / "val.jsonl", sentiment_rows(6, 1))
    return ["train", "--model", "tiny-random-llama", "--method", method, "--train", train, "--validation", val,
            "--template", TEMPLATE, "--output", out, "--max-steps", 3, "--stage1-steps", 3, "--stage2-steps", 3,
            "--eval-every", 3, "--batch-size", 4, "--prompt-length", 4, "--lr", "1e-3", "--stage2-lr", "1e-3"]


def events(run: Path, name: str) -> list[dict]:
    rows = [json.loads(line) for line in (run / "train_log.jsonl").read_text().splitlines()]
    return [r for r in rows if r["event"] == name]


@pytest.mark.slow
def test_accelerate_launch_two_cpu_processes(tmp_path):
    out = tmp_path / "ddp-run"
    proc = launch(tmp_path, *train_args(tmp_path, "promot", out))
    assert proc.returncode == 0, proc.stderr[-4000:]
    info = json.loads((out / "run.json").read_text())
    assert info["world_size"] == 2, "training did not run in two processes"
    assert info["parallelism"] in ("MULTI_CPU", "MULTI_GPU")
    assert [s["stage"] for s in info["stages"]] == ["stage1", "stage2"]
    assert len(events(out, "start")) == 1 and len(events(out, "stage_start")) == 2, "a process other than the main one wrote"
    run = retain.load_run(out)  # manifest verified: complete artifact
    assert run.prompted is not None
    enc = run.tokenizer("Review: the film was good\nSentiment:", return_tensors="pt")
    with torch.no_grad():
        assert torch.isfinite(run.prompted(**enc).logits).all()
    assert not (tmp_path / ".ddp-run.partial").exists()


@pytest.mark.slow
def test_compare_two_cpu_processes(tmp_path):
    """Every method trained data-parallel, the evaluations shared out over the processes, one complete directory."""
    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(32))
    val = write_jsonl(tmp_path / "val.jsonl", sentiment_rows(6, 1))
    suite = tmp_path / "suite"
    suite.mkdir()
    write_jsonl(suite / "copy.jsonl", [{"input": f"w{i}", "output": f"w{i}"} for i in range(12)])
    out = tmp_path / "cmp"
    proc = launch(tmp_path, "compare", "--model", "tiny-random-llama", "--train", train, "--validation", val, "--suite", suite,
                  "--shots", "1", "--examples", "4", "--max-steps", "2", "--stage1-steps", "1", "--stage2-steps", "1",
                  "--batch-size", "4", "--eval-every", "2", "--save-every", "0", "--methods", "base,full,promot",
                  "--output", out)
    assert proc.returncode == 0, proc.stderr[-4000:]
    verify_manifest(out)
    res = json.loads((out / "results.json").read_text())
    assert list(res["methods"]) == ["base", "full", "promot"]
    for name in ("base", "full", "promot"):
        ev = json.loads((out / "evals" / f"{name}.json").read_text())
        assert ev == res["methods"][name] and ev["method"] == name
        assert len(ev["tuned"]["units"][0]["predictions"]) == 6 and len(ev["tasks"]["copy"]["units"]["1"][0]["predictions"]) == 4
    for name in ("full", "promot"):
        assert json.loads((out / "runs" / name / "run.json").read_text())["world_size"] == 2
    assert res["paired"]["1"]["promot vs base"]["norm_avg"] is not None
    assert not (tmp_path / ".cmp.partial").exists()


@pytest.mark.slow
def test_continual_two_cpu_processes(tmp_path):
    """SwitchCIT over two tasks, data-parallel: one registry, whose adapters and switch reproduce the recorded answers."""
    from tests.test_continual import make_task

    from retain.continual.registry import load_registry

    tasks = [make_task(tmp_path / "tasks", name) for name in ("rev", "up")]
    out = tmp_path / "cit"
    proc = launch(tmp_path, "continual", "--model", "tiny-random-llama", "--method", "switchcit", "--tasks", *tasks,
                  "--output", out, "--max-steps", 2, "--batch-size", 4, "--lr", "1e-2", "--eval-samples", 4,
                  "--max-new-tokens", 6, "--retain-min", 8, "--switch-epochs", 30)
    assert proc.returncode == 0, proc.stderr[-4000:]
    res = json.loads((out / "results.json").read_text())
    assert res["world_size"] == 2 and res["stages"] == ["rev", "up"]
    assert [len(row) for row in res["R"]] == [2, 2] and None not in res["R"][1]
    assert len(res["training"]) == 2 and len(events(out, "start")) == 1
    reg = load_registry(out)  # manifest and base verified
    last = res["details"][-1]
    for task in ("rev", "up"):
        inputs = [json.loads(line)["input"] for line in (out.parent / "tasks" / task / "validation.jsonl").read_text().splitlines()]
        _, answers = reg.generate(inputs[:4], max_new_tokens=6)
        assert answers == last[task]["units"][0]["predictions"], "the shared-out evaluation is not the registry's answers"


def _same_training(got: dict, want: dict, before: dict, what: str) -> None:
    """``got`` (FSDP) holds the weights ``want`` (data-parallel) holds, whole: each tensor of its full shape and
    off by much less than training moved it (reduction orders differ, so not bit for bit)."""
    assert got.keys() == want.keys(), what
    for k, w in want.items():
        assert got[k].shape == w.shape, f"{what} {k}: a shard was saved"
        moved = float((w - before[k]).abs().mean()) if k in before else 0.0
        assert float((got[k] - w).abs().mean()) <= max(0.1 * moved, 1e-6), f"{what} {k}: not the trained weights"


@pytest.mark.slow
def test_fsdp_trains_full_and_promot(tmp_path):
    """FSDP2 through the example accelerate config: `full` and `promot` train sharded and save complete weights
    (stage-2 model and soft prompt), the same as data-parallel training gives. On CPUs accelerate does not set
    FSDP up: retain refuses the launch in one line, which is the skip reason."""
    from safetensors.torch import load_file

    from retain.config import TrainConfig
    from retain.methods import wrap
    from retain.models import load_model

    gpus = torch.cuda.device_count()
    processes = 1 if gpus == 1 else 2  # one GPU: FSDP over one process still turns every weight into a DTensor
    config = tmp_path / "fsdp.yaml"
    config.write_text(FSDP_CONFIG.read_text().replace("num_processes: 2", f"num_processes: {processes}"))
    loaded = load_model("tiny-random-llama")
    before = {**loaded.model.state_dict(), "prompt_embeddings": wrap(loaded.model, loaded.tokenizer, "promot", TrainConfig(
        model="tiny-random-llama", prompt_length=4), False).prompt_encoder["default"].embedding.weight.detach()}
    for method in ("full", "promot"):
        out, ref = tmp_path / f"fsdp-{method}", tmp_path / f"ddp-{method}"
        proc = launch(tmp_path, *train_args(tmp_path, method, out), processes=processes, config=config)
        refusal = [x for x in proc.stderr.splitlines() if x.startswith("retain: error:") and "asks for FSDP" in x]
        if proc.returncode != 0 and refusal and not gpus:
            pytest.skip(f"FSDP over CPU processes: {refusal[0]}")
        assert proc.returncode == 0, proc.stderr[-4000:]
        info = json.loads((out / "run.json").read_text())
        assert info["parallelism"] == "FSDP" and info["world_size"] == processes
        assert retain.load_run(out).model is not None  # complete (manifest) and loadable
        if processes > 1:  # the same training, data-parallel
            proc = launch(tmp_path, *train_args(tmp_path, method, ref), processes=processes)
        else:
            proc = subprocess.run([sys.executable, "-m", "retain", *map(str, train_args(tmp_path, method, ref))],
                                  capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stderr[-4000:]
        for part in ["model/model.safetensors"] + (["prompt/adapter_model.safetensors"] if method == "promot" else []):
            _same_training(load_file(str(out / part)), load_file(str(ref / part)), before, f"{method} {part}")


# ------------------------------------------------- --deepspeed CONFIG
def test_deepspeed_flag_is_documented_and_reaches_the_trainer(tmp_path, monkeypatch, capsys):
    import retain.engine.stage as stage
    from retain.cli import main
    from retain.config import TrainConfig

    for command in ("train", "compare", "continual"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = capsys.readouterr().out
        assert "--deepspeed CONFIG" in text and "DeepSpeed JSON config file" in text, command
    seen = {}
    monkeypatch.setattr(stage, "TrainingArguments", lambda **kw: seen.update(kw))
    stage.training_arguments(TrainConfig(deepspeed="ds.json"), tmp_path, 3, 1e-3, False)
    assert seen["deepspeed"] == "ds.json"
    stage.training_arguments(TrainConfig(), tmp_path, 3, 1e-3, False)
    assert seen["deepspeed"] is None


def test_deepspeed_bad_config_one_line_before_the_model(tmp_path, capsys):
    """Every check of --deepspeed fails in one line naming the flag (and the file) before any model is loaded:
    the model named here does not exist, so reaching the model would be a different error."""
    import importlib.util

    from retain.cli import main

    train = write_jsonl(tmp_path / "train.jsonl", sentiment_rows(4))
    bad = tmp_path / "bad.json"
    bad.write_text('{"zero_optimization": {"stage": 2},\n "bf16": }')
    zero3 = tmp_path / "zero3.json"
    zero3.write_text(json.dumps({"zero_optimization": {"stage": 3}}))
    example = ROOT / "examples" / "deepspeed_zero2.json"
    installed = importlib.util.find_spec("deepspeed") is not None
    cases = [(tmp_path / "missing.json", f"--deepspeed: file not found: {tmp_path / 'missing.json'}"),
             (bad, f"--deepspeed: {bad}:2: not valid JSON"),
             (zero3, f"--deepspeed: {zero3} asks for ZeRO stage 3")]
    if not installed:
        cases.append((example, "--deepspeed: the deepspeed package is not installed"))
    common = {"train": ["--model", "no-such-model", "--train", train, "--output", tmp_path / "o"],
              "compare": ["--model", "no-such-model", "--train", train, "--validation", train, "--output", tmp_path / "c"],
              "continual": ["--model", "no-such-model", "--tasks", tmp_path / "no-task", "--output", tmp_path / "r"]}
    for command, args in common.items():
        for path, message in cases:
            with pytest.raises(SystemExit) as stop:
                main([command, *map(str, args), "--deepspeed", str(path)])
            err = capsys.readouterr().err
            assert stop.value.code == 2 and err.startswith(f"retain: error: {message}") and err.count("\n") == 1, (command, err)
    proc = subprocess.run([sys.executable, "-m", "retain", "train", *map(str, common["train"]), "--deepspeed", str(zero3)],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists() and not (tmp_path / ".o.partial").exists()


# ------------------------------------------------- FSDP sharding over gloo, without accelerate
def _fsdp_worker(root: str) -> None:
    """Run by torchrun (2 processes): shard a prompted tiny model with ``fully_shard`` and check that
    ``engine.checkpoints`` reads, restores, writes and saves complete weights."""
    import torch.distributed as dist
    from safetensors.torch import load_file
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    from retain.config import TrainConfig
    from retain.engine.checkpoints import full_state, is_sharded, load_state, part_state, save_pretrained, save_state, set_state
    from retain.methods import wrap
    from retain.models import load_model

    dist.init_process_group("gloo")
    rank, out = dist.get_rank(), Path(root)
    loaded = load_model("tiny-random-qwen")  # tied embeddings: one tensor under two names, plus PEFT's alias
    model = wrap(loaded.model, loaded.tokenizer, "promot", TrainConfig(model="tiny-random-qwen", prompt_length=4), False)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)  # weights the base model does not have
    want = {k: v.clone() for k, v in model.state_dict().items()}
    mesh = init_device_mesh("cpu", (dist.get_world_size(),))
    for layer in model.get_base_model().model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    assert is_sharded(model)
    got = full_state(model)
    if rank == 0:
        assert got and all(torch.equal(got[k], want[k]) for k in got), "gathered weights differ"
        assert len(got) == len(want) - 2, "a tied or aliased weight twice"
    else:
        assert got == {}
    model.requires_grad_(False)
    for p in model.prompt_encoder.parameters():
        p.requires_grad_(True)
    prompt = full_state(model, only_trainable=True)
    zero = {k: torch.zeros_like(v) for k, v in prompt.items()}
    set_state(model, zero if rank == 0 else {}, from_main=True)  # restored from the main process's copy
    after = full_state(model)
    save_state(model, out / "state.safetensors")
    dist.barrier()
    load_state(model, out / "state.safetensors")  # every process reads the file; no alias left to trip on
    save_pretrained(model, out / "prompt", after)
    base = model.get_base_model()
    save_pretrained(base, out / "model", after and part_state(after, model, base), safe_serialization=True)
    dist.barrier()
    if rank == 0:
        (name, z), = zero.items()
        assert name == "prompt_encoder.default.embedding.weight" and torch.equal(after[name], z)
        assert all(torch.equal(after[k], got[k]) for k in got if k not in zero), "restoring the prompt touched other weights"
        assert load_file(str(out / "state.safetensors")).keys() == after.keys()
    dist.destroy_process_group()


@pytest.mark.slow
def test_fsdp_state_on_cpu_processes(tmp_path):
    """The gathering and loading under FSDP, on a model sharded over two CPU processes (torch's ``fully_shard``
    over gloo): weights read whole by the main process, restored from it, written, read back, saved as
    loadable artifacts."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "tests.test_ddp", "--fsdp-worker", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    base = AutoModelForCausalLM.from_pretrained(str(tmp_path / "model"))
    assert base.config.architectures == ["Qwen2ForCausalLM"]
    assert torch.equal(base.get_output_embeddings().weight, base.get_input_embeddings().weight)
    assert float(base.get_input_embeddings().weight.detach().min()) > 0.0  # the +0.5 weights, not the base's
    prompted = PeftModel.from_pretrained(base, str(tmp_path / "prompt"))
    assert torch.count_nonzero(prompted.prompt_encoder["default"].embedding.weight) == 0


def _end_worker(out: str) -> None:
    """Run by torchrun (2 processes): a command's collectives, then ``distributed.end`` as ``retain``'s CLI calls it.
    Each process reports in its own file (two processes printing to one pipe can interleave their lines)."""
    import torch.distributed as dist

    from retain.distributed import end, gather_sharded, world

    dist.init_process_group("gloo")
    assert gather_sharded(list(range(5)), lambda part: [x * 10 for x in part]) == [0, 10, 20, 30, 40]
    work = dist.all_reduce(torch.ones(3), async_op=True)  # a work object still referenced at exit
    end(ok=True)
    assert not dist.is_initialized() and world() == (0, 1)
    (Path(out) / f"rank{os.environ['RANK']}").write_text(f"left the group {work is not None}")


@pytest.mark.slow
def test_end_leaves_the_process_group(tmp_path):
    """After a command, every process leaves the process group (``destroy_process_group``) instead of leaving gloo's
    threads to the interpreter's teardown (which can abort a finished launch with SIGABRT)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           "-m", "tests.test_ddp", "--end-worker", str(tmp_path)]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rank0", "rank1"]
    assert all(p.read_text() == "left the group True" for p in tmp_path.iterdir())


def test_cli_leaves_the_process_group_only_when_torch_is_loaded(monkeypatch):
    """``retain``'s CLI calls ``distributed.end`` after every command, with whether it succeeded (never importing
    torch for a command that did not)."""
    import retain.distributed as distributed
    from retain import cli

    calls = []
    monkeypatch.setattr(distributed, "end", lambda ok: calls.append(ok))
    monkeypatch.setattr(cli, "build_parser", lambda: _Parser(lambda args: None))
    cli.main([])
    monkeypatch.setattr(cli, "build_parser", lambda: _Parser(_fail))
    with pytest.raises(SystemExit):
        cli.main([])
    assert calls == [True, False]


def _fail(args):
    from retain.errors import RetainError

    raise RetainError("bad input")


class _Parser:
    def __init__(self, func):
        self.func = func

    def parse_args(self, argv):
        import argparse

        return argparse.Namespace(func=self.func)


if __name__ == "__main__" and sys.argv[1:2] == ["--fsdp-worker"]:
    _fsdp_worker(sys.argv[2])
if __name__ == "__main__" and sys.argv[1:2] == ["--end-worker"]:
    _end_worker(sys.argv[2])
