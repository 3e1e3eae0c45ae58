"""Shared plumbing of every example: arguments, results folder, atomic writes, tables, claims.

Every example writes into ``--out DIR``: a folder that must be new or empty (``--force``
allows a non-empty one). Each file is written to a temporary name in the same folder and
moved into place with ``os.replace``, so a crash never leaves a half-written result.
"""

import contextlib
import functools
import io
import json
import os
import sys

import numpy as np
import torch

from pyro_contrast._files import atomic_write

#: The verdicts a reproduced claim may carry in ``claims.json``.
VERDICTS = ("reproduced", "partly", "not reproduced", "setting differs")


def add_common_arguments(parser, default_out):
    """Add ``--out``, ``--force``, ``--seed``, ``--no-plots`` and ``--threads`` to a parser."""
    parser.add_argument("--out", default=default_out, help="results folder (new or empty)")
    parser.add_argument("--force", action="store_true", help="write into a non-empty folder")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch/BLAS threads (tiny models run fastest on one)"
    )
    return parser


def prepare_out(out, force):
    """Absolute path of a usable results folder; refuses a non-empty one unless ``force``."""
    if out is None:
        raise ValueError("--out is required")
    out = os.path.abspath(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out} exists and is not a folder")
    if os.path.isdir(out) and os.listdir(out) and not force:
        raise ValueError(f"--out {out} is not empty; choose another folder or pass --force")
    if not os.path.isdir(os.path.dirname(out)):
        raise ValueError(f"--out {out}: parent folder does not exist")
    os.makedirs(out, exist_ok=True)
    return out


def _atomic(path, write, mode="w"):
    # One implementation of atomic files for the package and the examples.
    def write_binary(handle):
        if mode == "wb":
            write(handle)
            return
        text = io.TextIOWrapper(handle, encoding="utf-8")
        write(text)
        text.flush()
        text.detach()  # leave the binary handle open for atomic_write to sync and close

    atomic_write(path, write_binary, overwrite=True)


def write_text(path, text):
    """Write ``text`` to ``path`` atomically."""
    _atomic(path, lambda handle: handle.write(text))


def write_bytes(path, data):
    """Write ``data`` atomically (a temporary file in the same folder, then a rename)."""
    atomic_write(path, lambda handle: handle.write(data), overwrite=True)


