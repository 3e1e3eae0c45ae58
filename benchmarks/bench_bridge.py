"""Speed, memory and exactness of the bridge's exact marginal, end to end.

1. ``Bridge.log_ratio(method="exact")`` at N = K = 256, M = 16,384, d = 64 (cosine critics,
   temperature 0.07), end to end from embeddings (scoring, normalizers, contraction),
   against one float32 (N x M) @ (M x K) GEMM (the ratio is printed, also per round of the
   interleaved timings), the bridge's former two-pass path (whole score matrices,
   ``log_softmax``, ``logmatmul``), the one-shift trick and the N x M x K broadcast
   logsumexp (run at M / 8 and scaled); its error against the same bridge in float64; the
   same bridge with learned (MLP) encoders, a repeated call against a first call.
2. Pyro's own ``TraceEnum_ELBO`` enumerating the bank index over a plate of all (a, c) pairs
   against ``BridgedConditional.log_prob`` of the same pairs, at sizes where Pyro finishes.
3. A memory-mapped bank of 1,000,000 x 64 float32 (``np.lib.format.open_memmap`` in a temp
   dir) streamed at M = 1e5 and 1e6: time and peak RSS, each in a fresh process.
4. With ``--dask``: a 2-worker ``LocalCluster`` on a dask bank of 4e6 x 64 against the
   single-machine answer.

Prints a table and a final JSON line. ``--quick`` is a tiny smoke run. Unless
``OMP_WAIT_POLICY`` is set, this sets it to ``PASSIVE`` on an oversubscribed machine (see
``bench_logmatmul.py``).
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

# Before torch starts its threads: on an oversubscribed machine, spinning OpenMP threads
# steal the cores (see bench_logmatmul.py); on a quiet one, passive waiting slows small ops.
if "OMP_WAIT_POLICY" not in os.environ and os.getloadavg()[0] > (os.cpu_count() or 1):
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

import numpy as np  # noqa: E402
import pyro  # noqa: E402
import torch  # noqa: E402
from pyro.infer import TraceEnum_ELBO, config_enumerate  # noqa: E402

import pyro_contrast as pc  # noqa: E402
from pyro_contrast.marginals import chain  # noqa: E402
from pyro_contrast.marginals.bridge import SmallNormalizerWarning  # noqa: E402
from pyro_contrast.ops import logmatmul  # noqa: E402

# --quick normalizes C over 16 candidates on purpose; the full run uses 256.
warnings.simplefilter("ignore", SmallNormalizerWarning)

TEMPERATURE = 0.07


def _critics():
    return tuple(pc.Critic.from_embeddings("cosine", temperature=TEMPERATURE) for _ in "ab")


def _mlp_critic(d, seed):
    torch.manual_seed(seed)

    def mlp():
        return torch.nn.Sequential(
            torch.nn.Linear(d, 4 * d), torch.nn.ReLU(), torch.nn.Linear(4 * d, d)
        )

    critic = pc.Critic(mlp(), mlp(), "cosine", TEMPERATURE).eval()
    return critic.requires_grad_(False)


def _median_seconds(fn, repeats, warmup=1):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _peak_rss_mib():
    """Peak resident memory of this process. Linux keeps ``ru_maxrss`` across ``exec``, so a
    child would report its parent's peak: read the address space's own ``VmHWM`` first."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def shift_trick(x, y):
    a, b = x.amax(-1, keepdim=True), y.amax(-2, keepdim=True)
    return torch.matmul((x - a).exp_(), (y - b).exp_()).log_().add_(a).add_(b)


