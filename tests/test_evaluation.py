"""Evaluation engine, suites, format specialization, eval/compare commands (tiny models)."""

import json
import random

import pytest

from conftest import cli, write_jsonl
from retain.evaluation.builtin import TASKS, builtin_examples, demo_task
from retain.evaluation.harness import evaluate_task, format_counts, output_space
from retain.evaluation.suite import Task, load_suite


def _words_task(n=40, name="copy"):
    r = random.Random(3)
    letters = "abcdefghij"
    rows = [{"input": "".join(r.choice(letters) for _ in range(r.randint(2, 6))), "output": ""} for _ in range(n)]
    for row in rows:
        row["output"] = row["input"].upper()
    return Task(name, rows, metric="exact_match", n=12)


# ---------------------------------------------------------------- suites
def test_builtin_suite_is_deterministic_and_splits_never_overlap():
    assert len(TASKS) >= 8
    tasks = load_suite("builtin", examples=20)
    again = load_suite("builtin", examples=20)
    for t, u in zip(tasks, again):
        assert t.examples == u.examples
        test, pool = t.split(0, 4)
        assert test == u.split(0, 4)[0]
        test_inputs = {x["input"] for x in test}
        assert not test_inputs & {x["input"] for x in pool}  # no test item is also a demonstration
        demos = t.demos(0, 4, 4)
        assert len(demos) == 4 and not test_inputs & {d["input"] for d in demos}
        assert len({x["input"] for x in test}) == len(test) >= min(20, len(t.examples) - 8)
        assert t.demos(0, 1, 4) == demos[:1]  # 1-shot uses the first of the 4
        assert t.split(1, 4)[0] != test  # the seed matters


def test_builtin_answers_are_correct():
    ex = {r["input"]: r["output"] for r in builtin_examples("addition")}
    for q, a in list(ex.items())[:20]:
        x, y = q.split(" + ")
        assert int(x) + int(y) == int(a)
    for r in builtin_examples("list_max"):
        assert max(map(int, r["input"].split())) == int(r["output"])
    rows = demo_task(50)
    assert {r["output"] for r in rows} == {"positive", "negative"}
    assert demo_task(50) == rows


def test_yaml_suite_and_its_errors(tmp_path):
    write_jsonl(tmp_path / "caps.jsonl", [{"input": f"w{i}", "output": f"W{i}"} for i in range(20)])
    (tmp_path / "s.yaml").write_text(
        "shots: [1]\ntasks:\n  - name: caps\n    data: caps.jsonl\n    template: 'Word: {input}\\nUpper:'\n"
        "    metric: exact_match\n    examples: 5\n")
    (task,) = load_suite(str(tmp_path / "s.yaml"))
    assert (task.name, task.shots, task.n, task.metric) == ("caps", [1], 5, "exact_match")
    assert task.prefix(task.demos(0, 1, 1)).startswith("Word: ")
    (tmp_path / "bad.yaml").write_text("tasks:\n  - name: caps\n    data: caps.jsonl\n  - name: two\n    data: caps.jsonl\n    metrik: bleu\n")
    p = cli("eval", "--model", "tiny-random-llama", "--suite", tmp_path / "bad.yaml", check=False)
    assert p.returncode == 2 and "bad.yaml:4: field 'metrik'" in p.stderr and "Traceback" not in p.stderr
    write_jsonl(tmp_path / "few.jsonl", [{"input": f"w{i}", "output": f"W{i}"} for i in range(8)])
    (tmp_path / "few.yaml").write_text("tasks:\n  - name: caps\n    data: few.jsonl\n")
    p = cli("eval", "--model", "tiny-random-llama", "--suite", tmp_path / "few.yaml", "--shots", "4", check=False)
    assert p.returncode == 2 and "too few examples" in p.stderr


