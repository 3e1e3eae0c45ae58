import io
import os
import tracemalloc
import zipfile

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from safetensors.torch import save_file

from pyro_contrast._files import atomic_write
from pyro_contrast.studies.io import load_embeddings, read_embedding_file
from tests.common import assert_close


def _write(path, arrays, scalars=None):
    """Write ``arrays`` (and 0-d ``scalars``) in the format given by the extension."""
    scalars = scalars or {}
    extension = os.path.splitext(path)[1]
    if extension == ".npy":
        (value,) = arrays.values()
        np.save(path, value)
    elif extension == ".npz":
        np.savez(path, **arrays, **scalars)
    elif extension == ".safetensors":
        tensors = {k: torch.as_tensor(v) for k, v in arrays.items()}
        tensors.update({k: torch.tensor(v) for k, v in scalars.items()})
        save_file(tensors, path)
    else:
        torch.save({**{k: torch.as_tensor(v) for k, v in arrays.items()}, **scalars}, path)
    return path


@pytest.mark.parametrize("extension", [".npy", ".npz", ".safetensors", ".pt"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_round_trip(tmp_path, extension, dtype):
    value = np.random.default_rng(0).normal(size=(5, 3)).astype(dtype)
    path = _write(str(tmp_path / f"e{extension}"), {"queries": value})
    loaded = load_embeddings(path, dim=3)
    assert loaded.dtype == torch.from_numpy(value).dtype
    assert_close(loaded, value, atol=0)


@pytest.mark.parametrize("extension", [".npz", ".safetensors", ".pt"])
def test_scalars_and_several_arrays(tmp_path, extension):
    rng = np.random.default_rng(0)
    arrays = {
        "ab": rng.normal(size=(4, 3)).astype(np.float32),
        "bc": rng.normal(size=(4, 2)).astype(np.float32),
        "positives": np.arange(4),
    }
    path = _write(str(tmp_path / f"bank{extension}"), arrays, {"temperature": 0.25})
    data = read_embedding_file(path)
    assert data.scalar("temperature") == 0.25
    assert data.scalar("absent", 1.0) == 1.0
    assert_close(data.embeddings("bc"), arrays["bc"], atol=0)
    assert (data.integers("positives").numpy() == np.arange(4)).all()
    with pytest.raises(ValueError, match="several arrays"):
        data.embeddings()
    with pytest.raises(ValueError, match="no array 'cd'"):
        data.embeddings("cd")
    with pytest.raises(ValueError, match="integer"):
        data.integers("ab")


def test_safetensors_metadata_and_bfloat16(tmp_path):
    path = str(tmp_path / "q.safetensors")
    value = torch.randn(3, 4).to(torch.bfloat16)
    save_file({"embeddings": value}, path, metadata={"temperature": "0.07", "model": "clip"})
    data = read_embedding_file(path)
    assert data.scalars == {"temperature": 0.07}
    loaded = data.embeddings()
    assert loaded.dtype == torch.float32  # low precision is computed in float32
    assert_close(loaded, value.float(), atol=0)


def test_nan_rows_are_reported(tmp_path):
    value = np.zeros((30, 2))
    value[[3, 17], 1] = np.nan
    value[20, 0] = np.inf
    path = _write(str(tmp_path / "e.npy"), {"x": value})
    with pytest.raises(ValueError, match=r"3 of 30 rows \(rows 3, 17, 20\)"):
        load_embeddings(path)


@pytest.mark.parametrize(
    "name, content, kwargs, error, match",
    [
        ("missing.npy", None, {}, FileNotFoundError, "no such file"),
        ("e.csv", b"1,2\n", {}, ValueError, "unknown embedding format '.csv'"),
        ("e", b"", {}, ValueError, "unknown embedding format"),
        ("e.npz", b"not a zip", {}, ValueError, "could not read .npz"),
        ("e.safetensors", b"garbage", {}, ValueError, "could not read .safetensors"),
        ("e.pt", b"garbage", {}, ValueError, "could not read .pt"),
        ("v.npy", np.zeros(4), {}, ValueError, r"shape \(N, d\)"),
        ("c.npy", np.zeros((2, 3, 4)), {}, ValueError, r"shape \(N, d\)"),
        ("empty.npy", np.zeros((0, 4)), {}, ValueError, "empty"),
        ("d.npy", np.zeros((2, 3)), {"dim": 5}, ValueError, "dimension 3, expected 5"),
        ("s.npy", np.array(["a", "b"]), {}, ValueError, "no floating-point"),
        ("b.npy", np.ones((2, 2), dtype=bool), {}, ValueError, "no floating-point"),
    ],
)
def test_errors(tmp_path, name, content, kwargs, error, match):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        np.save(path, content)
    with pytest.raises(error, match=match):
        load_embeddings(str(path), **kwargs)


def test_pickled_objects_are_refused(tmp_path):
    path = str(tmp_path / "o.npy")
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="Python objects"):
        load_embeddings(path)
    path = str(tmp_path / "o.pt")
    torch.save({"x": torch.zeros(2, 2), "f": os.getcwd}, path)  # weights_only refuses code
    with pytest.raises(ValueError, match="could not read .pt"):
        load_embeddings(path)


def test_atomic_write(tmp_path):
    path = tmp_path / "out.bin"
    atomic_write(path, lambda handle: handle.write(b"one"))
    with pytest.raises(FileExistsError):
        atomic_write(path, lambda handle: handle.write(b"two"))
    assert path.read_bytes() == b"one"

    def failing(handle):
        handle.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, failing, overwrite=True)
    assert path.read_bytes() == b"one"  # the old content survives a failed write
    atomic_write(path, lambda handle: handle.write(b"two"), overwrite=True)
    assert path.read_bytes() == b"two"
    assert os.listdir(tmp_path) == ["out.bin"]  # no temporary files left
    with pytest.raises(FileNotFoundError, match="does not exist"):
        atomic_write(tmp_path / "no" / "x.bin", lambda handle: None)


