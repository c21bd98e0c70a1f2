"""``retain`` command line. Each command lives in ``retain/commands/<name>.py``
with ``add_parser(subparsers)`` and ``run(args)``; modules stay light at import
(heavy libraries are imported inside ``run``) so ``--help`` is instant.

Errors in user input print one line, ``retain: error: ...``, and exit with 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMANDS = ("train", "generate", "eval", "compare", "continual", "demo", "analyze")


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit 2)."""

    def error(self, message):
        sys.stderr.write(f"{self.prog}: error: {message} (see --help)\n")
        sys.exit(2)


def build_parser() -> Parser:
    from retain.versions import __version__

    parser = Parser(prog="retain", description="Fine-tune language models without destroying what they could already do: ProMoT, SwitchCIT and the measurements that show what a model kept.")
    parser.add_argument("--version", action="version", version=f"retain {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"retain.commands.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"retain.commands.{name}":
                continue  # command not part of this build
            raise
        module.add_parser(sub)
    return parser


def main(argv=None) -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = build_parser().parse_args(argv)
    from retain.errors import RetainError

    ok = False
    try:
        _quiet_libraries()
        args.func(args)
        ok = True
    except RetainError as e:
        sys.stderr.write(f"retain: error: {e}\n")
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.stderr.write("retain: interrupted; checkpoints written so far are kept: rerun the same command with --resume to continue\n")
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(1)
    finally:
        _leave_process_group(ok)


def _leave_process_group(ok: bool) -> None:
    """Under ``accelerate launch``: leave the process group before the interpreter exits (``distributed.end``). A
    command that never imported torch has none."""
    if "torch.distributed" in sys.modules:
        from retain.distributed import end

        end(ok)


def _quiet_libraries() -> None:
    import logging
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    for name in ("transformers", "peft", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        import transformers
        from huggingface_hub.utils import disable_progress_bars

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
        disable_progress_bars()
        logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    except ImportError:
        pass
