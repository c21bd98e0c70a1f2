"""Bad input through the CLI, as a user meets it.

Every case: exit code 2, exactly one line on stderr naming the file, line and
field (or the flag), no traceback, and no output directory (nor its hidden
staging sibling) left behind.
"""

import json
import os
import shutil

import pytest
import torch
from tests.conftest import cli, sentiment_rows, write_jsonl


def train_args(out, train, *extra, model="tiny-random-llama", method="full"):
    return ["train", "--model", model, "--method", method, "--train", train, "--output", out,
            "--max-steps", 2, "--stage1-steps", 1, "--stage2-steps", 1, "--batch-size", 4, "--eval-every", 0, *extra]


def assert_clean_failure(proc, *needles, out=None):
    err = proc.stderr.strip()
    assert proc.returncode == 2, f"exit {proc.returncode}, stderr:\n{proc.stderr[-2000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(err.splitlines()) == 1, f"expected one line on stderr, got:\n{proc.stderr}"
    for n in needles:
        assert n in err, f"{n!r} not in {err!r}"
    if out is not None:
        assert not out.exists(), f"{out} left behind"
        assert not (out.parent / f".{out.name}.partial").exists(), "staging dir left behind"


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    d = tmp_path_factory.mktemp("good")
    return write_jsonl(d / "train.jsonl", sentiment_rows(8))


@pytest.fixture(scope="module")
def prompt_run(tmp_path_factory):
    """A prompt-tuning run on a base model saved in a local directory."""
    from retain.models import load_model

    d = tmp_path_factory.mktemp("prompt-run")
    tiny = load_model("tiny-random-llama")
    tiny.model.save_pretrained(d / "base")
    tiny.tokenizer.save_pretrained(d / "base")
    train = write_jsonl(d / "train.jsonl", sentiment_rows(8))
    cli(*["train", "--model", d / "base", "--method", "prompt", "--train", train, "--output", d / "run",
         "--max-steps", 2, "--batch-size", 4, "--eval-every", 0, "--prompt-length", 2])
    return d


# ------------------------------------------------------------- data files
def test_malformed_json_line(tmp_path):
    f = tmp_path / "train.jsonl"
    f.write_text('{"input": "a", "output": "b"}\n{"input": "a", "output": "b"}\n{"input": "a", "output": \n')
    assert_clean_failure(cli(*train_args(tmp_path / "o", f), check=False), "train.jsonl:3", "malformed JSON", out=tmp_path / "o")


def test_missing_output_field(tmp_path):
    f = write_jsonl(tmp_path / "train.jsonl", [{"input": "a", "output": "b"}, {"input": "a"}])
    assert_clean_failure(cli(*train_args(tmp_path / "o", f), check=False), "train.jsonl:2", "field 'output'", out=tmp_path / "o")


def test_non_string_field(tmp_path):
    f = write_jsonl(tmp_path / "train.jsonl", [{"input": 3, "output": "b"}])
    assert_clean_failure(cli(*train_args(tmp_path / "o", f), check=False), "train.jsonl:1", "field 'input'", "string", out=tmp_path / "o")


def test_line_that_is_not_an_object(tmp_path):
    f = tmp_path / "train.jsonl"
    f.write_text('{"input": "a", "output": "b"}\n["input", "output"]\n')
    assert_clean_failure(cli(*train_args(tmp_path / "o", f), check=False), "train.jsonl:2", "JSON object", out=tmp_path / "o")


def test_empty_file(tmp_path):
    f = tmp_path / "train.jsonl"
    f.write_text("\n\n")
    assert_clean_failure(cli(*train_args(tmp_path / "o", f), check=False), "--train", "train.jsonl", "no examples", out=tmp_path / "o")


def test_non_utf8_bytes(tmp_path):
    f = tmp_path / "train.jsonl"
    f.write_bytes(b'{"input": "a", "output": "b"}\n{"input": "caf\xe9", "output": "b"}\n')
    assert_clean_failure(cli(*train_args(tmp_path / "o", f), check=False), "train.jsonl:2", "UTF-8", out=tmp_path / "o")


def test_directory_given_as_file(tmp_path):
    (tmp_path / "data").mkdir()
    assert_clean_failure(cli(*train_args(tmp_path / "o", tmp_path / "data"), check=False), "--train", "is a directory", out=tmp_path / "o")


