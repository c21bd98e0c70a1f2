"""Shared bits of the benchmarks: data paths, result files, the machine."""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RETAIN_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "bench" / "results"


def machine() -> dict:
    import torch

    return {"cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "platform": platform.platform(),
            "torch": torch.__version__, "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def write_result(name: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                "machine": machine(), **data}, indent=2))
    return path


def sst2_rows(tokenizer, n: int, template: str = "Review: {input}\nSentiment:") -> list[dict]:
    """Tokenized SST-2 training examples (loss on the output only), as the engine builds them."""
    return task_rows(tokenizer, "sst2", n, template)


def task_rows(tokenizer, task: str, n: int, template: str, max_length: int = 256, seed: int | None = None) -> list[dict]:
    """Tokenized training examples of ../shared/data/TASK (the first ``n``, or ``n`` drawn with ``seed``)."""
    import random

    from retain.data import TaskFormat, load_jsonl, tokenize

    examples = load_jsonl(SHARED / task / "train.jsonl")
    examples = examples[:n] if seed is None else random.Random(seed).sample(examples, n)
    return tokenize(examples, tokenizer, TaskFormat(template), max_length).rows


def step_timer(model, tokenizer, stage_trains: str, *, lr: float = 2e-5, packing: bool = False):
    """A function timing optimizer steps of the engine's Trainer on a given batch.

    Returns ``time_steps(batch_rows, n, warmup) -> seconds per step``: forward,
    backward and optimizer step exactly as ``retain train`` runs them. ``packing``: False (padded), True
    (packed rows, no soft prompt) or a soft-prompt layout of ``retain.engine.prompt_packing`` ("shared",
    "copies"; the model must have a prompt).
    """
    import contextlib

    import torch
    from transformers import DataCollatorForSeq2Seq, DataCollatorWithFlattening, Trainer, TrainingArguments

    from retain.engine import StageTrainer, virtual_tokens
    from retain.engine.prompt_packing import LAYOUTS, PromptPackingCollator, packed_prompts
    from retain.methods import Stage, param_groups, prepare

    stage = Stage("bench", stage_trains)
    prepare(model, stage)
    args = TrainingArguments(output_dir="/tmp/retain-bench-steps", report_to=[], use_cpu=not torch.cuda.is_available(),
                             learning_rate=lr)
    opt_cls, kw = Trainer.get_optimizer_cls_and_kwargs(args, model)
    kw.pop("lr", None)
    optimizer = opt_cls(param_groups(model, lr, 3e-2), lr=lr, **kw)
    in_row = packing in LAYOUTS
    trainer = StageTrainer(model=model, args=args, selective_loss=True, virtual_tokens=0 if in_row else virtual_tokens(model))
    collate = (PromptPackingCollator(virtual_tokens(model), packing) if in_row
               else DataCollatorWithFlattening(return_position_ids=True, separator_id=-100) if packing
               else DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100))
    device = next(model.parameters()).device

    def time_steps(rows, n: int = 5, warmup: int = 1) -> float:
        batch = {k: v.to(device) for k, v in collate(rows).items()}
        prepare(model, stage)  # this side's trainable parameters (another timer may share the model)
        model.train()
        for i in range(warmup + n):
            if i == warmup:
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
            with packed_prompts(model) if in_row else contextlib.nullcontext():
                loss = trainer.compute_loss(model, dict(batch))
                loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - t) / n

    return time_steps


def lm_eval_setup(model, tokenizer, tasks, shots: int, batch_size: int):
    """retain suite tasks as local lm-evaluation-harness tasks, and the model handed to it in memory.

    Returns (HFLM, lm-eval task names, TaskManager, task folder). Needs ``pip install lm-eval``.
    """
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from retain.evaluation.lmeval_export import export_suite, hflm_kwargs

    work = Path(tempfile.mkdtemp(prefix="retain-lmeval-"))
    names = export_suite(tasks, shots, work, tokenizer=tokenizer)
    sys.path.insert(0, str(work))  # lm-eval imports retain_lmeval_utils from the task folder
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=2048, **hflm_kwargs(tokenizer))
    return lm, names, TaskManager(include_path=str(work)), work


