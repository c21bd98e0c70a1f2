"""On a CUDA GPU: bf16 and fp16 training, both evaluator engines and flash-attention 2 (marker ``gpu``:
``pytest -m gpu``, which bench/gpu_check.py runs; without CUDA they skip, saying so). On any machine: the
smoke run of bench/gpu_check.py (CPU, tiny models) writes every measurement, and its time budget skips with
a reason. The CPU versions of the training tests are in tests/test_scale.py, whose helper they share."""

import importlib.util
import json
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from tests.conftest import ROOT
from tests.test_families import suite  # noqa: F401 (fixture: a generated and a log-likelihood task)
from tests.test_scale import _train
from transformers import AutoModelForCausalLM

import retain
from retain.evaluation.harness import evaluate_all
from retain.evaluation.suite import load_suite
from retain.models import load_model

CUDA = torch.cuda.is_available()
STAGE_KEYS = {"full", "promot_stage1", "promot_stage2", "lora"}


def on_gpu(test):
    """Marked ``gpu`` (selected by ``pytest -m gpu``) and skipped where there is no CUDA GPU."""
    return pytest.mark.gpu(pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")(test))


def _on_cuda(stage: dict) -> bool:
    """The stage trained on the GPU: its measured peak is CUDA memory, and some was allocated."""
    peak = stage["memory"]["measured_peak"]
    return peak["how"].startswith("torch.cuda") and peak["bytes"] > 0


def _weight_dtypes(out) -> set:
    return {t.dtype for t in load_file(str(out / "model" / "model.safetensors")).values()}


@on_gpu
@pytest.mark.parametrize("method", ["full", "promot"])
def test_bfloat16_training_on_cuda_saves_and_reloads(tmp_path, task, method):
    out, info = _train(tmp_path, task, method, "--dtype", "bfloat16", method=method)
    for stage in info["stages"]:
        assert _on_cuda(stage) and stage["precision"]["dtype"] == "bfloat16", stage
        assert torch.isfinite(torch.tensor(stage["train_loss"]))
    assert _weight_dtypes(out) == {torch.bfloat16}
    run = retain.load_run(out)
    run.model_for(True).to("cuda")  # a prompted run wraps run.model: both move
    plain = AutoModelForCausalLM.from_pretrained(str(out / "model"), dtype="auto").to("cuda")
    ids = torch.tensor([[1, 7, 9, 11, 13]], device="cuda")
    with torch.no_grad():
        assert torch.equal(run.model(ids).logits, plain(ids).logits)
    assert len(run.generate(["a fine film"], max_new_tokens=3)) == 1


@on_gpu
@pytest.mark.parametrize("mixed", ["bf16", "fp16"])
def test_mixed_precision_on_cuda_keeps_float32_weights(tmp_path, task, mixed):
    out, info = _train(tmp_path, task, mixed, "--mixed-precision", mixed, method="promot")
    for stage in info["stages"]:
        assert _on_cuda(stage), stage
        assert (stage["precision"]["dtype"], stage["precision"]["mixed_precision"]) == ("float32", mixed)
        assert torch.isfinite(torch.tensor(stage["train_loss"]))
    assert _weight_dtypes(out) == {torch.float32}


@on_gpu
def test_fast_and_simple_evaluation_agree_on_cuda(tmp_path, task, suite):  # noqa: F811 (the fixture)
    out, _ = _train(tmp_path, task, "promot", method="promot")
    run = retain.load_run(out)
    tasks = load_suite(suite, examples=3)
    for model in (run.model_for(True).to("cuda"), load_model("tiny-random-llama").model.to("cuda")):
        fast, simple = (evaluate_all(model, run.tokenizer, tasks, [2], engine=e, batch_size=3) for e in ("fast", "simple"))
        assert next(model.parameters()).is_cuda
        for name in fast["tasks"]:
            assert fast["tasks"][name]["units"] == simple["tasks"][name]["units"], name


@on_gpu
def test_flash_attention_2_trains_like_sdpa_on_cuda(tmp_path, task):
    if importlib.util.find_spec("flash_attn") is None:
        pytest.skip("flash_attn is not installed")
    _, sdpa = _train(tmp_path, task, "sdpa", "--dtype", "bfloat16")
    _, flash = _train(tmp_path, task, "flash", "--dtype", "bfloat16", "--attn-implementation", "flash_attention_2")
    assert flash["config"]["attn_implementation"] == "flash_attention_2" and _on_cuda(flash["stages"][0])
    assert flash["stages"][0]["train_loss"] == pytest.approx(sdpa["stages"][0]["train_loss"], abs=2e-2)


# ---------------------------------------------------------------- bench/gpu_check.py, on any machine
def _check_measurement(key: str, m: dict, model: dict, peak: float) -> None:
    hidden = model["config"]["hidden_size"]
    assert m["tokens_per_s"] > 0 and m["seconds"] > 0 and m["peak_memory_bytes"] > 0, (key, m)
    assert m["real_tokens"] == m["batch_size"] * m["seq_len"] * m["timed_steps"]
    assert m["mfu"] == pytest.approx(m["flops_per_s"] / peak, abs=6e-5) and m["mfu"] > 0
    assert m["k"] == (6 if key in ("full", "promot_stage2") else 4)
    if key.startswith("promot"):
        assert m["soft_prompt_tokens"] == 20 and m["processed_tokens"] > m["real_tokens"]
    else:  # no soft prompt: the Trainer's own count of input tokens is ours
        assert m["soft_prompt_tokens"] == 0 and m["trainer_tokens_seen"] == m["real_tokens"] == m["processed_tokens"]
    trainable = {"full": model["parameters"]["parameters"], "promot_stage1": 20 * hidden,
                 "promot_stage2": model["parameters"]["parameters"]}
    if key in trainable:
        assert m["trainable_parameters"] == trainable[key], key
    else:
        assert 0 < m["trainable_parameters"] < model["parameters"]["parameters"] / 2


def test_gpu_check_smoke_run_writes_every_measurement(tmp_path):
    t = time.perf_counter()
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu_check.py"), "--smoke", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    print(f"gpu_check --smoke: {time.perf_counter() - t:.1f} s")
    data = json.loads((tmp_path / "gpu_check.json").read_text())
    assert data["smoke"] and data["skipped"] == [] and data["errors"] == {} and "k*(N - E - H')*t" in data["flops_formula"]
    peak = data["matmul"]["flops_per_s"]
    assert peak >= data["matmul"]["before_flops_per_s"] > 0 and data["matmul"]["after_flops_per_s"] > 0
    assert set(data["models"]) == {"embedded", "1b"}
    for model in data["models"].values():
        assert set(model["measurements"]) == STAGE_KEYS
        for key, m in model["measurements"].items():
            _check_measurement(key, m, model, peak)
        assert model["eval"]["examples"] == 8 and model["eval"]["examples_per_s"] > 0
    tests = data["tests"]  # pytest -m gpu ran: here every GPU test is selected and, without CUDA, skipped
    assert tests["total"] == len(tests["cases"]) >= 6 and tests["passed"] + tests["skipped"] == tests["total"], tests
    assert all(c.startswith("tests.test_gpu::test_") and "gpu_check" not in c for c in tests["cases"])  # only the GPU tests
    if not CUDA:
        assert all(c == "skipped: needs a CUDA GPU" for c in tests["cases"].values()), tests["cases"]
    assert data["fsdp"] == "needs a CUDA GPU" or torch.cuda.is_available()
    assert "gpu_check: full fine-tuning MFU embedded" in proc.stdout.splitlines()[-1]


def test_gpu_check_records_what_the_budget_skips_and_what_fails(tmp_path):
    from bench import gpu_check

    assert gpu_check.guarded(lambda n: n / 0, 1) == {"error": "ZeroDivisionError: division by zero"}

    clock = gpu_check.Clock(5)  # below the reserve a measurement needs: nothing starts

    def build():
        raise AssertionError("a model was built although the budget was spent")

    out = gpu_check.measure_method(torch, "promot", build, None, [], None, clock, {}, 1.0)
    assert set(out) == {"promot_stage1", "promot_stage2"}
    assert all(v["skipped"].startswith("time budget: ") for v in out.values()), out
    tests = gpu_check.Pytest(["-m", "gpu", "tests/test_gpu.py"], tmp_path / "t.xml", clock, 60).wait()
    assert tests["not_run"].startswith("time budget: ") and not (tmp_path / "t.xml").exists()
    slow = gpu_check.Pytest(["-m", "gpu", "tests/test_gpu.py"], tmp_path / "t.xml", gpu_check.Clock(100), 0.5).wait()
    assert slow["timed_out"] and slow["seconds"] == 0.5 and "passed" not in slow  # killed at its limit, counted nothing
