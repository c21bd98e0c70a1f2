"""One matrix over model families (PEFT's tests are the model): every method of `retain train`, both
evaluator engines, a short `retain compare` and a two-task `retain continual`, on a tiny model of each
family. Where a shortcut is not exact for a family (packing, batched padding), retain's own check says so
and the slower exact path runs; the test checks the recorded path against that check."""

import json

import pytest
from tests.conftest import write_jsonl
from tests.test_continual import FAST, make_task

import retain
from retain.cli import main
from retain.engine import packing_is_exact
from retain.engine.prompt_packing import prompt_packing_layout
from retain.evaluation.decoding import padding_is_exact
from retain.evaluation.harness import evaluate_all
from retain.evaluation.suite import load_suite
from retain.methods import names as method_names
from retain.models import load_model

FAMILIES = {  # spec: what makes the family different
    "tiny-random-llama": "BOS, untied, rotary",
    "tiny-random-qwen": "no BOS, tied, rotary",
    "tiny-random-gemma3": "BOS, scaled embeddings, sliding-window and full layers, tied",
    "tiny-random-gpt2": "no BOS, learned positions, Conv1D modules (c_attn, c_fc, c_proj)",
    "tiny-random-t5": "encoder-decoder, </s> appended, relative position buckets",
}
# Which shortcut is exact for which family (retain checks each model at run time and falls back; this
# table is what that check says today, so a change in a family's behaviour shows up here):
# packing = padding-free training rows; padding = batched decoding with padding between prefix and suffix.
# prompt_packing = the padding-free layout of soft-prompt stages (engine/prompt_packing.py): "shared" needs a custom
# block mask, which sliding-window layers do not take, so Gemma 3 gives each example its own copy of the prompt.
EXACT = {"tiny-random-llama": {"packing": True, "padding": True, "prompt_packing": "shared"},
         "tiny-random-qwen": {"packing": True, "padding": True, "prompt_packing": "shared"},
         "tiny-random-gemma3": {"packing": True, "padding": False, "prompt_packing": "copies"},
         "tiny-random-gpt2": {"packing": True, "padding": True, "prompt_packing": "shared"}}
TEMPLATE = "Review: {input}\\nSentiment:"
STEPS = ("--max-steps", "2", "--stage1-steps", "2", "--stage2-steps", "2", "--batch-size", "4", "--prompt-length", "4",
         "--save-every", "0", "--lr", "1e-3", "--stage2-lr", "1e-3")


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    root = tmp_path_factory.mktemp("suite")
    write_jsonl(root / "upper.jsonl", [{"input": w, "output": w.upper()} for w in ("ab", "cd", "ef", "gh", "ij", "kl", "mn", "op",
                                                                                   "qr", "st", "uv", "wx")])
    write_jsonl(root / "yesno.jsonl", [{"input": f"is {i} even", "output": "yes" if i % 2 == 0 else "no",
                                        "choices": ["yes", "no"]} for i in range(12)])
    return str(root)


def _train(tmp_path, task, spec, method):
    train, val = task
    out = tmp_path / f"{spec}-{method}"
    main(["train", "--model", spec, "--method", method, "--train", str(train), "--validation", str(val), "--template", TEMPLATE,
          "--output", str(out), "--eval-every", "2", *STEPS])
    return out


@pytest.mark.parametrize("spec", list(FAMILIES))
def test_every_method_trains_and_evaluates(tmp_path, task, suite, spec):
    base = load_model(spec)
    causal = not base.is_seq2seq
    for method in method_names():
        out = _train(tmp_path, task, spec, method)
        info = json.loads((out / "run.json").read_text())
        prompted = "prompt" in info["artifacts"]
        for stage in info["stages"]:  # the path that ran is the one the family's own check allows
            if not causal:
                expected = "padded"
            elif prompted:
                expected = EXACT[spec]["prompt_packing"]
            else:
                expected = "rows" if packing_is_exact(base.model) else "padded"
            assert stage["packing"] == expected and stage["packed"] == (expected != "padded"), (method, stage)
        run = retain.load_run(out)
        assert len(run.generate(["a fine film"], max_new_tokens=3)) == 1
    # both evaluator engines agree, for the tuned model with its prompt and for the base model
    tasks = load_suite(suite, examples=3)
    run = retain.load_run(tmp_path / f"{spec}-promot")
    for model in (run.model_for(True), base.model):
        fast, simple = (evaluate_all(model, run.tokenizer, tasks, [2], is_seq2seq=run.is_seq2seq, engine=e, batch_size=3)
                        for e in ("fast", "simple"))
        for name in fast["tasks"]:
            assert fast["tasks"][name]["units"] == simple["tasks"][name]["units"], (spec, name)
    if causal:  # the path taken on each family (both paths give the same predictions, checked above)
        assert {"packing": packing_is_exact(base.model), "padding": padding_is_exact(base.model),
                "prompt_packing": prompt_packing_layout(run.model_for(True))} == EXACT[spec]


@pytest.mark.parametrize("spec", list(FAMILIES))
def test_compare_and_continual_run_on_every_family(tmp_path, task, suite, spec):
    train, val = task
    out = tmp_path / "cmp"
    main(["compare", "--model", spec, "--train", str(train), "--validation", str(val), "--template", TEMPLATE,
          "--methods", "base,full,promot", "--suite", suite, "--shots", "1", "--examples", "3", "--tuned-examples", "4",
          "--output", str(out), "--eval-every", "0", *STEPS])
    results = json.loads((out / "results.json").read_text())
    assert set(results["methods"]) == {"base", "full", "promot"} and "promot vs full" in json.dumps(results["paired"])
    folders = [make_task(tmp_path, name) for name in ("rev", "up")]
    cit = tmp_path / "cit"
    main(["continual", "--model", spec, "--tasks", *map(str, folders), "--method", "switchcit", "--output", str(cit),
          *map(str, FAST)])
    res = json.loads((cit / "results.json").read_text())
    assert res["stages"] == ["rev", "up"] and len(res["R"]) == 2 and res["routing"]
