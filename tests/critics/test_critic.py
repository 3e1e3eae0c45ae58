import math
import pickle

import numpy as np
import pyro
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import pyro_contrast as pc
from tests.common import assert_close

SIMILARITIES = ["dot", "cosine", "neg_sq_l2", "bilinear"]


def _reference(similarity, u, v, temperature, weight=None):
    if similarity == "dot":
        sim = u @ v.T
    elif similarity == "cosine":
        sim = (u / u.norm(dim=-1, keepdim=True)) @ (v / v.norm(dim=-1, keepdim=True)).T
    elif similarity == "neg_sq_l2":
        sim = -0.5 * ((u[:, None] - v[None]) ** 2).sum(-1)
    else:
        sim = u @ weight @ v.T
    return sim / temperature


@pytest.mark.parametrize("similarity", SIMILARITIES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("chunk_size", [None, 1, 3])
def test_pairwise_matches_reference_and_aligned(similarity, dtype, chunk_size):
    # The critic's own dtype sets the precision of its temperature, as for any module.
    critic = pc.Critic.from_embeddings(similarity, temperature=0.3, dim_x=4, dim_y=4).to(dtype)
    if critic.weight is not None:
        with torch.no_grad():
            critic.weight.copy_(torch.randn(4, 4))
    u, v = torch.randn(5, 4, dtype=dtype), torch.randn(7, 4, dtype=dtype)
    pairwise = critic.pairwise(u, v, chunk_size=chunk_size)
    assert pairwise.shape == (5, 7) and pairwise.dtype == dtype
    weight = None if critic.weight is None else critic.weight.detach().to(dtype)
    tol = 1e-5 if dtype == torch.float32 else 1e-10
    temperature = critic.temperature.detach()
    assert_close(temperature, 0.3, atol=1e-7, rtol=1e-7)
    assert_close(pairwise, _reference(similarity, u, v, temperature, weight), atol=tol, rtol=tol)
    aligned = critic(u[:, None, :], v[None, :, :])
    assert_close(aligned, pairwise, atol=tol, rtol=tol)


def test_encoders_bias_and_learnable_temperature():
    enc_x, enc_y = torch.nn.Linear(3, 2), torch.nn.Linear(5, 2)
    critic = pc.Critic(enc_x, enc_y, "dot", temperature=0.5, learn_temperature=True, bias=True)
    names = {n for n, _ in critic.named_parameters()}
    assert {"log_temperature", "bias", "encoder_x.weight", "encoder_y.weight"} <= names
    x, y = torch.randn(4, 3), torch.randn(4, 5)
    critic(x, y).sum().backward()
    assert critic.log_temperature.grad is not None and critic.bias.grad is not None
    fixed = pc.Critic(enc_x, enc_y, "dot", temperature=0.5)
    assert "log_temperature" not in {n for n, _ in fixed.named_parameters()}
    assert_close(fixed.temperature, 0.5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_inputs_are_computed_in_float32(dtype):
    critic = pc.Critic.from_embeddings("cosine", temperature=0.01)
    u, v = torch.randn(3, 8), torch.randn(4, 8)
    out = critic.pairwise(u.to(dtype), v.to(dtype))
    assert out.dtype == torch.float32
    expected = critic.pairwise(u.to(dtype).float(), v.to(dtype).float())
    assert_close(out, expected)


def test_numpy_inputs_and_extreme_temperatures():
    u, v = np.random.randn(3, 4), np.random.randn(2, 4)
    for temperature in (1e-6, 1e6):
        out = pc.Critic.from_embeddings("neg_sq_l2", temperature).pairwise(u, v)
        assert torch.isfinite(out).all()
    zero = pc.Critic.from_embeddings("cosine").pairwise(torch.zeros(1, 4), torch.randn(2, 4))
    assert_close(zero, torch.zeros(1, 2))


def test_pickle_round_trip():
    critic = pc.Critic(torch.nn.Linear(3, 3), None, "cosine", 0.2, learn_temperature=True)
    clone = pickle.loads(pickle.dumps(critic))
    x, y = torch.randn(2, 3), torch.randn(2, 3)
    assert_close(clone(x, y), critic(x, y))


def test_bad_inputs():
    with pytest.raises(ValueError, match="similarity must be one of"):
        pc.Critic.from_embeddings("euclid")
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="temperature must be positive"):
            pc.Critic.from_embeddings("dot", temperature=bad)
    with pytest.raises(TypeError, match="temperature"):
        pc.Critic.from_embeddings("dot", temperature="hot")
    with pytest.raises(ValueError, match="needs dim_x and dim_y"):
        pc.Critic.from_embeddings("bilinear")
    critic = pc.Critic.from_embeddings("dot")
    with pytest.raises(ValueError, match="embedding dims differ"):
        critic.pairwise(torch.randn(2, 3), torch.randn(2, 4))
    with pytest.raises(ValueError, match="x contains NaN"):
        critic(torch.tensor([[float("nan"), 1.0]]), torch.ones(1, 2))
    with pytest.raises(ValueError, match="y contains inf"):
        critic(torch.ones(1, 2), torch.tensor([[float("inf"), 1.0]]))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        critic([[1.0]], torch.ones(1, 1))
    with pytest.raises(ValueError, match="chunk_size"):
        critic.pairwise(torch.ones(2, 2), torch.ones(2, 2), chunk_size=0)
    with pytest.raises(ValueError, match="must have shape \\(N, d\\)"):
        critic.pairwise(torch.ones(2, 2, 2), torch.ones(2, 2))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_neg_l2_matches_cdist(dtype):
    critic = pc.Critic.from_embeddings("neg_l2", temperature=0.5, bias=True)
    with torch.no_grad():
        critic.bias.fill_(0.25)
    u, v = torch.randn(5, 3, dtype=dtype), torch.randn(7, 3, dtype=dtype)
    expected = -torch.cdist(u, v) / 0.5 + 0.25
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert (critic.pairwise(u, v) - expected).abs().max() < tol
    assert (critic(u[:5], v[:5]) - expected.diagonal()).abs().max() < tol


def test_neg_l2_gradient_finite_at_zero_distance():
    critic = pc.Critic.from_embeddings("neg_l2")
    u = torch.ones(2, 3, requires_grad=True)
    critic.pairwise(u, torch.ones(4, 3)).sum().backward()
    assert torch.isfinite(u.grad).all()


@pytest.mark.parametrize("temperature", [1e-46, 1e-39, 1e38, 1e300])
def test_temperature_outside_the_float_range_is_refused(temperature):
    """1e-46 stored as 0 in float32 and made inf/NaN scores."""
    with pytest.raises(ValueError, match=r"temperature=.* is outside \["):
        pc.Critic.from_embeddings("dot", temperature=temperature)


def test_tiny_temperature_in_float64_is_exact():
    torch.set_default_dtype(torch.float64)
    critic = pc.Critic.from_embeddings("dot", temperature=1e-46)
    u, v = torch.randn(3, 4), torch.randn(5, 4)
    scores = critic.pairwise(u, v)
    assert torch.isfinite(scores).all()
    assert_close(scores * 1e-46, u @ v.T, rtol=1e-12, atol=0)


@pytest.mark.parametrize(
    "dtype, scale",
    [
        (torch.float32, 1e-20),
        (torch.float32, 1e-30),
        (torch.float32, 1e20),
        (torch.float32, 1e30),
        (torch.float64, 1e-200),
        (torch.float64, 1e200),
    ],
)
def test_cosine_does_not_depend_on_the_norm(dtype, scale):
    """Cosine of 1e-20-sized float32 vectors was off by 0.5."""
    critic = pc.Critic.from_embeddings("cosine", temperature=0.1)
    u, v = torch.randn(4, 6, dtype=dtype), torch.randn(5, 6, dtype=dtype)
    expected = critic.pairwise(u, v)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    assert_close(critic.pairwise(u * scale, v), expected, atol=tol, rtol=tol)
    assert_close(critic.pairwise(u * scale, v * scale), expected, atol=tol, rtol=tol)
    assert_close(critic(u[:, None] * scale, v[None]), expected, atol=tol, rtol=tol)


def test_cosine_with_a_zero_vector_is_zero():
    critic = pc.Critic.from_embeddings("cosine", temperature=0.1, bias=True)
    u = torch.zeros(2, 3, requires_grad=True)
    v = torch.randn(4, 3)
    scores = critic.pairwise(u, v)
    assert (scores == critic.bias).all()
    assert (critic(u, torch.zeros(2, 3)) == critic.bias).all()
    scores.sum().backward()
    assert torch.isfinite(u.grad).all()


@pytest.mark.parametrize("similarity", ["dot", "neg_sq_l2", "neg_l2", "bilinear"])
def test_huge_finite_inputs_raise_instead_of_nan(similarity):
    """A dot critic at 1e20 overflowed float32 to inf/NaN without an error."""
    critic = pc.Critic.from_embeddings(similarity, dim_x=3, dim_y=3)
    u, v = 1e20 * torch.randn(2, 3), 1e20 * torch.randn(4, 3)
    with pytest.raises(ValueError, match="too large for similarity"):
        critic.pairwise(u, v)
    with pytest.raises(ValueError, match="too large for similarity"):
        critic(u[:, None], v[None])
    scores = critic.pairwise(u.double(), v.double())  # float64 holds them
    assert torch.isfinite(scores).all()


BAD_EMBEDDINGS = [
    (lambda: torch.tensor([[float("nan"), 1.0]]), ValueError, "contains NaN"),
    (lambda: torch.tensor([[float("inf"), 1.0]]), ValueError, "contains inf"),
    (lambda: torch.ones(1, 2, dtype=torch.complex64), TypeError, "real-valued"),
    (lambda: torch.ones(1, 2, dtype=torch.bool), TypeError, "real-valued"),
    (lambda: [[1.0, 2.0]], TypeError, "must be a torch.Tensor"),
]


@pytest.mark.parametrize("method", ["pairwise_embeddings", "score_embeddings"])
@pytest.mark.parametrize("bad, error, match", BAD_EMBEDDINGS)
@pytest.mark.parametrize("side", ["u", "v"])
def test_embedding_entry_points_validate(method, bad, error, match, side):
    """pairwise_embeddings accepted NaN and complex numbers."""
    critic = pc.Critic.from_embeddings("dot")
    args = {"u": torch.ones(1, 2), "v": torch.ones(1, 2), side: bad()}
    with pytest.raises(error, match=f"{side} .*{match}|{side} {match}"):
        getattr(critic, method)(args["u"], args["v"])


def test_integer_embeddings_are_computed_as_floats():
    critic = pc.Critic.from_embeddings("dot")
    out = critic.pairwise_embeddings(torch.ones(2, 3, dtype=torch.long), torch.ones(1, 3))
    assert out.dtype == torch.float32 and (out == 3).all()


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
@pytest.mark.parametrize("similarity", ["dot", "cosine", "bilinear"])
def test_critic_of_any_dtype_with_linear_encoders(dtype, similarity):
    """A float16 critic with Linear encoders failed with a dtype mismatch."""
    reference = pc.Critic(
        torch.nn.Linear(5, 3), torch.nn.Linear(4, 3), similarity, 0.5, True, True, dim_x=3, dim_y=3
    )
    critic = pickle.loads(pickle.dumps(reference)).to(dtype)
    with torch.no_grad():  # the reference holds the same (rounded) weights in float32
        for ours, theirs in zip(critic.parameters(), reference.parameters(), strict=True):
            theirs.copy_(ours.float())
    x, y = torch.randn(6, 5), torch.randn(7, 4)
    scores = critic.pairwise(x, y)
    assert scores.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    tol = 1e-5 if dtype != torch.float64 else 1e-6
    assert_close(scores.float(), reference.pairwise(x, y), atol=tol, rtol=tol)
    assert_close(critic(x[:6], y[:6]).float(), reference(x[:6], y[:6]), atol=tol, rtol=tol)
    scores.sum().backward()
    assert critic.encoder_x.weight.grad.dtype == dtype
    assert torch.isfinite(critic.encoder_x.weight.grad.float()).all()


@pytest.mark.parametrize("switch", ["pyro", "torch"])
def test_data_checks_follow_pyros_validation_switch(switch):
    critic = pc.Critic.from_embeddings("dot")
    nan = torch.tensor([[float("nan"), 1.0]])
    with pytest.raises(ValueError, match="contains NaN"):
        critic.pairwise(nan, torch.ones(1, 2))
    if switch == "pyro":
        pyro.enable_validation(False)
    else:
        torch.distributions.Distribution.set_default_validate_args(False)
    try:
        for call in (critic.pairwise, critic, critic.pairwise_embeddings):
            assert torch.isnan(call(nan, torch.ones(1, 2))).all()  # garbage in, no check
        assert torch.isinf(
            critic.pairwise(torch.full((1, 2), 1e20), torch.full((1, 2), 1e20))
        ).all()
    finally:
        pyro.enable_validation(True)
    with pytest.raises(ValueError, match="contains NaN"):
        critic.pairwise(nan, torch.ones(1, 2))


@pytest.mark.parametrize("similarity", ["cosine", "neg_l2", "bilinear"])
def test_compiles_to_one_graph_with_validation_off(similarity):
    """The data-dependent finiteness branch broke torch.compile(fullgraph=True)."""
    critic = pc.Critic.from_embeddings(similarity, 0.1, bias=True, dim_x=8, dim_y=8)
    u, v = torch.randn(4, 8), torch.randn(6, 8)
    torch._dynamo.reset()
    with pyro.validation_enabled(False):
        for method in (critic.pairwise, critic.pairwise_embeddings):
            compiled = torch.compile(method, fullgraph=True, backend="eager")
            assert_close(compiled(u, v), method(u, v))


def test_nuts_records_divergences_instead_of_raising():
    """With validation off, HMC/NUTS crashed with "x contains inf values"."""
    from pyro.infer import MCMC, NUTS

    critic = pc.Critic.from_embeddings("cosine", temperature=0.5)
    target = torch.ones(1, 2)

    def model():
        z = pyro.sample("z", pyro.distributions.Normal(torch.zeros(2), 1.0).to_event(1))
        # a step size of 5 overshoots: exp(z) overflows to inf within a trajectory
        pyro.factor("f", critic(z.exp()[None], target).sum())

    with pyro.validation_enabled(False):
        kernel = NUTS(model, step_size=5.0, adapt_step_size=False, max_tree_depth=3)
        mcmc = MCMC(kernel, num_samples=10, warmup_steps=0, disable_progbar=True)
        mcmc.run()
    assert mcmc.diagnostics()["divergences"]["chain 0"]


# -- property tests: any input either gives finite scores or a ValueError/TypeError --------

_SPECIAL = [0.0, -0.0, 1.0, -1.0, 1e-45, 1e-30, 1e20, -1e20, 1e38, 1e300, np.nan, np.inf, -np.inf]
_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int64, torch.bool]
_DTYPES += [torch.complex64]


