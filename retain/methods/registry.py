"""Fine-tuning methods as typed data, declared once and registered by name.

A ``Method`` is a sequence of ``Stage``s. A stage names the *parts* it trains (``model``: the base
weights; ``prompt``: a PEFT soft prompt; ``lora``: PEFT LoRA adapters) and the ``TrainConfig`` fields
its budget reads: the optimizer steps, the learning rate of the model/LoRA weights (a chain of fields,
the first one set wins, then the stage's default) and the soft prompt's learning rate. The parts a
method attaches, the artifacts a run writes, the CLI's ``--method`` choices, ``retain compare``'s names
(``NAME`` and ``NAME-1shot``) and the table in docs/METHODS.md all derive from here.
"""

from __future__ import annotations

from dataclasses import dataclass

from retain.errors import RetainError

PARTS = ("model", "prompt", "lora")  # what a stage can train


class _Parts:
    """Which parts something trains (a stage) or uses (a method): one rule for both."""

    parts: tuple[str, ...]

    @property
    def trains_prompt(self) -> bool:
        return "prompt" in self.parts

    @property
    def trains_model(self) -> bool:
        return "model" in self.parts

    @property
    def trains_lora(self) -> bool:
        return "lora" in self.parts


@dataclass(frozen=True)
class Stage(_Parts):
    """One training stage: what trains, and which ``TrainConfig`` fields set its budget."""

    name: str
    parts: tuple[str, ...]
    steps: str = "max_steps"  # the TrainConfig field with this stage's optimizer steps
    lr: tuple[str, ...] = ("lr",)  # fields tried in order for the model/LoRA learning rate
    default_lr: float | None = None  # when none of ``lr`` is set
    prompt_lr: tuple[str, ...] = ("stage1_lr",)  # fields tried in order for the soft prompt's learning rate

    def __post_init__(self):
        if isinstance(self.parts, str):  # Stage("x", "prompt+model")
            object.__setattr__(self, "parts", tuple(self.parts.split("+")))
        bad = [p for p in self.parts if p not in PARTS]
        if not self.parts or bad:
            raise ValueError(f"stage {self.name!r}: parts must be some of {PARTS}, got {self.parts!r}")

    @property
    def trains(self) -> str:
        """The parts as one label (``prompt+model``), as written in run.json and the training log."""
        return "+".join(self.parts)

    def budget(self, cfg) -> tuple[int, float, float]:
        """(steps, model/LoRA learning rate, prompt learning rate) read from a ``TrainConfig``."""
        lr = _first(cfg, self.lr, self.default_lr)
        if lr is None:
            raise ValueError(f"stage {self.name!r}: no learning rate (fields {self.lr} unset and no default)")
        return getattr(cfg, self.steps), lr, _first(cfg, self.prompt_lr, lr)



def _first(cfg, names: tuple[str, ...], default):
    """The first of these config fields that is set, else ``default``."""
    return next((getattr(cfg, f) for f in names if getattr(cfg, f) is not None), default)