def stage_speed(n, m, d, repeats, reduction):
    """Section 1: the exact bridge against GEMM, shift trick and broadcast reference."""
    g = torch.Generator().manual_seed(0)
    a, c, b = (torch.randn(s, d, generator=g) for s in (n, n, m))
    ab, bc = _critics()
    bridge = pc.Bridge([ab, bc], [pc.Bank(b)], progress=False)
    x = ab.pairwise_embeddings(a, b)
    scores = bc.pairwise_embeddings(b, c)
    y = scores - (torch.logsumexp(scores, -1, keepdim=True) - np.log(n))
    ex, ey = x.exp(), y.exp()

    def two_pass():
        # the bridge before its streamed pass: whole score matrices, log_softmax, logmatmul
        fused, chain.fused_partials = chain.fused_partials, lambda *args, **kwargs: None
        try:
            return bridge.log_ratio(a, c)
        finally:
            chain.fused_partials = fused

    # The same bridge with learned encoders (two-layer MLPs, d -> 4d -> d): a repeated call
    # reuses the bank's encodings; "first call" builds the bridge anew, so it encodes the bank.
    mlp_critics = [_mlp_critic(d, seed) for seed in (1, 2)]
    mlp_bridge = pc.Bridge(mlp_critics, [pc.Bank(b)], progress=False)

    def mlp_first_call():
        return pc.Bridge(mlp_critics, [pc.Bank(b)], progress=False).log_ratio(a, c)

    fns = {
        "bridge_exact": lambda: bridge.log_ratio(a, c),
        "bridge_mlp": lambda: mlp_bridge.log_ratio(a, c),
        "bridge_mlp_first": mlp_first_call,
        "bridge_two_pass": two_pass,
        "logmatmul": lambda: logmatmul(x, y),
        "shift": lambda: shift_trick(x, y),
        "gemm": lambda: ex @ ey,
    }
    for fn in fns.values():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeats):  # interleaved, so load drifts hit all alike
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    ms = {name: 1e3 * statistics.median(t) for name, t in times.items()}
    # On a shared machine the speed drifts between rounds; the ratio within a round does not.
    per_round = [t / g for t, g in zip(times["bridge_exact"], times["gemm"], strict=True)]
    small = max(1, m // reduction)
    start = time.perf_counter()
    torch.logsumexp(x[:, :small, None] + y[None, :small], dim=1)
    ms["broadcast"] = 1e3 * (time.perf_counter() - start) * m / small
    bridge64 = pc.Bridge([ab, bc], [pc.Bank(b.double())], progress=False)
    error = (bridge.log_ratio(a, c).double() - bridge64.log_ratio(a.double(), c.double())).abs()
    return {
        "ms": ms,
        "broadcast_scaled_from_m": small,
        "broadcast_gib_at_full_m": n * n * m * 4 / 2**30,
        "bridge_over_gemm": ms["bridge_exact"] / ms["gemm"],
        "bridge_over_gemm_per_round_median": statistics.median(per_round),
        "bridge_over_gemm_per_round_min": min(per_round),
        "two_pass_over_gemm": ms["bridge_two_pass"] / ms["gemm"],
        "mlp_repeat_over_first_call": ms["bridge_mlp"] / ms["bridge_mlp_first"],
        "logmatmul_over_gemm": ms["logmatmul"] / ms["gemm"],
        "broadcast_over_bridge": ms["broadcast"] / ms["bridge_exact"],
        "bridge_max_abs_err_vs_float64": error.max().item(),
    }


def stage_pyro(sizes, d, repeats):
    """Section 2: Pyro's enumeration of the bank index over all (a, c) pairs."""
    results = []
    for n, m in sizes:
        g = torch.Generator().manual_seed(1)
        a, c, b = (torch.randn(s, d, generator=g) for s in (n, n, m))
        ab, bc = _critics()
        bridge = pc.Bridge([ab, bc], [pc.Bank(b)], progress=False)
        a_index, c_index = torch.arange(n).repeat_interleave(n), torch.arange(n).repeat(n)

        @config_enumerate
        def model(a=a, b=b, c=c, ab=ab, bc=bc, a_index=a_index, c_index=c_index):
            with pyro.plate("pairs", a_index.shape[0]):
                item = pyro.sample("b", pc.ContrastiveConditional(ab, a[a_index], b))
                pyro.sample("c", pc.ContrastiveConditional(bc, b[item], c), obs=c_index)

        def ours(bridge=bridge, a=a, c=c):
            dist = bridge.conditional(a, c)
            return dist.log_prob(dist.enumerate_support()).sum()

        # Ours first: Pyro's gigabytes of temporaries would otherwise slow what follows.
        ours_s = _median_seconds(ours, repeats)
        total = ours().item()
        elbo = TraceEnum_ELBO(max_plate_nesting=1)
        start = time.perf_counter()
        pyro_total = -elbo.loss(model, lambda: None)
        pyro_s = time.perf_counter() - start
        results.append(
            {
                "N": n,
                "K": n,
                "M": m,
                "pyro_ms": 1e3 * pyro_s,
                "bridged_ms": 1e3 * ours_s,
                "ratio": pyro_s / ours_s,
                "rel_diff_total_log_prob": abs(total - pyro_total) / abs(pyro_total),
            }
        )
    return results


def stage_memmap_child(path, m, n, d):
    """Section 3, in a fresh process: stream the first ``m`` rows of the memmapped bank."""
    baseline = _peak_rss_mib()
    bank = np.load(path, mmap_mode="r")[:m]
    g = torch.Generator().manual_seed(2)
    a, c = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    bridge = pc.Bridge(list(_critics()), [pc.Bank(bank)], progress=False)
    pc.Bridge(list(_critics()), [pc.Bank(bank[:1000])], progress=False).log_ratio(a, c)  # warm
    start = time.perf_counter()
    result = bridge.log_ratio(a, c)
    seconds = time.perf_counter() - start
    assert torch.isfinite(result).all()
    return {
        "M": m,
        "seconds": seconds,
        "peak_rss_mib": _peak_rss_mib(),
        "rss_after_import_mib": baseline,
    }


def stage_memmap(rows, sizes, n, d, threads):
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "bank.npy")
        bank = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(rows, d))
        rng = np.random.default_rng(3)
        for start in range(0, rows, 2**16):
            block = rng.standard_normal((min(2**16, rows - start), d), dtype=np.float32)
            bank[start : start + block.shape[0]] = block
        bank.flush()
        del bank
        results = []
        for m in sizes:
            command = [
                sys.executable,
                __file__,
                "--memmap-child",
                path,
                str(m),
                str(n),
                str(d),
                "--threads",
                str(threads),
            ]
            output = subprocess.run(command, check=True, capture_output=True, text=True).stdout
            results.append(json.loads(output.strip().splitlines()[-1]))
    return results


