"""Multi-task ProMoT (the paper's Table 5) and its multi-task full fine-tuning baseline, on tiny random models.

Stage 1 trains one PEFT prompt adapter per task on that task's data only; stage 2 trains the model on the mixture
with every example under its own task's (frozen) prompt, packed or padded; the run holds one standard prompt
adapter per task, and generate/eval/load_run pick one by name."""

import json
import random

import pytest
import torch
from peft import PeftModel
from tests.conftest import cli, sentiment_rows, write_jsonl
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, DataCollatorForSeq2Seq, TrainingArguments

import retain
from retain.config import TrainConfig
from retain.data import TaskFormat, tokenize
from retain.engine import StageTrainer, run_stage
from retain.engine.prompt_packing import LAYOUTS, PromptPackingCollator, packed_prompts, prompt_packing_layout
from retain.engine.task_prompts import TaskCollator, per_example_prompts
from retain.methods import Stage, prepare, wrap
from retain.methods import get as get_method
from retain.models import load_model

V = 4  # virtual tokens
TEMPLATES = {"sent": "Review: {input}\nSentiment:", "copy": "Say: {input}\nWord:"}


def copy_rows(n: int, seed: int = 0):
    r = random.Random(seed)
    words = ["red", "blue", "green", "cat", "dog", "sun"]
    return [{"input": f"the word {w} please", "output": w} for w in (r.choice(words) for _ in range(n))]


@pytest.fixture
def two_tasks(tmp_path):
    """Two tiny tasks of different formats: {name: (train file, validation file)}."""
    return {"sent": (write_jsonl(tmp_path / "sent.jsonl", sentiment_rows(16)), write_jsonl(tmp_path / "sent_val.jsonl", sentiment_rows(4, 1))),
            "copy": (write_jsonl(tmp_path / "copy.jsonl", copy_rows(16)), write_jsonl(tmp_path / "copy_val.jsonl", copy_rows(4, 1)))}


def _two_prompt_model(spec):
    loaded = load_model(spec)
    cfg = TrainConfig(model=spec, prompt_length=V, prompt_init="random")  # distinct random prompts (seed, seed + 1)
    model = wrap(loaded.model, loaded.tokenizer, "promot", cfg, loaded.is_seq2seq, tasks=("sent", "copy"))
    rows = {}
    for i, (name, make) in enumerate((("sent", sentiment_rows), ("copy", copy_rows))):
        fmt = TaskFormat(TEMPLATES[name], None, loaded.is_seq2seq)
        rows[name] = [{**r, "prompt_task": i} for r in tokenize(make(4), loaded.tokenizer, fmt, 64).rows]
    torch.manual_seed(0)
    with torch.no_grad():  # prompts far apart, so that using the wrong one shows in the loss
        for name in ("sent", "copy"):
            model.prompt_encoder[name].embedding.weight.normal_(0.0, 2.0)
    return loaded, model, rows


def _prompt(model, name):
    return model.prompt_encoder[name].embedding.weight.detach().clone()


def test_stage1_trains_only_the_active_tasks_prompt(tmp_path):
    loaded, model, rows = _two_prompt_model("tiny-random-llama")
    cfg = TrainConfig(model="tiny-random-llama", batch_size=4, eval_every=0, save_every=0, prompt_length=V)
    stage1 = get_method("promot").stages[0]
    base = {n: t.clone() for n, t in model.get_base_model().state_dict().items()}
    for name, other in (("sent", "copy"), ("copy", "sent")):
        before, other_before = _prompt(model, name), _prompt(model, other)
        model.set_adapter(name)
        plain = [{k: v for k, v in r.items() if k != "prompt_task"} for r in rows[name]]
        run_stage(model, loaded.tokenizer, stage1, rows=plain, steps=2, lr=0.1, prompt_lr=0.1, cfg=cfg, stage_dir=tmp_path / name)
        assert not torch.equal(_prompt(model, name), before), f"stage 1 of {name} did not train its prompt"
        assert torch.equal(_prompt(model, other), other_before), f"stage 1 of {name} changed the prompt of {other}"
    assert all(torch.equal(t, base[n]) for n, t in model.get_base_model().state_dict().items()), "stage 1 changed the base"


