import numpy as np
import pytest
import torch

import pyro_contrast as pc
from tests.common import assert_close


@pytest.mark.parametrize("chunk_size", [1, 4, 100])
def test_chunks_cover_every_row_in_order(chunk_size, tmp_path):
    data = torch.randn(10, 3)
    np.save(tmp_path / "b.npy", data.numpy())
    sources = [data, data.numpy(), np.load(tmp_path / "b.npy", mmap_mode="r"), [data[:6], data[6:]]]
    for source in sources:
        bank = pc.Bank(source, log_weights=torch.arange(10.0))
        chunks = list(bank.chunks(chunk_size))
        assert_close(torch.cat([c[0] for c in chunks]), data)
        assert_close(torch.cat([c[-1] for c in chunks]), torch.arange(10.0))
        assert len(bank) == 10


def test_views_and_materialize():
    left, right = torch.randn(5, 3), torch.randn(5, 7)
    bank = pc.Bank(views=(left, right))
    assert bank.num_views == 2
    assert bank.view(0) is not bank.view(1)
    mat = bank.materialize()
    assert_close(mat[0], left) and assert_close(mat[1], right)
    with pytest.raises(ValueError, match="3 adjacent critics"):
        bank.check_views(3)


def test_bad_banks():
    with pytest.raises(ValueError, match="exactly one of items or views"):
        pc.Bank()
    with pytest.raises(ValueError, match="different numbers of rows"):
        pc.Bank(views=(torch.randn(3, 2), torch.randn(4, 2)))
    with pytest.raises(ValueError, match="bank is empty"):
        pc.Bank(torch.zeros(0, 2))
    with pytest.raises(ValueError, match="contains NaN"):
        pc.Bank(torch.tensor([[0.0, float("nan")]]))
    with pytest.raises(ValueError, match="log_weights has 2 entries"):
        pc.Bank(torch.randn(3, 2), log_weights=torch.zeros(2))
    with pytest.raises(TypeError, match="must hold numbers"):
        pc.Bank(np.array([["a"]]))
    with pytest.raises(ValueError, match="its iterable yielded no chunks"):
        list(pc.Bank([]).chunks())
    with pytest.raises(TypeError, match="tensor, array, dask array or iterable"):
        pc.Bank(3.0)
