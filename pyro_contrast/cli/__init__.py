"""The ``pyro-contrast`` command line: ``demo`` plus the study commands.

The top layer: it may import every other layer; nothing in the package imports it. Each
command lives in its own module with an ``add_parser(s)`` function and prints one clear line
(exit code 2) on bad input.
"""

import argparse
import sys

from pyro_contrast import __version__


def build_parser():
    """The argument parser of ``pyro-contrast`` with every subcommand registered."""
    from pyro_contrast.cli import demo, study

    parser = argparse.ArgumentParser(
        prog="pyro-contrast",
        description="Contrastive critics as probabilistic objects: bridge two modalities that "
        "were never paired through a third, exactly, and compare with the direct shortcut.",
    )
    parser.add_argument("--version", action="version", version=f"pyro-contrast {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo.add_parser(subparsers)
    study.add_parsers(subparsers)
    return parser


def main(argv=None):
    """Entry point of the console script; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
