"""Ready for a GPU: the GPU tests, then bf16 training throughput, MFU, peak memory and evaluation throughput.

On a machine with a CUDA GPU, with whatever torch/transformers/peft it has (nothing is downloaded), from the
repository root:

    python bench/gpu_check.py OUTDIR [--budget-s 450 --batch-size 16 --seq-len 512 --warmup 3 --steps 10]
    python bench/gpu_check.py --smoke OUTDIR    # CPU, tiny models, seconds (tests/test_gpu.py runs it)

In order, within ``--budget-s`` (whatever no longer fits is skipped, with the reason, in the JSON):

1. ``pytest -m gpu`` in a subprocess with a time limit (tests/test_gpu.py: bf16 and fp16 training, both
   evaluator engines, flash-attention 2, on CUDA): pass / fail / skip counts and each test's outcome;
2. FSDP2 through accelerate (``fsdp_check``): the FSDP tests of tests/test_ddp.py, one process on one GPU, two on two or more;
3. the matmul rate in the compute dtype (bf16; float32 in the smoke run), square products timed between CUDA
   synchronisations, before and after training (MFU is taken against the higher);
4. for two Llama models built from a config with random weights, the embedded model's architecture
   (SmolLM2-135M) and a ~1B one (Llama-3.2-1B's dimensions), each through retain's engine as ``retain train``
   runs a stage (``methods.wrap``, then ``engine.run_stage`` per stage of the registered method): full
   fine-tuning, ProMoT stage 1 and stage 2, LoRA. Per measurement: real tokens/s over ``--steps`` steps after
   ``--warmup`` steps (timed at the Trainer's per-step log, after a CUDA synchronisation), model FLOP/s, MFU
   against the measured matmul rate, and the stage's peak memory (``torch.cuda.max_memory_allocated``, reset
   as each stage starts; on a CPU the process's peak RSS). Then evaluation throughput: ``evaluate_tuned``
   (fast engine) on a synthetic classification task, in bfloat16 weights (float32 in the smoke run).

Training rows are synthetic: random token ids, ``--seq-len`` tokens each, the loss on the last 8, so no
batch holds padding. Evaluation text goes through retain's byte-level tokenizer (``retain.models.tiny_tokenizer``:
ids below 260, valid in any vocabulary), so no tokenizer has to be downloaded.
``--precision mixed`` (default): float32 weights, bf16 autocast (``--mixed-precision bf16``, which
docs/PERFORMANCE.md recommends for full fine-tuning); ``--precision bf16``: bfloat16 weights (``--dtype bfloat16``);
``--precision fp32`` (the smoke run's): float32, and the float32 matmul rate as the reference.
OUTDIR/gpu_check.json is rewritten after every step, so a run cut short keeps what it measured.

Last line: the MFU of full fine-tuning of each model. A measurement that raises (out of memory, a kernel the GPU
lacks) is recorded as its error and the run goes on; exit status 1 when a test or a measurement failed.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # retain from this checkout, installed or not
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

EMBEDDED = {  # SmolLM2-135M-Instruct's config as retain.models loads it from the embedded GGUF
    "vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536, "num_hidden_layers": 30, "num_attention_heads": 9,
    "num_key_value_heads": 3, "head_dim": 64, "max_position_embeddings": 8192, "rope_theta": 100000.0, "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True, "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 2}
LLAMA_1B = {  # Llama-3.2-1B's dimensions (1.24B parameters, tied embeddings), plain RoPE
    "vocab_size": 128256, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16, "num_attention_heads": 32,
    "num_key_value_heads": 8, "head_dim": 64, "max_position_embeddings": 131072, "rope_theta": 500000.0, "rms_norm_eps": 1e-5,
    "tie_word_embeddings": True, "bos_token_id": 128000, "eos_token_id": 128001}
TINY = {"vocab_size": 260, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "max_position_embeddings": 512, "tie_word_embeddings": True, "bos_token_id": 1,
        "eos_token_id": 2, "pad_token_id": 0}
MODELS = {"embedded": ("SmolLM2-135M architecture (the embedded model's), random weights", EMBEDDED),
          "1b": ("Llama-3.2-1B dimensions, random weights", LLAMA_1B)}
SMOKE_MODELS = {"embedded": ("tiny Llama, random weights (smoke)", TINY),
                "1b": ("tiny Llama twice as wide, random weights (smoke)", {**TINY, "hidden_size": 64, "intermediate_size": 128})}
METHODS = ("full", "promot", "lora")  # registered methods; a key per stage: full, promot_stage1, promot_stage2, lora
# --precision: (--dtype, --mixed-precision, compute dtype: of the matmul rate and of evaluation); fp32 is the smoke
# run's (a CPU without bf16 arithmetic runs bf16 several times slower)
PRECISIONS = {"mixed": ("float32", "bf16", "bfloat16"), "bf16": ("bfloat16", "no", "bfloat16"), "fp32": ("float32", "no", "float32")}
ANSWER_TOKENS = 8  # labelled tokens at the end of each synthetic training row
TEMPLATE = "Review: {input}\nSentiment:"
FLOPS_FORMULA = ("flops per step = k*(N - E - H')*t + k*H*l: t tokens processed (real + soft-prompt tokens), l positions "
                 "whose next token is a label (retain applies the LM head only there), N parameters (each tensor once), E the "
                 "input embedding, H the LM head (H' = H if untied, 0 if tied); k = 6 where the base weights train (full, "
                 "promot stage 2: forward 2, backward 4), k = 4 where they are frozen and the gradient still flows to the input "
                 "(promot stage 1, lora); attention's sequence-length terms are not counted (a conservative MFU)")
RESERVE_S = 20  # a measurement starts only with this much of the budget left


class Clock:
    def __init__(self, budget_s: float):
        self.start, self.budget = time.perf_counter(), budget_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.budget - self.elapsed()

    def skip_reason(self, what: str) -> str | None:
        left = self.left()
        return None if left >= RESERVE_S else f"time budget: {max(left, 0):.0f} s of {self.budget:.0f} s left before {what}"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("outdir", help="folder for gpu_check.json (and the GPU tests' JUnit XML)")
    ap.add_argument("--smoke", action="store_true", help="tiny models, a few steps, runs on a CPU in seconds")
    ap.add_argument("--budget-s", type=float, default=450, help="wall-clock budget for everything (default 450: 8 minutes with room)")
    ap.add_argument("--tests-timeout-s", type=float, default=200, help="limit for the pytest -m gpu subprocess")
    ap.add_argument("--no-tests", action="store_true", help="skip pytest -m gpu")
    ap.add_argument("--precision", choices=tuple(PRECISIONS), default=None, help="default mixed; smoke fp32")
    ap.add_argument("--batch-size", type=int, default=None, help="rows per step (default 16; smoke 4)")
    ap.add_argument("--seq-len", type=int, default=None, help="tokens per row (default 512; smoke 32)")
    ap.add_argument("--warmup", type=int, default=None, help="steps before the timed ones (default 3; smoke 1)")
    ap.add_argument("--steps", type=int, default=None, help="timed steps (default 10; smoke 2)")
    ap.add_argument("--prompt-length", type=int, default=20, help="soft-prompt tokens (docs/PERFORMANCE.md's figures: 20)")
    ap.add_argument("--eval-examples", type=int, default=None, help="evaluation items (default 256; smoke 8)")
    ap.add_argument("--matmul-n", type=int, default=None, help="square matmul size (default 8192; smoke 256)")
    ap.add_argument("--no-packing", action="store_true", help="pad instead of packing (retain's --no-packing)")
    args = ap.parse_args(argv)
    small = {"precision": "fp32", "batch_size": 4, "seq_len": 32, "warmup": 1, "steps": 2, "eval_examples": 8, "matmul_n": 256}
    full = {"precision": "mixed", "batch_size": 16, "seq_len": 512, "warmup": 3, "steps": 10, "eval_examples": 256, "matmul_n": 8192}
    for k, v in (small if args.smoke else full).items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    return args


def write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


# ------------------------------------------------------------------ tests
def junit_counts(path: Path) -> dict:
    """Counts and each test's outcome from pytest's JUnit XML."""
    cases, counts = {}, {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    for case in ET.parse(path).getroot().iter("testcase"):
        name = f"{case.get('classname', '')}::{case.get('name')}"
        outcome = "passed"
        for tag, label in (("failure", "failed"), ("error", "errors"), ("skipped", "skipped")):
            node = case.find(tag)
            if node is not None:
                outcome = label
                cases[name] = f"{label}: " + ((node.get("message") or "").splitlines() or [""])[0][:300]
                break
        counts[outcome] += 1
        cases.setdefault(name, "passed")
    return {**counts, "total": sum(counts.values()), "cases": cases}


class Pytest:
    """``python -m pytest SELECTION`` from the repository root, started now, within the budget; ``wait()``: its counts.
    Its JUnit XML is JUNIT and its output JUNIT with the suffix .log."""

    def __init__(self, selection: list[str], junit: Path, clock: Clock, limit_s: float):
        self.cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--continue-on-collection-errors",
                    f"--junitxml={junit}", *selection]  # a test module this machine cannot import must not stop the rest
        self.junit, self.log, self.limit, self.proc = junit, junit.with_suffix(".log"), min(limit_s, clock.left() - RESERVE_S), None
        self.done = {"command": " ".join(self.cmd[1:])}
        if importlib.util.find_spec("pytest") is None:
            self.done["not_run"] = "pytest is not installed here"
        elif self.limit <= 0:
            self.done["not_run"] = clock.skip_reason("the tests") or f"time limit {limit_s} s"
        else:
            env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
            junit.unlink(missing_ok=True)
            self.start = time.perf_counter()
            with open(self.log, "w") as log:  # a file, not a pipe: a long output cannot block the child
                self.proc = subprocess.Popen(self.cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
                                             start_new_session=True)  # its own process group: killed with its children

    def wait(self) -> dict:
        if self.proc is None:
            return self.done
        try:
            self.proc.wait(timeout=max(self.start + self.limit - time.perf_counter(), 0.1))
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        out = self.log.read_text(errors="replace")
        if self.proc.returncode < 0:  # killed at the time limit
            self.done.update(timed_out=True, seconds=round(self.limit, 1), output_tail=out[-3000:])
        else:
            self.done.update(returncode=self.proc.returncode, seconds=round(time.perf_counter() - self.start, 1))
            if self.junit.is_file():
                self.done.update(junit_counts(self.junit))
            if self.proc.returncode not in (0, 5):  # 5: no test selected
                self.done["output_tail"] = out[-3000:]
        self.proc = None
        return self.done


def fsdp_check(gpus: int, clock: Clock, out: Path) -> dict | str:
    """FSDP2 through accelerate: the FSDP tests of tests/test_ddp.py (``-k fsdp``: ``full`` and ``promot`` trained
    sharded, saved complete and equal to an unsharded run of the same settings). One GPU: one process (every weight
    is still a DTensor); two or more: two processes. accelerate sets FSDP up only on accelerators, so no CPU run."""
    if gpus < 1:
        return "needs a CUDA GPU"
    return Pytest(["tests/test_ddp.py", "-k", "fsdp"], out / "fsdp_tests.xml", clock, limit_s=180).wait()


# ------------------------------------------------------------------ machine and matmul rate
def machine(torch) -> dict:
    import peft
    import transformers

    cuda = torch.cuda.is_available()
    return {"gpu": torch.cuda.get_device_name(0) if cuda else None, "gpus": torch.cuda.device_count() if cuda else 0,
            "cuda": torch.version.cuda, "torch": torch.__version__, "transformers": transformers.__version__,
            "peft": peft.__version__, "flash_attn": importlib.util.find_spec("flash_attn") is not None,
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
            "python": platform.python_version()}


def sync(torch) -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def matmul_rate(torch, device: str, n: int, dtype: str, repeats: int = 10, trials: int = 3) -> float:
    """Best FLOP/s of ``repeats`` back-to-back n x n products (bench/flops.py times one product and a
    reduction per trial: fine on a CPU, too coarse at GPU rates)."""
    a = torch.randn(n, n, device=device, dtype=getattr(torch, dtype))
    b = torch.randn(n, n, device=device, dtype=getattr(torch, dtype))
    a @ b  # warm-up: kernel selection
    best = float("inf")
    for _ in range(trials):
        sync(torch)
        t = time.perf_counter()
        for _ in range(repeats):
            c = a @ b
        sync(torch)
        best = min(best, (time.perf_counter() - t) / repeats)
    del a, b, c
    return 2 * n**3 / best


# ------------------------------------------------------------------ models and data
def build_model(torch, config: dict, device: str, args):
    """A Llama from a config, random weights (seeded), at the run's dtype, sdpa attention (as retain.models loads)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from retain.models import set_attention

    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(LlamaConfig(**config))
    model.to(getattr(torch, PRECISIONS[args.precision][0]))
    set_attention(model, "sdpa")
    return model


