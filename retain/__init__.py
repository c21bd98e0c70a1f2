"""retain: fine-tune language models without destroying what they could already do."""

from retain.versions import __version__


def load_run(path, *, verify: bool = True, task: str | None = None):
    """Load a ``retain train`` run: ``.model`` (no prompt), ``.prompted`` (with it), ``.tokenizer``; ``task``: which
    task's format and soft prompt, for a run trained on several tasks."""
    from retain.run import load_run as _load

    return _load(path, verify=verify, task=task)


__all__ = ["__version__", "load_run"]