@dataclass(frozen=True)
class Method(_Parts):
    """A fine-tuning method: its stages, in order, and a one-line description for ``--help``."""

    name: str
    help: str
    stages: tuple[Stage, ...]
    one_shot: bool = True  # ``retain compare`` offers NAME-1shot (the --one-shot variant)
    attached: tuple[str, ...] = ()  # parts attached throughout that no stage trains (a fixed random prompt)
    settings: tuple[tuple[str, object], ...] = ()  # TrainConfig fields the method fixes, e.g. (("prompt_init", "random"),)

    def __post_init__(self):
        if not self.name or "@" in self.name or self.name.endswith("-1shot") or self.name in RESERVED:
            raise ValueError(f"method name {self.name!r} is not allowed")
        if not self.stages:
            raise ValueError(f"method {self.name!r} has no stages")
        if len({s.name for s in self.stages}) != len(self.stages):
            raise ValueError(f"method {self.name!r}: stage names must differ (they name checkpoint folders)")
        if "prompt" in self.parts and "lora" in self.parts:
            raise ValueError(f"method {self.name!r}: a soft prompt and LoRA in one run are not supported")
        if any(p not in PARTS or p == "model" for p in self.attached):
            raise ValueError(f"method {self.name!r}: attached parts must be prompt or lora, got {self.attached!r}")

    @property
    def parts(self) -> tuple[str, ...]:
        """Every part the run holds: those its stages train, then those only attached."""
        return tuple(dict.fromkeys([*(p for s in self.stages for p in s.parts), *self.attached]))

    @property
    def removable(self) -> tuple[str, ...]:
        """The parts used for the tuned task only and removed for every other task (the paper's inference rule):
        a soft prompt always; LoRA when the base weights change too (promot-lora), else LoRA *is* the tuned model."""
        return tuple(p for p in self.parts if p == "prompt" or (p == "lora" and self.changes_base))

    def configure(self, cfg):
        """``cfg`` with the settings this method fixes (recorded in run.json as used)."""
        import dataclasses

        return dataclasses.replace(cfg, **dict(self.settings)) if self.settings else cfg

    uses_prompt = _Parts.trains_prompt  # a soft prompt is attached (saved as prompt/)
    uses_lora = _Parts.trains_lora  # LoRA adapters are attached (saved as lora/)
    changes_base = _Parts.trains_model  # the base weights change (saved as model/)

    @property
    def artifacts(self) -> tuple[str, ...]:
        """Folders of the run directory: ``prompt/``, ``lora/`` (PEFT adapters), ``model/`` (changed base)."""
        return tuple(a for a, used in (("lora", self.uses_lora), ("model", self.changes_base), ("prompt", self.uses_prompt)) if used)



RESERVED = ("base", "wise-ft", "lines")  # retain compare's own names (methods.posthoc.KINDS)
class Registry:
    """Named entries (anything with ``.name`` and ``.help``), in registration order; the fine-tuning methods
    here and the continual methods (``retain.continual.methods``) are each one."""

    def __init__(self, kind: str):
        self.kind, self._items = kind, {}

    def register(self, item):
        """Add an entry (an error if the name is taken); returns it."""
        if item.name in self._items:
            raise ValueError(f"{self.kind} {item.name!r} is already registered")
        self._items[item.name] = item
        return item

    def unregister(self, name: str) -> None:
        self._items.pop(name, None)

    def names(self) -> tuple[str, ...]:
        return tuple(self._items)

    def values(self) -> list:
        return list(self._items.values())

    def get(self, name: str, flag: str = "--method"):
        if name not in self._items:
            raise RetainError(f"{flag}: unknown {self.kind} '{name}' (choose from {', '.join(self._items)})")
        return self._items[name]

    def help_text(self) -> str:
        """A flag's help: every entry with its description."""
        return "; ".join(f"{m.name}: {m.help}" for m in self._items.values()) + "."


METHODS = Registry("method")
register, unregister, names, get, help_text = METHODS.register, METHODS.unregister, METHODS.names, METHODS.get, METHODS.help_text


def compare_names() -> tuple[str, ...]:
    """Every name ``retain compare --methods`` accepts for a trained method."""
    return tuple(n for m in METHODS.values() for n in ((m.name, f"{m.name}-1shot") if m.one_shot else (m.name,)))


def markdown_table() -> str:
    """The methods table of docs/METHODS.md (a test checks that the document holds it)."""
    lines = ["| method | stages (parts trained: steps, learning rate) | artifacts | removed for other tasks | `-1shot` | what it is |",
             "|---|---|---|---|---|---|"]
    for m in METHODS.values():
        stages = "; ".join(f"{s.name} ({s.trains}: `{s.steps}`, `{' or '.join(s.lr)}`"
                           + (f" else {s.default_lr:g}" if s.default_lr is not None else "")
                           + (f", prompt `{' or '.join(s.prompt_lr)}`" if s.trains_prompt else "") + ")"
                           for s in m.stages)
        stages += "".join(f"; {p} attached, never trained" for p in m.attached)
        stages += "".join(f"; `{k}` = {v}" for k, v in m.settings)
        arts = ", ".join(f"{a}/" for a in m.artifacts)
        removed = ", ".join(f"{p}/" for p in m.removable) or "-"
        lines.append(f"| `{m.name}` | {stages} | {arts} | {removed} | {'yes' if m.one_shot else 'no'} | {m.help} |")
    return "\n".join(lines)
