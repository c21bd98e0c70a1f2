"""Trainer callbacks: the best checkpoint by the tuned-task metric, the JSONL log, and the veto that
never checkpoints a non-finite step and stops on Ctrl-C."""

from __future__ import annotations

import json
import time
from pathlib import Path

from transformers import TrainerCallback

from retain.artifacts import write_json
from retain.distributed import check_sharding, is_main
from retain.engine.checkpoints import full_state, root_gathered, set_state, write_state


class BestCheckpoint(TrainerCallback):
    """Evaluate every ``every`` steps; keep (and finally restore) the best trainable weights.

    Every process evaluates (sharing the items out) and agrees on the score; on a sharded model (FSDP) the best
    weights are gathered to the main process, which writes them and broadcasts them back on ``restore``."""

    def __init__(self, evaluate, every: int, max_steps: int, stage_dir: Path, log):
        self.evaluate, self.every, self.max_steps, self.dir, self.log = evaluate, every, max_steps, stage_dir, log
        self.evals: list[dict] = []
        self.best: dict | None = None
        self.best_state: dict | None = None
        rec = stage_dir / "best.json"
        if rec.is_file():  # resuming: what the interrupted run had found
            saved = json.loads(rec.read_text())
            self.evals, self.best = saved["evals"], saved["best"]
            from safetensors.torch import load_file

            self.best_state = load_file(str(stage_dir / "best.safetensors"))

    def on_train_begin(self, args, state, control, **kw):
        check_sharding()  # the Trainer's Accelerator exists now: an FSDP launch retain cannot honour stops here

    def on_step_end(self, args, state, control, model=None, **kw):
        step = state.global_step
        if not self.every or not (step % self.every == 0 or step == self.max_steps):
            return
        if any(e["step"] == step for e in self.evals):
            return
        t = time.time()
        with root_gathered(model):  # sharded (FSDP): the decoder runs the soft prompt and the base model apart
            value = self.evaluate(model)
        entry = {"step": step, "score": value, "seconds": round(time.time() - t, 2)}
        self.evals.append(entry)
        self.log({"event": "eval", **entry})
        if self.best is None or value > self.best["score"]:
            self.best = entry
            self.best_state = full_state(model, only_trainable=True)  # every process: gathered when sharded
            if is_main():
                write_state(self.best_state, self.dir / "best.safetensors")
                write_json(self.dir / "best.json", {"evals": self.evals, "best": self.best})
        elif is_main():
            write_json(self.dir / "best.json", {"evals": self.evals, "best": self.best})

    def restore(self, model) -> None:
        if self.best_state is not None:
            set_state(model, self.best_state, where=self.dir / "best.safetensors", from_main=True)


class LogCallback(TrainerCallback):
    """Losses and learning rates into the run's JSONL log."""

    def __init__(self, log):
        self.log = log

    def on_log(self, args, state, control, logs=None, **kw):
        self.log({"event": "log", "step": state.global_step, **dict(logs or {})})




class Veto(TrainerCallback):
    """Runs after the Trainer's own flow callback: never checkpoint a step whose loss was
    not finite; on Ctrl-C, checkpoint this step and stop."""

    def __init__(self, trainer):
        self.trainer = trainer

    def on_step_end(self, args, state, control, **kw):
        if self.trainer.bad_step is not None:
            control.should_save = False
            control.should_training_stop = True
        elif self.trainer.stopped_by_interrupt:
            control.should_save = args.save_strategy != "no"
            control.should_training_stop = True
        return control


