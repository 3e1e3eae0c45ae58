"""Speed and exactness of ``pyro_contrast.ops.logmatmul`` against the alternatives.

Times, side by side in one process (interleaved rounds, median after warm-up), at
N = K = 256, M = 16,384 by default:

- ``gemm``: the float32 GEMM of the same shape (``exp(x) @ exp(y)`` with the exps
  precomputed): the speed of light;
- ``shift``: one row-max and one column-max shift, exp, GEMM, log (fast, not exact);
- ``pyro_log_einsum``: ``pyro.ops.einsum.contract`` with the ``torch_log`` backend;
- ``logmatmul``: the engine (forward, and forward + backward against a GEMM's);
- ``broadcast``: ``torch.logsumexp`` of the N x M x K sum, run once at a reduced M and
  scaled linearly to the full M (its memory is N K M floats).

Then, on ordinary and adversarial inputs (scores spanning +-1e3, misaligned maxima,
temperature 0.005 cosines), the largest absolute and relative errors against a float64
logsumexp, the number of -inf/NaN cells, the share of cells the engine recomputed exactly,
and the engine's time there. Last, the wide-range cases (squared-L2 scores of spread-out
8-d embeddings spanning ~1,000 and ~1,400 nats, raw and bridge-normalized) against the
cosine case at M / 2 and M: forward and forward + backward time ratios, the first pass's
dtype and the error against float64. Prints tables and a final JSON line.

OpenMP threads that spin while waiting steal the cores on a shared, oversubscribed machine
and make every many-kernel computation look several times slower than it is, while passive
waiting costs tens of microseconds per kernel on a quiet one. Unless ``OMP_WAIT_POLICY`` is
already set, this script sets it to ``PASSIVE`` when the load average exceeds the number of
cores at start, for all methods alike (the value is printed with the load average).

Usage: ``python benchmarks/bench_logmatmul.py [--quick] [--num-inner 16384] ...``
"""

import argparse
import json
import os
import statistics
import time

# Before torch starts its threads: on an oversubscribed machine, spinning OpenMP threads
# steal the cores (see the module notes); on a quiet one, passive waiting slows small ops.
if "OMP_WAIT_POLICY" not in os.environ and os.getloadavg()[0] > (os.cpu_count() or 1):
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

import torch  # noqa: E402
from pyro.ops.einsum import contract  # noqa: E402

from pyro_contrast.ops import _logmatmul_kernels, logmatmul  # noqa: E402

_PYRO_LOG = "pyro.ops.einsum.torch_log"


def shift_trick(x, y):
    a = x.amax(-1, keepdim=True)
    b = y.amax(-2, keepdim=True)
    return torch.matmul((x - a).exp_(), (y - b).exp_()).log_().add_(a).add_(b)


def pyro_log_einsum(x, y):
    return contract("nm,mk->nk", x, y, backend=_PYRO_LOG)


def broadcast(x, y):
    return torch.logsumexp(x.unsqueeze(-1) + y.unsqueeze(-3), dim=-2)


def reference64(x, y, rows=8):
    """float64 logsumexp of the broadcast sum, a few rows at a time (bounded memory)."""
    x, y = x.double(), y.double()
    return torch.cat([broadcast(x[i : i + rows], y) for i in range(0, x.shape[0], rows)])


def timed_rounds(fns, repeats, warmup=2):
    """Median seconds per function, rounds interleaved so load drifts hit all alike."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def ordinary(n, m, k, d, temperature, generator):
    u, z, v = (torch.randn(s, d, generator=generator) for s in (n, m, k))
    u, z, v = (torch.nn.functional.normalize(t, dim=-1) for t in (u, z, v))
    return u @ z.T / temperature, z @ v.T / temperature


def adversarial_inputs(n, m, k, generator):
    wide = (
        torch.rand(n, m, generator=generator) * 2e3 - 1e3,
        torch.rand(m, k, generator=generator) * 2e3 - 1e3,
    )
    x = 300 * torch.randn(n, m, generator=generator)
    y = 300 * torch.randn(m, k, generator=generator)
    x[torch.arange(n), torch.randint(m, (n,), generator=generator)] = 1e3
    y[torch.randint(m, (k,), generator=generator), torch.arange(k)] = 1e3
    return {
        "cosine/0.07 (ordinary)": ordinary(n, m, k, 64, 0.07, generator),
        "cosine/0.005 (+-200)": ordinary(n, m, k, 64, 0.005, generator),
        "uniform +-1e3": wide,
        "misaligned maxima +-1e3": (x, y),
    }


def wide_sq_l2(n, m, k, sigma, generator, normalize=False):
    """Squared-L2 scores of spread-out 8-d embeddings (temperature 1), as in the paper's
    didactic setting; ``normalize`` subtracts the bridge's C normalizer from ``y``."""
    u, z, v = (sigma * torch.randn(s, 8, generator=generator) for s in (n, m, k))
    x = -0.5 * torch.cdist(u, z).pow(2)
    y = -0.5 * torch.cdist(z, v).pow(2)
    if normalize:
        y = y - y.logsumexp(-1, keepdim=True)
    return x, y