def flop_counts(model) -> dict:
    """Parameters for the FLOP count (see FLOPS_FORMULA): all (``parameters()`` yields a tied tensor once), input
    embedding, LM head."""
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    n = sum(p.numel() for p in model.parameters())
    tied = head is emb
    return {"parameters": n, "embedding": emb.numel(), "lm_head": head.numel(), "tied": tied,
            "body": n - emb.numel() - (0 if tied else head.numel())}


def training_rows(vocab: int, n: int, seq_len: int) -> list[dict]:
    """Rows as ``retain.data.tokenize`` makes them: random ids, loss on the last ANSWER_TOKENS."""
    r = random.Random(0)
    rows = []
    for _ in range(n):
        ids = [r.randrange(3, vocab) for _ in range(seq_len)]
        rows.append({"input_ids": ids, "attention_mask": [1] * seq_len,
                     "labels": [-100] * (seq_len - ANSWER_TOKENS) + ids[-ANSWER_TOKENS:]})
    return rows


def eval_examples(n: int) -> list[dict]:
    """A synthetic two-label task: 16, 24 or 32 random words (three prompt lengths), label by the first word."""
    r = random.Random(1)
    words = ["good", "bad", "film", "plot", "actor", "scene", "music", "story", "ending", "camera", "dull", "bright"]
    out = []
    for _ in range(n):
        text = " ".join(r.choice(words) for _ in range(r.choice((16, 24, 32))))
        out.append({"input": text, "output": "positive" if text.split()[0] in ("good", "bright", "music") else "negative"})
    return out