# ------------------------------------------------- fast engine = simple engine
@pytest.mark.parametrize("prompted", [False, True])
def test_batched_prefix_reuse_matches_one_at_a_time(prompted):
    """Same predictions and scores from the batched shared-prefix engine as from
    one-prompt-at-a-time generate, with and without a soft prompt."""
    from retain.config import TrainConfig
    from retain.methods.soft_prompt import attach_prompt
    from retain.models import load_model

    loaded = load_model("tiny-random-llama")
    model = loaded.model
    if prompted:
        import torch

        model = attach_prompt(model, loaded.tokenizer, TrainConfig(model="tiny-random-llama", prompt_length=5, prompt_init="random"), False)
        with torch.no_grad():  # a prompt that matters
            model.prompt_encoder[model.active_adapter].embedding.weight.normal_(0, 2.0)
    task = _words_task()
    for k in (0, 2):
        fast = evaluate_task(model, loaded.tokenizer, task, k, engine="fast", batch_size=5)
        simple = evaluate_task(model, loaded.tokenizer, task, k, engine="simple")
        assert fast["predictions"] == simple["predictions"]
        assert fast["score"] == simple["score"]
        assert len(set(fast["predictions"])) > 1  # not a degenerate constant output
    lengths = {len(x) for x in fast["inputs"]}
    assert len(lengths) > 1  # several groups of different lengths were batched


def test_shared_prefix_is_found_on_tokens_and_run_once():
    """The cached prefix is the prompts' common run of tokens, whatever text was passed as the prefix
    (a tokenizer may split the few-shot text differently once a query follows it)."""

    from retain.evaluation import icl
    from retain.models import load_model

    assert icl.common_prefix([[1, 2, 3, 4], [1, 2, 3, 5], [1, 2, 9]]) == [1, 2]
    assert icl.common_prefix([[1, 2, 3], [1, 2, 3]], keep=1) == [1, 2]
    assert icl.common_prefix([[4, 5], [6]]) == [] and icl.common_prefix([]) == []
    loaded = load_model("tiny-random-llama")
    demos = "Word: apple\nUpper: APPLE\n\nWord: river\nUpper: RIVER\n\n"
    queries = [f"Word: {w}\nUpper:" for w in ("stone", "cloud", "tiger", "piano")]
    from retain.evaluation.decoding import padding_is_exact

    padding_is_exact(loaded.model)  # the once-per-model check runs before the hook counts
    ran = []
    hook = loaded.model.get_input_embeddings().register_forward_hook(lambda m, a, out: ran.append(a[0].numel()))
    try:
        # no text prefix given: the demonstrations are part of every query, and still computed once
        fast = icl.generate_shared(loaded.model, loaded.tokenizer, "", [demos + q for q in queries], max_new_tokens=3)
    finally:
        hook.remove()
    shared = len(icl.common_prefix([icl._ids(loaded.tokenizer, demos + q) for q in queries], keep=1))
    assert shared >= len(demos) + len("Word: ")
    prompt_tokens = sum(len(icl._ids(loaded.tokenizer, demos + q)) for q in queries)
    assert ran[0] == shared  # the prefix, once
    assert sum(ran) < shared + prompt_tokens - 3 * shared  # never again per prompt (+ at most 3 new tokens a row)
    assert fast == icl.generate_simple(loaded.model, loaded.tokenizer, [demos + q for q in queries], max_new_tokens=3)


def test_loglik_fast_matches_simple_and_picks_choices():
    from retain.models import load_model

    loaded = load_model("tiny-random-llama")
    rows = [{"input": f"item {i}", "output": "yes" if i % 2 else "no", "choices": ["yes", "no", "maybe"]} for i in range(30)]
    task = Task("yn", rows, metric="accuracy", mode="loglik", n=10)
    from retain.evaluation import icl

    test, _ = task.split(0, 2)
    prefix = task.prefix(task.demos(0, 2, 2))
    suffixes = [task.query(x) for x in test]
    choices = [x["choices"] for x in test]
    fast = icl.loglik_shared(loaded.model, loaded.tokenizer, prefix, suffixes, choices, batch_size=4)
    simple = icl.loglik_simple(loaded.model, loaded.tokenizer, [prefix + s for s in suffixes], choices)
    for a, b in zip(fast, simple):
        assert a == pytest.approx(b, abs=1e-3)
        assert all(v < 0 for v in a)
    r = evaluate_task(loaded.model, loaded.tokenizer, task, 2)
    assert all(p in ("yes", "no", "maybe") for p in r["predictions"])


# ------------------------------------------------------ format specialization
def test_format_rate_rules():
    cls = output_space([{"input": "good film", "output": "positive"}, {"input": "bad", "output": "negative"}])
    hits, counted = format_counts(cls, ["Positive!", "paris", "negative review", ""], ["Paris", "Paris", "x", "y"])
    assert (hits, counted) == (2, 4)
    # items whose own reference is in the label space are not counted
    assert format_counts(cls, ["positive"], ["positive"]) == (0, 0)
    fr = output_space([{"input": f"the cat number {i}", "output": f"le chat numéro {i}"} for i in range(30)])
    assert fr.kind == "vocab" and "chat" in fr.vocab and "cat" not in fr.vocab
    assert fr.contains("le chat") and not fr.contains("the cat sat")