class Units:
    """Cached, resumable units of work of a long benchmark: ``ROOT/NAME/`` with ``unit.json`` recording the unit's
    options and whether it finished.

    ``run(name, options, work)``: a unit finished with the same options is skipped (its recorded result returned);
    one started with the same options is continued (``work(dir)`` resumes what it can, e.g. ``retain compare``'s
    own reuse of trained runs and ``retain train --resume``); one recorded with different options is refused
    (``overwrite``: started over). ``options`` must be JSON; ``work(dir)`` returns the JSON result kept in unit.json.
    """

    def __init__(self, root, *, overwrite: bool = False, log=print):
        self.root, self.overwrite, self.log = Path(root), overwrite, log

    def record(self, name: str) -> dict | None:
        path = self.root / name / "unit.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def done(self, name: str, options: dict) -> dict | None:
        """The finished unit's record, if it finished with these options."""
        rec = self.record(name)
        return rec if rec and rec.get("status") == "done" and rec.get("options") == _plain(options) else None

    def run(self, name: str, options: dict, work):
        import shutil

        from retain.errors import RetainError

        d, options = self.root / name, _plain(options)
        rec = self.record(name)
        if rec and rec.get("options") != options:
            if not self.overwrite:
                key = next(k for k in sorted(set(rec.get("options", {})) | set(options))
                           if rec.get("options", {}).get(k) != options.get(k))
                raise RetainError(f"{d}: unit '{name}' was run with other options ('{key}': {rec['options'].get(key)!r} "
                                  f"there, {options.get(key)!r} now); pass --overwrite to redo it")
            shutil.rmtree(d)
            rec = None
        if rec and rec.get("status") == "done":
            self.log(f"[units] {name}: done with the same options, skipped")
            return rec["result"]
        self.log(f"[units] {name}: {'continuing' if rec else 'starting'}")
        d.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        self._write(d, {"name": name, "status": "running", "options": options, "started": _now()})
        result = work(d)
        spent = time.time() - t0
        self._write(d, {"name": name, "status": "done", "options": options, "finished": _now(),
                        "seconds": round(spent, 1), "resumed": rec is not None, "result": result})
        self.log(f"[units] {name}: done in {spent / 60:.1f} min (this attempt)")
        return result

    @staticmethod
    def _write(d: Path, rec: dict) -> None:
        from retain.artifacts import write_json

        write_json(d / "unit.json", rec)


def _plain(x):
    return json.loads(json.dumps(x, sort_keys=True))


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# ------------------------------------------------------------------ independent units as parallel processes
class Job:
    """One unit of a benchmark run as its own process (command ``argv``, or a function returning it, called when
    the job starts: e.g. to use what the jobs finished by then have written), started once every job it ``needs``
    has finished with exit status 0."""

    def __init__(self, name: str, argv: list[str], needs=()):
        self.name, self.argv, self.needs = name, argv, tuple(needs)


def default_jobs() -> int:
    """Processes to run at once: one per CPU. Small models on one thread each give more throughput in all than one
    process on every thread: on this 2-core machine under load ~2.5 (2026-11-30), a SmolLM2-135M full-FT step on an
    En-Fr batch of 8 took 3.6 s in each of two one-thread processes at once, 27 s in one two-thread process."""
    return max(1, os.cpu_count() or 1)


