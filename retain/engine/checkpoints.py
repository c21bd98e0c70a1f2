"""Whole-model checkpoints in safetensors (tied weights once), gathered from a model sharded over processes
(FSDP2), and finding the newest complete one.

Under FSDP each process holds a shard of every parameter (a ``DTensor``); reading or writing the weights then
goes through torch's distributed state-dict API (``get_model_state_dict``/``set_model_state_dict`` with a
full state dict), which is a collective: every process calls ``full_state``, ``save_state`` and ``set_state``
at the same point, and only the main process writes files.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch

from retain.artifacts import atomic
from retain.distributed import is_main
from retain.errors import RetainError

STATE_FILE = "retain_state.safetensors"


def is_sharded(model) -> bool:
    """Whether the model's parameters are split over processes (FSDP2 turns each one into a ``DTensor``)."""
    if not torch.distributed.is_available():
        return False
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def full_state(model, *, only_trainable: bool = False) -> dict[str, torch.Tensor]:
    """The model's complete weights as CPU tensors (``only_trainable``: a copy of the trainable parameters).

    A sharded model's weights are gathered (a collective: every process calls this); the main process gets
    them and the others an empty dict. Otherwise the tensors of the whole state are the model's own."""
    if not is_sharded(model):
        if only_trainable:
            from retain.methods import trainable_state

            return trainable_state(model)
        return {n: t.detach().cpu() for n, t in model.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    state = drop_aliases(model, get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)))
    if only_trainable:
        names = {n for n, p in model.named_parameters() if p.requires_grad}
        state = {n: t for n, t in state.items() if n in names}
    return state


def drop_aliases(model, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A gathered state with a tied or shared parameter under its first name only (gathering copies each name
    apart, so the aliases no longer share memory; loading an alias into a sharded model fails)."""
    seen: set[int] = set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in seen:
            state.pop(name, None)
        seen.add(id(p))
    return state


def set_state(model, state: dict[str, torch.Tensor], *, where: Path | str = "checkpoint", from_main: bool = False) -> None:
    """Load (part of) a full state into the model. Sharded: a collective that shards each tensor over the
    processes; ``from_main``: only the main process's ``state`` is read (broadcast to the others)."""
    if is_sharded(model):
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        options = StateDictOptions(full_state_dict=True, broadcast_from_rank0=from_main, strict=False)
        result = set_model_state_dict(model, dict(state), options=options)  # (it fills the dict it is given in)
    else:
        result = model.load_state_dict(state, strict=False)
    if result.unexpected_keys:
        raise RetainError(f"{where}: checkpoint does not match the model (unexpected {result.unexpected_keys[0]})")


def write_state(state: dict[str, torch.Tensor], path: Path) -> None:
    """Write a state atomically as safetensors (aliases of tied tensors once: safetensors refuses shared memory)."""
    from safetensors.torch import save_file

    seen: set[int] = set()
    unique = {}
    for name, t in state.items():
        t = t.contiguous()
        if t.numel() and t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        unique[name] = t
    with atomic(path) as tmp:
        save_file(unique, str(tmp))


def save_state(model, path: Path, only_trainable: bool = False) -> None:
    """Write a model's state (gathered if sharded) to ``path``: every process calls this, the main process writes."""
    state = full_state(model, only_trainable=only_trainable)
    if is_main():
        write_state(state, path)


def load_state(model, path: Path) -> None:
    """Load a state written by ``save_state`` (every process reads the file)."""
    from safetensors.torch import load_file

    set_state(model, load_file(str(path)), where=path)


def part_state(state: dict[str, torch.Tensor], model, part) -> dict[str, torch.Tensor]:
    """The entries of ``state`` (``model``'s, aliases once) that belong to its submodule ``part``, named as in ``part``."""
    if part is model:
        return state
    owner: dict[int, str] = {}  # tensor -> the name it has in state (a tied or shared one may be kept under another name)
    for name, t in model.state_dict(keep_vars=True).items():
        if name in state:
            owner.setdefault(id(t), name)
    return {name: state[owner[id(t)]] for name, t in part.state_dict(keep_vars=True).items() if id(t) in owner}


@contextlib.contextmanager
def root_gathered(model):
    """On a sharded model, the weights of its root unit gathered on every process for the duration (a
    collective): those outside the per-block units, i.e. the embeddings, the head and a soft prompt. Code that
    calls the model's parts rather than its forward needs them (retain's decoder runs the soft prompt and the
    base model apart; PEFT saves a prompt through the prompt encoder); each block still gathers its own
    weights in its forward, so every process must run the same forward passes meanwhile."""
    from torch.distributed.fsdp import FSDPModule

    if not isinstance(model, FSDPModule):
        yield model
        return
    model.unshard()
    try:
        yield model
    finally:
        model.reshard()


def save_pretrained(model, directory: Path, state: dict[str, torch.Tensor] | None = None, **kwargs) -> None:
    """``model.save_pretrained(directory)`` of a model that may be sharded: every process calls this, the main one
    writes. ``state``: the sharded model's ``full_state`` (or ``part_state``), gathered once by the caller."""
    if not is_sharded(model):
        if is_main():
            model.save_pretrained(str(directory), **({"state_dict": state} if state is not None else {}), **kwargs)
        return
    with root_gathered(model):  # a soft prompt is read through the prompt encoder
        if is_main():
            model.save_pretrained(str(directory), state_dict=state, **kwargs)


def last_checkpoint(stage_dir: Path) -> Path | None:
    """The newest complete checkpoint of a stage (one killed mid-write is skipped)."""

    def complete(p: Path) -> bool:
        try:
            json.loads((p / "trainer_state.json").read_text())
        except (OSError, ValueError):
            return False
        return (p / STATE_FILE).is_file()

    ckpts = [p for p in stage_dir.glob("checkpoint-*") if p.name.split("-")[-1].isdigit() and complete(p)]
    return max(ckpts, key=lambda p: int(p.name.split("-")[1])) if ckpts else None