def train_config(args, method: str):
    from retain.config import TrainConfig

    n = args.warmup + args.steps
    dtype, mixed, _ = PRECISIONS[args.precision]
    return TrainConfig(model="random-weights", method=method, batch_size=args.batch_size, max_steps=n, stage1_steps=n,
                       stage2_steps=n, dtype=dtype, mixed_precision=mixed, eval_every=0, save_every=0, log_every=1,
                       packing=not args.no_packing, prompt_length=args.prompt_length, max_length=args.seq_len)


def free(torch) -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


# ------------------------------------------------------------------ measurements
def measure_stage(torch, model, tokenizer, stage, rows, cfg, args, counts: dict, peak: float) -> dict:
    """One stage through ``run_stage``; tokens/s over the timed steps, FLOP/s, MFU, peak memory."""
    from retain.engine import run_stage, virtual_tokens

    steps, lr, prompt_lr = stage.budget(cfg)
    marks: dict[int, tuple[float, int]] = {}

    def log(event: dict) -> None:  # the Trainer logs every step (log_every=1), after its optimizer step
        if event.get("event") == "log" and "loss" in event:
            sync(torch)
            marks.setdefault(event["step"], (time.perf_counter(), event.get("num_input_tokens_seen")))

    free(torch)
    with tempfile.TemporaryDirectory(prefix="retain-gpu-check-") as tmp:
        rec = run_stage(model, tokenizer, stage, rows=rows, steps=steps, lr=lr, prompt_lr=prompt_lr, cfg=cfg,
                        stage_dir=Path(tmp), log=log, resumable=False)
    (t0, n0), (t1, n1) = marks[args.warmup], marks[args.warmup + args.steps]
    seconds, examples = t1 - t0, args.batch_size * args.steps
    real = examples * args.seq_len  # every row is seq_len real tokens: no batch holds padding
    layout = rec.get("packing", "rows" if rec["packed"] else "padded")  # rows/shared/copies/padded (engine/prompt_packing.py)
    prompts = 0 if not virtual_tokens(model) else args.steps if layout == "shared" else examples  # soft-prompt copies run
    processed = real + virtual_tokens(model) * prompts
    k = 6 if stage.trains_model else 4
    flops = k * counts["body"] * processed + k * counts["lm_head"] * ANSWER_TOKENS * examples
    return {"stage": stage.name, "trains": stage.trains, "timed_steps": args.steps, "warmup_steps": args.warmup,
            "batch_size": args.batch_size, "seq_len": args.seq_len, "soft_prompt_tokens": virtual_tokens(model),
            "packing": layout, "real_tokens": real, "trainer_tokens_seen": None if n0 is None else n1 - n0,
            "processed_tokens": processed, "seconds": round(seconds, 4), "tokens_per_s": round(real / seconds, 1), "k": k,
            "flops_per_s": flops / seconds, "mfu": round(flops / seconds / peak, 4),
            "peak_memory_bytes": rec["memory"]["measured_peak"]["bytes"], "peak_memory_how": rec["memory"]["measured_peak"]["how"],
            "memory_estimate_bytes": rec["memory"]["estimate_bytes"]["total"], "trainable_parameters": rec["trainable_parameters"],
            "train_loss": rec["train_loss"], "precision": rec["precision"]}


