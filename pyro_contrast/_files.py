"""Crash-safe writes: single files through :func:`atomic_write`, whole folders through
:func:`staged_folder`, read back with :func:`folder_entries`.

Files and folders are created with the modes ``open`` and ``mkdir`` use (``0o666`` and
``0o777``), so the user's umask decides who can read them, as for any other program.

How a folder is published
-------------------------
The caller writes everything into a fresh *stage* folder; on success the stage becomes
``out`` at once, and a process killed at any point leaves the old content or the new one.

* ``out`` does not exist: the stage is created beside it (``.pyro-contrast-stage-<name>.*`` in
  the parent, which must be writable to create ``out`` at all) and renamed to ``out``. The
  kernel's ``rename`` is the arbiter: it fails if ``out`` appeared and is not empty, so of two
  concurrent writers exactly one wins and the other gets :class:`FolderExistsError`.
* ``out`` exists: the stage is created *inside* it (``out/.pyro-contrast-stage-*``), so no
  write access to the parent is needed (``out`` may be a mount point). At publish, under an
  exclusive ``flock`` of ``out`` (released by the kernel if the writer dies), the writer checks
  ``out`` is still empty unless ``force``, writes a manifest of the new entries into the stage
  and renames the stage to ``out/.pyro-contrast-commit``. That single rename is the commit
  point. Then it *rolls forward*: every old entry is moved into a trash folder, every new entry
  is moved up into ``out``, and the commit folder is deleted.

Readers go through :func:`folder_entries`, inside :func:`reading_folder` (a shared lock that
holds publishers off while they read several files). While a commit folder with its manifest
exists, the folder's content is the manifest's entries, each taken from the commit folder if
still there, else from ``out``, so a writer killed during the roll-forward still shows the new
content, and the next writer (under the lock) finishes its roll-forward. Entries whose names
start with ``.pyro-contrast-`` are this protocol's own and are invisible to readers; stage
leftovers of dead writers (a stage is ``flock``-ed by its live writer) are deleted by later
writers.

Without ``flock`` (a file system that refuses it) the protocol still publishes atomically, but
two writers that both reach the publish step at the same instant are no longer serialized.
"""

import errno
import json
import os
import secrets
import shutil
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

_PREFIX = ".pyro-contrast-"
_STAGE = _PREFIX + "stage-"
_COMMIT = _PREFIX + "commit"
_TRASH = _PREFIX + "trash"
_MANIFEST = _PREFIX + "manifest.json"
# Stages this process is writing: publishing into one of them (a staged study saved inside
# a larger stage) needs no lock, and taking one would wait on our own liveness lock forever.
_OWN_STAGES = set()


class FolderExistsError(FileExistsError):
    """A folder that must not be replaced exists and is not empty."""