def run_jobs(jobs: list[Job], n: int, logs, *, cwd=ROOT, log=print, on_finish=None) -> int:
    """Run ``jobs`` as separate processes, at most ``n`` at once (capped at the number of jobs), each with
    ``OMP_NUM_THREADS = max(1, cpus // n)``, in list order as their ``needs`` allow (a need that is not among
    ``jobs`` counts as met); with ``n`` > 1 each one's output goes to ``logs/NAME.log`` and one line per start and
    finish is printed. ``on_finish(name, status)`` runs in this process after each one. Ctrl-C or SIGTERM: no new
    job starts, every running one gets one SIGINT (a training checkpoints and stops, so the same command resumes
    it; a second Ctrl-C aborts them), and this returns 130 once they have exited, without a traceback.
    Returns 0, 130, or the first non-zero status (a job needing a failed one is not started)."""
    import signal

    n = max(1, min(n, len(jobs)))
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // n))}
    names = {j.name for j in jobs}
    pending, running, status, stop = list(jobs), {}, {}, []

    def on_signal(signum, frame):
        if not stop:
            log(f"[jobs] {signal.Signals(signum).name}: stopping {len(running)} running unit(s); they keep their checkpoints")
        stop.append(signum)
        for proc, _ in running.values():
            proc.send_signal(signal.SIGINT)

    def start_ready():
        for job in [] if stop else list(pending):  # stopping: nothing more starts, nothing is reported as failed
            needs = [d for d in job.needs if d in names]
            failed = [d for d in needs if status.get(d)]
            if failed:  # never started
                pending.remove(job)
                status[job.name] = status[failed[0]]
                log(f"[jobs] {job.name}: not started ({failed[0]} failed)")
            elif len(running) < n and all(d in status for d in needs):
                pending.remove(job)
                running[job.name] = _start(job, env, logs if n > 1 else None, cwd, log)

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while running or (pending and not stop):
            start_ready()
            ended = [(name, proc.returncode) for name, (proc, _) in running.items() if proc.poll() is not None]
            for name, rc in ended:
                out = running.pop(name)[1]
                if out:
                    out.close()
                log(f"[jobs] {name}: " + ("finished" if rc == 0 else f"stopped (exit {rc})"))
            start_ready()  # independent units take the freed places first; those needing an ended one wait for
            for name, rc in ended:  # its on_finish (e.g. the document that records a choice they read)
                if on_finish:
                    on_finish(name, rc)
                status[name] = rc
            time.sleep(0.2)
    except BaseException:  # an error here (e.g. in on_finish): the running units stop as on Ctrl-C, then it is raised
        for proc, _ in running.values():
            proc.send_signal(signal.SIGINT)
        for proc, _ in running.values():
            proc.wait()
        raise
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    return 130 if stop else next((s for s in status.values() if s), 0)


def _start(job: Job, env: dict, logs, cwd, log):
    """A job's process (in its own session: signals reach it from ``run_jobs`` only, once) and its open log file."""
    import subprocess

    argv, out = job.argv() if callable(job.argv) else job.argv, None
    if logs is not None:
        Path(logs).mkdir(parents=True, exist_ok=True)
        out = open(Path(logs) / f"{job.name}.log", "a")  # noqa: SIM115 (open while the process runs; run_jobs closes it)
        out.write(f"$ OMP_NUM_THREADS={env['OMP_NUM_THREADS']} {' '.join(argv)}\n")
        out.flush()
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT if out else None,
                            start_new_session=True)
    log(f"[jobs] {job.name}: started ({env['OMP_NUM_THREADS']} thread(s)" + (f"; log {out.name})" if out else ")"))
    return proc, out


def drop_weights(d, keep=()) -> int:
    """Delete the model weights under a finished unit's folder ``d`` (every ``model/`` folder and training
    checkpoint; ``keep``: paths relative to ``d`` left alone); returns the bytes freed."""
    import shutil

    d, freed = Path(d), 0
    for p in sorted(d.rglob("*")):
        rel = p.relative_to(d).as_posix()
        if p.is_dir() and (p.name == "model" or p.name.startswith("checkpoint-")) and not any(
                rel == k or rel.startswith(k + "/") for k in keep) and p.exists():
            freed += sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
            shutil.rmtree(p)
    return freed
