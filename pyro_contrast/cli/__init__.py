"""The ``pyro-contrast`` command line: ``demo`` plus the study commands.

The top layer: it may import every other layer; nothing in the package imports it. Each
command lives in its own module with an ``add_parser(s)`` function. Every command reports bad
input in one line on stderr with exit code 2, and exits quietly when the reader of its output
goes away (``pyro-contrast compare study | head -1``).
"""

import argparse
import sys

from pyro_contrast import __version__
from pyro_contrast.cli._common import one_line_errors, run_command


def build_parser():
    """The argument parser of ``pyro-contrast`` with every subcommand registered."""
    from pyro_contrast.cli import demo, study

    parser = one_line_errors(
        argparse.ArgumentParser(
            prog="pyro-contrast",
            description="Contrastive critics as probabilistic objects: bridge two modalities "
            "that were never paired through a third, exactly, and compare with the direct "
            "shortcut. Start with 'pyro-contrast demo'.",
        )
    )
    parser.add_argument("--version", action="version", version=f"pyro-contrast {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    demo.add_parser(subparsers)
    study.add_parsers(subparsers)
    return parser


def main(argv=None):
    """Entry point of the console script; returns the process exit code."""
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