# ------------------------------------------------------------- commands
def test_eval_command_on_a_prompt_run_uses_the_paper_rule(tmp_path, task):
    train, val = task
    run = tmp_path / "run"
    cli("train", "--model", "tiny-random-llama", "--method", "prompt", "--train", train, "--validation", val,
        "--output", run, "--max-steps", "2", "--batch-size", "4", "--eval-every", "0", "--prompt-length", "4")
    suite = tmp_path / "suite"
    suite.mkdir()
    write_jsonl(suite / "copy.jsonl", [{"input": f"w{i}", "output": f"w{i}"} for i in range(12)])
    outs = {}
    for rule in ("auto", "on", "off"):
        out = tmp_path / f"{rule}.json"
        cli("eval", "--run", run, "--suite", suite, "--shots", "1", "--examples", "6", "--prompt", rule, "--output", out)
        outs[rule] = json.loads(out.read_text())
    assert outs["auto"]["tuned"]["prompt"] is True and outs["auto"]["tasks"]["copy"]["prompt"] is False
    assert outs["on"]["tasks"]["copy"]["prompt"] is True and outs["off"]["tuned"]["prompt"] is False
    assert outs["auto"]["tuned"]["n"] == 6 and outs["auto"]["tuned"]["name"]
    # the prompt changes what the model says: auto's suite answers are the prompt-free ones
    ex = lambda r: [e["prediction"] for e in outs[r]["tasks"]["copy"]["examples"]["1"]]
    assert ex("auto") == ex("off")
    assert outs["auto"]["format_rate"]["1"] is not None


def test_compare_writes_table_plots_and_resumes(tmp_path, task):
    train, val = task
    out = tmp_path / "cmp"
    suite = tmp_path / "suite"
    suite.mkdir()
    write_jsonl(suite / "copy.jsonl", [{"input": f"w{i}", "output": f"w{i}"} for i in range(12)])
    write_jsonl(suite / "caps.jsonl", [{"input": f"w{i}", "output": f"W{i}"} for i in range(12)])
    args = ["compare", "--model", "tiny-random-llama", "--train", train, "--validation", val, "--suite", suite,
            "--shots", "1", "--examples", "4", "--max-steps", "2", "--stage1-steps", "1", "--stage2-steps", "1",
            "--batch-size", "4", "--eval-every", "0", "--save-every", "0", "--output", out]
    cli(*args, "--methods", "base,full,wise-ft", "--wise-alphas", "0.5")
    res = json.loads((out / "results.json").read_text())
    assert list(res["methods"]) == ["base", "full", "wise-ft-0.5"]
    md = (out / "results.md").read_text()
    assert ("| **Norm. Avg.** |" in md and "(+" in md) or "(-" in md
    assert "format specialization" in md and "| copy" in md and "| caps" in md
    assert "±" in md and "Paired differences" in md and "⚠" in md  # standard errors, paired intervals, n < 30 warned
    assert res["paired"]["1"]["full vs base"]["norm_avg"]["ci"] is not None
    assert res["decoding"]["strategy"] == "greedy" and res["methods"]["full"]["tasks"]["copy"]["units"]["1"][0]["predictions"]
    assert (out / "tradeoff.png").stat().st_size > 1000 and (out / "tasks.png").stat().st_size > 1000
    full_weights = out / "runs" / "full" / "model" / "model.safetensors"
    stamp = full_weights.stat().st_mtime_ns
    # rerun with one more method: full is neither retrained nor re-evaluated
    p = cli(*args, "--methods", "base,full,promot")
    assert "full: already trained" not in p.stdout  # evaluated before: not even loaded
    assert "full: already evaluated" in p.stdout and "training promot" in p.stdout
    assert full_weights.stat().st_mtime_ns == stamp
    res = json.loads((out / "results.json").read_text())
    assert list(res["methods"]) == ["base", "full", "promot"]
    assert res["methods"]["promot"]["tuned"]["prompt"] is True
    # other settings are refused, nothing is touched
    p = cli(*[a if a != "4" else "5" for a in args], "--methods", "base", check=False)
    assert p.returncode == 2 and "different settings" in p.stderr
    assert full_weights.stat().st_mtime_ns == stamp


