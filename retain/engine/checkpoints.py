"""Whole-model checkpoints in safetensors (tied weights once), and finding the newest complete one."""

from __future__ import annotations

import json
from pathlib import Path

from retain.artifacts import atomic
from retain.errors import RetainError

STATE_FILE = "retain_state.safetensors"


def save_state(model, path: Path, only_trainable: bool = False) -> None:
    """Write a model's state (tied weights handled) atomically as safetensors."""
    from safetensors.torch import save_file

    state = {n: p.detach().cpu().contiguous() for n, p in (model.named_parameters() if only_trainable else model.state_dict().items())
             if not only_trainable or p.requires_grad}
    seen: set[int] = set()
    unique = {}
    for name, t in state.items():  # drop aliases of tied tensors (safetensors refuses shared memory)
        if t.numel() and t.data_ptr() in seen:
            continue
        seen.add(t.data_ptr())
        unique[name] = t
    with atomic(path) as tmp:
        save_file(unique, str(tmp))


def load_state(model, path: Path) -> None:
    from safetensors.torch import load_file

    state = load_file(str(path))
    missing = model.load_state_dict(state, strict=False)
    if missing.unexpected_keys:
        raise RetainError(f"{path}: checkpoint does not match the model (unexpected {missing.unexpected_keys[0]})")


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
