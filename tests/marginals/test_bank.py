import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import pyro_contrast as pc
from tests.common import assert_close

# These tests normalize C over a handful of candidates on purpose (small, exact cases);
# elsewhere the SmallNormalizerWarning stays an error, so an unintended small normalizer shows.
pytestmark = pytest.mark.filterwarnings(
    "ignore::pyro_contrast.marginals.bridge.SmallNormalizerWarning"
)


@pytest.mark.parametrize("chunk_size", [1, 4, 100])
def test_chunks_cover_every_row_in_order(chunk_size, tmp_path):
    data = torch.randn(10, 3)
    np.save(tmp_path / "b.npy", data.numpy())
    sources = [data, data.numpy(), np.load(tmp_path / "b.npy", mmap_mode="r"), [data[:6], data[6:]]]
    for source in sources:
        bank = pc.Bank(source, log_weights=torch.arange(10.0))
        chunks = list(bank.chunks(chunk_size))
        assert_close(torch.cat([c[0] for c in chunks]), data)
        weights = torch.arange(10.0, dtype=torch.float64)
        assert_close(torch.cat([c[-1] for c in chunks]), weights - weights.logsumexp(0))
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


def test_all_minus_inf_log_weights_refused():
    """All -inf gave NaN answers."""
    with pytest.raises(ValueError, match="all -inf"):
        pc.Bank(torch.randn(3, 2), log_weights=torch.full((3,), -float("inf")))
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="NaN or \\+inf"):
            pc.Bank(torch.randn(3, 2), log_weights=torch.tensor([0.0, bad, 0.0]))
    with pytest.raises(ValueError, match="1-D"):
        pc.Bank(torch.randn(3, 2), log_weights=torch.zeros(3, 1))
    with pytest.raises(TypeError, match="log_weights must be real-valued"):
        pc.Bank(torch.randn(3, 2), log_weights=torch.zeros(3, dtype=torch.complex64))
    # some -inf is fine: those items have zero weight
    bank = pc.Bank(torch.randn(3, 2), log_weights=torch.tensor([0.0, -float("inf"), 0.0]))
    assert_close(bank.log_weights.exp(), torch.tensor([0.5, 0.0, 0.5]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_log_weights_are_normalized(dtype):
    weights = torch.tensor([1.0, 2.0, 3.0], dtype=dtype)
    bank = pc.Bank(torch.randn(3, 2), log_weights=weights)
    assert bank.log_weights.dtype == torch.float64
    expected = weights.double() - weights.double().logsumexp(0)
    assert_close(bank.log_weights, expected, atol=0, rtol=0)


@pytest.mark.parametrize("shift", [-1e5, 1e5, -1e8])
def test_constant_shift_of_log_weights_changes_nothing(shift):
    """A shift of -1e5 changed the exact bridge by 1e-2."""
    generator = torch.Generator().manual_seed(0)
    a, b, c = (torch.randn(n, 3, generator=generator) for n in (4, 20, 5))
    weights = torch.randn(20, generator=generator, dtype=torch.float64)
    critics = [pc.Critic.from_embeddings("dot", 0.5) for _ in range(2)]
    answers = []
    for log_weights in (weights, weights + shift):
        bank = pc.Bank(b, log_weights=log_weights)
        answers.append(pc.Bridge(critics, banks=[bank]).log_ratio(a, c, method="exact"))
    assert_close(answers[1], answers[0], atol=1e-6, rtol=0)


def test_more_weights_than_items_in_an_iterable_bank():
    """Accepted silently before: the extra weights were ignored."""
    chunks = [torch.randn(4, 2), torch.randn(3, 2)]
    bank = pc.Bank(chunks, log_weights=torch.zeros(9))
    with pytest.raises(ValueError, match="log_weights has 9 entries, but the bank's iterable"):
        list(bank.chunks())
    with pytest.raises(ValueError, match="log_weights has 9 entries"):
        len(bank)
    fewer = pc.Bank(chunks, log_weights=torch.zeros(5))
    with pytest.raises(ValueError, match="log_weights has 5 entries, fewer than"):
        list(fewer.chunks())
    assert len(pc.Bank(chunks, log_weights=torch.zeros(7))) == 7


def test_value_checks_follow_pyros_validation_switch():
    import pyro

    with pyro.validation_enabled(False):
        bank = pc.Bank(torch.tensor([[0.0, float("nan")]]), log_weights=torch.tensor([0.0]))
        assert torch.isnan(bank.materialize()[0]).any()
        pc.Bank(torch.randn(2, 2), log_weights=torch.full((2,), -float("inf")))
    with pytest.raises(ValueError, match="contains NaN"):
        pc.Bank(torch.tensor([[0.0, float("nan")]]))


_SPECIAL = [0.0, 1.0, -1.0, 1e-45, 1e30, -1e30, 1e300, np.nan, np.inf, -np.inf]


@st.composite
def _fuzzed_array(draw, ndim_choices=(1, 2, 2)):
    ndim = draw(st.sampled_from(ndim_choices))
    shape = tuple(draw(st.integers(0, 4)) for _ in range(ndim))
    size = int(np.prod(shape))
    values = draw(
        st.lists(
            st.one_of(st.sampled_from(_SPECIAL), st.floats(-5, 5)), min_size=size, max_size=size
        )
    )
    array = np.array(values, dtype=np.float64).reshape(shape)
    dtype = draw(st.sampled_from(["float16", "float32", "float64", "int64", "complex64"]))
    with np.errstate(all="ignore"):
        if dtype == "int64":
            array = np.nan_to_num(array, posinf=3, neginf=-3).clip(-3, 3)
        return array.astype(dtype)


@given(
    items=_fuzzed_array(),
    kind=st.sampled_from(["tensor", "array", "chunks"]),
    log_weights=st.one_of(st.none(), _fuzzed_array(ndim_choices=(0, 1, 1, 2))),
    chunk_size=st.sampled_from([1, 2, 100]),
)
def test_fuzzed_banks_give_finite_chunks_or_a_clear_error(items, kind, log_weights, chunk_size):
    try:
        source = {
            "tensor": lambda: torch.from_numpy(items),
            "array": lambda: items,
            "chunks": lambda: [items[:2], items[2:]] if len(items) > 2 else [items],
        }[kind]()
        bank = pc.Bank(source, log_weights=log_weights)
        chunks = list(bank.chunks(chunk_size))
        length = len(bank)
    except (ValueError, TypeError):
        return
    assert sum(chunk[0].shape[0] for chunk in chunks) == length > 0
    for *views, weights in chunks:
        assert all(torch.isfinite(view).all() for view in views)
        if weights is not None:
            assert not torch.isnan(weights).any() and (weights <= 1e-6).all()
    if bank.log_weights is not None:
        assert bank.log_weights.shape == (length,)
        assert abs(torch.logsumexp(bank.log_weights.double(), 0).item()) < 1e-3