def _loss_and_grads(model, loss_fn):
    model.zero_grad(set_to_none=True)
    loss = loss_fn()
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _per_example(model, trainer, tokenizer, rows, names, *, causal):
    """PEFT's own single-task path: each example alone, under its task's adapter; the token-weighted mean."""
    pad = DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100)
    total, count = 0.0, 0
    for r in rows:
        model.set_adapter(names[r["prompt_task"]])
        c = sum(1 for t in (r["labels"][1:] if causal else r["labels"]) if t != -100)
        total = total + trainer.compute_loss(model, dict(pad([{k: v for k, v in r.items() if k != "prompt_task"}]))) * c
        count += c
    model.set_adapter(names[0])
    return total / count


@pytest.mark.parametrize("spec", ["tiny-random-llama", "tiny-random-t5"])
def test_stage2_mixed_batch_loss_is_each_examples_own_prompt_loss(tmp_path, spec):
    loaded, model, rows = _two_prompt_model(spec)
    model.eval()
    causal = not loaded.is_seq2seq
    names = ("sent", "copy")
    mixed = [rows["sent"][0], rows["copy"][0], rows["sent"][1], rows["copy"][1]]
    prepare(model, Stage("stage2", "model"))
    args = TrainingArguments(output_dir=str(tmp_path), report_to=[], use_cpu=True)
    padded = StageTrainer(model=model, args=args, selective_loss=causal, virtual_tokens=V)
    want, want_grads = _loss_and_grads(model, lambda: _per_example(model, padded, loaded.tokenizer, mixed, names, causal=causal))
    one_prompt = _per_example(model, padded, loaded.tokenizer, [{**r, "prompt_task": 0} for r in mixed], names, causal=causal)
    # the wrong prompt moves the loss by 10x the tolerance of "equal" below (a tiny random model barely reacts)
    assert abs(one_prompt.item() - want.item()) > 1e-4 * abs(want.item()), "the prompts must differ for this test to mean anything"

    def same(got, got_grads):
        return torch.allclose(got, want, rtol=1e-5, atol=1e-6) and all(
            torch.allclose(got_grads[n], g, rtol=1e-3, atol=1e-6) for n, g in want_grads.items())

    batch = TaskCollator(DataCollatorForSeq2Seq(loaded.tokenizer, padding=True, label_pad_token_id=-100))(mixed)
    with per_example_prompts(model, names):  # the padded path (encoder-decoder models, --no-packing)
        assert same(*_loss_and_grads(model, lambda: padded.compute_loss(model, dict(batch)))), "padded mixed batch"
    if causal:  # the packed path: one row, every example with its own task's prompt copy
        assert prompt_packing_layout(model) == "shared"
        packed = StageTrainer(model=model, args=args, selective_loss=True, virtual_tokens=0)
        for layout in LAYOUTS:
            row = PromptPackingCollator(V, layout)(mixed)
            assert row["input_ids"].shape[0] == 1 and int(row["prompt_slots"].sum()) == V * (2 if layout == "shared" else 4)
            with packed_prompts(model, names):
                assert same(*_loss_and_grads(model, lambda r=row: packed.compute_loss(model, dict(r)))), layout


def _train_two(tmp_path, two_tasks, method, *extra, spec="tiny-random-llama"):
    out = tmp_path / f"{method}-{spec}"
    flags = [a for name, (tr, va) in two_tasks.items() for a in ("--train", f"{name}={tr}", "--validation", f"{name}={va}")]
    cli("train", "--model", spec, "--method", method, *flags, "--template", "{input}", "--output", out,
        "--max-steps", 4, "--stage1-steps", 4, "--stage2-steps", 4, "--eval-every", 2, "--batch-size", 4,
        "--prompt-length", V, "--prompt-init", "random", "--stage1-lr", "0.3", "--stage2-lr", "1e-3", "--lr", "1e-3", *extra)
    return out


