"""Our bridge LSE against its peers, on the same inputs in one process: speed, memory, exactness.

The quantity is the Monte Carlo LogSumExp estimate of Che & Eysenbach,
``lse[n, k] = log mean_m exp(f_AB(a_n, b_m) + f_BC(b_m, c_k))``, from embeddings a (N x d),
b (M x d), c (K x d), at N = K = 256, M = 16,384 by default, for two critics:

- ``cosine``: cosine similarity / 0.07 on 64-d embeddings (ordinary scores);
- ``wide``: squared-L2 (temperature 1) on spread-out 8-d embeddings, scores spanning
  ~1,400 nats (the paper's didactic setting, widened).

Methods (each includes its own scoring from the embeddings):

- ``bridge_lse`` / ``bridge_exact``: ``pc.Bridge(...).log_ratio(a, c, method=...)``
  (``exact`` is the normalized marginal, shown for its speed; peers compute only ``lse``);
- ``logmatmul``: the two score matrices, then ``pyro_contrast.ops.logmatmul``;
- ``broadcast``: ``torch.logsumexp`` of the N x M x K broadcast sum (the paper authors'
  approach; run at M / 8 and scaled linearly in time and memory: 4 GiB at full size);
- ``pyro_logmatmulexp``: Pyro's ``pyro.distributions.hmm._logmatmulexp`` (one row-max and
  one column-max shift around a GEMM);
- ``pyro_einsum_torch_log``: ``pyro.ops.einsum.contract("nm,mk->nk", ...,
  backend="pyro.ops.einsum.torch_log")``;
- ``keops``: ``pykeops`` ``LazyTensor.logsumexp`` of the symbolic N x M x K formula (batch
  over k), where pykeops imports and compiles (CPU backend here, run at M / 64 and scaled;
  skipped with ``--quick``: a first compile takes ~30 s).

Times: medians over interleaved rounds after a warm-up (slow methods get fewer rounds, as
printed); methods run on a reduced bank are scaled linearly to M and their exactness is
measured on that bank. Peak memory: each method once in a fresh child process, ``VmHWM``
after the run minus ``VmHWM`` with the inputs built (scaled to M for the broadcast only,
whose N x M x K temporaries grow with M; KeOps' stays O(N K + M d)). Exactness against a
float64 logsumexp of float64 scores of the same embeddings: max absolute error, cells off
by more than ``max(1e-3, 1e-6 |exact|)`` (float32 scoring alone errs by ~1e-4 at 1,400
nats) and cells that came out ``-inf``/NaN. Prints a table per critic and a final JSON line.

Usage: ``python benchmarks/bench_peers.py [--quick] [--num-inner 16384] [--no-keops]``
"""

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
import warnings

# Before torch starts its threads (see bench_logmatmul.py).
if "OMP_WAIT_POLICY" not in os.environ and os.getloadavg()[0] > (os.cpu_count() or 1):
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

import torch  # noqa: E402
from pyro.distributions.hmm import _logmatmulexp  # noqa: E402
from pyro.ops.einsum import contract  # noqa: E402

import pyro_contrast as pc  # noqa: E402
from pyro_contrast.marginals.bridge import SmallNormalizerWarning  # noqa: E402
from pyro_contrast.ops import logmatmul  # noqa: E402

# --quick normalizes C over a dozen candidates; the full run uses 256.
warnings.simplefilter("ignore", SmallNormalizerWarning)

CRITICS = {"cosine": ("cosine", 0.07, 64, 1.0), "wide": ("neg_sq_l2", 1.0, 8, 5.7)}
BROADCAST_REDUCTION = 8
# KeOps' CPU backend evaluates every (n, m, k) term with its d-dim dot products (~1,000x a
# GEMM's work per term here): ~70 s per call at M = 1,024 on this machine, so it runs at
# M / 64 and is scaled linearly.
KEOPS_REDUCTION = 64


def embeddings(critic_name, n, m, k, seed=0):
    _, _, dim, scale = CRITICS[critic_name]
    g = torch.Generator().manual_seed(seed)
    return tuple(scale * torch.randn(s, dim, generator=g) for s in (n, m, k))


def critic(critic_name):
    similarity, temperature, _, _ = CRITICS[critic_name]
    return pc.Critic.from_embeddings(similarity, temperature=temperature)


