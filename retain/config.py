"""Configuration as plain data classes; the CLI flags are generated from them.

Every field carries its help text, so ``retain train --help`` lists every
default, and a YAML/JSON file given with ``--config`` may set any field by name
(flags on the command line win over the file).
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import json
from dataclasses import dataclass, field, fields
from pathlib import Path

from retain.errors import RetainError
from retain.models import ATTENTION, DTYPES


def opt(default, help, *, choices=None, flag: str | None = None, positive: bool = False, nonneg: bool = False,
        metavar: str | None = None, group: str | None = None, nargs: str | None = None, positional: bool = False,
        repeat: bool = False):
    """A dataclass field that is also a command-line flag.

    ``help`` and ``choices`` may be callables (read when the parser is built: e.g. the registered
    methods); ``group``: flags sharing a group name are mutually exclusive and one of them is required;
    ``nargs`` (``"*"``, ``"+"``): a list of values; ``positional``: an argument without a flag; ``repeat``: the flag
    may be given several times (one value is the value itself, several are a list).
    """
    return field(default=default, metadata={"help": help, "choices": choices, "flag": flag, "positive": positive,
                                            "nonneg": nonneg, "metavar": metavar, "group": group, "nargs": nargs,
                                            "positional": positional, "repeat": repeat})


def _value(x):
    return x() if callable(x) else x


def _method_names():
    from retain.methods import names

    return names()


def _method_help():
    from retain.methods.registry import help_text

    return "Fine-tuning method: " + help_text()


def model_help(what: str = "Model") -> str:
    """``--model``'s help, with the aliases ``retain.models`` knows (one list, read when the parser is built)."""
    from retain.models import ALIASES, DEFAULT_MODEL

    tests = ", ".join(a for a in ALIASES if a != DEFAULT_MODEL)
    return f"{what}: alias ({DEFAULT_MODEL}; tests: {tests}), a .gguf file, a local directory or a Hub id."


PROMPT_INITS = ("text", "vocab", "random")
MIXED_PRECISION = ("no", "bf16", "fp16")
ENGINES = ("fast", "simple")
PROMPT_RULES = ("auto", "on", "off")