@pytest.mark.parametrize("spec,auto", [("tiny-random-llama", AutoModelForCausalLM), ("tiny-random-t5", AutoModelForSeq2SeqLM)])
def test_multitask_promot_run_holds_one_plain_peft_adapter_per_task(tmp_path, two_tasks, spec, auto):
    out = _train_two(tmp_path, two_tasks, "promot", spec=spec)
    info = json.loads((out / "run.json").read_text())
    assert [t["name"] for t in info["tasks"]] == ["sent", "copy"] and info["format"] is None
    assert [(s["stage"], s["tasks"]) for s in info["stages"]] == [("stage1", ["sent"]), ("stage1", ["copy"]),
                                                                  ("stage2", ["sent", "copy"])]
    # 16 examples, batch 4, 4 steps: one epoch of exactly the stage's data, so the real tokens seen tell what it trained on
    seq2seq = spec.endswith("t5")
    tok = load_model(spec).tokenizer
    tokens = {n: sum(len(r["input_ids"]) for r in tokenize(rows, tok, TaskFormat("{input}", None, seq2seq), 256).rows)
              for n, rows in (("sent", sentiment_rows(16)), ("copy", copy_rows(16)))}
    assert [s["input_tokens"] for s in info["stages"][:2]] == [tokens["sent"], tokens["copy"]]
    assert all(s["evaluations"] for s in info["stages"]) and info["stages"][2]["packing"] == ("padded" if seq2seq else "shared")

    enc = dict(tok("Review: the film was good\nSentiment:", return_tensors="pt"))
    if seq2seq:
        enc["decoder_input_ids"] = torch.tensor([[0, 5, 6]])
    logits = {}
    for name in ("sent", "copy"):
        cfg = json.loads((out / "prompt" / name / "adapter_config.json").read_text())
        assert cfg["peft_type"] == "PROMPT_TUNING" and cfg["num_virtual_tokens"] == V
        plain = PeftModel.from_pretrained(auto.from_pretrained(out / "model"), out / "prompt" / name).eval()
        run = retain.load_run(out, task=name)
        with torch.no_grad():
            logits[name] = plain(**enc).logits
            assert torch.equal(run.prompted(**enc).logits, logits[name]), f"load_run(task={name}) is not its adapter"
        assert run.format.template == "{input}" and run.task["name"] == name
    assert not torch.equal(logits["sent"], logits["copy"]), "the two tasks' prompts should differ"


def test_generate_and_eval_pick_a_tasks_prompt(tmp_path, two_tasks):
    out = _train_two(tmp_path, two_tasks, "promot")
    texts = ["the word cat please", "the film was good"]
    got = {n: cli("generate", "--run", out, "--task", n, *texts).stdout.splitlines() for n in ("sent", "copy")}
    for name in ("sent", "copy"):
        assert got[name] == retain.load_run(out, task=name).generate(texts)
    suite = tmp_path / "suite"
    suite.mkdir()
    write_jsonl(suite / "echo.jsonl", [{"input": f"w{i}", "output": f"w{i}"} for i in range(12)])
    res = tmp_path / "eval.json"
    cli("eval", "--run", out, "--task", "copy", "--suite", suite, "--shots", "1", "--examples", "4", "--output", res)
    r = json.loads(res.read_text())
    assert r["task"] == "copy" and r["tuned"]["name"] == "copy" and r["tuned"]["prompt"] is True
    val = [json.loads(x)["input"] for x in two_tasks["copy"][1].read_text().splitlines()]
    assert r["tuned"]["units"][0]["predictions"] == retain.load_run(out, task="copy").generate(val)
    # a run of several tasks needs a name, and an unknown one is refused
    for args in (("generate", "--run", out, "x"), ("eval", "--run", out, "--suite", suite)):
        p = cli(*args, check=False)
        assert p.returncode == 2 and "choose one with --task" in p.stderr and "sent, copy" in p.stderr, p.stderr
    p = cli("generate", "--run", out, "--task", "nli", "x", check=False)
    assert p.returncode == 2 and "unknown task 'nli'" in p.stderr and "Traceback" not in p.stderr