def stage_dask(rows, n, d, block_rows):
    """Section 4: a 2-worker LocalCluster against the single-machine answer."""
    import dask.array as da
    from distributed import Client, LocalCluster, wait

    bank = da.random.default_rng(4).standard_normal((rows, d), chunks=(block_rows, d))
    bank = bank.astype(np.float32)
    g = torch.Generator().manual_seed(5)
    a, c = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g)
    critics = list(_critics())
    # Loopback only, and port 0: dashboard_address=None would still bind port 8787.
    cluster = LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
    )
    with cluster, Client(cluster) as client, client.as_current():
        # Warm the workers (imports, first calls) on one block, and hold the bank in worker
        # memory as a loaded dataset would be, so the timing is the reduction itself.
        pc.Bridge(critics, [pc.Bank(bank[:block_rows])], progress=False).log_ratio(a, c)
        start = time.perf_counter()
        bank = bank.persist()
        wait(bank)
        load_s = time.perf_counter() - start
        bridge = pc.Bridge(critics, [pc.Bank(bank)], progress=False)
        start = time.perf_counter()
        distributed_answer = bridge.log_ratio(a, c)
        dask_s = time.perf_counter() - start
        local = bank.compute()
    start = time.perf_counter()
    local_answer = pc.Bridge(critics, [pc.Bank(local)], progress=False).log_ratio(a, c)
    local_s = time.perf_counter() - start
    return {
        "rows": rows,
        "blocks": bank.numblocks[0],
        "generate_seconds": load_s,
        "dask_seconds": dask_s,
        "single_machine_seconds": local_s,
        "max_abs_diff": (distributed_answer - local_answer).abs().max().item(),
        "max_abs_value": local_answer.abs().max().item(),
    }


