"""Which process this is under ``accelerate launch``/torchrun, and work shared out over processes.

A single process (no ``torch.distributed`` group) is rank 0 of 1: everything here is then a no-op.

Rules every command follows under a launch of N processes: every process runs the same steps (training is
data-parallel, and every collective call needs all of them); only the main process writes files (``on_main``);
a check that fails fails on every process with the same message, so none waits for a peer that stopped.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from datetime import timedelta
from pathlib import Path

import torch

from retain.errors import RetainError

TIMEOUT = timedelta(seconds=1800)  # transformers' TrainingArguments.ddp_timeout default
ZERO3 = ("ZeRO stage 3 partitions the weights themselves, and retain's checkpoints and artifacts read whole weights: "
         "use stage 2 (or FSDP through an accelerate config)")


def check_deepspeed(path: str | None) -> None:
    """``--deepspeed CONFIG``, before any model is loaded: a JSON object in a readable file, a ZeRO stage retain
    can save (0-2: stage 3 partitions the weights themselves), and the deepspeed package installed."""
    if not path:
        return
    p = Path(path)
    if not p.is_file():
        raise RetainError(f"--deepspeed: file not found: {p}")
    try:
        data = json.loads(p.read_text(encoding="utf-8", errors="replace"))
    except ValueError as e:
        raise RetainError(f"--deepspeed: {p}:{getattr(e, 'lineno', '?')}: not valid JSON ({getattr(e, 'msg', e)})") from None
    if not isinstance(data, dict):
        raise RetainError(f"--deepspeed: {p} must hold a JSON object (a DeepSpeed configuration)")
    zero = data.get("zero_optimization") or {}
    if not isinstance(zero, dict):
        raise RetainError(f"--deepspeed: {p}: 'zero_optimization' must be an object")
    if str(zero.get("stage", 0)) == "3":
        raise RetainError(f"--deepspeed: {p} asks for ZeRO stage 3; {ZERO3}")
    import importlib.util

    if importlib.util.find_spec("deepspeed") is None:
        raise RetainError("--deepspeed: the deepspeed package is not installed (pip install deepspeed; it trains on CUDA GPUs)")


def begin(deepspeed: str | None = None) -> None:
    """A command's first step: check ``--deepspeed``'s file, then join the launch's process group (``start``)."""
    check_deepspeed(deepspeed)
    start(deepspeed=bool(deepspeed))


def start(*, deepspeed: bool = False) -> None:
    """Join the launch's process group now, as the Trainer would on its first stage (through accelerate's
    ``PartialState``, like ``TrainingArguments``), so that ``is_main`` is right from a command's first step.
    No-op outside a multi-process launch. ``deepspeed``: the group is set up for DeepSpeed (``--deepspeed``)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    from accelerate import PartialState

    if not torch.cuda.is_available():
        PartialState(cpu=True)
        return
    mark = deepspeed and "ACCELERATE_USE_DEEPSPEED" not in os.environ
    if mark:  # as TrainingArguments(deepspeed=...) does
        os.environ["ACCELERATE_USE_DEEPSPEED"] = "true"
    try:
        PartialState(timeout=TIMEOUT)
    finally:
        if mark:
            del os.environ["ACCELERATE_USE_DEEPSPEED"]


def end(ok: bool) -> None:
    """A command's last step under a launch: leave the process group (``destroy_process_group``), once every process
    has arrived when the command succeeded (``ok``; after a failure a peer may never arrive). Without it the group's
    gloo worker threads can outlive the interpreter's teardown and abort the process at exit ("terminate called
    without an active exception", SIGABRT: a finished launch reported as failed). No-op without a group."""
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return
    try:
        if ok:
            torch.distributed.barrier()
    finally:
        torch.distributed.destroy_process_group()


