import json
import os
import random
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("RETAIN_SHARED_DATA", ROOT.parent / "shared" / "data"))

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):  # `pytest -n N` (make test): the cores shared out over the workers
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    os.environ["OMP_NUM_THREADS"] = str(_threads)  # the CLI subprocesses a test starts, too
    import torch

    torch.set_num_threads(_threads)


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def sentiment_rows(n: int, seed: int = 0):
    r = random.Random(seed)
    pos, neg = ["good", "great", "fine", "nice"], ["bad", "awful", "poor", "sad"]
    rows = []
    for _ in range(n):
        w = r.choice(pos + neg)
        rows.append({"input": f"the film was {w}", "output": "positive" if w in pos else "negative"})
    return rows


@pytest.fixture
def task(tmp_path):
    """A tiny classification task: (train file, validation file)."""
    return write_jsonl(tmp_path / "train.jsonl", sentiment_rows(32)), write_jsonl(tmp_path / "val.jsonl", sentiment_rows(6, 1))


def cli(*args, check=True, env=None, process=False, **kw):
    """Run the CLI as a user would (``retain ARGS``); returns a CompletedProcess.

    By default the command runs in this test process, through the same entry point as ``python -m retain``
    (``retain.cli.main``), with stdout and stderr captured and the exit status taken from ``SystemExit``, as
    click's and typer's test runners do: starting a new interpreter costs ~10 s of imports (torch, transformers,
    peft) on this 2-core machine, which over the suite's ~100 commands was half its time. ``process=True`` (or
    ``RETAIN_TEST_SUBPROCESS=1`` for the whole suite) runs a real ``python -m retain`` process instead; the tests of
    process-level behaviour (signals, ``accelerate launch``, what ``--help`` imports, the demo) always do."""
    argv = [str(a) for a in args]
    if process or kw or os.environ.get("RETAIN_TEST_SUBPROCESS"):
        import subprocess

        e = dict(os.environ, **(env or {}))
        proc = subprocess.run([sys.executable, "-m", "retain", *argv], capture_output=True, text=True, env=e, **kw)
    else:
        proc = _in_process(argv, env or {})
    if check and proc.returncode != 0:
        raise AssertionError(f"retain {' '.join(argv)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc


def _in_process(argv, env):
    """``python -m retain ARGV`` without a new interpreter: the exit status as Python would report it (a
    ``SystemExit`` code, 1 with the traceback on stderr for an uncaught exception), and the state a command leaves
    behind (environment, warning filters, accelerate's process singletons) undone, so commands stay independent."""
    import contextlib
    import io
    import subprocess
    import traceback
    import warnings

    from retain import cli as retain_cli

    out, err = io.StringIO(), io.StringIO()
    saved_env = dict(os.environ)
    os.environ.update({k: str(v) for k, v in env.items()})
    code = 0
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                retain_cli.main(argv)
            except SystemExit as e:
                if isinstance(e.code, str):
                    err.write(e.code + "\n")
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException:
                err.write(traceback.format_exc())
                code = 1
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        _reset_process_state()
    return subprocess.CompletedProcess(["retain", *argv], code, out.getvalue(), err.getvalue())


def _reset_process_state():
    """accelerate keeps one state per process (mixed precision, distributed setup); a new command starts afresh."""
    try:
        from accelerate.state import AcceleratorState, GradientState, PartialState
    except ImportError:
        return
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()
    PartialState._reset_state()
