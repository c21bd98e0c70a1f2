"""Precision and memory: --dtype, --mixed-precision, --gradient-checkpointing, --attn-implementation and the
peak-memory estimate, on tiny models (CPU)."""

import json

import pytest
import torch
from safetensors.torch import load_file
from tests.conftest import cli
from tests.test_continual import FAST, make_task
from transformers import AutoModelForCausalLM

import retain

TEMPLATE = "Review: {input}\\nSentiment:"


def _train(tmp_path, task, name, *extra, method="full", spec="tiny-random-llama"):
    train, val = task
    out = tmp_path / name
    cli("train", "--model", spec, "--method", method, "--train", train, "--validation", val, "--template", TEMPLATE,
        "--output", out, "--max-steps", 3, "--stage1-steps", 2, "--stage2-steps", 2, "--eval-every", 0, "--save-every", 0,
        "--batch-size", 4, "--prompt-length", 4, "--lr", "1e-3", "--stage2-lr", "1e-3", *extra)
    return out, json.loads((out / "run.json").read_text())


@pytest.mark.parametrize("method", ["full", "promot"])
def test_bfloat16_weights_train_save_and_reload(tmp_path, task, method):
    out, info = _train(tmp_path, task, method, "--dtype", "bfloat16", method=method)
    assert all(torch.isfinite(torch.tensor(s["train_loss"])) for s in info["stages"])
    assert {s["precision"]["dtype"] for s in info["stages"]} == {"bfloat16"} and info["config"]["dtype"] == "bfloat16"
    weights = load_file(str(out / "model" / "model.safetensors"))
    assert {t.dtype for t in weights.values()} == {torch.bfloat16}
    run = retain.load_run(out)  # the base of a prompt run is reloaded in the run's dtype: its fingerprint matches
    plain = AutoModelForCausalLM.from_pretrained(str(out / "model"), dtype="auto")
    ids = torch.tensor([[1, 7, 9, 11, 13]])
    with torch.no_grad():
        assert torch.equal(run.model(ids).logits, plain(ids).logits)
    assert next(run.model_for(True).parameters()).dtype == torch.bfloat16
    assert len(run.generate(["a fine film"], max_new_tokens=3)) == 1


@pytest.mark.parametrize("spec", ["tiny-random-llama", "tiny-random-qwen", "tiny-random-gemma3", "tiny-random-gpt2", "tiny-random-t5"])
def test_low_precision_load_casts_weights_not_buffers(tmp_path, spec):
    """--dtype bfloat16 casts the parameters and leaves every buffer as float32 loading has it (the rotary
    ``inv_freq`` stays float32, as ``from_pretrained(dtype=bfloat16)`` keeps it), ties kept; a saved bfloat16
    checkpoint loads through retain as transformers loads it, buffer for buffer."""
    from retain.models import load_model

    ref, loaded = load_model(spec).model, load_model(spec, dtype="bfloat16")
    bf = loaded.model
    assert {p.dtype for p in bf.parameters()} == {torch.bfloat16}
    assert {n: b.dtype for n, b in bf.named_buffers()} == {n: b.dtype for n, b in ref.named_buffers()}
    tied = ref.get_input_embeddings().weight is ref.get_output_embeddings().weight
    assert (bf.get_input_embeddings().weight is bf.get_output_embeddings().weight) == tied
    if "rotary" in " ".join(n for n, _ in ref.named_buffers()):
        assert all(b.dtype == torch.float32 for n, b in bf.named_buffers() if n.endswith("inv_freq"))
    bf.save_pretrained(tmp_path / "bf16")
    loaded.tokenizer.save_pretrained(tmp_path / "bf16")
    again = load_model(str(tmp_path / "bf16"), dtype="bfloat16").model
    plain = type(ref).from_pretrained(str(tmp_path / "bf16"), dtype=torch.bfloat16)
    assert {n: b.dtype for n, b in again.named_buffers()} == {n: b.dtype for n, b in plain.named_buffers()}