def test_missing_validation_file(tmp_path, good):
    proc = cli(*train_args(tmp_path / "o", good, "--validation", tmp_path / "nope.jsonl"), check=False)
    assert_clean_failure(proc, "--validation", "nope.jsonl", out=tmp_path / "o")


def test_template_field_missing_in_data(tmp_path, good):
    proc = cli(*train_args(tmp_path / "o", good, "--template", "{premise} {input}"), check=False)
    assert_clean_failure(proc, "train.jsonl:1", "field 'premise'", out=tmp_path / "o")


# ------------------------------------------------------------------ models
def test_nonexistent_model_path(tmp_path, good):
    proc = cli(*train_args(tmp_path / "o", good, model=tmp_path / "no-such-model"), check=False)
    assert_clean_failure(proc, "--model", "no-such-model", out=tmp_path / "o")


def test_model_directory_without_config(tmp_path, good):
    (tmp_path / "empty-model").mkdir()
    proc = cli(*train_args(tmp_path / "o", good, model=tmp_path / "empty-model"), check=False)
    assert_clean_failure(proc, "--model", "empty-model", out=tmp_path / "o")


def test_corrupted_gguf(tmp_path, good):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"GGUF" + os.urandom(256))
    assert_clean_failure(cli(*train_args(tmp_path / "o", good, model=bad), check=False), "--model", "model.gguf", out=tmp_path / "o")


def test_truncated_gguf(tmp_path, good):
    from tests.test_gguf import write_tiny_llama_gguf

    from retain.models import load_model

    tiny = load_model("tiny-random-llama")
    full = tmp_path / "full.gguf"
    write_tiny_llama_gguf(full, tiny.model, tiny.tokenizer)
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(full.read_bytes()[:5000])
    assert_clean_failure(cli(*train_args(tmp_path / "o", good, model=cut), check=False), "--model", "cut.gguf", out=tmp_path / "o")


def test_pickle_checkpoint_refused_unless_allowed(tmp_path, good):
    from retain.models import load_model

    tiny = load_model("tiny-random-llama")
    d = tmp_path / "pickled"
    tiny.model.config.save_pretrained(d)
    tiny.tokenizer.save_pretrained(d)
    torch.save(tiny.model.state_dict(), d / "pytorch_model.bin")
    proc = cli(*train_args(tmp_path / "o", good, model=d), check=False)
    assert_clean_failure(proc, "--model", "pytorch_model.bin", "--allow-pickle", out=tmp_path / "o")
    cli(*train_args(tmp_path / "o", good, "--allow-pickle", model=d))  # the same model loads when allowed
    assert (tmp_path / "o" / "model" / "model.safetensors").is_file()


# ------------------------------------------------------------------- flags
@pytest.mark.parametrize("flags,needle", [
    (["--prompt-length", "0"], "--prompt-length must be positive"),
    (["--prompt-length", "-3"], "--prompt-length must be positive"),
    (["--max-steps", "0"], "--max-steps must be positive"),
    (["--lr", "-1"], "--lr must be positive"),
    (["--method", "magic"], "--method"),
    (["--template", "Review: {text}"], "--template"),
    (["--template", "{input.__class__}"], "--template"),
    (["--metric", "perplexity"], "--metric"),
    (["--resume"], "--resume"),
])
def test_bad_flags(tmp_path, good, flags, needle):
    proc = cli(*train_args(tmp_path / "o", good, *flags, method="prompt"), check=False)
    assert_clean_failure(proc, needle, out=tmp_path / "o")


def test_malformed_config_file(tmp_path, good):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("method: promot\nmax_steps: [1, 2\n")
    assert_clean_failure(cli(*train_args(tmp_path / "o", good, "--config", cfg), check=False), "--config", "run.yaml", out=tmp_path / "o")


def test_unknown_option_in_config_file(tmp_path, good):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("method: promot\nlearning_rat: 0.1\n")
    assert_clean_failure(cli(*train_args(tmp_path / "o", good, "--config", cfg), check=False), "learning_rat", out=tmp_path / "o")


# ----------------------------------------------------------------- outputs
def test_non_run_output_dir_refused_unless_overwrite(tmp_path, good):
    out = tmp_path / "precious"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    proc = cli(*train_args(out, good), check=False)
    assert_clean_failure(proc, "--output", "precious", "--overwrite")
    assert (out / "notes.txt").read_text() == "mine"
    cli(*train_args(out, good, "--overwrite"))
    assert (out / "run.json").is_file() and not (out / "notes.txt").exists()