@st.composite
def _fuzzed_tensor(draw, max_rows=4, max_dim=4):
    rows = draw(st.integers(0, max_rows))
    dim = draw(st.integers(0, max_dim))
    ndim = draw(st.sampled_from([1, 2, 2, 2, 3]))
    shape = {1: (dim,), 2: (rows, dim), 3: (rows, 1, dim)}[ndim]
    values = draw(
        st.lists(
            st.one_of(st.sampled_from(_SPECIAL), st.floats(-10, 10)),
            min_size=int(np.prod(shape)),
            max_size=int(np.prod(shape)),
        )
    )
    with np.errstate(all="ignore"):
        array = np.array(values, dtype=np.float64).reshape(shape)
    dtype = draw(st.sampled_from(_DTYPES))
    if dtype == torch.int64 or dtype == torch.bool:
        array = np.nan_to_num(array, posinf=7, neginf=-7).clip(-7, 7)
    return torch.from_numpy(array).to(dtype)


_TEMPERATURES = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([1e-46, 1e-38, 0.07, 1.0, 1e37, 1e38, 0, -1, True]),
    st.just("hot"),
)


@given(
    similarity=st.sampled_from(["dot", "cosine", "neg_sq_l2", "neg_l2", "bilinear"]),
    temperature=_TEMPERATURES,
    bias=st.booleans(),
    method=st.sampled_from(["pairwise", "forward", "pairwise_embeddings", "score_embeddings"]),
    u=_fuzzed_tensor(),
    v=_fuzzed_tensor(),
)
def test_fuzzed_critic_inputs_give_finite_scores_or_a_clear_error(
    similarity, temperature, bias, method, u, v
):
    try:
        critic = pc.Critic.from_embeddings(similarity, temperature, bias=bias, dim_x=4, dim_y=4)
        call = critic if method == "forward" else getattr(critic, method)
        scores = call(u, v)
    except (ValueError, TypeError):
        return
    assert isinstance(scores, torch.Tensor) and scores.dtype in (torch.float32, torch.float64)
    assert torch.isfinite(scores).all()


