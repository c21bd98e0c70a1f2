"""The paper's ablations as methods (ft-random-prompt, promot-lora, prompt-1shot): what each stage trains, what
the run holds, and that the removable part is used for the tuned task only."""

import json

import pytest
import torch
from peft import PeftModel
from tests.conftest import sentiment_rows
from tests.test_train_artifacts import _logits, _train
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM

import retain
from retain.config import TrainConfig
from retain.data import TaskFormat, tokenize
from retain.engine import run_stage
from retain.methods import get as get_method
from retain.methods import wrap
from retain.methods.lora import lora_parameters
from retain.methods.soft_prompt import prompt_embedding
from retain.models import load_model
from retain.workflows.compare import parse_methods

FAMILIES = [("tiny-random-llama", AutoModelForCausalLM, False), ("tiny-random-t5", AutoModelForSeq2SeqLM, True)]
TEXT = "Review: the film was good\nSentiment:"


def _snapshot(params):
    return {n: p.detach().clone() for n, p in params}


def _stages(spec, method, tmp_path):
    """Run every stage of ``method`` on a tiny model; yields (stage, model, snapshot before the stage)."""
    loaded = load_model(spec)
    cfg = TrainConfig(model=spec, method=method, max_steps=3, stage1_steps=3, stage2_steps=3, lr=1e-3, stage2_lr=1e-3,
                      stage1_lora_lr=1e-2, batch_size=4, eval_every=0, save_every=0, prompt_length=4)
    rows = tokenize(sentiment_rows(16), loaded.tokenizer, TaskFormat("Review: {input}\nSentiment:", None, loaded.is_seq2seq), 64).rows
    model = wrap(loaded.model, loaded.tokenizer, method, cfg, loaded.is_seq2seq)
    for stage in get_method(method).stages:
        before = _snapshot(model.named_parameters())
        steps, lr, plr = stage.budget(cfg)
        run_stage(model, loaded.tokenizer, stage, rows=rows, steps=steps, lr=lr, prompt_lr=plr, cfg=cfg,
                  stage_dir=tmp_path / stage.name)
        yield stage, model, before


def _changed(model, before, names):
    return [n for n in names if not torch.equal(dict(model.named_parameters())[n], before[n])]


@pytest.mark.parametrize("spec", ["tiny-random-llama", "tiny-random-t5"])
def test_ft_random_prompt_trains_the_model_under_a_fixed_random_prompt(spec, tmp_path):
    for _stage, model, before in _stages(spec, "ft-random-prompt", tmp_path):
        prompt = [n for n, _ in model.named_parameters() if "prompt_encoder" in n]
        assert prompt and not _changed(model, before, prompt), "the random prompt trained"
        weights = [n for n, _ in model.named_parameters() if "prompt_encoder" not in n]
        assert len(_changed(model, before, weights)) > len(weights) // 2, "the model did not train"
        emb = prompt_embedding(model).weight
        assert float(emb.min()) >= 0.0 and float(emb.max()) < 0.5  # the paper code base's uniform [0, 0.5) init


@pytest.mark.parametrize("spec", ["tiny-random-llama", "tiny-random-t5"])
def test_promot_lora_stage1_trains_the_lora_only_stage2_the_model_only(spec, tmp_path):
    for stage, model, before in _stages(spec, "promot-lora", tmp_path):
        lora = {n for n, p in model.named_parameters() if any(p is q for q in lora_parameters(model))}
        weights = [n for n, _ in model.named_parameters() if n not in lora]
        assert lora
        if stage.name == "stage1":
            assert not _changed(model, before, weights), "stage 1 changed the model"
            assert _changed(model, before, sorted(lora)), "stage 1 did not train the LoRA"
        else:
            assert not _changed(model, before, sorted(lora)), "stage 2 changed the LoRA"
            assert len(_changed(model, before, weights)) > len(weights) // 2, "stage 2 did not train the model"


@pytest.mark.parametrize("spec,auto,seq2seq", FAMILIES)
def test_promot_lora_run_uses_its_lora_for_the_tuned_task_only(tmp_path, task, spec, auto, seq2seq):
    out = _train(tmp_path, task, spec, "promot-lora", "--stage1-lora-lr", "1e-2")
    info = json.loads((out / "run.json").read_text())
    assert info["artifacts"] == ["lora", "model"] and info["removable"] == ["lora"]
    assert [(s["stage"], s["trains"]) for s in info["stages"]] == [("stage1", "lora"), ("stage2", "model")]
    plain = auto.from_pretrained(out / "model").eval()  # model/ is a plain checkpoint: no LoRA weights in it
    with_lora = PeftModel.from_pretrained(auto.from_pretrained(out / "model"), out / "lora").eval()
    run = retain.load_run(out)
    assert run.has_prompt and run.model_for(True) is run.prompted
    tok = run.tokenizer
    # other tasks: exactly the plain tuned weights; the tuned task: those weights with the LoRA, as plain peft loads them
    assert torch.equal(_logits(run.model, tok, TEXT, seq2seq), _logits(plain, tok, TEXT, seq2seq))
    assert torch.equal(_logits(run.prompted, tok, TEXT, seq2seq), _logits(with_lora, tok, TEXT, seq2seq))
    assert not torch.equal(_logits(run.prompted, tok, TEXT, seq2seq), _logits(plain, tok, TEXT, seq2seq))
    # and generation follows the same rule (the decoder runs the view without the LoRA)
    from retain.evaluation.decoding import generate_texts

    want = generate_texts(plain, tok, [TEXT], is_seq2seq=seq2seq, max_new_tokens=5, first_line=False)
    assert run.generate([TEXT], raw=True, use_prompt=False, max_new_tokens=5, first_line=False) == want


