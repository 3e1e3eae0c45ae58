"""Reading embedding files.

Precomputed embeddings arrive as ``.npy`` (one array), ``.npz`` (named arrays), ``.safetensors``
(named tensors plus string metadata) or ``.pt`` (a tensor or a dict of tensors and numbers,
read with ``torch.load(weights_only=True)`` so no code is executed). Zero-dimensional entries
and numeric safetensors metadata are *scalars* (e.g. a model's ``temperature``); the rest are
arrays.

Sizes are checked before anything is allocated: every array's declared shape and dtype must
match the bytes the file holds, and a compressed ``.npz`` member may inflate to at most
``max_bytes`` (default :data:`MAX_INFLATED_BYTES`, 1 GiB), so a small archive cannot make the
reader allocate gigabytes.
"""

import math
import os
import zipfile
from dataclasses import dataclass, field

import numpy as np
import torch

from pyro_contrast._validation import as_float_tensor

FORMATS = (".npy", ".npz", ".safetensors", ".pt", ".pth")
#: The most bytes a compressed ``.npz`` may inflate to (uncompressed data is read as stored).
MAX_INFLATED_BYTES = 2**30


class _ContentError(ValueError):
    """A readable file whose content is not what an embedding file holds."""


@dataclass
class EmbeddingFile:
    """The arrays and scalars of one embedding file (see :func:`read_embedding_file`)."""

    path: str
    arrays: dict = field(default_factory=dict)
    scalars: dict = field(default_factory=dict)

    def embeddings(self, key=None, *, dim=None, name=None):
        """One ``(N, d)`` floating tensor, checked for shape and NaN/inf rows.

        :param str key: array name; ``None`` picks the only floating array (or ``embeddings``).
        :param int dim: required number of columns.
        :param str name: how errors refer to it (default: the path and key).
        :returns: ``(N, d)`` tensor, float32 or float64.
        """
        key = self._pick(key)
        name = name or (self.path if key == "array" else f"{self.path}[{key}]")
        value = as_float_tensor(self.arrays[key], name)
        if value.dim() != 2:
            raise ValueError(f"{name} must have shape (N, d), got {tuple(value.shape)}")
        if value.shape[0] == 0 or value.shape[1] == 0:
            raise ValueError(f"{name} is empty: shape {tuple(value.shape)}")
        if dim is not None and value.shape[1] != dim:
            raise ValueError(f"{name} has dimension {value.shape[1]}, expected {dim}")
        bad = (~torch.isfinite(value)).any(dim=1).nonzero().flatten().tolist()
        if bad:
            shown = ", ".join(str(i) for i in bad[:10]) + (", ..." if len(bad) > 10 else "")
            raise ValueError(
                f"{name} has NaN/inf in {len(bad)} of {value.shape[0]} rows (rows {shown})"
            )
        return value

    def integers(self, key, *, name=None):
        """A one-dimensional integer array as a ``torch.long`` tensor (e.g. ``positives``)."""
        name = name or f"{self.path}[{key}]"
        value = torch.as_tensor(self.arrays[key])
        if value.dim() != 1 or value.is_floating_point() or value.dtype == torch.bool:
            raise ValueError(
                f"{name} must be a 1-D integer array, got {value.dtype} {tuple(value.shape)}"
            )
        return value.long()

    def scalar(self, key, default=None):
        """A scalar entry as a float, or ``default`` when absent."""
        return self.scalars.get(key, default)

    def _pick(self, key):
        if key is not None:
            if key not in self.arrays:
                raise ValueError(
                    f"{self.path} has no array {key!r}; it has {sorted(self.arrays) or 'none'}"
                )
            return key
        floating = [k for k, v in self.arrays.items() if _is_floating(v)]
        if len(floating) == 1:
            return floating[0]
        if "embeddings" in self.arrays:
            return "embeddings"
        if not floating:
            raise ValueError(f"{self.path} holds no floating-point array")
        raise ValueError(
            f"{self.path} holds several arrays {sorted(floating)}; name the one to use"
        )


def _is_floating(value):
    if isinstance(value, torch.Tensor):
        return value.is_floating_point()
    return np.issubdtype(value.dtype, np.floating)


def _split(path, entries, metadata=None):
    result = EmbeddingFile(path)
    for key, value in entries.items():
        if not isinstance(key, str):
            raise _ContentError(f"{path}: entry names must be strings, got {key!r}")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            result.scalars[key] = float(value)
        elif isinstance(value, (np.ndarray, torch.Tensor)):
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                if value.dtype not in (torch.float32, torch.float64):
                    value = value.float()  # float16, bfloat16, float8: computed in float32
            if value.ndim == 0:
                result.scalars[key] = float(value.item())
            else:
                result.arrays[key] = value
        else:
            raise _ContentError(f"{path}: entry {key!r} is a {type(value).__name__}, not an array")
    for key, text in (metadata or {}).items():
        try:
            result.scalars.setdefault(key, float(text))
        except (TypeError, ValueError):
            continue  # free-text metadata (descriptions, model names) is not a number
    return result