def measure_method(torch, name: str, build, tokenizer, rows, args, clock: Clock, counts: dict, peak: float) -> dict:
    """Every stage of a registered method on a fresh model, wrapped as ``retain train`` wraps it."""
    from retain import methods

    method = methods.get(name)
    keys = [name if len(method.stages) == 1 else f"{name}_{s.name}" for s in method.stages]
    reason = clock.skip_reason(name)
    if reason:
        return {key: {"skipped": reason} for key in keys}
    cfg = train_config(args, name)
    model = methods.wrap(build(), tokenizer, method, cfg, False)
    out = {}
    for key, stage in zip(keys, method.stages):
        reason = clock.skip_reason(key)
        out[key] = {"skipped": reason} if reason else guarded(measure_stage, torch, model, tokenizer, stage, rows, cfg, args,
                                                               counts, peak)
        print(f"  {key}: {describe(out[key])}", flush=True)
    del model
    free(torch)
    return out


def measure_eval(torch, model, tokenizer, args, clock: Clock) -> dict:
    """Items/s of ``evaluate_tuned`` (fast engine) in the compute dtype's weights, after one warm-up batch."""
    from retain.data import TaskFormat
    from retain.evaluation.decoding import answer_budget
    from retain.evaluation.harness import evaluate_tuned

    reason = clock.skip_reason("evaluation")
    if reason:
        return {"skipped": reason}
    dtype = PRECISIONS[args.precision][2]
    model.to(getattr(torch, dtype)).eval()
    examples, fmt, batch = eval_examples(args.eval_examples), TaskFormat(TEMPLATE), 32
    budget = answer_budget(tokenizer, [e["output"] for e in examples])
    run = lambda items: evaluate_tuned(model, tokenizer, items, fmt, "accuracy", is_seq2seq=False, max_new_tokens=budget,
                                       engine="fast", batch_size=batch)
    run(examples[:batch])
    free(torch)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    sync(torch)
    t = time.perf_counter()
    result = run(examples)
    sync(torch)
    seconds = time.perf_counter() - t
    return {"engine": "fast", "dtype": dtype, "examples": len(examples), "batch_size": batch, "max_new_tokens": budget,
            "seconds": round(seconds, 4), "examples_per_s": round(len(examples) / seconds, 2),
            "peak_memory_bytes": int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else None,
            "score": result["score"]}


