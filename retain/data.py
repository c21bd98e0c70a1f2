"""Task data: JSONL of ``{"input": str, "output": str}`` (extra fields kept).

Examples are wrapped by a template (``"Review: {input}\\nSentiment:"``); the
model is trained on the output tokens only. Templates are *formatted* with
plain field names, never evaluated: ``{input.__class__}`` or ``{input[0]}``
are refused.
"""

from __future__ import annotations

import json
import random
import string
from dataclasses import dataclass, field
from pathlib import Path

from retain.errors import RetainError, where
from retain.tokens import prompt_ids, special_affixes, text_ids, truncate_left

DEFAULT_TEMPLATE = "{input}"


# -------------------------------------------------------------------- loading
def load_examples(source: str, *, fields: tuple[str, ...] = ("input", "output"), flag: str = "--train") -> list[dict]:
    """Load examples from a JSONL file or ``hf:NAME[:CONFIG][@SPLIT]``."""
    if source.startswith("hf:"):
        return _load_hub(source, fields, flag)
    return load_jsonl(source, fields=fields, flag=flag)


def load_jsonl(path, *, fields: tuple[str, ...] = ("input", "output"), flag: str = "--train") -> list[dict]:
    """Read a JSONL file; every problem raises RetainError naming file, line and field."""
    p = Path(path)
    if not p.exists():
        raise RetainError(f"{flag}: file not found: {p}")
    if p.is_dir():
        raise RetainError(f"{flag}: {p} is a directory, expected a JSONL file")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise RetainError(f"{flag}: cannot read {p}: {e.strerror}") from None
    rows: list[dict] = []
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as e:
            raise RetainError(f"{where(p, lineno)}: not valid UTF-8 (byte {e.start + 1})") from None
        text = text.strip().lstrip("\ufeff")
        if not text:
            continue
        try:
            obj = json.loads(text)
        except (json.JSONDecodeError, RecursionError) as e:
            msg = e.msg if isinstance(e, json.JSONDecodeError) else "nested too deeply"
            raise RetainError(f"{where(p, lineno)}: malformed JSON ({msg})") from None
        if not isinstance(obj, dict):
            raise RetainError(f"{where(p, lineno)}: expected a JSON object, got {type(obj).__name__}")
        for name in fields:
            if name not in obj:
                raise RetainError(f"{where(p, lineno, name)} is missing")
            if not isinstance(obj[name], str):
                raise RetainError(f"{where(p, lineno, name)} must be a string, got {_json_type(obj[name])}")
        rows.append(obj)
    if not rows:
        raise RetainError(f"{flag}: {p} holds no examples")
    return rows


def _json_type(value) -> str:
    return {dict: "object", list: "array", bool: "boolean", int: "number", float: "number", type(None): "null"}.get(type(value), type(value).__name__)


def _load_hub(source: str, fields, flag: str) -> list[dict]:
    spec = source[3:]
    split = "train"
    if "@" in spec:
        spec, split = spec.rsplit("@", 1)
    name, _, config = spec.partition(":")
    try:
        import datasets
    except ImportError:
        raise RetainError(f"{flag}: {source} needs the 'datasets' package: pip install 'retain[hub]'") from None
    from retain.models import hub_reachable

    if not hub_reachable():
        raise RetainError(f"{flag}: cannot load {source}: the Hugging Face Hub cannot be reached from here (offline); use a local JSONL file")
    try:
        ds = datasets.load_dataset(name, config or None, split=split)
    except Exception as e:  # offline, unknown name: datasets raises many types
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise RetainError(f"{flag}: cannot load {source} from the Hugging Face Hub (offline or unknown dataset?): {first}") from None
    missing = [f for f in fields if f not in ds.column_names]
    if missing:
        raise RetainError(f"{flag}: {source} has no column '{missing[0]}' (columns: {', '.join(ds.column_names)})")
    return [{k: (v if not isinstance(v, (int, float)) or k not in fields else str(v)) for k, v in row.items()} for row in ds]


