"""Atomic file writes: every file the package writes goes through :func:`atomic_write`.

A file is written to a temporary name in its destination folder and moved into place, so a
crash never leaves a half-written file, and an existing file is replaced only when asked.
"""

import os
import tempfile


def atomic_write(path, write, *, overwrite=False):
    """Write a file through a temporary file in the same folder, then move it into place.

    :param str path: destination.
    :param callable write: called with a binary file object open for writing.
    :param bool overwrite: replace ``path`` if it exists (otherwise ``FileExistsError``).
    :returns: ``path``.

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "hello.txt")
    >>> _ = atomic_write(path, lambda f: f.write(b"hi"))
    >>> with open(path) as handle:
    ...     print(handle.read())
    hi
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"cannot write {path}: folder {folder} does not exist")
    if os.path.isdir(path):
        raise IsADirectoryError(f"cannot write {path}: it is a folder")
    if os.path.exists(path) and not overwrite:
        raise FileExistsError(f"{path} already exists (pass overwrite=True to replace it)")
    descriptor, temporary = tempfile.mkstemp(
        dir=folder, prefix=f".{os.path.basename(path)}.", suffix=".tmp"
    )
    try:
        with os.fdopen(descriptor, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        if overwrite:
            os.replace(temporary, path)
        else:
            # a hard link fails if the name appeared meanwhile: no silent clobbering
            try:
                os.link(temporary, path)
            except FileExistsError:
                raise FileExistsError(f"{path} already exists") from None
            except OSError:
                os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)
    return path
