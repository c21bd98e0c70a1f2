"""retain continual taking work from earlier runs (retain.continual.reuse): arrow over a switchcit registry's
adapters (--adapters-from) and the base model's scores of another run (--base-scores) give the figures of a run
that did the work itself; mismatches are refused in one line, before anything is written."""

import json
import shutil

import pytest
from tests.conftest import cli
from tests.test_continual import make_task

from retain.errors import RetainError

# two tasks (R, BWT, FWT defined), a 2-item general suite per built-in task, no best-weights selection
OPTS = dict(model="tiny-random-llama", max_steps=2, batch_size=4, eval_samples=3, max_new_tokens=3, eval_every=0, retain_min=4,
            switch_epochs=2, general_examples=2)
FLAGS = ("--model", "tiny-random-llama", "--max-steps", 2, "--batch-size", 4, "--eval-samples", 3, "--max-new-tokens", 3,
         "--eval-every", 0, "--retain-min", 4, "--switch-epochs", 2, "--general-examples", 2)
SAME = ("R", "R_se", "stages", "tasks", "n", "details", "routing", "summary", "transfer", "constraint", "decoding")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("reuse-data")
    return {name: make_task(root, name) for name in ("rev", "up", "dbl")}


def _run(out, tasks, **kw):
    from retain.continual.config import ContinualConfig
    from retain.workflows.continual import run_continual

    run_continual(ContinualConfig(output=str(out), **{**OPTS, **kw}), [str(t) for t in tasks], progress=lambda m: None)
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data):
    """switchcit; arrow training its adapters; arrow taking switchcit's adapters and base scores."""
    root = tmp_path_factory.mktemp("reuse")
    tasks = [data["rev"], data["up"]]
    out = {"switchcit": _run(root / "switchcit", tasks, method="switchcit"),
           "arrow": _run(root / "arrow", tasks, method="arrow")}
    out["reused"] = _run(root / "reused", tasks, method="arrow", adapters_from=str(root / "switchcit"),
                         base_scores=str(root / "switchcit" / "results.json"))
    return root, out


def _timeless(x):
    """A results value without its wall times (the only figures that differ between identical runs)."""
    if isinstance(x, dict):
        return {k: _timeless(v) for k, v in x.items() if k != "wall_time_s"}
    if isinstance(x, list):
        return [_timeless(v) for v in x]
    return x


def test_arrow_over_a_registry_and_reused_base_equal_the_run_that_did_it_all(runs):
    root, res = runs
    trained, reused = res["arrow"], res["reused"]
    for key in SAME:
        assert reused[key] == trained[key], key
    assert _timeless(reused["general"]) == _timeless(trained["general"])  # base, every stage's delta and its interval
    assert reused["summary"]["fwt"] is not None and reused["summary"]["fwt_ci"] is not None
    assert reused["general"]["stages"][-1]["delta"]["ci"] is not None
    for task in ("rev", "up"):  # the adapters are the registry's, byte for byte
        a = (root / "reused" / "adapters" / task / "adapter_model.safetensors").read_bytes()
        assert a == (root / "switchcit" / "adapters" / task / "adapter_model.safetensors").read_bytes()
    assert reused["training"] == [] and len(trained["training"]) == 2  # nothing trained
    src = reused["adapters_from"]
    assert src["registry"] == str(root / "switchcit") and set(src["adapters"]) == {"rev", "up"}
    assert [r["stage"] for r in src["training"]] == ["rev", "up"]
    assert reused["base_evaluation"]["from"] == str(root / "switchcit" / "results.json")
    assert reused["base_evaluation"]["key"] == trained["base_evaluation"]["key"] and trained["base_evaluation"]["from"] is None
    info = json.loads((root / "switchcit" / "registry.json").read_text())
    assert [t["training"]["max_steps"] for t in info["tasks"]] == [2, 2] and info["tasks"][0]["training"]["lr"] == 2e-4


def test_a_baseline_reusing_base_scores_writes_the_same_figures(runs, data, tmp_path):
    root, _ = runs
    tasks = [data["rev"], data["up"]]
    own = _run(tmp_path / "own", tasks, method="sequential")
    lent = _run(tmp_path / "lent", tasks, method="sequential", base_scores=str(root / "arrow"))  # a run folder will do
    for key in SAME:
        assert lent.get(key) == own.get(key), key
    assert _timeless(lent["general"]) == _timeless(own["general"])
    assert own["summary"]["fwt_ci"] is not None and own["summary"]["bwt_ci"] is not None


