"""Continual methods as typed data in a registry, and the two ways they run.

| method          | what trains per stage                     | kept                                  |
|-----------------|-------------------------------------------|---------------------------------------|
| switchcit       | a new LoRA adapter (base frozen), switch  | registry: adapters/<task>/, switch/   |
| sequential      | all weights, on the new task              | results only                          |
| sequential-lora | one LoRA adapter, carried across tasks    | results only                          |
| replay          | all weights, new task + replay buffer     | results only                          |
| multitask       | all weights, on every task at once (1 stage, steps x tasks) | results only        |
| arrow           | a new LoRA adapter per task (as switchcit); PEFT Arrow routes | adapters/<task>/, results |
| osf             | PEFT OSF: low singular directions of every weight, merged after each task | results only |

Every stage is one ``retain.engine.run_stage`` call. A method is one ``ContinualMethod``: what it trains,
its default learning rate, whether it replays or trains jointly, whether it writes a registry, and the
function that runs it (``switchcit.run_switchcit`` or ``baselines.run_baseline``), imported when it runs, so
that this registry stays light for ``--help``. Adding one: CONTRIBUTING.md.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

from retain.methods.registry import Registry


@dataclass(frozen=True)
class ContinualMethod:
    name: str
    help: str
    run: str | Callable  # "module:function" (imported when the method runs) or the function:
    # (Context, new tasks, max_new_tokens per task, Previous | None) -> {"stages", "evals", ...}
    trains: str = "model"  # "model" (all weights) or "lora"
    default_lr: float = 2e-5
    joint: bool = False  # every task at once, one stage of steps x tasks (the multitask upper bound)
    replay: bool = False  # mix stored examples of earlier tasks into each stage
    registry: bool = False  # writes a registry (adapters + switch) that --resume-from can extend
    adapters_from: bool = False  # its per-task LoRA adapters (trained as switchcit's) can come from a registry (--adapters-from)

    def runner(self) -> Callable:
        if callable(self.run):
            return self.run
        module, _, function = self.run.partition(":")
        return getattr(importlib.import_module(module), function)


CONTINUAL_METHODS = Registry("continual method")
register, unregister, names, get, help_text = (CONTINUAL_METHODS.register, CONTINUAL_METHODS.unregister, CONTINUAL_METHODS.names,
                                               CONTINUAL_METHODS.get, CONTINUAL_METHODS.help_text)

BASELINE = "retain.continual.baselines:run_baseline"

# the registry entries, in the order --help lists them
register(ContinualMethod("switchcit", "one LoRA adapter per task on the frozen base + a switch that routes each input",
                         "retain.continual.switchcit:run_switchcit", trains="lora", default_lr=2e-4, registry=True))
register(ContinualMethod("sequential", "full fine-tuning task after task", BASELINE))
register(ContinualMethod("sequential-lora", "one LoRA adapter trained task after task", BASELINE, trains="lora", default_lr=2e-4))
register(ContinualMethod("replay", "sequential with stored examples of earlier tasks mixed in", BASELINE, replay=True))
register(ContinualMethod("multitask", "all tasks at once (upper bound)", BASELINE, joint=True))
register(ContinualMethod("arrow", "switchcit's per-task LoRA adapters routed by PEFT's Arrow (gradient-free, per token; no switch)",
                         "retain.continual.arrow:run_arrow", trains="lora", default_lr=2e-4, adapters_from=True))
register(ContinualMethod("osf", "PEFT's Orthogonal Subspace Fine-tuning task after task: updates kept orthogonal to each weight's top singular directions, more of them frozen after each task",
                         "retain.continual.osf:run_osf", trains="lora"))