@pytest.mark.parametrize("spec,auto,seq2seq", FAMILIES)
def test_ft_random_prompt_run_loads_with_its_prompt_for_the_tuned_task(tmp_path, task, spec, auto, seq2seq):
    out = _train(tmp_path, task, spec, "ft-random-prompt")
    info = json.loads((out / "run.json").read_text())
    assert info["artifacts"] == ["model", "prompt"] and info["removable"] == ["prompt"]
    assert info["config"]["prompt_init"] == "random" and [s["trains"] for s in info["stages"]] == ["model"]
    run = retain.load_run(out)
    plain = auto.from_pretrained(out / "model").eval()
    assert run.has_prompt and torch.equal(_logits(run.model, run.tokenizer, TEXT, seq2seq), _logits(plain, run.tokenizer, TEXT, seq2seq))


def test_compare_offers_every_ablation_and_its_1shot_variant():
    names = ["joint", "full-1shot", "prompt-1shot", "ft-random-prompt", "promot-lora", "promot-lora-1shot"]
    assert parse_methods(",".join(names)) == names


def test_prompt_1shot_trains_the_prompt_after_a_demonstration(tmp_path, task):
    """prompt-1shot (the paper's Table 9) is ``prompt`` with --one-shot, as ``retain compare`` trains it."""
    out = _train(tmp_path, task, "tiny-random-llama", "prompt", "--one-shot")
    info = json.loads((out / "run.json").read_text())
    assert info["format"]["one_shot"] and info["artifacts"] == ["prompt"]
    run = retain.load_run(out)
    assert run.format.prompt({"input": "x"}).startswith("Review: " + info["format"]["one_shot"]["input"])


def test_compare_runs_the_ablations_and_removes_promot_lora_lora_for_the_suite(tmp_path, task):
    """retain compare trains and scores the ablations; promot-lora's suite answers (generated and log-likelihood) are
    those of its plain tuned weights, its tuned task is scored with the LoRA."""
    from tests.conftest import cli, write_jsonl

    train, val = task
    write_jsonl(tmp_path / "copy.jsonl", [{"input": f"w{i}", "output": f"w{i}"} for i in range(12)])
    write_jsonl(tmp_path / "yn.jsonl", [{"input": f"is {i} even?", "output": "yes" if i % 2 == 0 else "no"} for i in range(12)])
    suite = tmp_path / "suite.yaml"
    suite.write_text("tasks:\n  - {name: copy, data: copy.jsonl}\n  - {name: yn, data: yn.jsonl, mode: loglik, choices: ['yes', 'no']}\n")
    out = tmp_path / "cmp"
    common = ["--suite", suite, "--shots", "1", "--examples", "4"]
    cli("compare", "--model", "tiny-random-llama", "--train", train, "--validation", val, *common, "--max-steps", "2",
        "--stage1-steps", "2", "--stage2-steps", "2", "--stage1-lora-lr", "1e-2", "--stage2-lr", "1e-3", "--batch-size", "4",
        "--eval-every", "0", "--save-every", "0", "--tuned-examples", "4", "--output", out,
        "--methods", "base,ft-random-prompt,promot-lora,prompt-1shot")
    res = json.loads((out / "results.json").read_text())
    assert list(res["methods"]) == ["base", "ft-random-prompt", "promot-lora", "prompt-1shot"]
    assert all(res["methods"][m]["tuned"]["prompt"] for m in ("ft-random-prompt", "promot-lora", "prompt-1shot"))
    plain = tmp_path / "plain.json"  # the tuned weights alone, as any model: what the suite must have seen
    cli("eval", "--model", out / "runs" / "promot-lora" / "model", *common, "--output", plain)
    alone = json.loads(plain.read_text())
    with_lora = tmp_path / "on.json"  # the LoRA everywhere: different answers, so the comparison above can fail
    cli("eval", "--run", out / "runs" / "promot-lora", "--prompt", "on", *common, "--output", with_lora)
    on = json.loads(with_lora.read_text())

    def preds(r, name):
        return r["tasks"][name]["units"]["1"][0]["predictions"]

    assert all(preds(res["methods"]["promot-lora"], n) == preds(alone, n) for n in ("copy", "yn"))
    assert any(preds(on, n) != preds(alone, n) for n in ("copy", "yn"))