def main(args):
    torch.set_num_threads(args.threads)
    quick = args.quick
    n, m, d = (16, 512, 8) if quick else (256, 16384, 64)
    print(
        f"threads={torch.get_num_threads()} OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}"
        f" load={os.getloadavg()[0]:.1f}"
    )
    speed = stage_speed(n, m, d, 3 if quick else args.repeats, 8)
    print(f"\n1. exact bridge, N=K={n} M={m} d={d}")
    for name, ms in speed["ms"].items():
        note = f"  (M={speed['broadcast_scaled_from_m']}, scaled)" if name == "broadcast" else ""
        print(f"   {name:<17}{ms:>9.1f} ms{ms / speed['ms']['gemm']:>9.2f} x gemm{note}")
    print(f"   bridge error vs float64: {speed['bridge_max_abs_err_vs_float64']:.2e}")
    print(
        f"   exact bridge end to end / one ({n}x{m})@({m}x{n}) GEMM = "
        f"{speed['bridge_over_gemm']:.2f}  (median of per-round ratios "
        f"{speed['bridge_over_gemm_per_round_median']:.2f}, best round "
        f"{speed['bridge_over_gemm_per_round_min']:.2f}; two-pass bridge "
        f"{speed['two_pass_over_gemm']:.2f}; logmatmul alone: {speed['logmatmul_over_gemm']:.2f})"
    )
    print(
        "   learned encoders (MLP critics): a repeated call / a first call = "
        f"{speed['mlp_repeat_over_first_call']:.2f} (the bank's encodings are reused)"
    )

    sizes = [(8, 64)] if quick else [(64, 1024), (128, 2048), (256, 2048)]
    enumeration = stage_pyro(sizes, d, 3 if quick else 5)
    print("\n2. Pyro TraceEnum_ELBO over an (a, c) plate vs BridgedConditional")
    for r in enumeration:
        print(
            f"   N=K={r['N']:<4} M={r['M']:<6}{r['pyro_ms']:>10.1f} ms{r['bridged_ms']:>9.2f} ms"
            f"{r['ratio']:>9.0f} x   rel diff {r['rel_diff_total_log_prob']:.1e}"
        )

    rows = 20000 if quick else 1_000_000
    memmap = stage_memmap(rows, [rows // 10, rows], n, d, args.threads)
    print(f"\n3. memmapped bank {rows} x {d} float32, N=K={n}")
    for r in memmap:
        print(
            f"   M={r['M']:<9}{r['seconds']:>8.2f} s  peak RSS {r['peak_rss_mib']:.0f} MiB"
            f" (after imports {r['rss_after_import_mib']:.0f} MiB)"
        )
    summary = {
        "speed": speed,
        "enumeration": enumeration,
        "memmap": memmap,
        "memmap_time_ratio": memmap[1]["seconds"] / memmap[0]["seconds"],
    }
    if args.dask:
        rows = 40000 if quick else 4_000_000
        summary["dask"] = stage_dask(rows, n, d, rows // 16)
        r = summary["dask"]
        print(
            f"\n4. dask bank {rows} x {d} on 2 workers: {r['dask_seconds']:.1f} s "
            f"(single machine {r['single_machine_seconds']:.1f} s), max |diff| "
            f"{r['max_abs_diff']:.1e} (values up to {r['max_abs_value']:.1f})"
        )
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run")
    parser.add_argument("--dask", action="store_true", help="also run the LocalCluster stage")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--memmap-child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memmap_child:
        torch.set_num_threads(args.threads)
        path, m, n, d = args.memmap_child
        print(json.dumps(stage_memmap_child(path, int(m), int(n), int(d))))
    else:
        main(args)
