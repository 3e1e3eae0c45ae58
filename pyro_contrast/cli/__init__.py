"""The ``pyro-contrast`` command line: ``demo`` plus the study commands.

Every command reports bad input in one line on stderr with exit code 2, and exits quietly
when the reader of its output goes away (``pyro-contrast compare study | head -1``).
"""

import argparse
import sys

from pyro_contrast import __version__
from pyro_contrast.cli._common import USAGE_ERROR, one_line_errors, quiet_broken_pipe


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


def run_command(parser, argv=None, *, exit_on_usage=True):
    """Parse ``argv`` and run the chosen command; returns its exit code.

    A usage error exits (``SystemExit(2)``) unless ``exit_on_usage=False``, which returns 2.
    A closed stdout (``BrokenPipeError``) ends the command quietly with exit code 0: the
    output that was wanted has been read, and files are written before anything is printed.
    """
    try:
        try:
            args = parser.parse_args(argv)
        except SystemExit as stop:
            if exit_on_usage:
                raise
            return stop.code
        if getattr(args, "func", None) is None:
            parser.print_help()
            return USAGE_ERROR
        code = args.func(args)
        sys.stdout.flush()  # a pipe's buffer fails here, not at interpreter exit
        return code
    except BrokenPipeError:
        quiet_broken_pipe()
        return 0


def main(argv=None):
    """Entry point of the console script; returns the process exit code."""
    return run_command(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