def measure_model(torch, key: str, into: dict, device: str, args, clock: Clock, peak: float, save) -> None:
    """Every measurement of one model, into ``into[key]`` as they are made (``save`` writes the JSON)."""
    from retain.models import tiny_tokenizer

    name, config = (SMOKE_MODELS if args.smoke else MODELS)[key]
    tokenizer = tiny_tokenizer()
    build = lambda: build_model(torch, config, device, args)
    probe = build()
    counts = flop_counts(probe)
    del probe
    rows = training_rows(config["vocab_size"], args.batch_size * 2, args.seq_len)
    rec = into[key] = {"name": name, "config": config, "parameters": counts, "measurements": {}}
    print(f"{key}: {name}, {counts['parameters'] / 1e6:.1f}M parameters", flush=True)
    for method in METHODS:
        rec["measurements"].update(measure_method(torch, method, build, tokenizer, rows, args, clock, counts, peak))
        save()
    model = build()
    rec["eval"] = guarded(measure_eval, torch, model, tokenizer, args, clock)
    print(f"  eval: {rec['eval'].get('examples_per_s', rec['eval'])} examples/s", flush=True)
    del model
    free(torch)


def guarded(measure, *a) -> dict:
    """One measurement; an exception (out of memory, a kernel this GPU lacks) is recorded and the run goes on."""
    try:
        return measure(*a)
    except Exception as e:
        return {"error": f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:500]}"}