@dataclass
class EngineOptions:
    """Options of the one training engine (``retain.engine.run_stage``), shared by every command that trains."""
    # LoRA
    lora_r: int = opt(8, "LoRA rank.", positive=True)
    lora_alpha: int = opt(16, "LoRA alpha.", positive=True)
    lora_dropout: float = opt(0.05, "LoRA dropout.", nonneg=True)
    lora_target: str = opt("all-linear", "LoRA target modules: 'all-linear' or a comma-separated list of module names.")
    # precision and memory
    dtype: str = opt("float32", "How the weights are loaded, trained and saved: float32, bfloat16, float16, or auto (the checkpoint's own dtype; float32 for a .gguf or a tiny model). Evaluation and generation run in it too. bfloat16/float16 weights are trained directly (no float32 master copy: updates below their resolution round away); for full fine-tuning prefer --mixed-precision bf16.", choices=DTYPES)
    mixed_precision: str = opt("no", "The Trainer's autocast: no; bf16 (CPU or GPU); fp16 (CUDA GPU only, float32 weights).", choices=MIXED_PRECISION)
    gradient_checkpointing: bool = opt(False, "Recompute each block's activations in the backward pass: activation memory of one block instead of all, for about a third more compute.")
    attn_implementation: str = opt("sdpa", "Attention kernel: sdpa (PyTorch's scaled_dot_product_attention; eager where a model has no sdpa), eager, or flash_attention_2 (when the flash-attn package is installed).", choices=ATTENTION)
    # batches and schedule
    batch_size: int = opt(8, "Examples per device per step. Paper: 64.", positive=True)
    grad_accum: int = opt(1, "Gradient accumulation steps.", positive=True)
    packing: bool = opt(True, "Padding-free batches for causal models: a batch is one row of concatenated examples (same examples, same order, same loss; no compute on padding); with a soft prompt every example in the row gets its own prompt, positions and attention. Used where a per-model check shows it exact. --no-packing pads to the longest example instead.")
    group_by_length: bool = opt(False, "Stages that pad (encoder-decoder models, a model the packing check refuses, --no-packing): draw each batch from examples of similar length (transformers' LengthGroupedSampler), so little compute goes into padding. Changes the order examples are seen in; packed stages ignore it.")
    max_length: int = opt(256, "Longest tokenised example; longer prompts are cut from the left so the output is kept (counted in run.json).", positive=True)
    optim: str = opt("adamw_torch_fused", "Optimizer (any transformers 'optim' name: adamw_torch_fused is AdamW in one fused kernel per step, ~5x faster than adamw_torch's loop over tensors on a CPU; adafactor as in the paper).")
    scheduler: str = opt("constant_with_warmup", "Learning-rate schedule (transformers name: constant_with_warmup, linear, cosine, ...).")
    warmup_steps: int = opt(0, "Warm-up steps per stage.", nonneg=True)
    weight_decay: float = opt(0.0, "Weight decay.", nonneg=True)
    label_smoothing: float = opt(0.0, "Label smoothing. Paper: 0.1.", nonneg=True)
    eval_batch_size: int = opt(16, "Batch size for generation during evaluation.", positive=True)
    log_every: int = opt(10, "Log loss every N steps.", positive=True)
    seed: int = opt(0, "Random seed (data order, initialisation, sampling).")
    # checkpoints, files and safety
    overwrite: bool = opt(False, "Replace an existing directory at --output.")
    save_every: int = opt(50, "Write a resumable checkpoint every N steps of each stage; 0 disables.", nonneg=True)
    trust_remote_code: bool = opt(False, "Allow models whose code lives in their Hub repository (runs that code).")
    allow_pickle: bool = opt(False, "Allow loading pickle (.bin/.pt) weights, which can run code; safetensors only otherwise.")
    # scaling out (DDP and FSDP need no flag: 'accelerate launch' and its config file choose them; docs/PERFORMANCE.md)
    deepspeed: str | None = opt(None, "DeepSpeed JSON config file, passed to the Trainer (TrainingArguments(deepspeed=...)); launch the command with 'accelerate launch' or 'deepspeed' over the GPUs. Needs the deepspeed package. ZeRO stages 0-2 ('auto' values are filled from these options); stage 3 is refused (it partitions the weights, which retain's checkpoints and artifacts read whole).", metavar="CONFIG")


