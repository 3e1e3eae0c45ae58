"""Shared plumbing of the paper-reproduction examples: results folder, atomic writes, tables.

Every example writes into ``--out DIR``: a folder that must be new or empty (``--force``
allows a non-empty one). Each file is written to a temporary name in the same folder and
moved into place with ``os.replace``, so a crash never leaves a half-written result.
"""

import contextlib
import io
import json
import os

import torch

from pyro_contrast.io import atomic_write


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


def prepare_out(path, force):
    """Create the results folder; refuse a non-empty one unless ``force``."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"--out {path!r} exists and is not a folder")
    if os.path.isdir(path) and os.listdir(path) and not force:
        raise ValueError(f"--out {path!r} is not empty; pass --force to write into it")
    os.makedirs(path, exist_ok=True)
    return path


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


def write_json(path, obj):
    """Write ``obj`` as indented JSON atomically."""
    _atomic(path, lambda handle: json.dump(obj, handle, indent=2, default=float))


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
