"""retain continual on tiny models: SwitchCIT registry, routing, resume, baselines."""

import hashlib
import json
import random
import re
import shutil

import pytest
import torch
from tests.conftest import ROOT, SHARED, cli, write_jsonl

from retain.errors import RetainError
from retain.tokens import pad_right, prompt_ids

WORDS = ["apple", "river", "stone", "cloud", "tiger", "lemon", "piano", "storm", "candle", "forest", "mirror", "rocket"]
TASKS = {  # distinct instructions, so the switch can tell them apart
    "rev": ("Reverse the letters of {w} ==>", lambda w: w[::-1]),
    "up": ("Shout this word loudly: {w} !!", lambda w: w.upper()),
    "dbl": ("copy twice ## {w} ##", lambda w: w + w),
}
# the switch also learns its general class (40 instructions of the built-in pool): the tiny model's hidden states are
# small (about 0.01), hence a switch learning rate of 1e-2; the general suite: 2 items per built-in task
FAST = ("--max-steps", 3, "--batch-size", 4, "--lr", "1e-2", "--eval-samples", 4, "--max-new-tokens", 6, "--retain-min", 8,
        "--switch-epochs", 30, "--switch-lr", "1e-2", "--general-size", 40, "--general-examples", 2)


def make_task(root, name, seed=0):
    tpl, f = TASKS[name]
    r = random.Random(seed)
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", 24), ("validation", 4)):
        write_jsonl(d / f"{split}.jsonl", [{"input": tpl.format(w=w), "output": f(w), "task": name}
                                           for w in (r.choice(WORDS) for _ in range(n))])
    return d