@pytest.mark.parametrize("method", ["full", "promot"])
def test_one_shot_variants_use_each_tasks_own_demonstration(tmp_path, two_tasks, method):
    out = _train_two(tmp_path, two_tasks, method, "--one-shot")
    info = json.loads((out / "run.json").read_text())
    for t in info["tasks"]:
        rows = [json.loads(x) for x in two_tasks[t["name"]][0].read_text().splitlines()]
        assert t["one_shot"] in rows, f"{t['name']}'s demonstration is not one of its own examples"
        assert retain.load_run(out, task=t["name"]).format.one_shot == t["one_shot"]
    assert ("prompt" in info["artifacts"]) == (method == "promot")


def test_tasks_file_with_template_and_metric_per_task(tmp_path, two_tasks):
    folder = tmp_path / "data"
    folder.mkdir()
    for tr, va in two_tasks.values():
        (folder / tr.name).write_text(tr.read_text())
        (folder / va.name).write_text(va.read_text())
    (folder / "tasks.yaml").write_text(
        "tasks:\n"
        "  - {name: sent, train: sent.jsonl, validation: sent_val.jsonl, template: 'Review: {input}\\nSentiment:', metric: accuracy}\n"
        "  - {name: copy, train: copy.jsonl, validation: copy_val.jsonl, template: 'Say: {input}', metric: exact_match}\n")
    out = tmp_path / "full"
    cli("train", "--model", "tiny-random-llama", "--method", "full", "--tasks", folder / "tasks.yaml", "--output", out,
        "--max-steps", 2, "--batch-size", 4, "--eval-every", 0)
    info = json.loads((out / "run.json").read_text())
    assert [(t["name"], t["template"], t["metric"]) for t in info["tasks"]] == [
        ("sent", "Review: {input}\nSentiment:", "accuracy"), ("copy", "Say: {input}", "exact_match")]
    assert info["examples"]["train"] == 32 and info["stages"][0]["tasks"] == ["sent", "copy"]


@pytest.mark.parametrize("flags,needle", [
    (["--train", "a={sent}", "--train", "a={copy}"], "task 'a' is given twice"),
    (["--train", "a={sent}", "--train", "b={copy}", "--validation", "c={sent}"], "--validation c: unknown task 'c' (tasks: a, b)"),
    (["--train", "a={sent}", "--train", "b={tmp}/missing.jsonl"], "--train b: file not found"),
    (["--train", "a={sent}", "--train", "{copy}"], "name every task"),
    (["--train", "a={sent}", "--train", "b={copy}", "--validation", "a={sent}"], "task 'b' has no validation file"),
    (["--train", "a={sent}", "--train", "b={copy}", "--method", "joint"], "stage 'joint' trains prompt+model"),
    (["--tasks", "{tmp}/tasks.yaml"], "task 2: unknown key 'templat'"),
])
def test_bad_task_specs_fail_with_one_line(tmp_path, two_tasks, flags, needle):
    (tmp_path / "tasks.yaml").write_text(f"- {{name: a, train: {two_tasks['sent'][0]}}}\n- {{name: b, train: x.jsonl, templat: x}}\n")
    fill = {"sent": two_tasks["sent"][0], "copy": two_tasks["copy"][0], "tmp": tmp_path}
    out = tmp_path / "run"
    args = [f.format(**fill) for f in flags]
    p = cli("train", "--model", "tiny-random-llama", "--method", "promot", *args, "--output", out, "--max-steps", 1, check=False)
    err = p.stderr.strip()
    assert p.returncode == 2 and "Traceback" not in err and len(err.splitlines()) == 1, err
    assert needle in err, err
    assert not out.exists()
