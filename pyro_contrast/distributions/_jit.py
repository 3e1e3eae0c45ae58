"""Shapes under ``torch.jit.trace``.

A trace records tensor sizes symbolically, so a Python comparison of sizes converts a traced
value and warns, although sizes are fixed within a trace. Shape checks therefore run inside
Pyro's :func:`~pyro.util.ignore_jit_warnings`, and shapes are stored as Python ints.
"""

import torch
from pyro.util import ignore_jit_warnings

__all__ = ["ignore_jit_warnings", "static_shape"]


def static_shape(shape):
    """``shape`` as a ``torch.Size`` of Python ints (silently under tracing)."""
    with ignore_jit_warnings():
        return torch.Size([int(size) for size in shape])