def span(x, y):
    return max((x.max() - x.min()).item(), (y.max() - y.min()).item())


def wide_range(n, k, sizes, repeats, generator, sigmas=(4.6, 5.7)):
    """Forward and forward + backward of wide-range cases against the cosine case, per M."""
    results = []
    grad = torch.randn(n, k, generator=generator)
    for m in sizes:
        inputs = {"cosine/0.07": ordinary(n, m, k, 64, 0.07, generator)}
        for sigma in sigmas:
            for normalize in (False, True):
                x, y = wide_sq_l2(n, m, k, sigma, generator, normalize)
                label = f"sq-L2 8-d sigma {sigma}{' normalized' if normalize else ''}"
                inputs[label] = (x, y)
        fns = {}
        for label, (x, y) in inputs.items():
            xg, yg = x.clone().requires_grad_(), y.clone().requires_grad_()
            fns[label] = lambda x=x, y=y: logmatmul(x, y)
            fns[label + " fwd+bwd"] = lambda xg=xg, yg=yg: torch.autograd.grad(
                logmatmul(xg, yg), (xg, yg), grad
            )
        times = timed_rounds(fns, repeats, warmup=1)
        for label, (x, y) in inputs.items():
            stats = {}
            chunk = _logmatmul_kernels.default_chunk_size(1, n, k, m)
            _logmatmul_kernels.forward(x, y, chunk, stats=stats)
            results.append(
                {
                    "M": m,
                    "inputs": label,
                    "span_nats": span(x, y),
                    "ms": 1e3 * times[label],
                    "fwd_bwd_ms": 1e3 * times[label + " fwd+bwd"],
                    "over_cosine": times[label] / times["cosine/0.07"],
                    "fwd_bwd_over_cosine": times[label + " fwd+bwd"] / times["cosine/0.07 fwd+bwd"],
                    "first_pass": str(stats["first_pass"]).replace("torch.", ""),
                    "log_space_cells": stats["log_space"],
                    **exactness(logmatmul(x, y), reference64(x, y)),
                }
            )
    return results


def exactness(result, expected):
    finite = torch.isfinite(result)
    error = (result.double() - expected).abs()
    error = torch.where(finite, error, torch.full_like(error, float("inf")))
    return {
        "max_abs_err": error.max().item(),
        "max_rel_err": (error / expected.abs().clamp(min=1e-300)).max().item(),
        "bad_cells": int((~finite).sum()),
        "contract_ok": bool((error <= (5e-7 * expected.abs()).clamp(min=1e-4)).all()),
    }


def exact_shares(x, y):
    """The first pass's dtype, the shares of cells it flags and that stay for the log-space
    path."""
    chunk = _logmatmul_kernels.default_chunk_size(1, x.shape[0], y.shape[1], x.shape[1])
    stats = {}
    _logmatmul_kernels.forward(x, y, chunk, stats=stats)
    cells = x.shape[0] * y.shape[1]
    first_pass = str(stats["first_pass"]).replace("torch.", "")
    return first_pass, stats["flagged"] / cells, stats["log_space"] / cells