def test_bf16_autocast_keeps_float32_weights(tmp_path, task):
    out, info = _train(tmp_path, task, "amp", "--mixed-precision", "bf16")
    stage = info["stages"][0]
    assert stage["precision"] == {"dtype": "float32", "mixed_precision": "bf16", "gradient_checkpointing": False}
    assert torch.isfinite(torch.tensor(stage["train_loss"]))
    assert {t.dtype for t in load_file(str(out / "model" / "model.safetensors")).values()} == {torch.float32}


@pytest.mark.parametrize("method", ["promot", "lora"])
def test_gradient_checkpointing_gives_the_same_training(tmp_path, task, method):
    _, plain = _train(tmp_path, task, f"{method}-plain", method=method)
    _, ckpt = _train(tmp_path, task, f"{method}-ckpt", "--gradient-checkpointing", method=method)
    assert [s["precision"]["gradient_checkpointing"] for s in ckpt["stages"]] == [True] * len(ckpt["stages"])
    for a, b in zip(plain["stages"], ckpt["stages"]):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-5)
        est_a, est_b = a["memory"]["estimate_bytes"], b["memory"]["estimate_bytes"]
        assert est_b["activations"] < est_a["activations"] and est_b["weights"] == est_a["weights"]


def test_eager_attention_trains_like_sdpa(tmp_path, task):
    _, sdpa = _train(tmp_path, task, "sdpa")
    _, eager = _train(tmp_path, task, "eager", "--attn-implementation", "eager")
    assert eager["config"]["attn_implementation"] == "eager"
    assert sdpa["stages"][0]["train_loss"] == pytest.approx(eager["stages"][0]["train_loss"], abs=1e-4)


def test_unavailable_precision_or_kernel_is_one_line(tmp_path, task):
    train, _ = task
    base = ("train", "--model", "tiny-random-llama", "--train", train, "--max-steps", 1)
    if not torch.cuda.is_available():
        r = cli(*base, "--output", tmp_path / "a", "--mixed-precision", "fp16", check=False)
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "needs a CUDA GPU" in r.stderr, r.stderr
        assert not (tmp_path / "a").exists()
    r = cli(*base, "--output", tmp_path / "b", "--attn-implementation", "flash_attention_2", "--method", "full", check=False)
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and "flash_attention_2" in r.stderr, r.stderr
        assert "Traceback" not in r.stderr and not (tmp_path / "b").exists()


def test_memory_estimate_is_printed_and_recorded(tmp_path, task):
    train, _val = task
    out = tmp_path / "mem"
    r = cli("train", "--model", "tiny-random-llama", "--method", "full", "--train", train, "--output", out, "--max-steps", 2,
            "--batch-size", 4, "--eval-every", 0)
    assert "memory estimate weights" in r.stderr
    info = json.loads((out / "run.json").read_text())
    est = info["stages"][0]["memory"]["estimate_bytes"]
    model = retain.load_run(out).model
    params = {p.data_ptr(): p for p in model.parameters()}.values()
    assert est["weights"] == sum(p.numel() * p.element_size() for p in params)  # every weight once, float32
    assert est["gradients"] == est["weights"] and est["optimizer"] == 2 * est["weights"]  # full FT with AdamW
    assert est["activations"] > 0 and est["total"] == sum(est[k] for k in ("weights", "gradients", "optimizer", "activations"))
    assert info["memory"]["estimate_bytes"] == est["total"] and info["memory"]["measured_peak_bytes"] > 0


def test_continual_runs_in_bfloat16_and_its_registry_reloads(tmp_path):
    from retain.continual.registry import load_registry

    folder = make_task(tmp_path, "rev")
    out = tmp_path / "cit"
    cli("continual", "--model", "tiny-random-llama", "--tasks", folder, "--method", "switchcit", "--output", out,
        "--dtype", "bfloat16", *FAST)
    reg = load_registry(out)
    assert next(reg.model.parameters()).dtype == torch.bfloat16
    names, outs = reg.generate(["Reverse the letters of apple ==>"], max_new_tokens=3)
    assert names == ["rev"] and len(outs) == 1