def test_compare_bad_input_one_line(tmp_path, task):
    train, val = task
    p = cli("compare", "--model", "tiny-random-llama", "--train", train, "--validation", val, "--methods", "base,fancy",
            "--output", tmp_path / "o", check=False)
    assert p.returncode == 2 and "unknown method 'fancy'" in p.stderr and not (tmp_path / "o").exists()
    p = cli("eval", "--model", "tiny-random-llama", "--shots", "1,x", check=False)
    assert p.returncode == 2 and "--shots" in p.stderr


def test_lm_eval_export_reproduces_retain_prompts(tmp_path):
    """The exported lm-eval tasks hold retain's test items and its demonstrations first, in order."""
    import yaml

    from retain.evaluation.lmeval_export import export_suite

    tasks = load_suite("builtin", examples=6)[:2]
    names = export_suite(tasks, 4, tmp_path)
    assert names == ["retain_uppercase", "retain_first_letter"]
    for task, name in zip(tasks, names):
        test, _ = task.split(0, 4)
        rows = [json.loads(line) for line in (tmp_path / f"{name}_test.jsonl").read_text().splitlines()]
        assert [r["input"] for r in rows] == [x["input"] for x in test]
        demos = [json.loads(line) for line in (tmp_path / f"{name}_demos.jsonl").read_text().splitlines()]
        assert [d["input"] for d in demos[:4]] == [d["input"] for d in task.demos(0, 4, 4)]
        text = (tmp_path / f"{name}.yaml").read_text()
        assert "!function retain_lmeval_utils.process_item" in text
        cfg = yaml.safe_load(text.replace("!function ", ""))
        assert cfg["dataset_path"] == "json" and cfg["fewshot_config"]["sampler"] == "first_n"
        assert cfg["doc_to_text"] == "Input: {{input}}\nOutput:" and cfg["fewshot_delimiter"] == "\n\n"


def test_lm_eval_export_scores_sari_against_each_source(tmp_path):
    """The exported scoring module scores a SARI task as retain does: against the item's source (its ``source``
    field, else its input); a source-less call would change the score."""
    import importlib.util

    from retain.evaluation.lmeval_export import export_suite
    from retain.evaluation.metrics import per_item

    rows = [{"input": f"Simplify: the cat sat upon the mat number {i}", "source": f"the cat sat upon the mat number {i}",
             "output": f"the cat sat on mat {i}"} for i in range(12)]
    (name,) = export_suite([Task("simp", rows, metric="sari", n=3)], 1, tmp_path)
    spec = importlib.util.spec_from_file_location("retain_lmeval_utils_t", tmp_path / "retain_lmeval_utils.py")
    utils = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(utils)
    for doc in (json.loads(line) for line in (tmp_path / f"{name}_test.jsonl").read_text().splitlines()):
        pred = "the cat sat on the mat"
        got = utils.process_item(doc, [" " + pred + "\nmore"])["score"]
        assert got == per_item("sari", [pred], [doc["output"]], sources=[doc["source"]])[0]
        assert got != per_item("sari", [pred], [doc["output"]], sources=[doc["input"]])[0]
    doc = {k: v for k, v in doc.items() if k != "source"}
    assert utils.process_item(doc, [pred])["score"] == per_item("sari", [pred], [doc["output"]], sources=[doc["input"]])[0]


def test_compare_trials_and_seeds_enter_the_intervals(tmp_path, task):
    """--trials re-draws demonstrations (and test items), --seeds retrains: every draw is kept as a unit and
    the standard errors and paired intervals come from the hierarchical bootstrap over them."""
    train, val = task
    suite = tmp_path / "suite"
    suite.mkdir()
    write_jsonl(suite / "copy.jsonl", [{"input": f"w{i}", "output": f"w{i}"} for i in range(40)])
    out = tmp_path / "cmp"
    cli("compare", "--model", "tiny-random-llama", "--train", train, "--validation", val, "--suite", suite,
        "--shots", "1", "--examples", "6", "--max-steps", "2", "--batch-size", "4", "--eval-every", "0",
        "--save-every", "0", "--methods", "base,full", "--trials", "2", "--seeds", "2", "--output", out)
    res = json.loads((out / "results.json").read_text())
    units = res["methods"]["full"]["tasks"]["copy"]["units"]["1"]
    assert sorted((u["seed"], u["trial"]) for u in units) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert units[0]["inputs"] != next(u for u in units if u["trial"] == 1)["inputs"]  # test items re-drawn
    assert [u["trial"] for u in res["methods"]["base"]["tasks"]["copy"]["units"]["1"]] == [0, 1]  # base: no training seeds
    assert res["methods"]["full"]["tasks"]["copy"]["summary"]["1"]["method"] == "hierarchical bootstrap"
    assert (out / "runs" / "full@seed1" / "run.json").is_file()
    seeds = [json.loads((out / "runs" / d / "run.json").read_text())["config"]["seed"] for d in ("full", "full@seed1")]
    assert seeds == [0, 1]
    pair = res["paired"]["1"]["full vs base"]["tasks"]["copy"]
    assert pair["ci"][0] <= pair["diff"] <= pair["ci"][1] and pair["mcnemar_p"] is None  # several draws: no McNemar
    assert res["trials"] == 2 and res["seeds"] == 2


