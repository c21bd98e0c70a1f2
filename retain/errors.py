"""The one error type users see: a single line, exit code 2, no traceback."""

from __future__ import annotations


class RetainError(Exception):
    """Bad input or an incompatible artifact.

    The CLI prints ``retain: error: <message>`` on one line and exits with code 2.
    Messages name the file, line and field (or the flag) at fault.
    """

    exit_code = 2

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))  # always one line


def where(path, line: int | None = None, field: str | None = None) -> str:
    """Format a location as ``file:line: field 'x'`` for error messages."""
    out = str(path)
    if line is not None:
        out += f":{line}"
    if field is not None:
        out += f": field '{field}'"
    return out
