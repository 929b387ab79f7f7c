"""One command for a borrowed GPU (``make gpu-check``): the CUDA tests, then the speed benchmarks on CUDA.

Installs nothing. Without CUDA it prints ``no CUDA`` and exits 0. With CUDA (the first device):

1. ``pytest -m cuda`` (the tests marked ``cuda``: every explainer on CUDA against the CPU result, ``--amp``, ...);
2. timings on CUDA, each the median of ``--repeats`` synchronised runs after a warm-up, printed as absolute times
   and as the ratios the CPU benchmarks print (``benchmarks/speed/results/*.txt``):

   - Signature Activation and Grad-CAM: total time / one ``no_grad`` forward (its bound), MONAI ResNet-18 2D,
     batch 8 x 3 x 224 x 224 (``bench_signature``);
   - SmoothGrad (n = 25) and Integrated Gradients (n = 50): time / captum's (``NoiseTunnel(Saliency)``,
     ``IntegratedGradients``) measured here, and the fraction of the bound ``n x (forward + input backward)``
     (``bench_gradients``);
   - Mørch first + second order and exact, at the paper's size (I = 128 x 128 x 48, J = K = 64, A = 8, float64
     and float32; ``bench_morch``'s targets: first+second <= 2 s, exact <= 120 s on the 2-core CPU);
   - one bundle run: ``angiogram_signature_activation`` (clinical configuration) on two cines of the realistic
     clinical generator, 512 x 512 x 48, with ``--amp true``
     (wall time of the subprocess, and per study).

Designed to finish in well under 8 minutes on one GPU (``--quick``: tiny sizes, for a smoke run).

Usage::

    python -m benchmarks.speed.gpu_check [--quick] [--repeats N] [--skip-tests] [--skip-bundle]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def cuda_time(fn: Callable[[], object], repeats: int) -> float:
    """Median seconds of ``fn`` on CUDA (synchronised before and after each call), after one warm-up call."""
    fn()
    _sync()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        _sync()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def row(name: str, seconds: float, ratio: str) -> None:
    print(f"  {name:<44s} {seconds * 1000:10.1f} ms   {ratio}", flush=True)


def run_tests() -> int:
    print("== pytest -m cuda", flush=True)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "cuda", "tests"]
    return subprocess.run(cmd, cwd=REPO, env=env, check=False).returncode


def bench_cams(quick: bool, repeats: int, dev: torch.device) -> None:
    from monai.networks.nets import resnet18

    from monai_saliency.methods import GradCAM, SignatureActivation

    print("== Signature Activation / Grad-CAM vs one forward (ratio = time / forward; CPU target <= 1.05)", flush=True)
    size, batch = (64, 2) if quick else (224, 8)
    net = resnet18(spatial_dims=2, n_input_channels=3, num_classes=10).to(dev).eval()
    x = torch.rand(batch, 3, size, size, device=dev)

    def forward() -> None:
        with torch.no_grad():
            net(x)

    t_fwd = cuda_time(forward, repeats)
    row(f"forward (no_grad) {batch}x3x{size}^2", t_fwd, "1.00")
    sig = SignatureActivation(net, target_layers="layer4")
    t = cuda_time(lambda: sig(x), repeats)
    row("SignatureActivation layer4", t, f"x{t / t_fwd:.2f} forward")
    cam = GradCAM(net, target_layers="layer4")
    t = cuda_time(lambda: cam(x), repeats)
    row("GradCAM layer4", t, f"x{t / t_fwd:.2f} forward")


def bench_gradients(quick: bool, repeats: int, dev: torch.device) -> None:
    from captum.attr import IntegratedGradients as CaptumIG
    from captum.attr import NoiseTunnel, Saliency
    from monai.networks.nets import resnet18

    from monai_saliency.methods import IntegratedGradients, SmoothGrad

    print(
        "== SmoothGrad / IG vs captum (ratio = captum / ours, > 1: ours faster) and fraction of the bound", flush=True
    )
    size, batch, chunk = (64, 2, 8) if quick else (224, 8, 8)
    n_sg, n_ig = (4, 4) if quick else (25, 50)
    net = resnet18(spatial_dims=2, n_input_channels=3, num_classes=10).to(dev).eval()
    x = torch.rand(batch, 3, size, size, device=dev)
    target = net(x).argmax(1).detach()
    xc = torch.rand(chunk, 3, size, size, device=dev)

    def fwd_bwd() -> None:
        xi = xc.clone().requires_grad_(True)
        net(xi).gather(1, torch.zeros(chunk, 1, dtype=torch.long, device=dev)).sum().backward()

    t_unit = cuda_time(fwd_bwd, repeats) / chunk  # forward + input backward, per input
    ours = SmoothGrad(net, n_samples=n_sg, stdev_spread=0.15, batch_size=chunk, seed=0)
    t_ours = cuda_time(lambda: ours(x, class_idx=target), repeats)
    captum_sg = NoiseTunnel(Saliency(net))
    t_ref = cuda_time(
        lambda: captum_sg.attribute(
            x, nt_type="smoothgrad", nt_samples=n_sg, nt_samples_batch_size=chunk, stdevs=0.15, target=target, abs=False
        ),
        repeats,
    )
    row(
        f"SmoothGrad n={n_sg} {batch}x3x{size}^2",
        t_ours,
        f"captum/ours x{t_ref / t_ours:.2f}; bound fraction {n_sg * batch * t_unit / t_ours:.2f}",
    )
    ours_ig = IntegratedGradients(net, n_steps=n_ig, batch_size=chunk)
    t_ours = cuda_time(lambda: ours_ig(x, class_idx=target), repeats)
    captum_ig = CaptumIG(net)
    t_ref = cuda_time(lambda: captum_ig.attribute(x, target=target, n_steps=n_ig, internal_batch_size=chunk), repeats)
    row(
        f"IntegratedGradients n={n_ig} {batch}x3x{size}^2",
        t_ours,
        f"captum/ours x{t_ref / t_ours:.2f}; bound fraction {n_ig * batch * t_unit / t_ours:.2f}",
    )


def bench_morch(quick: bool, repeats: int, dev: torch.device) -> None:
    print("== Mørch saliency (CPU targets on 2 cores: first+second <= 2 s, exact <= 120 s)", flush=True)
    shape, j, a = ((16, 16, 8), 16, 4) if quick else ((128, 128, 48), 64, 8)
    for dtype in (torch.float64, torch.float32):
        _morch_one(shape, j, a, dtype, repeats, dev)


def _morch_one(shape: tuple[int, ...], j: int, a: int, dtype: torch.dtype, repeats: int, dev: torch.device) -> None:
    from monai_saliency.analysis import MorchSaliency
    from monai_saliency.models.pca import PCAProjection
    from monai_saliency.models.tanh_net import TanhNet

    g = torch.Generator(device="cpu").manual_seed(0)
    vols = torch.rand(j, *shape, generator=g, dtype=dtype).to(dev)
    y = torch.randn(j, generator=g, dtype=dtype).to(dev)
    pca = PCAProjection(dtype=dtype).fit(vols)
    net = TanhNet(pca.k, hidden=a, dtype=dtype).to(dev)
    net.fit(pca(vols), y, weight_decay=0.1)
    sal = MorchSaliency(net, pca, weight_decay=0.1)
    name = str(dtype).split(".")[-1]
    t = cuda_time(lambda: sal.cost_changes(vols, y, orders=("first", "second")), max(1, repeats // 2))
    row(f"first+second {name} I={pca.n_voxels} J={j}", t, f"{t:.2f} s vs CPU target 2 s")
    t = cuda_time(lambda: sal.cost_changes(vols, y, orders=("exact",)), 1)
    row(f"exact {name}", t, f"{t:.2f} s vs CPU target 120 s")


def bench_bundle(quick: bool) -> None:
    from benchmarks.speed.bench_clinical_cine import CONFIGS, clinical_cine, write_study

    size, frames = (128, 16) if quick else (512, 48)
    print(
        f"== bundle angiogram_signature_activation (clinical configuration), 2 clinical-generator {size}^2 x {frames}"
        " XA cines, --amp true",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as tmp:
        data, out = Path(tmp) / "data", Path(tmp) / "out"
        for i in range(2):  # one folder per study: the generated file names are the same
            write_study(data / f"study_{i}", (size, size), frames, clinical_cine, seed=i)
        bundle = REPO / "bundles" / "angiogram_signature_activation"
        options = {"config_file": CONFIGS["clinical"], "bundle_root": ".", "dataset_dir": data, "output_dir": out}
        options["amp"] = "true"
        cmd = [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            *(a for k, v in options.items() for a in (f"--{k}", str(v))),
        ]
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        t0 = time.perf_counter()
        result = subprocess.run(cmd, cwd=bundle, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
        if result.returncode != 0:
            print(result.stderr[-3000:], flush=True)
            raise SystemExit(f"bundle run failed (exit {result.returncode})")
        row("bundle run, 2 studies (process wall time)", wall, f"{wall / 2:.1f} s per study incl. start-up")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke run)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--skip-tests", action="store_true")
    ap.add_argument("--skip-bundle", action="store_true")
    ap.add_argument("--cpu-smoke", action="store_true", help="run the --quick code paths on the CPU (tests only)")
    args = ap.parse_args(argv)
    if args.cpu_smoke:
        dev = torch.device("cpu")
        args.quick, args.repeats = True, 1
    elif not torch.cuda.is_available():
        print(f"no CUDA: torch {torch.__version__} sees no CUDA device; nothing to check on this machine.")
        return 0
    else:
        dev = torch.device("cuda", 0)
        print(f"CUDA device: {torch.cuda.get_device_name(dev)}; torch {torch.__version__}", flush=True)
    start = time.perf_counter()
    status = 0 if args.skip_tests else run_tests()
    bench_cams(args.quick, args.repeats, dev)
    bench_gradients(args.quick, args.repeats, dev)
    bench_morch(args.quick, args.repeats, dev)
    if not args.skip_bundle:
        bench_bundle(args.quick)
    print(
        f"gpu-check finished in {time.perf_counter() - start:.0f} s; CUDA tests {'passed' if status == 0 else 'FAILED'}"
    )
    return status


if __name__ == "__main__":
    sys.exit(main())
