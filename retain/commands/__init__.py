"""One module per CLI command: ``add_parser(subparsers)`` and ``run(args)``; flags come from dataclasses."""

from __future__ import annotations

import argparse


def add_command(sub, name: str, options, run, *, help: str, description: str, epilog: str | None = None,
                config_file: bool = False, **add):
    """A subcommand whose flags are the fields of the dataclass ``options`` (``retain.config.add_arguments``);
    ``config_file``: also ``--config FILE`` (YAML/JSON setting any option by name; flags win); ``add``: passed on
    (``skip``, ``required``). Returns the parser, for commands that add more."""
    from retain.config import add_arguments

    p = sub.add_parser(name, help=help, description=description, epilog=epilog,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    if config_file:
        p.add_argument("--config", metavar="FILE",
                       help="YAML or JSON file of options (names with _ or -); flags given on the command line win.")
    add_arguments(p, options, **add)
    p.set_defaults(func=run)
    return p