def world() -> tuple[int, int]:
    """(rank, world size)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world()[0] == 0


def barrier() -> None:
    if world()[1] > 1:
        torch.distributed.barrier()


def main_only(report: Callable[[str], None]) -> Callable[[str], None]:
    """``report`` (a progress printer) on the main process, silence on the others: the main one reports for all."""
    return report if is_main() else (lambda message: None)


def on_main(fn: Callable, *args, **kwargs):
    """``fn(*args, **kwargs)`` on the main process only (the one that writes files); every process returns its
    value, or raises the ``RetainError`` it raised (another failure of the main process is reported to the
    others as a ``RetainError`` naming it), so that no process goes on while the main one has stopped."""
    rank, size = world()
    if size == 1:
        return fn(*args, **kwargs)
    box: list = [None]
    failure: BaseException | None = None
    if rank == 0:
        try:
            box[0] = ("ok", fn(*args, **kwargs))
        except RetainError as e:
            box[0], failure = ("error", str(e)), e
        except BaseException as e:
            box[0], failure = ("error", f"the main process stopped: {type(e).__name__}: {e}"), e
    torch.distributed.broadcast_object_list(box, src=0)
    if failure is not None:
        raise failure
    kind, value = box[0]
    if kind == "error":
        raise RetainError(value)
    return value


def shares_parameters() -> bool:
    """Whether the launch shards the parameters over the processes (FSDP, DeepSpeed ZeRO-3): every forward pass
    is then a collective, so every process must run the same ones."""
    if world()[1] == 1:
        return False
    from accelerate.state import AcceleratorState, is_initialized
    from accelerate.utils import DistributedType

    if is_initialized() and AcceleratorState().distributed_type == DistributedType.FSDP:
        return True
    from transformers.integrations import is_deepspeed_zero3_enabled

    return is_deepspeed_zero3_enabled()


def gather_sharded(items: Sequence, fn: Callable[[list], list], *, independent: bool = False) -> list:
    """``fn`` on this process's share of ``items`` (every ``size``-th item from ``rank``); every process
    gets all results, in the order of ``items``.

    When the parameters are sharded over the processes (``shares_parameters``), ``fn``'s forward passes are
    collectives: every process then runs ``fn`` on all items, unless ``independent`` (``fn`` uses a model of
    its own, not the sharded one)."""
    rank, size = world()
    if size == 1 or (not independent and shares_parameters()):
        return fn(list(items))
    mine = fn(list(items[rank::size]))
    parts: list = [None] * size
    torch.distributed.all_gather_object(parts, mine)
    out: list = [None] * len(items)
    for r, part in enumerate(parts):
        out[r::size] = part
    return out


def keep_accelerator_state() -> bool:
    """Whether a stage's ``TrainingArguments`` should keep the accelerate state set up so far instead of resetting it
    (``accelerator_config={"use_configured_state": True}``): under FSDP, so that a later stage (promot's stage 2)
    takes the model the first stage sharded as it is; accelerate 1.15 cannot prepare a sharded model afresh ("Could
    not find the transformer layer class ... in the model": the blocks' classes are FSDP's now)."""
    from accelerate.state import PartialState

    return fsdp_requested() and PartialState._shared_state != {}


def parallelism() -> str:
    """How this run is spread over processes, as accelerate set it up: ``NO`` (one process), ``MULTI_CPU``/
    ``MULTI_GPU`` (DDP), ``FSDP``, ``DEEPSPEED``..."""
    from accelerate.state import AcceleratorState, is_initialized

    return AcceleratorState().distributed_type.value if is_initialized() else "NO"


def fsdp_requested() -> bool:
    """Whether the launch's accelerate config asks for FSDP (``distributed_type: FSDP``)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"


def check_sharding() -> None:
    """Refuse (on every process alike) a launch retain cannot train and save as asked: DeepSpeed ZeRO-3 (from an
    accelerate config), or FSDP that accelerate did not set up (on CPUs it runs such a launch as DDP, each
    process holding the whole model), FSDP1, or a sharded state-dict type. Call once the Trainer's
    ``Accelerator`` exists."""
    import accelerate
    from accelerate.state import AcceleratorState, is_initialized
    from accelerate.utils import DistributedType

    if not is_initialized():
        return
    state = AcceleratorState()
    kind = state.distributed_type
    if kind == DistributedType.DEEPSPEED and getattr(state.deepspeed_plugin, "zero_stage", 0) == 3:
        raise RetainError(f"DeepSpeed: {ZERO3}")
    if not fsdp_requested():
        return
    if kind != DistributedType.FSDP:
        why = (" (accelerate sets FSDP up only on GPUs and other accelerators; on CPUs it would train unsharded DDP "
               "copies: use 'accelerate launch --multi_gpu --num_processes N' for data-parallel training on CPUs)"
               if kind == DistributedType.MULTI_CPU else "")
        raise RetainError(f"the accelerate config asks for FSDP (distributed_type: FSDP), but accelerate {accelerate.__version__} "
                          f"set this launch up as {kind.value}{why}")
    plugin = state.fsdp_plugin
    if plugin.fsdp_version != 2:
        raise RetainError(f"FSDP: retain trains and saves through FSDP2; set fsdp_version: 2 in the accelerate config "
                          f"(it has fsdp_version: {plugin.fsdp_version})")
    if "FULL_STATE_DICT" not in str(plugin.state_dict_type):
        raise RetainError("FSDP: retain's checkpoints and artifacts hold full weights; set fsdp_state_dict_type: "
                          f"FULL_STATE_DICT in the accelerate config (it has {plugin.state_dict_type})")
