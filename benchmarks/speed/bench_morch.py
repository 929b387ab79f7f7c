"""Benchmark of Mørch saliency at the paper's size: I = 128 x 128 x 48 = 786,432 voxels, J = 64, K = 64, A = 8.

Stages (each one's peak memory is measured on its own, as the rise of the process's peak RSS):

* ``first+second``: first and (joint Gauss-Newton) second order for all voxels, incl. centring/projection.
* ``exact``: the exact cost change without retraining (eq. 11) for all voxels.
* references measured in the same run:
  - ``loop(rank-1)``: a straight per-voxel Python loop that zeroes one basis row via a rank-1 update of the
    projections and re-evaluates the cost, timed on a subset and extrapolated to all voxels;
  - ``loop(naive)``: the literal loop (copy ``B``, zero a row, re-project all volumes), on a few voxels;
  - bounds: the time of the stage's unavoidable work at this machine's measured rate: one ``(I x J) @ (J x K)``
    GEMM pair for first+second, ``I*J*A`` tanh's for exact. "fraction of bound" = bound time / stage time.

Targets (issue 7, 2-core machine): first+second <= 2 s; exact <= 120 s at <= 4 GB.

Usage::

    python -m benchmarks.speed.bench_morch            # paper size
    python -m benchmarks.speed.bench_morch --quick    # tiny smoke run
"""

from __future__ import annotations

import argparse
import gc
import threading
import time

import torch

from monai_saliency.analysis import MorchSaliency
from monai_saliency.data.synthetic.pet_phantom import make_pet_study
from monai_saliency.models.pca import PCAProjection
from monai_saliency.models.tanh_net import TanhNet