def main(args):
    torch.set_num_threads(args.threads)
    generator = torch.Generator().manual_seed(0)
    n, m, k = args.num_rows, args.num_inner, args.num_cols
    print(
        f"N={n} K={k} M={m} threads={torch.get_num_threads()} "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')} "
        f"load={os.getloadavg()[0]:.1f}"
    )
    x, y = ordinary(n, m, k, 64, 0.07, generator)
    ex, ey = x.exp(), y.exp()
    xg, yg = x.clone().requires_grad_(), y.clone().requires_grad_()
    exg, eyg = ex.clone().requires_grad_(), ey.clone().requires_grad_()
    grad = torch.randn(n, k, generator=generator)

    def logmatmul_fwd_bwd():
        torch.autograd.grad(logmatmul(xg, yg), (xg, yg), grad)

    def gemm_fwd_bwd():
        torch.autograd.grad(exg @ eyg, (exg, eyg), grad)

    fns = {
        "gemm": lambda: ex @ ey,
        "shift": lambda: shift_trick(x, y),
        "pyro_log_einsum": lambda: pyro_log_einsum(x, y),
        "logmatmul": lambda: logmatmul(x, y),
        "gemm_fwd_bwd": gemm_fwd_bwd,
        "logmatmul_fwd_bwd": logmatmul_fwd_bwd,
    }
    times = timed_rounds(fns, args.repeats)
    m_small = max(1, m // args.broadcast_reduction)
    start = time.perf_counter()
    broadcast(x[:, :m_small], y[:m_small])
    times["broadcast"] = (time.perf_counter() - start) * m / m_small
    gemm = times["gemm"]
    print(f"\n{'method':<22}{'ms':>10}{'x gemm':>9}")
    for name, seconds in times.items():
        base = times["gemm_fwd_bwd"] if name.endswith("fwd_bwd") else gemm
        note = (
            f"  (M={m_small}, scaled x{m / m_small:g}; {n * k * m * 4 / 2**30:.1f} GiB at full M)"
            if name == "broadcast"
            else ""
        )
        print(f"{name:<22}{seconds * 1e3:>10.1f}{seconds / base:>9.2f}{note}")

    print(
        f"\n{'inputs':<26}{'method':<17}{'max abs':>10}{'max rel':>10}{'-inf/NaN':>9}"
        f"{'ok':>4}{'ms':>9}{'pass':>9}{'flag %':>9}{'lse %':>9}"
    )
    cases = {}
    for label, (xa, ya) in adversarial_inputs(n, m, k, generator).items():
        expected = reference64(xa, ya)
        first_pass, flagged, log_space = exact_shares(xa, ya)
        case = {"first_pass": first_pass, "flagged_share": flagged, "log_space_share": log_space}
        engine = timed_rounds(
            {"f": lambda xa=xa, ya=ya: logmatmul(xa, ya)}, max(3, args.repeats // 3), warmup=1
        )
        case["logmatmul_ms"] = 1e3 * engine["f"]
        for method, fn in (
            ("logmatmul", logmatmul),
            ("shift", shift_trick),
            ("pyro_log_einsum", pyro_log_einsum),
        ):
            stats = exactness(fn(xa, ya), expected)
            case[method] = stats
            ms = f"{case['logmatmul_ms']:>9.1f}" if method == "logmatmul" else f"{'':>9}"
            share = (
                f"{first_pass:>9}{100 * flagged:>9.2f}{100 * log_space:>9.2f}"
                if method == "logmatmul"
                else ""
            )
            print(
                f"{label:<26}{method:<17}{stats['max_abs_err']:>10.2e}"
                f"{stats['max_rel_err']:>10.2e}{stats['bad_cells']:>9}"
                f"{'y' if stats['contract_ok'] else 'n':>4}{ms}{share}"
            )
        cases[label] = case

    sizes, sigmas = ([m], (5.7,)) if args.quick else ([m // 2, m], (4.6, 5.7))
    wide = wide_range(n, k, sizes, max(3, args.repeats // 2), generator, sigmas)
    print(
        f"\n{'M':>6}  {'inputs':<34}{'span':>7}{'ms':>9}{'x cos':>7}{'fb ms':>9}{'x cos':>7}"
        f"{'pass':>9}{'max abs':>10}{'ok':>4}"
    )
    for r in wide:
        print(
            f"{r['M']:>6}  {r['inputs']:<34}{r['span_nats']:>7.0f}{r['ms']:>9.1f}"
            f"{r['over_cosine']:>7.2f}{r['fwd_bwd_ms']:>9.1f}{r['fwd_bwd_over_cosine']:>7.2f}"
            f"{r['first_pass']:>9}{r['max_abs_err']:>10.2e}{'y' if r['contract_ok'] else 'n':>4}"
        )
    summary = {
        "shape": {"N": n, "K": k, "M": m},
        "threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "load_average": os.getloadavg()[0],
        "ms": {name: 1e3 * s for name, s in times.items()},
        "logmatmul_over_gemm": times["logmatmul"] / gemm,
        "logmatmul_fwd_bwd_over_gemm_fwd_bwd": times["logmatmul_fwd_bwd"] / times["gemm_fwd_bwd"],
        "broadcast_over_logmatmul": times["broadcast"] / times["logmatmul"],
        "broadcast_scaled_from_m": m_small,
        "cases": cases,
        "wide_range": wide,
        "wide_over_cosine_max": max(r["over_cosine"] for r in wide),
    }
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-rows", type=int, default=256)
    parser.add_argument("--num-cols", type=int, default=256)
    parser.add_argument("--num-inner", type=int, default=16384)
    parser.add_argument("--repeats", type=int, default=9)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--broadcast-reduction",
        type=int,
        default=8,
        help="run the broadcast reference at M / this and scale",
    )
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    args = parser.parse_args()
    if args.quick:
        args.num_rows, args.num_cols, args.num_inner, args.repeats = 16, 12, 300, 3
    main(args)