def _refused(args, match, tmp_path):
    out = tmp_path / "out"
    proc = cli("continual", *args, "--output", out, check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert match in proc.stderr, proc.stderr
    assert not out.exists() and not list(tmp_path.glob(".out*"))
    return proc.stderr


def test_mismatched_registry_refused(runs, data, tmp_path):
    root, _ = runs
    reg = root / "switchcit"
    arrow = ("--method", "arrow", "--tasks", data["rev"], data["up"], *FLAGS, "--adapters-from", reg)
    _refused(arrow[:4] + FLAGS + ("--method", "sequential", "--adapters-from", reg), "applies to --method arrow, not sequential", tmp_path)
    err = _refused(arrow + ("--max-steps", 3), "task 'rev''s adapter was trained with other options: max_steps (2 there, 3 here)", tmp_path)
    assert "drop --adapters-from" in err
    _refused(arrow + ("--lora-r", 4), "lora_r (8 there, 4 here)", tmp_path)
    _refused(arrow + ("--lr", "1e-3"), "lr (0.0002 there, 0.001 here)", tmp_path)
    _refused(("--method", "arrow", "--tasks", data["rev"], data["dbl"], *FLAGS, "--adapters-from", reg),
             "holds no adapter for task 'dbl'", tmp_path)
    config = tmp_path / "tasks.json"
    config.write_text(json.dumps({"up": {"template": "Q: {input}"}}))
    _refused(arrow + ("--task-config", config), "task 'up' was learnt with other task settings: template", tmp_path)
    _refused(arrow[:-1] + (tmp_path,), "is not a SwitchCIT registry", tmp_path)
    other = shutil.copytree(reg, tmp_path / "changed")
    (other / "adapters" / "up" / "adapter_config.json").write_text("{}")
    _refused(arrow[:-1] + (other,), "sha256 does not match", tmp_path)
    # options that do not shape an adapter are free: Arrow's own, the general suite, the output
    ok = cli("continual", *arrow, "--arrow-top-k", 1, "--general-suite", "none", "--output", tmp_path / "ok")
    assert ok.returncode == 0


def test_mismatched_base_scores_refused(runs, data, tmp_path):
    root, _ = runs
    base = root / "switchcit" / "results.json"
    seq = ("--method", "sequential", "--tasks", data["rev"], data["up"], *FLAGS, "--base-scores", base)
    _refused(seq + ("--eval-samples", 2), "task 'rev' was scored with other settings or data: eval_samples (3 there, 2 here)", tmp_path)
    _refused(seq + ("--general-shots", 1), "its general suite differs: shots (4 there, 1 here)", tmp_path)
    _refused(seq + ("--eval-batch-size", 2), "eval_batch_size (16 there, 2 here)", tmp_path)
    _refused(("--method", "sequential", "--tasks", data["rev"], data["dbl"], *FLAGS, "--base-scores", base),
             "holds no base scores for task 'dbl'", tmp_path)
    changed = shutil.copytree(data["up"], tmp_path / "data" / "up")
    rows = (changed / "validation.jsonl").read_text().splitlines()
    (changed / "validation.jsonl").write_text("\n".join([rows[1], rows[0], *rows[2:]]) + "\n")
    _refused(("--method", "sequential", "--tasks", data["rev"], changed, *FLAGS, "--base-scores", base),
             "task 'up' was scored with other settings or data: validation", tmp_path)
    lender = json.loads(base.read_text())
    lender["base_evaluation"]["key"]["tokenizer"] = "0" * 64  # same weights, another tokenizer
    (tmp_path / "lender.json").write_text(json.dumps(lender))
    _refused(seq[:-1] + (tmp_path / "lender.json",), "its base model was scored with other settings: tokenizer (", tmp_path)
    _refused(seq[:-1] + (tmp_path / "nothing.json",), "no such file", tmp_path)
    (tmp_path / "other.json").write_text(json.dumps({"R": []}))
    _refused(seq[:-1] + (tmp_path / "other.json",), "records no base evaluation", tmp_path)


def test_options_are_recorded_per_task_when_a_registry_is_extended(runs, data, tmp_path):
    """--resume-from adds a task trained with other options: the registry's config is the last run's, its per-task
    records say what each adapter was trained with, and --adapters-from reads those."""
    from retain.continual.config import ContinualConfig
    from retain.continual.reuse import adapters_source
    from retain.continual.tasks import load_tasks

    root, _ = runs
    reg = shutil.copytree(root / "switchcit", tmp_path / "reg")
    _run(reg, [data["dbl"]], method="switchcit", resume_from=str(reg), max_steps=3)
    info = json.loads((reg / "registry.json").read_text())
    assert info["config"]["max_steps"] == 3 and [t["training"]["max_steps"] for t in info["tasks"]] == [2, 2, 3]
    fingerprint = info["base"]["fingerprint"]

    def check(names, **kw):
        tasks = load_tasks([str(data[n]) for n in names], {})
        for t in tasks:
            t.max_new_tokens = next(s["max_new_tokens"] for s in info["tasks"] if s["name"] == t.name)
        return adapters_source(ContinualConfig(method="arrow", adapters_from=str(reg), **{**OPTS, **kw}), tasks, fingerprint, 1)

    assert set(check(["rev", "up"])["adapters"]) == {"rev", "up"}
    assert set(check(["dbl"], max_steps=3)["adapters"]) == {"dbl"}
    with pytest.raises(RetainError, match="task 'dbl''s adapter was trained with other options: max_steps"):
        check(["rev", "up", "dbl"])


def test_tokenizer_fingerprint_tells_tokenizers_apart():
    """The base key's tokenizer sha256: equal for the same tokenizer loaded twice, different when only the special
    tokens it adds differ (a BOS) and across families."""
    from retain.models import load_model, tiny_tokenizer
    from retain.tokens import tokenizer_fingerprint

    assert tokenizer_fingerprint(tiny_tokenizer()) == tokenizer_fingerprint(tiny_tokenizer())
    assert tokenizer_fingerprint(tiny_tokenizer()) != tokenizer_fingerprint(tiny_tokenizer(bos=True))
    assert tokenizer_fingerprint(tiny_tokenizer(bos=True)) != tokenizer_fingerprint(tiny_tokenizer(eos=True))
    fams = {spec: tokenizer_fingerprint(load_model(spec).tokenizer) for spec in ("tiny-random-llama", "tiny-random-t5")}
    assert len(set(fams.values())) == 2