def write_json(path, obj):
    """Write ``obj`` as indented JSON atomically (NumPy and torch numbers become floats)."""
    write_text(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")


def _jsonable(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def write_claims(out, claims):
    """Check and write ``out/claims.json``: a list of reproduced claims of a paper.

    Each claim is ``{"id", "claim", "paper", "ours", "verdict"}``: ``paper`` and ``ours``
    are numbers or objects of named numbers, ``verdict`` one of :data:`VERDICTS`.
    """
    seen = set()
    for item in claims:
        missing = {"id", "claim", "paper", "ours", "verdict"} - set(item)
        if missing:
            raise ValueError(f"claim {item.get('id')!r} lacks {sorted(missing)}")
        if item["verdict"] not in VERDICTS:
            raise ValueError(f"claim {item['id']!r}: verdict must be one of {VERDICTS}")
        if item["id"] in seen:
            raise ValueError(f"claim id {item['id']!r} appears twice")
        seen.add(item["id"])
        for key in ("paper", "ours"):
            _check_numbers(item[key], f"claim {item['id']!r} {key}")
    path = os.path.join(out, "claims.json")
    write_json(path, list(claims))
    return path


def print_claims(claims, before=""):
    """Print one line per claim, ``[verdict] id: ours`` (each after ``before``)."""
    for item in claims:
        print(f"{before}  [{item['verdict']}] {item['id']}: {item['ours']}")


def _check_numbers(value, name):
    if isinstance(value, dict):
        for key, inner in value.items():
            _check_numbers(inner, f"{name}[{key!r}]")
    elif value is not None and not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number or an object of named numbers, got {value!r}")


def write_table(out, name, frame):
    """Write a pandas table as ``name.csv`` and an aligned ``name.txt``; return the text."""
    text = frame.to_string(float_format=lambda v: f"{v:.3g}")
    write_text(os.path.join(out, f"{name}.csv"), frame.to_csv(float_format="%.6g"))
    write_text(os.path.join(out, f"{name}.txt"), text + "\n")
    return text


def save_figure(fig, path, dpi=80):
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    _atomic(
        path,
        lambda handle: fig.savefig(handle, format="png", dpi=dpi, bbox_inches="tight"),
        mode="wb",
    )
    plt.close(fig)


def pyplot():
    """Matplotlib's pyplot on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def claim(paper_says, we_measure):
    """Print the paper's claim next to our number."""
    print(f"  paper: {paper_says}\n  ours:  {we_measure}")


@contextlib.contextmanager
def few_threads(num_threads=1):
    """Run torch and BLAS on ``num_threads`` threads, then restore the previous settings.

    The examples train tiny models, where thread start-up and contention on a shared CPU
    cost far more than the arithmetic (a 10× slowdown on a loaded 2-core machine).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    try:
        if threadpool_limits is None:
            yield
        else:
            with threadpool_limits(limits=num_threads):
                yield
    finally:
        torch.set_num_threads(previous)


def threaded(run):
    """Decorate an example's ``main(args)`` to run on ``args.threads`` threads (``few_threads``)."""

    @functools.wraps(run)
    def main(args):
        with few_threads(args.threads):
            return run(args)

    return main


def script(main, parse_args, file):
    """The ``__main__`` of an example: parse, run, and report a ``ValueError`` (a bad
    argument, a non-empty ``--out``) as one line naming the script, with exit status 1. An
    integer that ``main`` returns is the exit status."""
    try:
        result = main(parse_args())
    except ValueError as error:
        sys.exit(f"{os.path.basename(file)}: error: {error}")
    if isinstance(result, int) and not isinstance(result, bool):
        sys.exit(result)


class Standardize(torch.nn.Module):
    """Centre and scale inputs with fixed statistics, then apply ``net``.

    The statistics are buffers (saved with the model, never trained): a network then sees
    unit-scale inputs whatever the simulator's units.
    """

    def __init__(self, net, loc, scale):
        super().__init__()
        self.net = net
        self.register_buffer("loc", torch.as_tensor(loc, dtype=torch.float32))
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.float32))

    def forward(self, x):
        return self.net((x - self.loc) / self.scale)


def parse_with_quick(parser, argv, quick_defaults):
    """Parse ``argv``; with ``--quick`` the ``quick_defaults`` replace the parser's defaults.

    Flags given explicitly still win, so ``--quick --steps 50`` runs 50 steps.
    """
    args = parser.parse_args(argv)
    if getattr(args, "quick", False):
        parser.set_defaults(**quick_defaults)
        args = parser.parse_args(argv)
    return args


def claims_rst(claims, title="Claims"):
    """A reStructuredText ``list-table`` (claim | paper | ours | verdict) of a claims list.

    Numbers are shown with 3 significant digits, objects as ``name = value`` lines; the
    docs' paper pages are generated from the full runs' ``claims.json`` with it.
    """

    def cell(value):
        if value is None:
            return "—"
        if isinstance(value, dict):
            return "; ".join(f"{k} = {cell(v)}" for k, v in value.items()) or "—"
        if isinstance(value, float):
            return f"{value:.3g}"
        return str(value)

    lines = [
        f".. list-table:: {title}",
        "   :header-rows: 1",
        "   :widths: 40 20 30 10",
        "",
        "   * - claim",
        "     - paper",
        "     - ours",
        "     - verdict",
    ]
    for item in claims:
        lines += [
            f"   * - **{item['id']}**: {item['claim']}",
            f"     - {cell(item['paper'])}",
            f"     - {cell(item['ours'])}",
            f"     - {item['verdict']}",
        ]
    return "\n".join(lines) + "\n"