@pytest.mark.parametrize(
    "dtype", ["float8_e4m3fn", "float8_e5m2", "float16", "bfloat16"], ids=lambda d: d
)
def test_low_precision_safetensors_read_as_float32(tmp_path, dtype):
    dtype = getattr(torch, dtype, None)
    if dtype is None:
        pytest.skip("this torch has no such dtype")
    value = torch.linspace(-2, 2, 12).reshape(4, 3).to(dtype)
    path = str(tmp_path / "low.safetensors")
    save_file({"ab": value}, path)
    loaded = load_embeddings(path, dim=3)
    assert loaded.dtype == torch.float32
    assert_close(loaded, value.float(), atol=0)


def test_npz_bomb_refused_before_reading(tmp_path):
    path = str(tmp_path / "bomb.npz")
    np.savez_compressed(path, ab=np.zeros((5_000, 1_000), dtype=np.float64))  # 40 MB -> 40 kB
    assert os.path.getsize(path) < 200_000
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="inflate to more than 10000000 bytes"):
            read_embedding_file(path, max_bytes=10_000_000)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000
    assert read_embedding_file(path, max_bytes=40_000_128).arrays["ab"].shape == (5_000, 1_000)
    with pytest.raises(TypeError, match="max_bytes"):
        read_embedding_file(path, max_bytes=-1)


def test_npy_declaring_more_than_it_holds(tmp_path):
    """A 100-byte .npy declaring (40000, 40000) float64 would make numpy allocate 12.8 GB."""
    path = tmp_path / "liar.npy"
    path.write_bytes(_header_only((40_000, 40_000)))
    assert path.stat().st_size < 200
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"declares a float64 array of shape \(40000, 40000\)"):
            load_embeddings(str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1_000_000


def _header_only(shape):
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buffer, {"descr": "<f8", "fortran_order": False, "shape": shape}
    )
    return buffer.getvalue()


@pytest.mark.parametrize("keep", [10, 100, 300, -3])
def test_truncated_npz(tmp_path, keep):
    path = tmp_path / "t.npz"
    np.savez(path, ab=np.ones((20, 4)), bc=np.ones((20, 4)))
    data = path.read_bytes()
    path.write_bytes(data[:keep] if keep > 0 else data[:keep])
    with pytest.raises(ValueError, match="t.npz"):
        read_embedding_file(str(path))


def test_npz_member_that_is_not_an_array(tmp_path):
    path = tmp_path / "odd.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "hello")
    with pytest.raises(ValueError, match="'notes.txt' is not an array"):
        read_embedding_file(str(path))


def _valid_file(folder, extension):
    rng = np.random.default_rng(0)
    arrays = {"ab": rng.normal(size=(6, 3)).astype(np.float32), "positives": np.arange(6)}
    path = str(folder / f"valid{extension}")
    if extension == ".npz-compressed":
        path = str(folder / "valid.npz")
        np.savez_compressed(path, **arrays, temperature=0.5)
    else:
        _write(path, arrays if extension != ".npy" else {"ab": arrays["ab"]}, {"temperature": 0.5})
    with open(path, "rb") as handle:
        return os.path.splitext(path)[1], handle.read()


@given(
    extension=st.sampled_from([".npy", ".npz", ".npz-compressed", ".safetensors", ".pt"]),
    keep=st.floats(0, 1),
    flips=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 255)), max_size=3),
)
def test_fuzzed_embedding_files_read_finite_or_raise(tmp_path_factory, extension, keep, flips):
    folder = tmp_path_factory.mktemp("fuzz")
    suffix, data = _valid_file(folder, extension)
    data = bytearray(data[: max(0, round(keep * len(data)))] if keep < 0.95 else data)
    if suffix != ".pt":  # a flipped storage size in a torch pickle is torch's own business
        for where, value in flips:
            if data:
                data[min(int(where * len(data)), len(data) - 1)] = value
    path = folder / f"fuzzed{suffix}"
    path.write_bytes(bytes(data))
    try:
        content = read_embedding_file(str(path))
        for key in content.arrays:
            try:
                value = content.embeddings(key)
            except (ValueError, TypeError):
                continue
            assert value.dtype in (torch.float32, torch.float64) and torch.isfinite(value).all()
    except (ValueError, TypeError):
        pass