# ------------------------------------------------------------------ templates
def check_template(template: str, flag: str = "--template") -> str:
    """Validate a template (``{input}`` required, only plain field names); returns it
    with the shell-friendly escapes ``\\n`` and ``\\t`` turned into newline and tab."""
    template = template.replace("\\n", "\n").replace("\\t", "\t")
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise RetainError(f"{flag}: malformed template ({e}); write literal braces as {{{{ and }}}}") from None
    names = set()
    for _, name, spec, conv in parsed:
        if name is None:
            continue
        if not name.isidentifier():
            raise RetainError(f"{flag}: template field '{{{name}}}' is not a plain field name (no positional, attribute or index fields)")
        if spec or conv:
            raise RetainError(f"{flag}: template field '{{{name}}}' may not carry a format spec or conversion")
        names.add(name)
    if "input" not in names:
        raise RetainError(f"{flag}: the template must contain {{input}}")
    return template


def template_fields(template: str) -> tuple[str, ...]:
    """The fields an example must have for a template: ``input``, ``output`` and every ``{name}`` it uses."""
    names = [n for _, n, _, _ in string.Formatter().parse(template) if n]
    return tuple(dict.fromkeys(["input", "output", *names]))


def render(template: str, example: dict, source: str = "example") -> str:
    """Fill a (checked) template with the example's fields."""
    out = []
    for literal, name, _, _ in string.Formatter().parse(template):
        out.append(literal)
        if name is not None:
            if name not in example:
                raise RetainError(f"{source}: field '{name}' used by the template is missing")
            out.append(str(example[name]))
    return "".join(out)


def target_text(prompt: str, output: str, is_seq2seq: bool) -> str:
    """The completion as trained: a space after a prompt that doesn't end in whitespace."""
    if is_seq2seq or not prompt or prompt[-1].isspace():
        return output
    return " " + output


# --------------------------------------------------------------- formatting
@dataclass
class TaskFormat:
    """How examples of one task become model inputs."""

    template: str = DEFAULT_TEMPLATE
    one_shot: dict | None = None  # a training example shown before every input
    is_seq2seq: bool = False

    def prompt(self, example: dict, *, with_shot: bool = True) -> str:
        text = render(self.template, example)
        if with_shot and self.one_shot is not None:
            text = self.shot_prefix() + text
        return text

    def shot_prefix(self) -> str:
        if self.one_shot is None:
            return ""
        p = render(self.template, self.one_shot)
        return p + target_text(p, self.one_shot["output"], False) + "\n\n"

    def target(self, example: dict) -> str:
        return target_text(render(self.template, example), example["output"], self.is_seq2seq)


def pick_one_shot(examples: list[dict], seed: int) -> dict:
    """The natural-language demonstration for ``--one-shot``: a seeded pick."""
    ex = examples[random.Random(seed).randrange(len(examples))]
    return {"input": ex["input"], "output": ex["output"], **{k: v for k, v in ex.items() if k not in ("input", "output")}}


@dataclass
class Tokenized:
    rows: list[dict] = field(default_factory=list)
    truncated: int = 0


def tokenize(examples: list[dict], tokenizer, fmt: TaskFormat, max_length: int) -> Tokenized:
    """Token ids with loss on the output only.

    A row is the prompt as every engine feeds it (``retain.tokens.prompt_ids``: the tokenizer's leading
    special tokens, e.g. a BOS, then the text; for an encoder its trailing ones too), then the target and
    EOS. Over-long examples keep their output, their leading special tokens and the *end* of their prompt
    (the prompt is cut from the left); the count of such cuts is returned.
    """
    out = Tokenized()
    eos = tokenizer.eos_token_id
    head = len(special_affixes(tokenizer)[0])
    for ex in examples:
        p_ids = prompt_ids(tokenizer, fmt.prompt(ex), is_seq2seq=fmt.is_seq2seq)
        t_ids = text_ids(tokenizer, fmt.target(ex)) + [eos]
        if fmt.is_seq2seq:
            if len(p_ids) > max_length:
                out.truncated += 1
                p_ids = truncate_left(p_ids, max_length, head)
            out.rows.append({"input_ids": p_ids, "attention_mask": [1] * len(p_ids), "labels": t_ids[:max_length]})
            continue
        t_ids = t_ids[: max_length - 1 - head]
        room = max_length - len(t_ids)
        if len(p_ids) > room:
            out.truncated += 1
            p_ids = truncate_left(p_ids, room, head)
        ids = p_ids + t_ids
        out.rows.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": [-100] * len(p_ids) + t_ids})
    return out