def describe(m: dict) -> str:
    if "skipped" in m or "error" in m:
        return f"skipped ({m['skipped']})" if "skipped" in m else f"failed ({m['error']})"
    return (f"{m['tokens_per_s']:.0f} tokens/s, MFU {m['mfu']:.1%}, peak {m['peak_memory_bytes'] / 2**30:.2f} GiB, "
            f"packing {m['packing']}, loss {m['train_loss']:.3f}")


def finish_mfu(result: dict) -> None:
    """MFU against the higher of the two matmul measurements (the conservative figure)."""
    peak = result["matmul"]["flops_per_s"]
    for model in result["models"].values():
        for m in model["measurements"].values():
            if "flops_per_s" in m:
                m["mfu"] = round(m["flops_per_s"] / peak, 4)


# ------------------------------------------------------------------ main
def header(args) -> dict:
    dtype, mixed, evaluation = PRECISIONS[args.precision]
    return {"benchmark": "gpu_check", "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "smoke": args.smoke,
            "command": "python bench/gpu_check.py " + " ".join(sys.argv[1:]), "budget_s": args.budget_s,
            "precision": {"weights": dtype, "mixed_precision": mixed, "evaluation_weights": evaluation,
                          "as": f"retain train --dtype {dtype} --mixed-precision {mixed}"},
            "flops_formula": FLOPS_FORMULA, "skipped": None, "errors": None}


def tests_done(result: dict, tests: Pytest) -> None:
    result["tests"] = tests.wait()
    print(f"tests: {json.dumps({k: v for k, v in result['tests'].items() if k not in ('cases', 'output_tail')})}", flush=True)


def main(argv=None) -> None:
    args = parse_args(argv)
    clock = Clock(args.budget_s)
    out = Path(args.outdir)
    out.mkdir(parents=True, exist_ok=True)
    import torch

    device, compute = "cuda" if torch.cuda.is_available() else "cpu", PRECISIONS[args.precision][2]
    if device == "cpu" and not args.smoke:
        sys.exit("gpu_check: no CUDA GPU here; on a CPU run it with --smoke")
    # the smoke run collects only this file's GPU tests, and overlaps them with its (meaningless) CPU timings
    selection = ["-m", "gpu", "tests/test_gpu.py" if args.smoke else "tests"]
    tests = None if args.no_tests else Pytest(selection, out / "gpu_tests.xml", clock, args.tests_timeout_s)
    if args.smoke:
        torch.set_num_threads(1)  # tiny matrices: threads only add overhead (and would fight the tests for the cores)
    result = {**header(args), "machine": machine(torch), "tests": {"not_run": "--no-tests" if tests is None else "running"}}
    save = lambda: write_json(out / "gpu_check.json", {**result, "elapsed_s": round(clock.elapsed(), 1)})
    if tests and not args.smoke:
        tests_done(result, tests)
    result["fsdp"] = fsdp_check(result["machine"]["gpus"], clock, out)
    before = matmul_rate(torch, device, args.matmul_n, compute)
    result["matmul"] = {"dtype": compute, "n": args.matmul_n, "before_flops_per_s": before, "flops_per_s": before}
    result["models"] = {}
    save()
    for key in MODELS:
        measure_model(torch, key, result["models"], device, args, clock, before, save)
        save()
    after = matmul_rate(torch, device, args.matmul_n, compute)
    result["matmul"].update(after_flops_per_s=after, flops_per_s=max(before, after))
    finish_mfu(result)
    done = [(f"{k}/{m}", v) for k, r in result["models"].items() for m, v in [*r["measurements"].items(), ("eval", r["eval"])]]
    result["skipped"], result["errors"] = [n for n, v in done if "skipped" in v], {n: v["error"] for n, v in done if "error" in v}
    if args.smoke and tests:
        tests_done(result, tests)
    save()
    print(f"{compute} matmul {max(before, after) / 1e12:.2f} TFLOP/s ({result['machine']['gpu'] or 'CPU'}); wrote {out / 'gpu_check.json'}")
    mfu = {k: r["measurements"]["full"].get("mfu") for k, r in result["models"].items()}
    print("gpu_check: full fine-tuning MFU " + ", ".join(f"{k} {v:.1%}" if v is not None else f"{k} not measured" for k, v in mfu.items()))
    t = result["tests"]
    if result["errors"] or t.get("failed") or t.get("errors") or t.get("timed_out"):
        sys.exit("gpu_check: a test or a measurement failed (see the JSON)")  # after the last line: exit status 1


if __name__ == "__main__":
    main()
