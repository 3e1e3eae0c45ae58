"""What every ``pyro-contrast`` command shares: one-line errors (exit code 2), argument types
that refuse absurd values before any work, library warnings shown as one line each, and a
quiet exit when the reader of the output goes away (``| head``).
"""

import argparse
import math
import os
import sys
import warnings

from pyro_contrast.marginals.bridge import MIN_NORMALIZER_ITEMS

# Exit codes: 0 done, 2 bad input (argparse's convention for usage errors).
USAGE_ERROR = 2
# The exact bridge's C normalizer is a Monte Carlo average over C items; below a few hundred
# it is noisy (issue 13 measured 60% vs 88% recall@1 between 32 and 5,000 items). The library
# warns below the same count; the commands say it in their own words (--c-bank).
FEW_NORMALIZER_ITEMS = MIN_NORMALIZER_ITEMS


class UsageError(ValueError):
    """Bad input found by a command itself (not by argparse); reported in one line."""


def one_line_errors(parser):
    """Make argparse report a bad command line in one line (exit code 2), not usage + error."""

    def error(message):
        sys.stderr.write(f"{parser.prog}: error: {message}\n")
        sys.exit(USAGE_ERROR)

    parser.error = error
    return parser


def first_line(error):
    text = str(error).strip()
    if isinstance(error, KeyError) and len(error.args) == 1:
        text = str(error.args[0])
    return text.splitlines()[0] if text else type(error).__name__


def guard(name, function):
    """Wrap a command so bad input is one line on stderr with exit code 2.

    Library warnings raised while the command runs (``UserWarning`` and subclasses) are
    printed as one ``warning:`` line each instead of Python's two-line format; developer
    warnings (deprecations) are left to Python's own filters.
    """

    def run(args):
        caught = []
        try:
            try:
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always", UserWarning)
                    return function(args)
            finally:
                _show_warnings(name, caught)
        except BrokenPipeError:
            raise  # handled once, by the entry point
        except FileExistsError as error:  # incl. a concurrent writer that won the folder
            return fail(name, first_line(error).replace("force=True / ", ""))
        except (ValueError, TypeError, KeyError, OSError) as error:
            return fail(name, first_line(error))

    run.__name__ = function.__name__
    run.__doc__ = function.__doc__
    return run


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


def fail(name, message):
    sys.stderr.write(f"pyro-contrast {name}: error: {message}\n")
    return USAGE_ERROR


def note(name, message):
    """A one-line notice on stderr (never mixed into the tables on stdout)."""
    sys.stderr.write(f"pyro-contrast {name}: {message}\n")


def _show_warnings(name, caught):
    seen = set()
    for record in caught:
        if not issubclass(record.category, UserWarning):
            warnings.warn_explicit(record.message, record.category, record.filename, record.lineno)
            continue
        text = first_line(record.message)
        if text not in seen:
            seen.add(text)
            note(name, f"warning: {text}")


def quiet_broken_pipe():
    """Point stdout at /dev/null so the interpreter's final flush cannot fail again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout without a file descriptor
        pass


# -- argument types: each refuses nonsense with a message naming the limit ----------------


def integer(minimum, maximum=None):
    """An argparse type: a plain integer in ``[minimum, maximum]`` (no ``1e9``)."""

    def parse(text):
        bounds = f">= {minimum}" if maximum is None else f"in [{minimum}, {maximum}]"
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer {bounds}, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be an integer {bounds}, got {text}")
        return value

    parse.__name__ = "integer"
    return parse


def positive_float(text):
    """An argparse type: a finite number > 0 (temperatures, learning rates)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"must be a positive finite number, got {text}")
    return value


def probability(text):
    """An argparse type: a number strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1), got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1), got {text}")
    return value


# Seeds of torch.Generator.manual_seed and numpy's default_rng: non-negative 64-bit.
seed = integer(0, 2**63 - 1)


def ks(text):
    """An argparse type: comma-separated recall cut-offs, e.g. ``1,5,10``."""
    parts = [part.strip() for part in text.split(",")]
    try:
        values = tuple(int(part, 10) for part in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated positive integers, got {text!r}"
        ) from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"must be positive integers, got {text!r}")
    return values


def check_ks(values, num_candidates, flag="--ks"):
    """Refuse cut-offs beyond the number of candidates before any work is done."""
    if values is not None and max(values) > num_candidates:
        raise UsageError(
            f"{flag} {','.join(map(str, values))}: a cut-off exceeds the "
            f"{num_candidates} candidates per query"
        )