@dataclass
class TrainConfig(EngineOptions):
    # what to train
    model: str = opt("smollm2-135m", model_help)
    method: str = opt("promot", _method_help, choices=_method_names)
    train: str = opt(None, "Training data: JSONL with string fields 'input' and 'output', or hf:NAME[:CONFIG][@SPLIT]. Several tasks (multi-task; docs/METHODS.md): repeat as --train NAME=FILE.", repeat=True)
    validation: str | None = opt(None, "Validation JSONL; used to keep the best checkpoint of each stage. Several tasks: --validation NAME=FILE per task (every task or none).", repeat=True)
    tasks: str | None = opt(None, "Several tasks from a YAML/JSON file instead of --train/--validation: a list (or 'tasks:' list) of {name, train, validation, template, metric}; template and metric default to --template and --metric, paths are relative to the file.", metavar="FILE")
    output: str = opt(None, "Run directory to create (written to a temporary sibling and renamed when complete).")
    template: str = opt("{input}", "Input template; {input} and any other field of the example, e.g. 'Review: {input}\\nSentiment:'. The output follows after a space.")
    one_shot: bool = opt(False, "Put one natural-language training example (seeded pick) after the soft prompt, in training and when evaluating the tuned task (ProMoT + 1-shot, FT + 1-shot).")
    # steps and learning rates
    max_steps: int = opt(150, "Optimizer steps for single-stage methods (full, prompt, lora, joint, ft-random-prompt). Paper: 1000 (FT), 5000 (prompt tuning).", positive=True)
    stage1_steps: int = opt(60, "promot stage 1 (prompt tuning; promot-lora: LoRA tuning) steps (the recipe search's choice, docs/results/promot_paper_search.md). Paper: 5000.", positive=True)
    stage2_steps: int = opt(150, "promot stage 2 (model tuning under the frozen prompt or LoRA) steps. Paper: 1000.", positive=True)
    lr: float | None = opt(None, "Learning rate of single-stage methods; default: 2e-5 (full, joint's model weights, ft-random-prompt), 3e-2 (prompt), 2e-4 (lora).", positive=True)
    stage1_lr: float = opt(3e-2, "Soft-prompt learning rate (promot stage 1, joint's prompt). Paper: 0.2 with Adafactor.", positive=True)
    stage2_lr: float = opt(3e-5, "Model learning rate in promot (and promot-lora) stage 2 (the recipe search's choice: at 1e-4 the 135M default forgot more than full FT at 1e-4). Paper: 1e-3 with Adafactor at 13B scale.", positive=True)
    stage1_lora_lr: float = opt(2e-4, "LoRA learning rate in promot-lora stage 1 (the LoRA trains, the model is frozen).", positive=True)
    # soft prompt
    prompt_length: int = opt(100, "Soft prompt length in virtual tokens (the recipe search's choice). Paper: 100 (T5), 50 (PaLM-8B).", positive=True)
    prompt_init: str = opt("text", "Soft prompt initialisation: text (embeddings of --prompt-init-text, repeated), vocab (embeddings of sampled vocabulary tokens), random (uniform [0, 0.5), as the paper's code base).", choices=PROMPT_INITS)
    prompt_init_text: str = opt("Read the input and answer in the format of this task.", "Text whose token embeddings initialise the prompt (with --prompt-init text).")
    # evaluation and checkpoints
    eval_every: int = opt(50, "Evaluate on --validation every N steps of each stage and keep the best; 0 keeps the last weights.", nonneg=True)
    eval_samples: int = opt(200, "Validation examples used for checkpoint selection (the first N).", positive=True)
    metric: str = opt("auto", "Tuned-task metric: accuracy, exact_match, bleu, chrf, rouge1, rouge2, rougeL, sari (against each example's 'source' field, else its input); auto: accuracy when the training outputs take at most 20 distinct values, exact_match when they average at most 3 words, else chrf (the same rule as a suite task's auto).")
    max_new_tokens: int | None = opt(None, "Generation length for evaluation; default: longest training output in tokens + 4.")
    num_beams: int = opt(1, "Beams when generating for checkpoint selection: 1 = greedy; the paper used 4.", positive=True)
    resume: bool = opt(False, "Continue an interrupted run from its last checkpoint.")




def add_arguments(parser: argparse.ArgumentParser, cls, *, skip: tuple[str, ...] = (), required: tuple[str, ...] = ()) -> None:
    """Add one flag per dataclass field, with its help and default (the class's own fields first)."""
    own = set(inspect.get_annotations(cls))
    groups: dict[str, argparse._MutuallyExclusiveGroup] = {}
    for f in sorted(fields(cls), key=lambda f: f.name not in own):
        if f.name in skip:
            continue
        md = f.metadata
        target = parser
        if md.get("group"):
            if md["group"] not in groups:
                groups[md["group"]] = parser.add_mutually_exclusive_group(required=True)
            target = groups[md["group"]]
        target.add_argument(*_flag(f), **_argument(f, required))


def _flag(f: dataclasses.Field) -> tuple[str, ...]:
    md = f.metadata
    if md.get("positional"):
        return (f.name,)
    name = f.name.replace("_", "-")
    if f.type in ("bool", bool) and f.default is True:
        return ("--no-" + name,)
    return (md.get("flag") or "--" + name,)