def tree_hashes(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cit")
    return {name: make_task(root, name) for name in TASKS}


@pytest.fixture(scope="module")
def registry(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("reg") / "cit"
    cli("continual", "--model", "tiny-random-llama", "--method", "switchcit", "--tasks", data["rev"], data["up"],
        "--output", out, *FAST)
    return out


def prompts_of(data, names, n=4):
    rows = [json.loads(line) for name in names for line in (data[name] / "validation.jsonl").read_text().splitlines()[:n]]
    return [r["input"] for r in rows], [r["task"] for r in rows]


def test_registry_layout_and_round_trip(registry, data):
    from safetensors.torch import load_file

    from retain.continual.registry import load_registry

    files = tree_hashes(registry)
    for f in ("registry.json", "manifest.json", "results.json", "results.md", "R.png", "average.png",
              "adapters/rev/adapter_model.safetensors", "adapters/up/adapter_config.json",
              "switch/switch.safetensors", "switch/instructions.jsonl"):
        assert f in files, f
    info = json.loads((registry / "registry.json").read_text())
    assert info["base"]["spec"] == "tiny-random-llama" and len(info["base"]["fingerprint"]) == 64
    assert [t["name"] for t in info["tasks"]] == ["rev", "up"]
    stored = [json.loads(line) for line in (registry / "switch" / "instructions.jsonl").read_text().splitlines()]
    assert {r["task"] for r in stored} == {"rev", "up", None} and len(stored) == 16 + 40  # retain-min 8 per task + general

    reg = load_registry(registry)
    params = dict(reg.model.named_parameters())
    for task in ("rev", "up"):
        saved = load_file(str(registry / "adapters" / task / "adapter_model.safetensors"))
        assert saved and any(v.abs().sum() > 0 for k, v in saved.items() if "lora_B" in k), "adapter did not train"
        for key, tensor in saved.items():
            name = key.replace(".weight", f".{task}.weight")
            assert torch.equal(params[name], tensor), key
    texts, truth = prompts_of(data, ["rev", "up"])
    assert reg.route(texts) == truth
    res = json.loads((registry / "results.json").read_text())
    assert res["stages"] == ["rev", "up"] and len(res["R"]) == 2 and res["R"][0][1] is None
    assert res["routing"][-1]["accuracy"] == 100.0 and res["routing"][-1]["confusion"][:2] == [[4, 0, 0], [0, 4, 0]]
    assert res["summary"]["bwt"] is not None and res["summary"]["final_average"] is not None


def test_mixed_batch_routing_equals_per_adapter_rows(registry, data):
    from retain.continual.generation import generate_routed
    from retain.continual.registry import load_registry

    reg = load_registry(registry)
    texts, truth = prompts_of(data, ["rev", "up"])
    order = [0, 4, 1, 5, 2, 6, 3, 7]  # interleave the tasks in one batch
    texts, truth = [texts[i] for i in order], [truth[i] for i in order]
    names = reg.route(texts)
    assert names == truth
    kw = dict(is_seq2seq=False, max_new_tokens=8, first_line=False, min_new_tokens=8)  # 8 real tokens per row
    mixed = generate_routed(reg.model, reg.tokenizer, texts, names, **kw)
    per = {a: generate_routed(reg.model, reg.tokenizer, texts, [a] * len(texts), **kw) for a in ("rev", "up")}
    assert mixed == [per[n][i] for i, n in enumerate(names)]
    assert all(mixed) and per["rev"] != per["up"], "adapters give identical outputs: the test would prove nothing"
    tok = reg.tokenizer
    for i, (text, name) in enumerate(zip(texts, names)):  # one row at a time, with the adapter set the usual way
        reg.model.set_adapter(name)
        enc = {"input_ids": torch.tensor([prompt_ids(tok, text)])}  # with the BOS this tokenizer adds
        assert enc["input_ids"][0, 0] == tok.bos_token_id
        with torch.no_grad():
            ids = reg.model.generate(**enc, max_new_tokens=8, min_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id)
        assert tok.decode(ids[0, enc["input_ids"].shape[1]:], skip_special_tokens=True).strip() == mixed[i]


def test_generate_cli_routes(registry, data):
    from retain.continual.registry import load_registry

    texts, _ = prompts_of(data, ["up", "rev"], n=2)
    out = cli("generate", "--registry", registry, "--show-task", *texts).stdout.splitlines()
    names, outs = load_registry(registry).generate(texts)
    assert out == [f"{n}\t{o}" for n, o in zip(names, outs)]
    assert [o.split("\t")[0] for o in out] == ["up", "up", "rev", "rev"]


def test_different_base_or_changed_file_refused(registry, tmp_path):
    from retain.continual.registry import load_registry
    from retain.errors import RetainError

    proc = cli("generate", "--registry", registry, "--base", "tiny-random-t5", "x", check=False)
    assert proc.returncode == 2 and "different base model" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    bad = tmp_path / "bad"
    shutil.copytree(registry, bad)
    f = bad / "adapters" / "up" / "adapter_model.safetensors"
    raw = bytearray(f.read_bytes())
    raw[-1] ^= 1
    f.write_bytes(bytes(raw))
    with pytest.raises(RetainError, match="sha256"):
        load_registry(bad)


def test_resume_adds_task_old_adapters_bit_identical_outputs_unchanged(registry, data, tmp_path):
    from retain.continual.generation import generate_routed
    from retain.continual.registry import load_registry

    reg_dir = tmp_path / "cit"
    shutil.copytree(registry, reg_dir)
    before = {k: v for k, v in tree_hashes(reg_dir).items() if k.startswith("adapters/")}
    texts, truth = prompts_of(data, ["rev", "up"])
    old_reg = load_registry(reg_dir)
    old_outputs = generate_routed(old_reg.model, old_reg.tokenizer, texts, truth, is_seq2seq=False, max_new_tokens=8,
                                  min_new_tokens=8, first_line=False)
    del old_reg

    cli("continual", "--resume-from", reg_dir, "--tasks", data["dbl"], *FAST)  # replaces reg_dir atomically
    after = tree_hashes(reg_dir)
    assert all(after[k] == v for k, v in before.items()), "an old adapter file changed"
    assert "adapters/dbl/adapter_model.safetensors" in after
    assert not list(tmp_path.glob(".cit.*")), "staging left behind"
    reg = load_registry(reg_dir)
    new_outputs = generate_routed(reg.model, reg.tokenizer, texts, truth, is_seq2seq=False, max_new_tokens=8,
                                  min_new_tokens=8, first_line=False)
    assert all(new_outputs)
    assert new_outputs == old_outputs  # with correct routing, old tasks are untouched by the new one
    all_texts, all_truth = prompts_of(data, ["rev", "up", "dbl"])
    assert reg.route(all_texts) == all_truth
    res = json.loads((reg_dir / "results.json").read_text())
    assert res["stages"] == ["rev", "up", "dbl"] and [len(r) for r in res["R"]] == [3, 3, 3]
    assert res["R"][2][0] is not None and len(res["routing"]) == 3

    proc = cli("continual", "--resume-from", reg_dir, "--tasks", data["dbl"], *FAST, check=False)
    assert proc.returncode == 2 and "already in the registry" in proc.stderr
    other = shutil.copytree(data["dbl"], tmp_path / "dbl2")
    proc = cli("continual", "--resume-from", reg_dir, "--model", "tiny-random-t5", "--tasks", other, check=False)
    assert proc.returncode == 2 and "different base model" in proc.stderr


@pytest.mark.parametrize("method", ["sequential", "sequential-lora", "replay", "multitask", "osf"])
def test_baselines(method, data, tmp_path):
    from retain.continual.config import ContinualConfig
    from retain.workflows.continual import run_continual

    out = tmp_path / method
    cfg = ContinualConfig(model="tiny-random-llama", method=method, output=str(out), max_steps=1, batch_size=4, eval_samples=2,
                          max_new_tokens=3, replay_min=2, general_examples=2)
    run_continual(cfg, [str(data["rev"]), str(data["up"])], progress=lambda m: None)
    res = json.loads((out / "results.json").read_text())
    assert {p.name for p in out.iterdir()} >= {"results.json", "results.md", "R.png", "average.png", "manifest.json"}
    assert not (out / "adapters").exists()
    if method == "multitask":
        assert res["stages"] == ["all"] and len(res["R"]) == 1 and res["summary"]["bwt"] is None
        assert res["training"][0]["steps"] == 2
    else:
        assert res["stages"] == ["rev", "up"] and res["summary"]["bwt"] is not None
    if method == "sequential-lora":
        assert res["training"][0]["trainable_parameters"] < 10_000
    if method == "replay":  # stage 2 trains on the new task plus replay_ratio of buffer examples
        assert any(e.get("event") == "stage_start" for e in map(json.loads, (out / "train_log.jsonl").read_text().splitlines()))


def test_bad_inputs_one_line_nothing_written(data, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    write_jsonl(broken / "train.jsonl", [{"input": "a", "output": "b"}])
    out = tmp_path / "out"
    proc = cli("continual", "--model", "tiny-random-llama", "--tasks", data["rev"], broken, "--output", out, check=False)
    assert proc.returncode == 2 and "validation.jsonl" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not out.exists() and not list(tmp_path.glob(".out*"))
    proc = cli("continual", "--method", "sequential", "--resume-from", tmp_path, "--tasks", data["rev"], check=False)
    assert proc.returncode == 2 and "SwitchCIT" in proc.stderr


def test_best_weights_are_chosen_on_rows_apart_from_those_that_measure_R():
    from types import SimpleNamespace

    from retain.continual.context import selection_rows
    from retain.continual.tasks import Task

    task = Task("t", "t", validation=[{"input": str(i), "output": "x"} for i in range(10)])
    assert [r["input"] for r in selection_rows(task, SimpleNamespace(eval_samples=4, select_samples=3))] == ["4", "5", "6"]
    assert [r["input"] for r in selection_rows(task, SimpleNamespace(eval_samples=8, select_samples=5))] == ["8", "9"]
    assert [r["input"] for r in selection_rows(task, SimpleNamespace(eval_samples=10, select_samples=2))] == ["0", "1"]


def test_summary_figures():
    from retain.continual.measure import summarize

    R = [[50.0, None, None], [40.0, 60.0, None], [30.0, 55.0, 70.0]]
    s = summarize(R)
    assert s["average_per_stage"] == [50.0, 50.0, 51.6667]
    assert s["bwt"] == pytest.approx(((30 - 50) + (55 - 60)) / 2)
    assert s["forgetting"] == pytest.approx(((50 - 30) + (60 - 55)) / 2)
    assert summarize([[10.0, 20.0]])["bwt"] is None


def test_constraint_and_retention():
    from retain.continual.switch import retained
    from retain.continual.tasks import meets_constraint

    assert meets_constraint("Sony launches new PSP", "starts_with", "Sony")
    assert meets_constraint("Oil prices rise again.", "ends_with", "again")
    assert meets_constraint("Oil prices rise", "contains", "prices")
    assert not meets_constraint("New PSP from Sony", "starts_with", "Sony")
    assert len(retained([str(i) for i in range(2000)], 0.01, 20, 0)) == 20
    assert len(retained([str(i) for i in range(5000)], 0.01, 20, 0)) == 50
    assert len(retained([str(i) for i in range(5)], 0.01, 20, 0)) == 5


@pytest.mark.parametrize("pooling", ["mean", "last"])
@pytest.mark.parametrize("spec", ["tiny-random-llama", "tiny-random-t5"])
def test_switch_features_ignore_padding(spec, pooling):
    from retain.continual.switch import FeatureModel
    from retain.models import load_model

    m = load_model(spec)
    fm = FeatureModel(m.model, m.tokenizer, m.is_seq2seq, max_length=64, pooling=pooling)
    texts = ["a short one", "a much longer instruction with more words in it"]
    both = fm(texts)
    assert both.shape == (2, 32)
    assert torch.allclose(both[0], fm(texts[:1])[0], atol=1e-5) and torch.allclose(both[1], fm(texts[1:])[0], atol=1e-5)


@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_switch_reads_only_the_start(pooling):
    from retain.continual.switch import FeatureModel
    from retain.models import load_model

    m = load_model("tiny-random-llama")  # byte-level tokenizer: one token per character
    m.tokenizer.truncation_side = "left"  # the feature model reads the start whatever the tokenizer was left with
    a, b = "Simplify this: the cat sat on the mat", "Simplify this: a dog ran in the park"
    short = FeatureModel(m.model, m.tokenizer, False, max_length=15, pooling=pooling)([a, b])
    assert torch.allclose(short[0], short[1], atol=1e-6)  # the first 15 tokens are the same
    long = FeatureModel(m.model, m.tokenizer, False, max_length=64, pooling=pooling)([a, b])
    assert not torch.allclose(long[0], long[1])
    assert m.tokenizer.truncation_side == "left"  # restored


@pytest.mark.parametrize("spec", ["tiny-random-llama", "tiny-random-t5"])
def test_switch_layer_reads_that_block_and_stops_there(spec):
    from retain.continual.switch import FeatureModel, layer_stack
    from retain.models import load_model

    m = load_model(spec)
    texts = ["a short one", "a much longer instruction with more words in it"]
    network = m.model.get_encoder() if m.is_seq2seq else m.model
    n = m.model.config.num_hidden_layers
    ran = []
    for i, block in enumerate(layer_stack(network, n)):
        block.register_forward_hook(lambda mod, a, out, i=i: ran.append(i))
    ids, mask = pad_right([prompt_ids(m.tokenizer, t, is_seq2seq=m.is_seq2seq) for t in texts], m.tokenizer.pad_token_id)
    enc = {"input_ids": ids, "attention_mask": mask}  # as the model sees them: BOS (llama), </s> (t5)
    with torch.no_grad():
        states = network(**enc, output_hidden_states=True).hidden_states if m.is_seq2seq else \
            m.model(**enc, output_hidden_states=True).hidden_states
    mask = enc["attention_mask"][..., None].float()
    if m.is_seq2seq:  # pooled over the input's own tokens: not the </s> T5's tokenizer appends
        mask[0, len(prompt_ids(m.tokenizer, texts[0], is_seq2seq=True)) - 1] = 0
        mask[1, ids.shape[1] - 1] = 0
    else:  # nor the BOS llama's adds
        mask[:, 0] = 0
    for layer, k in (("1", 1), ("middle", max(1, n // 2))):
        ran.clear()
        got = FeatureModel(m.model, m.tokenizer, m.is_seq2seq, max_length=64, layer=layer)(texts)
        assert ran == list(range(k))  # one batch: blocks 1..k ran, none above
        want = (states[k] * mask).sum(1) / mask.sum(1)
        assert torch.allclose(got, want, atol=1e-5)
    with pytest.raises(RetainError, match=r"block number 1\.\.2"):
        FeatureModel(m.model, m.tokenizer, m.is_seq2seq, layer="7")


def test_adapter_initialisation_depends_on_the_seed_only(tmp_path):
    from retain.continual.config import ContinualConfig
    from retain.methods.lora import attach_lora
    from retain.models import load_model

    tiny = load_model("tiny-random-llama")  # built from a seed; a saved copy loads without touching the RNG
    tiny.model.save_pretrained(tmp_path / "base")
    tiny.tokenizer.save_pretrained(tmp_path / "base")
    cfg = ContinualConfig(model=str(tmp_path / "base"), seed=3)
    weights = []
    for noise in (1, 2):
        torch.manual_seed(noise)  # whatever ran before
        model = attach_lora(load_model(str(tmp_path / "base")).model, cfg, False)
        weights.append({n: p.detach().clone() for n, p in model.named_parameters() if "lora_A" in n})
    assert weights[0].keys() == weights[1].keys() and weights[0]
    assert all(torch.equal(weights[0][n], weights[1][n]) for n in weights[0])


def test_simplification_task_is_scored_with_sari_against_the_sentence(tmp_path):
    from retain.continual.measure import task_scores
    from retain.continual.tasks import load_task, read_task_config
    from retain.evaluation.metrics import sari

    simp = SHARED / "cit" / "simp"
    if not simp.is_dir():
        pytest.skip("../shared/data/cit not present")
    overrides = read_task_config(str(ROOT / "bench" / "cit_tasks.yaml"))
    task = load_task(str(simp), overrides)
    assert task.metric == "sari"
    row = task.validation[0]
    assert row["source"] == row["input"].removeprefix("Simplify the following sentence: ") != row["input"]
    preds = [r["output"] for r in task.validation[:5]]
    got = task_scores(task, preds, 5)
    assert got["score"] == pytest.approx(sum(sari(r["source"], p, r["references"]) for r, p in zip(task.validation, preds)) / 5, abs=1e-4)
    assert got["se"] > 0 and got["units"][0]["sources"][0] == row["source"]
    # the source matters: against the whole instruction the same answers score differently
    assert sari(row["input"], preds[0], row["references"]) != pytest.approx(sari(row["source"], preds[0], row["references"]))
    bad = tmp_path / "simp"
    bad.mkdir()
    write_jsonl(bad / "train.jsonl", [{"input": "x", "output": "y"}])
    write_jsonl(bad / "validation.jsonl", [{"input": "Shorten: a b", "output": "a"}])
    with pytest.raises(RetainError, match="row 1: input does not start with"):
        load_task(str(bad), {"simp": {"metric": "sari", "source_prefix": "Simplify: "}})


def _switchcit_args(data, out, *extra):
    return ["continual", "--model", "tiny-random-llama", "--method", "switchcit", "--tasks", data["rev"], data["up"],
            "--output", out, "--max-steps", 30, "--batch-size", 4, "--lr", "1e-2", "--eval-samples", 2, "--select-samples", 2,
            "--eval-every", 10, "--save-every", 5, "--max-new-tokens", 4, "--retain-min", 8, "--switch-epochs", 5, *extra]


def _registry_tensors(root):
    from safetensors.torch import load_file

    return {f"{p.relative_to(root)}:{k}": v for p in sorted(root.rglob("*.safetensors")) for k, v in load_file(str(p)).items()}


@pytest.mark.slow
def test_sigkill_mid_task_then_resume_equals_uninterrupted_run(data, tmp_path):
    """Killed (SIGKILL) in task 2 after a checkpoint; --resume reloads task 1, continues task 2 from the checkpoint.

    Equal tensors, not a tolerance: on one CPU process the resumed run restores the model, optimizer, scheduler and
    RNG states the Trainer checkpointed, reads the same batches in the same order and runs the same kernels, and the
    switch is fitted (seeded) on features of the unchanged base, so every float operation is repeated exactly."""
    import signal
    import subprocess
    import sys
    import time

    ref = tmp_path / "ref"
    cli(*_switchcit_args(data, ref))
    out = tmp_path / "killed"
    staging = tmp_path / ".killed.partial"
    target = random.Random().choice([5, 10, 15, 20])
    proc = subprocess.Popen([sys.executable, "-m", "retain", *map(str, _switchcit_args(data, out))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if (staging / "checkpoints" / "up" / f"checkpoint-{target}" / "trainer_state.json").is_file():
            break
        time.sleep(0.005)
    assert proc.poll() is None, f"run ended before it could be killed:\n{proc.stderr.read()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists() and (staging / "checkpoints" / "rev" / "done.json").is_file()

    mismatch = cli(*_switchcit_args(data, out, "--resume", "--max-steps", 31), check=False)
    assert mismatch.returncode == 2 and "other settings (max_steps)" in mismatch.stderr
    resumed = cli(*_switchcit_args(data, out, "--resume"))
    assert "rev: already complete, loaded" in resumed.stdout
    # what was measured before the kill (the base model, everything after task 1) is read back, not generated again
    for key in ("base", "base-general", "after-rev", "general-after-rev"):
        assert f"{key}: measured before the interruption" in resumed.stdout, (key, resumed.stdout[-3000:])
    assert "after-up: measured before" not in resumed.stdout  # task 2 was interrupted: measured afresh
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert any(e.get("resumed_from") for e in log if e["event"] == "stage_start" and e["stage"] == "up"), "did not resume task 2"
    times = [e["time"] for e in log]  # the resumed process's clock continues the killed one's
    assert times == sorted(times) and times[-1] <= json.loads((out / "results.json").read_text())["wall_time_s"], times

    a, b = _registry_tensors(ref), _registry_tensors(out)
    assert a.keys() == b.keys() and any("switch" in k for k in a) and any("adapters/up" in k for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume (killed in task 2 at checkpoint {target})"
    ra, rb = (json.loads((d / "results.json").read_text()) for d in (ref, out))
    best = lambda res: [(r["best"]["step"], r["best"]["score"]) for r in res["training"]]
    assert ra["R"] == rb["R"] and best(ra) == best(rb)
    untimed = lambda general: json.loads(re.sub(r'"wall_time_s": [0-9.e+-]+', '"wall_time_s": 0', json.dumps(general)))
    assert ra["routing"] == rb["routing"] and ra["general"]["stages"] and untimed(ra["general"]) == untimed(rb["general"])
    assert [[e["step"] for e in r["evaluations"]] for r in rb["training"]] == [[10, 20, 30]] * 2  # --eval-every, per task
    assert (out / "switch" / "instructions.jsonl").read_text() == (ref / "switch" / "instructions.jsonl").read_text()


def test_measured_is_read_back_on_resume_only_for_the_same_inputs(tmp_path):
    from types import SimpleNamespace

    from retain.continual.config import ContinualConfig
    from retain.continual.context import Context

    calls = []

    def compute(x, *, y):
        calls.append((x, y))
        return {"score": x + y, "pair": (x, y), "by": {"none": None}}

    loaded = SimpleNamespace(model=SimpleNamespace(config=SimpleNamespace(max_position_embeddings=64)), tokenizer=None,
                             is_seq2seq=False)

    def context(**kw):
        cfg = ContinualConfig(model="tiny-random-llama", method="sequential", output=str(tmp_path / "out"), **kw)
        return Context(cfg, loaded, tmp_path / "staging", lambda e: None, lambda m: None)

    want = {"score": 3, "pair": [1, 2], "by": {"none": None}}  # a fresh run continues from the JSON a resume would read
    assert context(save_every=5).measured("after-a", compute, 1, y=2, of=["items"]) == want and len(calls) == 1
    kept = list((tmp_path / "staging" / "checkpoints" / "_measured").iterdir())
    assert len(kept) == 1 and kept[0].name.startswith("after-a-") and json.loads(kept[0].read_text()) == want
    resumed = context(save_every=5, resume=True)
    assert resumed.measured("after-a", compute, 1, y=2, of=["items"]) == want and len(calls) == 1  # read, not computed
    assert resumed.measured("after-a", compute, 1, y=2, of=["other items"]) == want and len(calls) == 2  # other inputs
    assert context(save_every=5).measured("after-a", compute, 1, y=2, of=["items"]) == want and len(calls) == 3  # no --resume
    context(save_every=0).measured("after-b", compute, 1, y=2, of=["items"])
    assert len(calls) == 4 and not any(f.name.startswith("after-b") for f in kept[0].parent.iterdir())  # nothing to resume


def test_arrow_routes_switchcits_own_adapters_with_peft_arrow(data, tmp_path):
    from safetensors.torch import load_file

    from retain.continual.config import ContinualConfig
    from retain.workflows.continual import run_continual

    runs = {}
    for method in ("arrow", "switchcit"):
        out = tmp_path / method
        cfg = ContinualConfig(model="tiny-random-llama", method=method, output=str(out), max_steps=2, batch_size=4, eval_samples=3,
                              max_new_tokens=3, eval_every=0, retain_min=4, switch_epochs=2)
        run_continual(cfg, [str(data["rev"]), str(data["up"]), str(data["dbl"])], progress=lambda m: None)
        runs[method] = json.loads((out / "results.json").read_text())
        assert (out / "adapters" / "dbl" / "adapter_model.safetensors").is_file()
    assert not (tmp_path / "arrow" / "registry.json").exists() and not (tmp_path / "arrow" / "switch").exists()
    for task in ("rev", "up", "dbl"):  # the same per-task training as switchcit: the same adapters
        a = load_file(str(tmp_path / "arrow" / "adapters" / task / "adapter_model.safetensors"))
        b = load_file(str(tmp_path / "switchcit" / "adapters" / task / "adapter_model.safetensors"))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    res = runs["arrow"]
    assert res["stages"] == ["rev", "up", "dbl"] and len(res["routing"]) == 3 and "switch_fit" not in res
    assert res["routing"][-1]["labels"] == ["rev", "up", "dbl"] and sum(map(sum, res["routing"][-1]["confusion"])) == 9


def test_arrow_routing_measure_is_the_weighting_peft_applies(data, tmp_path):
    """The routing weights ``arrow_routes`` reads reproduce each Arrow layer's own output: sum_e w_e * scale_e * B_e A_e x."""
    import copy

    from peft import get_peft_model

    from retain.continual.arrow import ROUTER, arrow_model, arrow_routes
    from retain.continual.config import ContinualConfig
    from retain.methods.lora import lora_config
    from retain.models import load_model

    loaded = load_model("tiny-random-llama")
    cfg = ContinualConfig(model="tiny-random-llama")
    base = loaded.model
    dirs = []
    for i in range(3):
        torch.manual_seed(i)
        m = get_peft_model(copy.deepcopy(base), lora_config(cfg, False), adapter_name=f"a{i}")
        for n, p in m.named_parameters():
            if "lora_B" in n:
                torch.nn.init.normal_(p, std=0.5)
        m.save_pretrained(str(tmp_path / "ad"), selected_adapters=[f"a{i}"])
        dirs.append(tmp_path / "ad" / f"a{i}")
    model = arrow_model(base, dirs, top_k=2, temperature=1.0, seed=0)
    layer = next(m for m in model.modules() if hasattr(m, "lora_arrow") and ROUTER in m.lora_arrow)
    seen = {}
    layer.lora_arrow[ROUTER].register_forward_hook(lambda mod, args, out: seen.update(x=args[0], delta=out))
    prompts = ["Reverse the letters of apple ==>", "copy twice ## stone ##"]
    routed = arrow_routes(model, loaded.tokenizer, prompts, is_seq2seq=False, max_length=32, batch_size=1)
    assert len(routed) == 2 and all(0 <= r < 3 for r in routed)
    arrow = layer.lora_arrow[ROUTER]
    x = seen["x"].reshape(-1, seen["x"].shape[-1])
    sim = (x @ arrow.prototypes.T).abs()
    top, idx = sim.topk(arrow.top_k, dim=-1)
    w = torch.softmax(torch.full_like(sim, float("-inf")).scatter(-1, idx, top) / arrow.temperature, dim=-1)
    expected = sum(w[:, e:e + 1] * layer.scaling[n] * (x @ layer.lora_A[n].weight.T @ layer.lora_B[n].weight.T)
                   for e, n in enumerate(arrow.task_adapter_names))
    assert torch.allclose(seen["delta"].reshape(expected.shape), expected, atol=1e-5)
    assert (w > 0).sum(-1).max() == 2  # top_k of the 3 adapters per token


def test_osf_trains_only_directions_orthogonal_to_the_frozen_ones(data, tmp_path):
    from retain.continual.config import ContinualConfig
    from retain.continual.context import Context
    from retain.continual.osf import frozen_share, run_osf
    from retain.continual.tasks import load_task
    from retain.models import load_model

    # plain SGD: PEFT projects the *gradients*; AdamW's per-element scaling of them would leave the subspace a little
    cfg = ContinualConfig(model="tiny-random-llama", method="osf", max_steps=3, batch_size=4, lr=50.0, eval_samples=2,
                          max_new_tokens=2, eval_every=0, osf_rank=0.5, optim="sgd")
    loaded = load_model("tiny-random-llama")
    before = {n: p.detach().clone() for n, p in loaded.model.named_parameters()}
    tasks = [load_task(str(data[n]), {}) for n in ("rev", "up")]
    for t in tasks:
        t.max_new_tokens = 2
    ctx = Context(cfg, loaded, tmp_path, lambda e: None, lambda m: None)
    run = run_osf(ctx, tasks[:1], {"rev": 2, "up": 2})
    assert run["stages"] == ["rev"] and ctx.records[0]["trainable_parameters"] > 0
    after = dict(loaded.model.named_parameters())  # merged into the model itself: no adapter left
    assert after.keys() == before.keys()
    assert torch.equal(after["model.embed_tokens.weight"], before["model.embed_tokens.weight"])  # not a target
    name = "model.layers.0.self_attn.q_proj.weight"
    w0, delta = before[name], after[name].detach() - before[name]
    u, _, _ = torch.linalg.svd(w0)
    k = int(min(w0.shape) * frozen_share(0.5, 0, 1))
    assert delta.abs().max() > 1e-5, "OSF did not train"
    assert (u[:, :k].T @ delta).abs().max() < 1e-4 * delta.abs().max()  # the frozen directions did not move
    assert (u[:, k:].T @ delta).abs().max() > 0.1 * delta.abs().max()
    assert frozen_share(0.5, 2, 5) == pytest.approx(0.7) and frozen_share(0.5, 4, 5) == pytest.approx(0.9)