def _keops_lse(critic_name, a, b, c):
    from pykeops.torch import LazyTensor

    similarity, temperature, _, _ = CRITICS[critic_name]
    if similarity == "cosine":
        a, b, c = (torch.nn.functional.normalize(t, dim=-1) for t in (a, b, c))
    # i = n, j = m, batch = k: (K, N, M) symbolic terms, reduced over m.
    u = LazyTensor(a[None, :, None, :].contiguous())
    z = LazyTensor(b[None, None, :, :].contiguous())
    v = LazyTensor(c[:, None, None, :].contiguous())
    if similarity == "cosine":
        terms = ((u | z) + (z | v)) / temperature
    else:
        terms = -(u - z).sqnorm2() / (2 * temperature) - (z - v).sqnorm2() / (2 * temperature)
    return terms.logsumexp(dim=2)[..., 0].T - math.log(b.shape[0])


def methods(critic_name, a, b, c, keops, reduction=None):
    """``name -> (fn, bank_size)``: each fn computes the (N, K) LSE estimate from embeddings
    on the first ``bank_size`` bank items (slow methods run on a reduced bank and are scaled
    linearly in M)."""
    f = critic(critic_name)
    num_bank = b.shape[0]
    log_m = math.log(num_bank)

    def scores(bank=b):
        return f.pairwise_embeddings(a, bank), f.pairwise_embeddings(bank, c)

    bridge = pc.Bridge([f, f], [pc.Bank(b)], progress=False)
    small = max(1, num_bank // (reduction or BROADCAST_REDUCTION))

    def broadcast():
        x, y = scores(b[:small])
        return torch.logsumexp(x.unsqueeze(-1) + y.unsqueeze(-3), dim=-2) - math.log(small)

    table = {
        "bridge_lse": (lambda: bridge.log_ratio(a, c, method="lse"), num_bank),
        "bridge_exact": (lambda: bridge.log_ratio(a, c, method="exact"), num_bank),
        "logmatmul": (lambda: logmatmul(*scores()) - log_m, num_bank),
        "broadcast": (broadcast, small),
        "pyro_logmatmulexp": (lambda: _logmatmulexp(*scores()) - log_m, num_bank),
        "pyro_einsum_torch_log": (
            lambda: contract("nm,mk->nk", *scores(), backend="pyro.ops.einsum.torch_log") - log_m,
            num_bank,
        ),
    }
    if keops:
        tiny = max(1, num_bank // (reduction or KEOPS_REDUCTION))
        table["keops"] = (lambda: _keops_lse(critic_name, a, b[:tiny], c), tiny)
    return table


def reference(critic_name, a, b, c, rows=8):
    """float64 LSE from float64 scores of the same embeddings, a few rows at a time."""
    f = critic(critic_name).double()
    a, b, c = a.double(), b.double(), c.double()
    y = f.pairwise_embeddings(b, c)
    parts = []
    for i in range(0, a.shape[0], rows):
        x = f.pairwise_embeddings(a[i : i + rows], b)
        parts.append(torch.logsumexp(x.unsqueeze(-1) + y.unsqueeze(-3), dim=-2))
    return torch.cat(parts) - math.log(b.shape[0])


def exactness(result, expected):
    result = result.double()
    bad = ~torch.isfinite(result)
    error = (result - expected).abs().masked_fill(bad, math.inf)
    wrong = error > (1e-6 * expected.abs()).clamp(min=1e-3)
    return {
        "max_abs_err": error[~bad].max().item() if bool((~bad).any()) else math.inf,
        "wrong_cells": int(wrong.sum()),
        "neg_inf_or_nan_cells": int(bad.sum()),
        "cells": result.numel(),
    }


def timed(fns, repeats, budget_s=20.0):
    """Median seconds per method over interleaved rounds; a method whose single run takes
    more than ``budget_s / repeats`` gets one timed run (printed as rounds = 1)."""
    first = {}
    for name, fn in fns.items():
        fn()  # warm-up (and KeOps' compile)
        start = time.perf_counter()
        fn()
        first[name] = time.perf_counter() - start
    slow = {name for name, seconds in first.items() if seconds * repeats > budget_s}
    times = {name: [first[name]] for name in fns}
    for _ in range(repeats - 1):
        for name, fn in fns.items():
            if name in slow:
                continue
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: (statistics.median(ts), len(ts)) for name, ts in times.items()}


def _vm_hwm_mib():
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def memory_child(critic_name, method, n, m, k, keops):
    # A tiny run first, so code pages that a first call maps (kernel libraries) are not
    # counted as the method's memory.
    methods(critic_name, *embeddings(critic_name, 2, 8, 2), keops, reduction=1)[method][0]()
    a, b, c = embeddings(critic_name, n, m, k)
    fn, bank_size = methods(critic_name, a, b, c, keops)[method]
    baseline = _vm_hwm_mib()
    fn()
    # Only the broadcast's memory grows with M (its N x M x K sums); KeOps' does not.
    scale = m / bank_size if method == "broadcast" else 1.0
    return {"peak_extra_mib": (_vm_hwm_mib() - baseline) * scale}


def peak_memory(critic_name, names, n, m, k, threads, keops):
    """Each method once in a fresh process (a process's peak memory cannot be reset)."""
    result = {}
    for name in names:
        command = [sys.executable, __file__, "--memory-child", critic_name, name, str(n)]
        command += [str(m), str(k), "--threads", str(threads)]
        command += [] if keops else ["--no-keops"]
        output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
        result[name] = json.loads(output.strip().splitlines()[-1])["peak_extra_mib"]
    return result


def main(args):
    torch.set_num_threads(args.threads)
    n, m, k = args.num_rows, args.num_inner, args.num_cols
    keops = args.keops
    if keops:
        try:
            import pykeops  # noqa: F401
        except ImportError as error:
            print(f"keops: skipped, pykeops does not import ({error})")
            keops = False
    print(
        f"N={n} K={k} M={m} threads={torch.get_num_threads()} "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')} load={os.getloadavg()[0]:.1f}"
    )
    summary = {"shape": {"N": n, "K": k, "M": m}, "threads": torch.get_num_threads()}
    summary["load_average_start"] = os.getloadavg()[0]
    for critic_name in CRITICS:
        a, b, c = embeddings(critic_name, n, m, k)
        table = methods(critic_name, a, b, c, keops)
        references = {}
        times = timed({name: fn for name, (fn, _) in table.items()}, args.repeats)
        if args.quick:  # a fresh process per method costs seconds of imports each
            memory = {name: math.nan for name in table}
        else:
            memory = peak_memory(critic_name, list(table), n, m, k, args.threads, keops)
        ours = times["bridge_lse"][0]
        rows = {}
        for name, (fn, bank_size) in table.items():
            seconds, rounds = times[name]
            m_scale = m / bank_size
            row = {"ms": 1e3 * seconds * m_scale, "rounds": rounds, "bank_size": bank_size}
            row["over_bridge_lse"] = seconds * m_scale / ours
            row["peak_extra_mib"] = memory[name]
            if name != "bridge_exact":  # the others estimate lse; exact is another quantity
                if bank_size not in references:
                    references[bank_size] = reference(critic_name, a, b[:bank_size], c)
                row.update(exactness(fn(), references[bank_size]))
            rows[name] = row
        expected = references[m]
        spans = [
            (s.max() - s.min()).item()
            for s in (critic(critic_name).pairwise_embeddings(a, b), expected)
        ]
        print(f"\n{critic_name}: f_AB scores span {spans[0]:.0f} nats")
        print(
            f"{'method':<24}{'ms':>10}{'x ours':>9}{'rounds':>7}{'peak MiB':>10}"
            f"{'max abs err':>13}{'wrong':>8}{'-inf/NaN':>9}"
        )
        for name, row in rows.items():
            note = f"  (M={row['bank_size']}, scaled)" if row["bank_size"] != m else ""
            exact = (
                f"{row['max_abs_err']:>13.2e}{row['wrong_cells']:>8}{row['neg_inf_or_nan_cells']:>9}"
                if "max_abs_err" in row
                else f"{'':>13}{'':>8}{'':>9}"
            )
            print(
                f"{name:<24}{row['ms']:>10.1f}{row['over_bridge_lse']:>9.2f}{row['rounds']:>7}"
                f"{row['peak_extra_mib']:>10.1f}{exact}{note}"
            )
        summary[critic_name] = {"score_span_nats": spans[0], "methods": rows}
    summary["load_average_end"] = os.getloadavg()[0]
    summary["keops"] = keops
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--num-rows", type=int, default=256)
    parser.add_argument("--num-cols", type=int, default=256)
    parser.add_argument("--num-inner", type=int, default=16384)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-keops", dest="keops", action="store_false", help="skip KeOps")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run, without KeOps")
    parser.add_argument("--memory-child", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        torch.set_num_threads(args.threads)
        name, method, n, m, k = args.memory_child
        print(json.dumps(memory_child(name, method, int(n), int(m), int(k), args.keops)))
    else:
        if args.quick:
            args.num_rows, args.num_cols, args.num_inner, args.repeats = 16, 12, 400, 2
            args.keops = False  # and no peak memory: each would be a fresh process
        main(args)
