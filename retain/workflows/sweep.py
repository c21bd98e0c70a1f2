"""``retain compare --sweep``: every method trained at several values of training options.

A spec is ``FIELD=V1,V2,...`` (``lr=1e-5,3e-5,1e-4``) or ``FIELD+FIELD2=V1,V2,...``: each value sets every
named ``TrainConfig`` field at once (``lr+stage2_lr=...``: full fine-tuning's and ProMoT stage 2's model
learning rate swept together). Values are checked against the fields' types, choices and ranges
(``config.build``, the rule every flag goes through) before anything runs.

An evaluated name is ``METHOD@SPEC`` (``full@lr=1e-5``, ``wise-ft-0.5@lr=1e-5``); its run lives in
``runs/METHOD@SPEC/`` (with ``@seedN`` after it for further training seeds, as without a sweep).
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

from retain.config import TrainConfig, build
from retain.errors import RetainError

FLAG = "--sweep"
FIXED = ("method", "output", "one_shot", "resume", "overwrite", "train", "validation", "seed", "model")  # not sweepable
_NAME = re.compile(r"^[A-Za-z0-9._-]+$")  # a value must be usable in a folder name
_BOOL = {"true": True, "on": True, "yes": True, "1": True, "false": False, "off": False, "no": False, "0": False}


@dataclass(frozen=True)
class Sweep:
    fields: tuple[str, ...]
    values: tuple[str, ...]  # as given: they name the runs

    def names(self, name: str) -> list[str]:
        """``name`` at every value (``base`` is not trained: it stays one name)."""
        return [name] if name == "base" else [f"{name}@{'+'.join(self.fields)}={v}" for v in self.values]


def parse_sweep(text: str | None) -> Sweep | None:
    """``FIELD[+FIELD...]=V1,V2,...`` checked against ``TrainConfig``; None for no sweep."""
    if text is None or not str(text).strip():
        return None
    head, sep, tail = str(text).partition("=")
    known = {f.name: f for f in dataclasses.fields(TrainConfig)}
    fields = tuple(f.strip().replace("-", "_") for f in head.split("+"))
    values = tuple(v.strip() for v in tail.split(",") if v.strip())
    if not sep or not all(fields) or not values:
        raise RetainError(f"{FLAG}: expected FIELD=V1,V2,... (e.g. lr=1e-5,3e-5,1e-4), got '{text}'")
    for f in fields:
        if f not in known:
            raise RetainError(f"{FLAG}: '{f}' is not a training option (see 'retain train --help')")
        if f in FIXED:
            raise RetainError(f"{FLAG}: '{f}' cannot be swept (it names what is compared, not how it trains)")
    if len(set(values)) != len(values):
        raise RetainError(f"{FLAG}: a value is repeated in '{tail}'")
    for v in values:
        if not _NAME.match(v):
            raise RetainError(f"{FLAG}: value '{v}' must be letters, digits, '.', '_' or '-' (it names a run folder)")
        overrides(fields, v)  # type, choices and range, now
    return Sweep(fields, values)


def overrides(fields, value: str) -> dict:
    """The ``TrainConfig`` values one sweep value sets, validated as ``--config`` values are."""
    known = {f.name: f for f in dataclasses.fields(TrainConfig)}
    fields = tuple(f.replace("-", "_") for f in fields)
    typed = {f: (_BOOL.get(value.lower(), value) if str(known[f].type) == "bool" else value) for f in fields}
    try:
        cfg = build(TrainConfig, None, typed, source=FLAG)
    except RetainError as e:  # a range or a choice, named by its flag: say it came from the sweep
        raise RetainError(str(e) if str(e).startswith(FLAG) else f"{FLAG} {'+'.join(fields)}={value}: {e}") from None
    return {f: getattr(cfg, f) for f in fields}


def split(name: str) -> tuple[str, dict]:
    """``METHOD@FIELD=V`` -> (``METHOD``, the options it sets); a name without a sweep sets none."""
    method, _, spec = name.partition("@")
    if not spec:
        return method, {}
    head, _, value = spec.partition("=")
    return method, overrides(tuple(head.split("+")), value)


def run_of(name: str) -> str:
    """The trained run an evaluated name needs: a post-hoc name (``wise-ft-A[@SPEC]``, ``lines-A-B[@SPEC]``) is
    built from ``full[@SPEC]``."""
    from retain.methods import posthoc

    method, _, spec = name.partition("@")
    return ("full" if posthoc.is_posthoc(method) else method) + (f"@{spec}" if spec else "")


def run_config(cfg: TrainConfig, run: str, **changes) -> TrainConfig:
    """The training options of one run: its method (``-1shot``: with ``--one-shot``) and its sweep values."""
    method, options = split(run)
    return dataclasses.replace(cfg, **options, method=method.removesuffix("-1shot"), one_shot=method.endswith("-1shot"), **changes)
