"""retain: fine-tune language models without destroying what they could already do."""

__version__ = "0.1.0"


def load_run(path, *, verify: bool = True):
    """Load a ``retain train`` run: ``.model`` (no prompt), ``.prompted`` (with it), ``.tokenizer``."""
    from retain.run import load_run as _load

    return _load(path, verify=verify)


__all__ = ["load_run", "__version__"]
