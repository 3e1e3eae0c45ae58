"""Where commands write: a folder checked before any work, published all at once."""

import os

from pyro_contrast._files import folder_entries, staged_folder
from pyro_contrast.cli._common import UsageError

__all__ = ["check_out", "staged_folder"]


def check_out(out, force, flag="--out"):
    """Refuse an unusable output folder before any work is done (the publish checks again:
    another writer may take the folder meanwhile)."""
    out = os.path.abspath(os.fspath(out))
    parent = os.path.dirname(out)
    if not os.path.isdir(parent):
        raise UsageError(f"{flag} {out}: parent folder {parent} does not exist")
    if os.path.lexists(out) and not os.path.isdir(out):
        raise UsageError(f"{flag} {out} exists and is not a folder")
    if os.path.isdir(out) and not force and folder_entries(out):
        raise UsageError(
            f"{flag} {out} is not empty; choose another folder or pass --force to replace it"
        )
    return out