@pytest.mark.parametrize("similarity", ["dot", "cosine", "neg_sq_l2", "neg_l2", "bilinear"])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("sizes", [(3, 7), (7, 3), (1, 1)])
def test_pairwise_factors_give_pairwise_scores_block_by_block(similarity, bias, dtype, sizes):
    critic = pc.Critic.from_embeddings(similarity, temperature=0.3, bias=bias, dim_x=4, dim_y=4)
    critic = critic.to(dtype)
    u, v = torch.randn(sizes[0], 4, dtype=dtype), torch.randn(sizes[1], 4, dtype=dtype)
    want = critic.pairwise_embeddings(u, v)
    for check in (True, False):
        fu, fv, finish = critic.pairwise_factors(u, v, check=check)
        got = torch.cat([finish(fu[i : i + 2] @ fv.T) for i in range(0, sizes[0], 2)])
        torch.testing.assert_close(got, want)
    with pytest.raises(ValueError, match="u"):
        critic.pairwise_factors(torch.full((2, 4), math.nan, dtype=dtype), v)


@pytest.mark.parametrize("scale", [1e-30, 1e-12, 1.0, 1e12, 1e30])
def test_cosine_is_the_same_on_the_one_division_path(scale):
    # with no graph the normalization divides once when norms are in range, and scales
    # first otherwise; both give unit vectors, and the traced (graph) path agrees
    critic = pc.Critic.from_embeddings("cosine")
    u, v = scale * torch.randn(5, 3), torch.randn(4, 3)
    with torch.no_grad():
        fast = critic.pairwise_embeddings(u, v)
    graph = critic.pairwise_embeddings(u.requires_grad_(), v)
    torch.testing.assert_close(fast, graph.detach())
    assert bool((fast.abs() <= 1 + 1e-6).all())