def _status_mb(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) of this process; False where not permitted."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def run_stage(fn):
    """Run ``fn`` in this process: (seconds, peak RSS above the RSS at the start in MB, result).

    The peak comes from the kernel's VmHWM after resetting it (``/proc/self/clear_refs``), or, where that is not
    permitted, from a thread sampling VmRSS every millisecond. (No fork: OpenMP thread pools do not survive it.)
    """
    gc.collect()
    start = _status_mb("VmRSS")
    exact = _reset_peak()
    peak = [start]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _status_mb("VmRSS"))
            stop.wait(0.001)

    th = None if exact else threading.Thread(target=sample, daemon=True)
    if th is not None:
        th.start()
    t0 = time.perf_counter()
    out = fn()
    dt = time.perf_counter() - t0
    if th is not None:
        stop.set()
        th.join()
    top = _status_mb("VmHWM") if exact else peak[0]
    return dt, max(top - start, 0.0), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke run)")
    ap.add_argument("--dtype", choices=["float64", "float32", "both"], default="both", help="computation dtype(s)")
    ap.add_argument("--chunk-mb", type=int, default=64)
    ap.add_argument("--loop-voxels", type=int, default=2000, help="voxels timed in the rank-1 loop reference")
    args = ap.parse_args()
    shape = (24, 24, 12) if args.quick else (128, 128, 48)
    n_sub, n_scan, hidden = (4, 4, 4) if args.quick else (8, 8, 8)
    dtypes = [torch.float64, torch.float32] if args.dtype == "both" else [getattr(torch, args.dtype)]
    dtype = torch.float64  # references
    torch.manual_seed(0)

    t = time.perf_counter()
    study = make_pet_study("graded", shape=shape, n_subjects=n_sub, n_scans=n_scan, seed=0)
    x = study.images
    y = study.targets - study.targets.mean()
    # no mask: all I voxels; no centring so that K = J as in the paper (centred data have rank J - 1)
    pca = PCAProjection(center=False).fit(x)
    net = TanhNet(pca.k, hidden, seed=0)
    fit = net.fit(pca(x), y, weight_decay=0.1)
    i_vox, j, k = pca.n_voxels, x.shape[0], pca.k
    print(
        f"I={i_vox} voxels, J={j}, K={k}, A={hidden}, input float32; setup {time.perf_counter() - t:.1f} s, "
        f"fit cost {fit.cost:.4g}, max|grad| {fit.grad_max:.2g}"
    )

    stages = {}
    for dt in dtypes:
        sal = MorchSaliency(net, pca, dtype=dt, chunk_bytes=args.chunk_mb * 2**20)
        name = str(dt).replace("torch.", "")
        stages[f"first+second {name}"] = run_stage(lambda sal=sal: sal.cost_changes(x, y, orders=("first", "second")))
        stages[f"exact {name}"] = run_stage(lambda sal=sal: sal.cost_changes(x, y, orders=("exact",))["exact"])

    # ---- references, same run
    xc = pca.centred(x).to(dtype)
    b = pca.basis.to(dtype)
    v = xc @ b
    net_d = net.to(dtype)
    n_loop = min(args.loop_voxels, i_vox)

    def loop_rank1():
        with torch.no_grad():
            e0 = (y.to(dtype) - net_d(v)).pow(2).mean()
            out = torch.empty(n_loop, dtype=dtype)
            for i in range(n_loop):
                vi = v - xc[:, i : i + 1] * b[i]
                out[i] = (y.to(dtype) - net_d(vi)).pow(2).mean() - e0
        return out

    tl, ml, outl = run_stage(loop_rank1)
    n_naive = 2 if not args.quick else 5

    def loop_naive():
        with torch.no_grad():
            e0 = (y.to(dtype) - net_d(v)).pow(2).mean()
            for i in range(n_naive):
                bi = b.clone()
                bi[i] = 0
                (y.to(dtype) - net_d(xc @ bi)).pow(2).mean() - e0

    tn, mn, _ = run_stage(loop_naive)

    def gemm_bound(dt):
        def run():
            xs, bs, g = xc.to(dt), b.to(dt), torch.randn(j, k, dtype=dt)
            t0 = time.perf_counter()
            c1 = xs @ bs  # projections V
            m = g @ bs.T  # the (J, I) matrix of the joint first/second order
            return time.perf_counter() - t0, float(c1[0, 0] + m[0, 0])

        return min(run()[0] for _ in range(2))

    def tanh_bound(dt):
        def run():
            n = min(i_vox * j * hidden, 2**24)
            z = torch.randn(n, dtype=dt)
            t0 = time.perf_counter()
            torch.tanh(z)
            return (time.perf_counter() - t0) * (i_vox * j * hidden) / n

        return run()

    rate_loop = n_loop / tl
    t_loop_all = i_vox / rate_loop
    t_naive_all = tn / n_naive * i_vox
    print(f"\n{'stage':<24}{'time [s]':>10}{'peak +MB':>10}{'speed-up vs loop':>18}{'fraction of bound':>19}")
    results = {}
    for name, (dt_s, mem, out) in stages.items():
        dt = getattr(torch, name.split()[-1])
        bound = gemm_bound(dt) if name.startswith("first") else tanh_bound(dt)
        print(f"{name:<24}{dt_s:>10.3f}{mem:>10.0f}{t_loop_all / dt_s:>18.1f}{bound / dt_s:>19.2f}")
        results[name] = (dt_s, mem, out)
    print(f"{'loop rank-1 (extrap.)':<24}{t_loop_all:>10.1f}{ml:>10.0f}{1.0:>18.1f}")
    print(f"{'loop naive (extrap.)':<24}{t_naive_all:>10.0f}{mn:>10.0f}{t_loop_all / t_naive_all:>18.2g}")
    print(
        f"\nloop rate {rate_loop:.0f} voxels/s ({n_loop} voxels timed, float64); bounds: one GEMM pair (V and M), "
        "I*J*A tanh's, at this machine's rate measured now"
    )
    for name, (dt_s, mem, out) in results.items():
        if name.startswith("exact"):
            agree = float((out[:n_loop].double() - outl).abs().max() / outl.abs().max().clamp_min(1e-300))
            print(f"{name} vs the loop on the timed voxels: max rel. diff {agree:.2e}")
    ex = results[next(n for n in results if n.startswith("exact"))][2].double()
    for name, (dt_s, mem, out) in results.items():
        if name.startswith("first"):
            nm1 = float(((out["first"].double() - ex) ** 2).sum() / (ex**2).sum())
            nm2 = float(((out["second"].double() - ex) ** 2).sum() / (ex**2).sum())
            print(f"NMSE vs exact ({name}; Fig. 4 quantities): first {nm1:.3e}, second (GN) {nm2:.3e}")
    for name, (dt_s, mem, out) in results.items():
        target = 2.0 if name.startswith("first") else 120.0
        ok = dt_s <= target and (name.startswith("first") or mem <= 4096)
        print(
            f"target {name}: {dt_s:.2f} s (<= {target:g} s{'' if name.startswith('first') else ', <= 4096 MB'}): "
            f"{'ok' if ok else 'MISSED'}"
        )


if __name__ == "__main__":
    main()
