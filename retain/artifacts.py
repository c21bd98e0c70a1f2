"""Writing results safely: the one copy of every file-writing rule.

* ``write_json``/``write_text``/``atomic``: a file appears complete or not at all (written to a hidden
  temporary sibling, then renamed);
* ``JsonlLog``: the append-only JSONL log of training events (main process only);
* ``check_output``/``check_output_file``: refuse, before any work, an output that would clobber
  something or cannot be written;
* ``staging_dir``/``commit``: a directory artifact is built in a hidden sibling ``.DIR.partial`` and renamed
  into place once complete, with ``manifest.json`` (sha256 of every file) written last and checked on load.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

from retain.errors import RetainError

RUN_FILE = "run.json"
MANIFEST = "manifest.json"


# ------------------------------------------------------------------ files
@contextlib.contextmanager
def atomic(path: Path):
    """Yield a temporary path next to ``path``; on success it replaces ``path`` in one rename."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    with atomic(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: Path, data, *, mkdir: bool = False) -> None:
    """JSON (indented, UTF-8 kept) written atomically; ``mkdir`` creates the parent folders."""
    path = Path(path)
    if mkdir:
        path.parent.mkdir(parents=True, exist_ok=True)
    write_text(path, json.dumps(data, indent=2, ensure_ascii=False))


class JsonlLog:
    """Events appended to a JSONL file with the seconds since ``start``; only the main process writes.

    ``resume``: the run continues an interrupted one whose log is already in ``path``; its clock continues from
    that log's last time, so ``elapsed()`` (and the run's ``wall_time_s``) counts every process of the run, not
    only the last one."""

    def __init__(self, path: Path, start: float | None = None, *, enabled: bool = True, resume: bool = False):
        self.path, self.start, self.enabled = Path(path), time.time() if start is None else start, enabled
        self.offset = _last_time(self.path) if resume and enabled else 0.0

    def elapsed(self) -> float:
        """Seconds of the run so far, the interrupted processes it continues included."""
        return time.time() - self.start + self.offset

    def __call__(self, entry: dict) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps({"time": round(self.elapsed(), 2), **entry}) + "\n")


def _last_time(path: Path) -> float:
    """The time of the last complete event in a log (0 for none): where an interrupted run's clock stopped."""
    last = 0.0
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(ValueError, TypeError, AttributeError):
                last = float(json.loads(line).get("time", last))
    return last


# ------------------------------------------------------------- output checks
def _existing_parent(path: Path) -> Path:
    probe = path.parent if str(path.parent) else Path(".")
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def check_writable(path: Path, flag: str = "--output") -> None:
    """``path`` can be created: its nearest existing parent is a folder this process can write in."""
    probe = _existing_parent(Path(path))
    if not probe.is_dir():
        raise RetainError(f"{flag}: cannot create {path}: {probe} is not a directory")
    try:  # a real write: permission bits say nothing when running as root
        Path(tempfile.mkdtemp(prefix=".retain-probe-", dir=probe)).rmdir()
    except OSError as e:
        raise RetainError(f"{flag}: cannot write to {probe} ({e.strerror or e})") from None


def is_run_dir(path: Path) -> bool:
    return (path / RUN_FILE).is_file() or (path / MANIFEST).is_file()


def check_output(out: Path, *, overwrite: bool, resume: bool = False, flag: str = "--output", owned=is_run_dir,
                 kind: str = "retain run") -> None:
    """Refuse an output directory that would clobber something, before any work is done.

    ``owned(dir)`` says whether an existing non-empty directory is an artifact of this kind (replaced only
    with ``overwrite``); anything else is never replaced."""
    if out.exists() and not out.is_dir():
        raise RetainError(f"{flag}: {out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        if not owned(out):
            raise RetainError(f"{flag}: {out} exists, is not empty and is not a {kind}; choose another path or pass --overwrite to replace it")
        raise RetainError(f"{flag}: {out} already holds a {kind}; pass --overwrite to replace it")
    check_writable(out, flag)
    if resume and not staging_dir(out).is_dir():
        raise RetainError(f"--resume: no interrupted run to resume at {staging_dir(out)}")


def check_output_file(path: str | None, flag: str = "--output") -> None:
    """An output *file*: not a directory, and its folder can be written."""
    if not path:
        return
    p = Path(path)
    if p.is_dir():
        raise RetainError(f"{flag}: {p} is a directory; give a file name")
    check_writable(p, flag)


# ------------------------------------------------------ directory artifacts
def staging_dir(out: Path) -> Path:
    return out.parent / f".{out.name}.partial"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(root: Path, kind: str = "run") -> None:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST)
    data = {"kind": kind, "files": {p.relative_to(root).as_posix(): sha256_file(p) for p in files}}
    (root / MANIFEST).write_text(json.dumps(data, indent=2))


def verify_manifest(root: Path) -> dict:
    path = root / MANIFEST
    if not path.is_file():
        raise RetainError(f"{root}: no {MANIFEST}; not a complete retain artifact")
    try:
        data = json.loads(path.read_text())
        files = data["files"]
    except (ValueError, KeyError, TypeError):
        raise RetainError(f"{path}: malformed manifest") from None
    for rel, digest in files.items():
        p = root / rel
        if not p.is_file():
            raise RetainError(f"{p}: listed in {MANIFEST} but missing")
        if sha256_file(p) != digest:
            raise RetainError(f"{p}: sha256 does not match {MANIFEST} (file changed or corrupted)")
    extra = [p for p in root.rglob("*") if p.is_file() and p.name != MANIFEST and p.relative_to(root).as_posix() not in files
             and p.suffix in (".safetensors", ".bin", ".pt", ".json")]
    if extra:
        raise RetainError(f"{extra[0]}: not listed in {MANIFEST} (file added after the run was written)")
    return data


def commit(staging: Path, out: Path) -> None:
    """Atomically move a complete staging dir into place (replacing an old run)."""
    write_manifest(staging)
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old"
        shutil.rmtree(old, ignore_errors=True)
        os.replace(out, old)
    os.replace(staging, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