def _argument(f: dataclasses.Field, required: tuple[str, ...]) -> dict:
    md = f.metadata
    help_text = _value(md["help"])
    if md.get("nargs"):
        return {**({} if md.get("positional") else {"dest": f.name, "default": None}), "nargs": md["nargs"],
                "metavar": md.get("metavar") or f.name.upper(), "help": help_text + (" [required]" if f.name in required else "")}
    if md.get("repeat"):
        return {"dest": f.name, "action": "append", "default": None, "metavar": md.get("metavar") or f.name.upper(),
                "help": help_text + (" [required]" if f.name in required else "")}
    if f.type in ("bool", bool):
        action = "store_false" if f.default is True else "store_true"
        return {"dest": f.name, "action": action, "default": None,
                "help": help_text + (" (default: on)" if f.default is True else "")}
    typ = {"int": int, "float": float, "int | None": int, "float | None": float}.get(f.type, str)
    choices = _value(md.get("choices"))
    shown = "" if f.default is None else f" (default: {f.default})"
    return {"dest": f.name, "type": typ, "default": None, "choices": choices,
            "metavar": (md.get("metavar") or f.name.upper()) if not choices else None,
            "help": help_text + shown + (" [required]" if f.name in required else "")}


def read_structured(path: Path, flag: str):
    """A JSON (``.json``) or YAML file's content; a missing or unparsable file is one line naming ``flag``, the file
    and the line."""
    if not path.is_file():
        raise RetainError(f"{flag}: file not found: {path}")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:
        if path.suffix == ".json":
            return json.loads(text)
        import yaml

        return yaml.safe_load(text)
    except Exception as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else (f":{e.lineno}" if hasattr(e, "lineno") else "")
        raise RetainError(f"{flag}: {path}{line}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}") from None


def read_config_file(path: str) -> dict:
    p = Path(path)
    data = read_structured(p, "--config")
    if not isinstance(data, dict):
        raise RetainError(f"--config: {p} must hold a mapping of option names to values")
    return data


def require_one_task(cfg: TrainConfig, command: str) -> None:
    """Commands that train and score one tuned task refuse several (``--tasks``, a repeated ``--train``/``--validation``)."""
    if cfg.tasks or isinstance(cfg.train, (list, tuple)) or isinstance(cfg.validation, (list, tuple)):
        raise RetainError(f"retain {command} trains on one task (--train FILE --validation FILE); several tasks: 'retain train'")


def build(cls, args: argparse.Namespace | None = None, file_values: dict | None = None, source: str = "--config", **overrides):
    """Defaults < config file < command-line flags < overrides; validated."""
    names = {f.name: f for f in fields(cls)}
    values: dict = {}
    for key, val in (file_values or {}).items():
        k = key.replace("-", "_")
        if k not in names:
            raise RetainError(f"{source}: unknown option '{key}'")
        values[k] = val
    if args is not None:
        values.update({k: v for k, v in vars(args).items() if k in names and v is not None and v != []})
    values.update({k: v for k, v in overrides.items() if v is not None})
    for k, v in values.items():
        values[k] = _coerce(names[k], v, source if k in (file_values or {}) else "--" + k.replace("_", "-"))
    cfg = cls(**values)
    for f in fields(cls):
        v = getattr(cfg, f.name)
        flag = "--" + f.name.replace("_", "-")
        choices = _value(f.metadata.get("choices"))
        if choices and v not in choices:
            raise RetainError(f"{flag}: unknown value '{v}' (choose from {', '.join(choices)})")
        if f.metadata.get("positive") and v is not None and v <= 0:
            raise RetainError(f"{flag} must be positive, got {v}")
        if f.metadata.get("nonneg") and v is not None and v < 0:
            raise RetainError(f"{flag} must not be negative, got {v}")
    return cfg


def _coerce(f: dataclasses.Field, value, where: str):
    t = str(f.type)
    try:
        if value is None:
            return None
        if f.metadata.get("repeat") and isinstance(value, (list, tuple)):
            if not value or not all(isinstance(v, str) for v in value):
                raise ValueError
            return value[0] if len(value) == 1 else list(value)
        if t == "bool":
            if isinstance(value, bool):
                return value
            raise ValueError
        if t.startswith("int"):
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return int(value)
        if t.startswith("float"):
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if t.startswith("str"):
            if not isinstance(value, str):
                raise ValueError
            return value
    except (TypeError, ValueError):
        raise RetainError(f"{where}: option '{f.name}' must be {t.split(' ')[0]}, got {value!r}") from None
    return value


def to_dict(cfg) -> dict:
    return dataclasses.asdict(cfg)