def test_compare_directories_written_before_new_options_still_resume():
    """A training option added to retain later counts as its default when an older compare.json lacks it,
    so such a directory resumes; a real change is named down to the option."""
    import dataclasses

    from retain.config import TrainConfig
    from retain.workflows.compare import _comparable, _first_difference

    now = {"model": "m", "train_options": {k: v for k, v in dataclasses.asdict(TrainConfig()).items() if k != "output"}}
    older = {"model": "m", "train_options": {k: v for k, v in now["train_options"].items() if k not in ("dtype", "attn_implementation")}}
    assert _first_difference(_comparable(older), _comparable(now)) is None
    changed = {**now, "train_options": {**now["train_options"], "dtype": "bfloat16", "eval_batch_size": 64}}
    assert _first_difference(_comparable(older), _comparable(changed)) == ("train_options.dtype", "float32", "bfloat16")


def test_compare_defaults_to_1_and_4_shots_with_beams_and_lines(tmp_path, task):
    """compare: 1- and 4-shot by default (a table and plots for each), --num-beams recorded and used for checkpoint
    selection, lines from the same full run as wise-ft."""
    train, val = task
    out = tmp_path / "cmp"
    suite = tmp_path / "suite"
    suite.mkdir()
    write_jsonl(suite / "copy.jsonl", [{"input": f"w{i}", "output": f"w{i}"} for i in range(12)])
    cli("compare", "--model", "tiny-random-llama", "--train", train, "--validation", val, "--suite", suite, "--examples", "3",
        "--max-steps", "2", "--batch-size", "4", "--eval-every", "1", "--save-every", "0", "--tuned-examples", "4",
        "--num-beams", "2", "--methods", "base,full,wise-ft,lines", "--wise-alphas", "0.5", "--lines-alphas", "0.5",
        "--output", out)
    res = json.loads((out / "results.json").read_text())
    assert res["shots"] == [1, 4] and list(res["methods"]) == ["base", "full", "wise-ft-0.5", "lines-0.5-0.5"]
    assert res["decoding"]["num_beams"] == 2 and res["methods"]["lines-0.5-0.5"]["decoding"]["num_beams"] == 2
    assert json.loads((out / "compare.json").read_text())["decoding"]["num_beams"] == 2
    assert json.loads((out / "runs" / "full" / "run.json").read_text())["config"]["num_beams"] == 2
    assert all(set(m["norm_avg"]) == {"1", "4"} for m in res["methods"].values())
    md = (out / "results.md").read_text()
    assert "## 1-shot" in md and "## 4-shot" in md and "beam search (2 beams)" in md
    assert all((out / f).stat().st_size > 1000 for f in ("tradeoff.png", "tasks.png", "tradeoff-1shot.png", "tasks-1shot.png"))
    assert not (out / "runs" / "lines-0.5-0.5").exists()  # post-hoc: no run of its own


def test_demo_reports_1_and_4_shots(tmp_path):
    """retain demo's code path on a tiny model: both shot counts in the results and in what it prints."""
    from retain.workflows.demo import demo
    from retain.workflows.options import DemoOptions

    lines = []
    res = demo(DemoOptions(model="tiny-random-llama", output=str(tmp_path / "demo"), methods="base,full", steps=1, examples=2),
               log=lines.append)
    assert res["shots"] == [1, 4] and set(res["methods"]["full"]["norm_avg"]) == {"1", "4"}
    text = "\n".join(lines)
    assert "1-shot" in text and "4-shot" in text and text.count("| **Norm. Avg.**") >= 2
