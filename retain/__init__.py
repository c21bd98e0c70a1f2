"""retain: fine-tune language models without destroying what they could already do."""

from retain.versions import __version__


def load_run(path, *, verify: bool = True):
    """Load a ``retain train`` run: ``.model`` (no prompt), ``.prompted`` (with it), ``.tokenizer``."""
    from retain.run import load_run as _load

    return _load(path, verify=verify)


__all__ = ["__version__", "load_run"]