@pytest.mark.parametrize("similarity", ["dot", "cosine", "neg_sq_l2", "neg_l2", "bilinear"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_gemm_factors_of_each_side_give_pairwise_scores(similarity, dtype):
    critic = pc.Critic.from_embeddings(similarity, temperature=0.3, dim_x=4, dim_y=4)
    if similarity == "bilinear":
        with torch.no_grad():
            critic.weight.copy_(torch.randn(4, 4))
    u, v = torch.randn(3, 4, dtype=dtype), torch.randn(6, 4, dtype=dtype)
    want = critic.pairwise_embeddings(u, v)
    for fold in ("x", "y"):
        fu = critic.gemm_factor(u, "x", temperature=fold == "x")
        fv = critic.gemm_factor(v, "y", temperature=fold == "y")
        assert fu.dtype == fv.dtype == dtype
        torch.testing.assert_close(critic.finish_scores_(fu @ fv.T), want)
    # a float32 bank scored against float64 queries: factors in the common dtype
    assert critic.gemm_factor(u.float(), "y", dtype=torch.float64).dtype == torch.float64


def test_gemm_factor_and_check_pairwise_refuse_bad_arguments():
    critic = pc.Critic.from_embeddings("dot")
    with pytest.raises(ValueError, match="side"):
        critic.gemm_factor(torch.randn(2, 3), "z")
    with pytest.raises(ValueError, match=r"\(N, d\)"):
        critic.gemm_factor(torch.randn(3), "x")
    with pytest.raises(TypeError):
        critic.gemm_factor("not a tensor", "x")
    with pytest.raises(ValueError, match="embedding dims differ"):
        critic.check_pairwise(torch.randn(2, 3), torch.randn(2, 4))
    critic.check_pairwise(torch.randn(2, 3), torch.randn(5, 3))