def test_unwritable_output_dir(tmp_path, good):
    out = "/proc/retain-cannot-write-here/run"  # not writable even by root
    assert_clean_failure(cli(*train_args(out, good), check=False), "--output", "/proc")


# ------------------------------------------------------------ artifacts
def test_not_a_run_directory(tmp_path):
    (tmp_path / "x").mkdir()
    assert_clean_failure(cli("generate", "--run", tmp_path / "x", "hello", check=False), "--run", "not a retain run")


def test_run_used_with_a_different_base_model(tmp_path, prompt_run):
    from retain.models import load_model

    d = tmp_path / "copy"
    shutil.copytree(prompt_run, d)
    info = json.loads((d / "run" / "run.json").read_text())
    assert info["base"]["spec"] == str(prompt_run / "base")
    # the base directory the run points to now holds different weights
    other = load_model("tiny-random-llama").model
    with torch.no_grad():
        other.model.embed_tokens.weight.mul_(1.5)
    other.save_pretrained(prompt_run / "base")
    try:
        proc = cli("generate", "--run", prompt_run / "run", "the film was good", check=False)
        assert_clean_failure(proc, "does not match this base model")
    finally:
        shutil.rmtree(prompt_run / "base")
        shutil.copytree(d / "base", prompt_run / "base")
    assert cli("generate", "--run", prompt_run / "run", "the film was good").returncode == 0


def test_tampered_adapter_file(tmp_path, prompt_run):
    d = tmp_path / "run"
    shutil.copytree(prompt_run / "run", d)
    f = d / "prompt" / "adapter_model.safetensors"
    data = bytearray(f.read_bytes())
    data[-1] ^= 0x01
    f.write_bytes(bytes(data))
    proc = cli("generate", "--run", d, "the film was good", check=False)
    assert_clean_failure(proc, "adapter_model.safetensors", "sha256")


# ------------------------------------------------- documented non-errors
def test_inputs_longer_than_the_context_are_cut_from_the_left(tmp_path):
    """Documented: prompts longer than --max-length (or the model's context) are cut from
    the left so the output is kept; the count is in run.json and on stderr."""
    rows = [{"input": "word " * 400, "output": "positive"}] + sentiment_rows(7)
    f = write_jsonl(tmp_path / "train.jsonl", rows)
    proc = cli(*train_args(tmp_path / "o", f, "--max-length", 64))
    info = json.loads((tmp_path / "o" / "run.json").read_text())
    assert info["examples"]["truncated"] == 1
    assert "cut from the left" in proc.stderr


# -------------------------------------------------------------- registries
@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    from tests.test_continual import FAST, make_task

    root = tmp_path_factory.mktemp("bad-registry")
    tasks = [make_task(root, "rev"), make_task(root, "up")]
    out = root / "reg"
    cli("continual", "--model", "tiny-random-llama", "--method", "switchcit", "--tasks", *tasks, "--output", out, *FAST)
    return out


def test_registry_whose_manifest_does_not_match_its_adapters(tmp_path, registry):
    reg = tmp_path / "reg"
    shutil.copytree(registry, reg)
    shutil.rmtree(reg / "adapters" / "up")  # the manifest still lists this adapter's files
    proc = cli("generate", "--registry", reg, "Shout this word loudly: apple !!", check=False)
    assert_clean_failure(proc, "adapters/up", "manifest.json")


def test_tampered_registry_adapter_file(tmp_path, registry):
    reg = tmp_path / "reg"
    shutil.copytree(registry, reg)
    f = reg / "adapters" / "rev" / "adapter_model.safetensors"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF
    f.write_bytes(bytes(data))
    proc = cli("generate", "--registry", reg, "Reverse the letters of apple ==>", check=False)
    assert_clean_failure(proc, "adapter_model.safetensors", "sha256")


def test_switch_layer_out_of_range(tmp_path):
    from tests.test_continual import FAST, make_task

    tasks = [make_task(tmp_path, "rev")]
    out = tmp_path / "reg"
    proc = cli("continual", "--model", "tiny-random-llama", "--method", "switchcit", "--tasks", *tasks, "--output", out,
               "--switch-layer", "9", *FAST, check=False)
    assert_clean_failure(proc, "--switch-layer", "'9'", "1..2", out=out)
