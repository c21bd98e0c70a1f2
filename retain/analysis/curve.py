"""The format-specialization curve (the paper's Fig. 2): while a method trains, every N steps, the suite's
Norm. Avg. and format-specialization rate and the tuned-task score, each with its standard error.

The model is scored as it is deployed: the tuned task in its own format with the soft prompt (when the
method has one), every suite task without it (``harness.evaluate_all``, the paper's rule). Steps of all
stages share one axis: a method's last stage runs over ``0 .. its steps``, the stages before it at negative
steps (ProMoT's stage 1 over ``-stage1_steps .. 0``, stage 2 over ``0 .. stage2_steps``), so full
fine-tuning and ProMoT stage 2 are compared at equal model-tuning steps.

A point::

    {"step", "stage", "stage_step", "tuned": {"score", "se", "n"} | None,
     "norm_avg": {"4": {"score", "se", "n_tasks"}}, "format_rate": {"4": {"rate", "se", "n"}}}
"""

from __future__ import annotations

import numpy as np
from scipy.stats import sem
from transformers import TrainerCallback

from retain.evaluation.harness import format_hits


def stage_offsets(steps: list[int]) -> list[int]:
    """Where each stage's step 0 lies on the shared axis: the last stage starts at 0, earlier ones before it."""
    before = np.concatenate([[0], np.cumsum(steps)[:-1]]).astype(int)
    return [int(b - before[-1]) for b in before]


def format_rate(result: dict, key: str, space) -> dict:
    """The pooled format-specialization rate at ``key`` shots with its standard error (closed form over the
    counted answers of every generated task, every draw): ``{"rate", "se", "n"}`` (rate None if none counted)."""
    hits = [h for rec in result["tasks"].values() if rec.get("mode") == "generate"
            for u in (rec.get("units") or {}).get(key, []) for h in format_hits(space, u["predictions"], u["references"])]
    x = 100.0 * np.asarray(hits, dtype=float)
    return {"rate": float(x.mean()) if x.size else None, "se": float(sem(x)) if x.size > 1 else None, "n": int(x.size)}


def point(result: dict, space, *, step: int, stage: str, stage_step: int) -> dict:
    """One point of the curve from an ``evaluate_all`` result (which keeps every item)."""
    tuned = result.get("tuned")
    t = (tuned or {}).get("summary") or {}
    shots = [str(k) for k in result["shots"]]
    return {"step": step, "stage": stage, "stage_step": stage_step,
            "tuned": {"score": t.get("score"), "se": t.get("se"), "n": t.get("n")} if tuned else None,
            "norm_avg": {k: result["norm_avg_summary"].get(k) for k in shots},
            "format_rate": {k: format_rate(result, k, space) for k in shots}}


class CurvePoints(TrainerCallback):
    """Scores the model every ``every`` steps of its stage and at the last step, and at step 0 when ``start``
    (the method's first stage: a later stage's step 0 is the previous stage's last step, already scored):
    ``score(model) -> evaluate_all result``, then ``record(point, result)``."""

    def __init__(self, score, record, space, *, stage: str, steps: int, offset: int, every: int, start: bool = True):
        self.score, self.record, self.space = score, record, space
        self.stage, self.steps, self.offset, self.every, self.start = stage, steps, offset, every, start
        self.done: set[int] = set()

    def _at(self, step: int, model) -> None:
        if step in self.done:
            return
        self.done.add(step)
        result = self.score(model)
        self.record(point(result, self.space, step=self.offset + step, stage=self.stage, stage_step=step), result)

    def on_train_begin(self, args, state, control, model=None, **kw):
        if self.start:
            self._at(state.global_step, model)

    def on_step_end(self, args, state, control, model=None, **kw):
        if state.global_step % self.every == 0 or state.global_step == self.steps:
            self._at(state.global_step, model)