def read_embedding_file(path, *, max_bytes=MAX_INFLATED_BYTES):
    """Read every array and scalar of an embedding file.

    Declared array sizes are checked against the file before any array is read (see the
    module documentation).

    :param str path: a ``.npy``, ``.npz``, ``.safetensors`` or ``.pt``/``.pth`` file.
    :param int max_bytes: the most bytes a compressed ``.npz`` may inflate to.
    :returns: :class:`EmbeddingFile`.

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "emb.npz")
    >>> np.savez(path, ab=np.ones((3, 2)), temperature=0.07)
    >>> f = read_embedding_file(path)
    >>> tuple(f.embeddings("ab").shape), f.scalar("temperature")
    ((3, 2), 0.07)
    """
    path = os.fspath(path)
    extension = os.path.splitext(path)[1].lower()
    if extension not in FORMATS:
        raise ValueError(
            f"{path}: unknown embedding format {extension or '(none)'!r}; "
            f"expected one of {', '.join(FORMATS)}"
        )
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no such file")
    if os.path.isdir(path):
        raise IsADirectoryError(f"{path} is a folder, not an embedding file")
    if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 0:
        raise TypeError(f"max_bytes must be a non-negative int, got {max_bytes!r}")
    try:
        return _READERS[extension](path, max_bytes)
    except _ContentError:
        raise
    except Exception as error:  # corrupt files raise library-specific errors
        raise ValueError(f"{path}: could not read {extension} file ({error})") from error


def _read_npy(path, max_bytes):
    with open(path, "rb") as handle:
        shape, dtype, offset = _npy_header(handle, path)
    _check_declared(path, shape, dtype, offset, os.path.getsize(path))
    return _split(path, {"array": np.load(path, allow_pickle=False)})


def _read_npz(path, max_bytes):
    if not zipfile.is_zipfile(path):
        raise _ContentError(f"{path}: could not read .npz file (not a zip archive)")
    check_npz(path, path, max_bytes=max_bytes)
    with np.load(path, allow_pickle=False) as archive:
        return _split(path, {key: archive[key] for key in archive.files})


def check_npz(file, name, *, max_bytes=MAX_INFLATED_BYTES):
    """Check an ``.npz`` archive's declared arrays against its data, reading headers only.

    :param file: a path or a binary file object.
    :param str name: how errors refer to the archive.
    :param int max_bytes: the most bytes the compressed members may inflate to, together.
    :returns: ``{key: (shape, dtype)}``.
    :raises ValueError: a member that is not an array, declares more or less data than it
        holds, holds Python objects, or inflates beyond ``max_bytes``.
    """
    try:
        return _check_npz(file, name, max_bytes)
    except _ContentError:
        raise
    except Exception as error:  # zipfile, zlib and numpy raise their own kinds
        raise _ContentError(f"{name}: not a readable .npz archive ({error})") from None


def _check_npz(file, name, max_bytes):
    declared, inflated = {}, 0
    with zipfile.ZipFile(file) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                raise _ContentError(f"{name}: member {info.filename!r} is not an array")
            key = info.filename[: -len(".npy")]
            with archive.open(info) as member:
                shape, dtype, offset = _npy_header(member, f"{name}[{key}]")
            _check_declared(f"{name}[{key}]", shape, dtype, offset, info.file_size)
            if info.compress_type != zipfile.ZIP_STORED:
                inflated += info.file_size
                if inflated > max_bytes:
                    raise _ContentError(
                        f"{name}: compressed arrays would inflate to more than {max_bytes} "
                        f"bytes ({key!r} alone: {info.compress_size} -> {info.file_size}); "
                        "pass a larger max_bytes if this is intended"
                    )
            declared[key] = (shape, dtype)
    return declared


def _npy_header(handle, name):
    try:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise ValueError(f"unsupported .npy format version {version}")
    except (ValueError, EOFError, OSError) as error:
        raise _ContentError(f"{name}: not a readable .npy array ({error})") from None
    return shape, dtype, handle.tell()


def _check_declared(name, shape, dtype, offset, size):
    if dtype.hasobject:
        raise _ContentError(f"{name}: holds Python objects, not numbers")
    expected = offset + math.prod(shape) * dtype.itemsize
    if expected != size:
        raise _ContentError(
            f"{name}: declares a {dtype} array of shape {shape} ({expected - offset} bytes) "
            f"but holds {size - offset} bytes of data (truncated or corrupt)"
        )


def _read_safetensors(path, max_bytes):
    try:
        from safetensors import safe_open
    except ImportError as error:  # pragma: no cover - safetensors is a test dependency
        message = f"{path}: reading .safetensors needs `pip install safetensors`"
        raise _ContentError(message) from error
    with safe_open(path, framework="pt") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
        metadata = handle.metadata()
    return _split(path, tensors, metadata)


def _read_torch(path, max_bytes):
    content = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(content, torch.Tensor):
        content = {"array": content}
    if not isinstance(content, dict):
        raise _ContentError(
            f"{path}: expected a tensor or a dict of tensors, got {type(content).__name__}"
        )
    return _split(path, content)


_READERS = {
    ".npy": _read_npy,
    ".npz": _read_npz,
    ".safetensors": _read_safetensors,
    ".pt": _read_torch,
    ".pth": _read_torch,
}


def load_embeddings(path, key=None, *, dim=None):
    """Load one ``(N, d)`` embedding matrix from a file.

    :param str path: a ``.npy``, ``.npz``, ``.safetensors`` or ``.pt``/``.pth`` file.
    :param str key: which array (needed when the file holds several floating arrays).
    :param int dim: required embedding dimension.
    :returns: ``(N, d)`` floating tensor without NaN/inf.

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "queries.npy")
    >>> np.save(path, np.zeros((4, 3), dtype=np.float32))
    >>> load_embeddings(path, dim=3).shape
    torch.Size([4, 3])
    """
    return read_embedding_file(path).embeddings(key, dim=dim)