def atomic_write(path, write, *, overwrite=False):
    """Write a file through a temporary file in the same folder, then move it into place.

    The file gets the mode ``open`` would give it (``0o666`` less the umask).

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
    temporary, descriptor = _create_temporary(folder, f".{os.path.basename(path)}.")
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


def _create_temporary(folder, prefix):
    # tempfile.mkstemp would force mode 0600; O_EXCL with 0666 lets the umask decide
    for _ in range(100):
        name = os.path.join(folder, f"{prefix}{secrets.token_hex(6)}.tmp")
        try:
            return name, os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
    raise FileExistsError(f"cannot create a temporary file in {folder}")  # pragma: no cover


@contextmanager
def staged_folder(out, *, force=False):
    """Write a folder all at once: yield an empty stage folder, publish it as ``out`` on exit.

    If the body raises, nothing is published and the stage is deleted. See the module
    documentation for the protocol.

    :param str out: the folder to publish; its parent must exist.
    :param bool force: replace an existing non-empty ``out`` as a whole (otherwise
        :class:`FolderExistsError`, raised on entry when detectable and again at publish).
    :returns: a context manager yielding the stage as a :class:`pathlib.Path`.

    >>> import os, tempfile
    >>> out = os.path.join(tempfile.mkdtemp(), "study")
    >>> with staged_folder(out) as stage:
    ...     _ = (stage / "a.txt").write_text("new")
    >>> sorted(folder_entries(out))
    ['a.txt']
    """
    out = os.path.abspath(os.fspath(out))
    parent = os.path.dirname(out)
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"cannot create {out}: {parent} does not exist")
    existed = os.path.isdir(out)
    if os.path.lexists(out) and not existed:
        raise FolderExistsError(f"{out} exists and is not a folder")
    if existed and not force and folder_entries(out):
        raise _not_empty(out)
    home = out if existed else parent
    stage_prefix = _STAGE if existed else f"{_STAGE}{os.path.basename(out)}."
    _clean_stages(home, stage_prefix)
    stage, lock = _make_stage(home, stage_prefix)
    own = os.path.realpath(stage)
    _OWN_STAGES.add(own)
    try:
        yield Path(stage)
        _sync_tree(stage)
        if existed:
            _publish_inside(stage, out, force)
        else:
            _publish_beside(stage, out, force)
    finally:
        _OWN_STAGES.discard(own)
        if os.path.lexists(stage):
            shutil.rmtree(stage, ignore_errors=True)
        os.close(lock)


def folder_entries(out):
    """The published entries of ``out`` as a dict name → path.

    Names used by :func:`staged_folder` itself (stages, an interrupted commit) are hidden; if a
    writer was killed while replacing the folder, the entries are the complete new content.

    :param str out: a folder.
    :returns: ``{name: path}`` sorted by name.
    """
    out = os.fspath(out)
    commit = os.path.join(out, _COMMIT)
    manifest = _read_manifest(commit)
    if manifest is None:
        names = [name for name in os.listdir(out) if not name.startswith(_PREFIX)]
        return {name: os.path.join(out, name) for name in sorted(names)}
    entries = {}
    for name in sorted(manifest):
        staged = os.path.join(commit, name)
        entries[name] = staged if os.path.lexists(staged) else os.path.join(out, name)
    return entries


@contextmanager
def reading_folder(out):
    """Hold off publishers of ``out`` while reading it (a shared ``flock``; best effort).

    :func:`staged_folder` publishes under an exclusive lock of ``out``, so files read inside
    this context all come from one version of the folder.
    """
    try:
        descriptor = os.open(out, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        if fcntl is not None:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_SH)
            except OSError:
                pass  # no flock here: readers fall back on checking what they read
        yield
    finally:
        os.close(descriptor)


def _not_empty(out):
    return FolderExistsError(f"{out} exists and is not empty (pass force=True / --force)")


def _make_stage(home, prefix):
    while True:
        stage = os.path.join(home, prefix + f"{os.getpid()}-{secrets.token_hex(4)}")
        os.mkdir(stage, 0o777)
        lock = os.open(stage, os.O_RDONLY)
        # a cleaner may have judged the fresh stage dead between mkdir and flock: start over
        if _try_lock(lock) is not False and _same_file(stage, lock):
            return stage, lock
        os.close(lock)


def _publish_beside(stage, out, force):
    try:
        os.rename(stage, out)  # atomic; replaces only an empty folder
    except OSError as error:
        if error.errno == errno.ENOTDIR:
            raise FolderExistsError(f"{out} exists and is not a folder") from None
        if error.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise
        if not force and folder_entries(out):
            raise _not_empty(out) from None
        # out appeared meanwhile, holding only leftovers, or is to be replaced
        _publish_inside(stage, out, force)
    else:
        _sync_folder(os.path.dirname(out))


def _publish_inside(stage, out, force):
    descriptor = os.open(out, os.O_RDONLY)
    try:
        if os.path.realpath(out) not in _OWN_STAGES:
            _lock(descriptor)
        _roll_forward(out)  # a writer killed after its commit: finish its work first
        if not force and folder_entries(out):
            raise _not_empty(out)
        names = sorted(os.listdir(stage))
        reserved = [name for name in names if name.startswith(_PREFIX)]
        if reserved:
            raise ValueError(f"names starting with {_PREFIX!r} are reserved: {reserved[0]!r}")
        _write_json(os.path.join(stage, _MANIFEST), names)
        _sync_folder(stage)
        os.rename(stage, os.path.join(out, _COMMIT))  # the commit point
        _sync_folder(out)
        _roll_forward(out)
    finally:
        os.close(descriptor)  # releases the lock


def _roll_forward(out):
    commit = os.path.join(out, _COMMIT)
    manifest = _read_manifest(commit)
    if manifest is not None:
        trash = os.path.join(commit, _TRASH)
        os.makedirs(trash, exist_ok=True)
        for name in os.listdir(out):
            if name.startswith(_PREFIX):
                continue
            if name in manifest and not os.path.lexists(os.path.join(commit, name)):
                continue  # already the new entry
            os.rename(os.path.join(out, name), os.path.join(trash, secrets.token_hex(8)))
        for name in manifest:
            if os.path.lexists(os.path.join(commit, name)):
                os.rename(os.path.join(commit, name), os.path.join(out, name))
        _sync_folder(out)
    if os.path.lexists(commit):
        # out of the readers' way in one rename, then delete at leisure
        garbage = os.path.join(out, f"{_TRASH}-{secrets.token_hex(4)}")
        os.rename(commit, garbage)
    for name in os.listdir(out):
        if name.startswith(_TRASH + "-"):
            shutil.rmtree(os.path.join(out, name), ignore_errors=True)


def _read_manifest(commit):
    try:
        with open(os.path.join(commit, _MANIFEST)) as handle:
            names = json.load(handle)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None  # torn manifest: cannot happen after the fsync-then-rename commit
    return set(names) if isinstance(names, list) else None


def _clean_stages(home, prefix):
    """Delete stages under ``home`` whose writer is dead (its ``flock`` is free)."""
    try:
        names = os.listdir(home)
    except OSError:
        return
    for name in names:
        if not name.startswith(prefix):
            continue
        path = os.path.join(home, name)
        try:
            descriptor = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            if _try_lock(descriptor):
                shutil.rmtree(path, ignore_errors=True)
        finally:
            os.close(descriptor)


def _try_lock(descriptor):
    """``True`` if locked, ``False`` if another process holds it, ``None`` if unsupported."""
    if fcntl is None:
        return None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError:
        return None
    return True


def _lock(descriptor):
    if fcntl is None:
        return
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
    except OSError as error:
        if error.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EBADF, errno.EINVAL):
            raise


def _same_file(path, descriptor):
    try:
        return os.path.samestat(os.stat(path), os.fstat(descriptor))
    except FileNotFoundError:
        return False


def _write_json(path, value):
    with open(path, "w") as handle:
        json.dump(value, handle)
        handle.flush()
        os.fsync(handle.fileno())


def _sync_tree(folder):
    for root, _folders, files in os.walk(folder):
        for name in files:
            try:
                descriptor = os.open(os.path.join(root, name), os.O_RDONLY)
            except OSError:
                continue
            try:
                os.fsync(descriptor)
            finally:
                os.close(descriptor)
        _sync_folder(root)


def _sync_folder(folder):
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass  # some file systems cannot fsync a folder; the rename is still atomic
    finally:
        os.close(descriptor)
