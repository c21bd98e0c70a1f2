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


def cli(*args, check=True, env=None, **kw):
    """Run the CLI as a user would; returns CompletedProcess."""
    import subprocess

    e = dict(os.environ, **(env or {}))
    proc = subprocess.run([sys.executable, "-m", "retain", *map(str, args)], capture_output=True, text=True, env=e, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"retain {' '.join(map(str, args))} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return proc
