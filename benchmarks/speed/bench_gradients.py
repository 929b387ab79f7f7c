"""Gradient-saliency benchmark (issue 3): our batched SmoothGrad / IG / FORGrad / structured gradients / Grad-CAM
against MONAI and captum, measured in the same run on the same machine.

Every line prints a ratio against the reference measured here, plus each method's fraction of its lower bound
``n x (forward + input-backward)`` measured on the same model at the same chunk size (fraction = bound / time,
1.0 = at the bound). Ours and captum run interleaved (``_timing.paired``): the ratio is the median of per-pair ratios
with a bootstrap 95 % CI, so machine-speed drift lands on both sides. Absolute times are context only.

Usage::

    python -m benchmarks.speed.bench_gradients          # full: ResNet-18 2D (8x3x224x224), DenseNet121 3D (2x1x32x96x96)
    python -m benchmarks.speed.bench_gradients --quick  # tiny sizes, smoke test
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import threading
import time
from collections.abc import Callable

import torch
from captum.attr import IntegratedGradients as CaptumIG
from captum.attr import NoiseTunnel, Saliency
from monai.networks.nets import DenseNet121, resnet18
from monai.visualize import GradCAM as MonaiGradCAM
from monai.visualize import SmoothGrad as MonaiSmoothGrad

from benchmarks.speed._timing import Paired, paired, timeit
from monai_saliency.core import frozen_parameters
from monai_saliency.methods.cam import GradCAM
from monai_saliency.methods.forgrad import FORGrad
from monai_saliency.methods.gradients import IntegratedGradients, SmoothGrad, VanillaGrad, input_gradients
from monai_saliency.methods.structured import StructuredGradient


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _release_free_heap() -> None:
    """Hand freed heap pages back to the OS (glibc ``malloc_trim``), so that a measurement does not start on memory
    that an earlier call left resident: without it, whichever method runs second looks cheaper."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: measurements keep the order bias
        pass


def peak_rss_increase(fn: Callable[[], object], period: float = 0.002) -> float:
    """Peak resident-memory increase (MB) of the process during one call, sampled by a thread (Linux /proc)."""
    gc.collect()
    _release_free_heap()
    base = _rss_bytes()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(period)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        fn()
    finally:
        done.set()
        th.join()
    return (max(peak[0], _rss_bytes()) - base) / 2**20


SECTIONS = ("sg", "ig", "overhead", "cam")


def fb_time(model: torch.nn.Module, x: torch.Tensor, chunk: int, repeats: int) -> float:
    """Time of one forward + input-only backward on ``chunk`` inputs (the unit of the lower bound)."""
    xc = x[:1].expand(chunk, *x.shape[1:]).contiguous()
    with frozen_parameters(model):
        return timeit(lambda: input_gradients(model, xc, 0, freeze_params=False), repeats)


def row(name: str, t: float, ref_name: str, t_ref: float, bound: float | None, pair: Paired | None = None) -> None:
    """One result line; with ``pair`` the ratio is the interleaved per-pair median with its 95 % CI."""
    frac = f"{bound / t:5.2f}" if bound is not None else "  -  "
    ratio = f"{pair}" if pair is not None else f"x{t_ref / t:.2f}"
    print(f"  {name:<30s} {t:8.3f} s  {ratio:<38s} vs {ref_name:<30s} bound fraction {frac}")


def bench(
    label: str,
    model: torch.nn.Module,
    x: torch.Tensor,
    n_sg: int,
    n_ig: int,
    chunk: int,
    repeats: int,
    cam_layer: str,
    ig_sweep: tuple[float, ...] = (0.5, 1, 2, 4),
    sections: tuple[str, ...] = SECTIONS,
) -> None:
    b = x.shape[0]
    print(f"\n== {label}: input {tuple(x.shape)}, chunk (batch_size) {chunk}, repeats {repeats}")
    t_fb = fb_time(model, x, chunk, repeats)
    t_fb1 = fb_time(model, x, b, repeats)
    print(f"  forward+input-backward on {chunk} inputs: {t_fb:.3f} s; on the batch ({b}): {t_fb1:.3f} s")
    if "sg" in sections:
        bench_smoothgrad(model, x, n_sg, chunk, repeats, t_fb)
    if "ig" in sections:
        bench_ig(model, x, n_ig, chunk, repeats, t_fb, ig_sweep)
    if "overhead" in sections:
        bench_overheads(model, x, repeats, t_fb1)
    if "cam" in sections:
        bench_cam(model, x, cam_layer, repeats)


def bench_smoothgrad(model: torch.nn.Module, x: torch.Tensor, n_sg: int, chunk: int, repeats: int, t_fb: float) -> None:
    """SmoothGrad: ours and captum interleaved (same drift on both); MONAI's loop timed on its own."""
    b = x.shape[0]
    target = torch.arange(b) % 2
    bound_sg = n_sg * b / chunk * t_fb
    ours = SmoothGrad(model, n_samples=n_sg, batch_size=chunk)
    nt = NoiseTunnel(Saliency(model))
    per_part = max(1, chunk // b)  # same number of inputs per pass: equal memory

    def captum_sg() -> object:
        return nt.attribute(
            x,
            nt_type="smoothgrad",
            nt_samples=n_sg,
            stdevs=0.15,
            target=target,
            abs=False,
            nt_samples_batch_size=per_part,
        )

    sg = paired(lambda: ours(x, class_idx=target), captum_sg, repeats)
    monai_sg = MonaiSmoothGrad(model, n_samples=n_sg, magnitude=False, verbose=False)
    t_monai = timeit(lambda: [monai_sg(x[i : i + 1], index=int(target[i])) for i in range(b)], repeats)
    m_ours = peak_rss_increase(lambda: ours(x, class_idx=target))
    m_capt = peak_rss_increase(captum_sg)
    print(f"  SmoothGrad-{n_sg} (peak RSS increase: ours {m_ours:.0f} MB, captum {m_capt:.0f} MB):")
    row("ours", sg.ours, "MONAI loop per item", t_monai, bound_sg)
    row("ours", sg.ours, f"captum NoiseTunnel ({per_part}/part)", sg.reference, bound_sg, sg)


def bench_ig(
    model: torch.nn.Module,
    x: torch.Tensor,
    n_ig: int,
    chunk: int,
    repeats: int,
    t_fb: float,
    ig_sweep: tuple[float, ...],
) -> None:
    """Integrated gradients: captum's internal_batch_size swept, then ours and captum's best interleaved."""
    b = x.shape[0]
    target = torch.arange(b) % 2
    bound_ig = n_ig * b / chunk * t_fb
    ig = IntegratedGradients(model, n_steps=n_ig, batch_size=chunk)
    cig = CaptumIG(model)
    best = None
    for ibs in sorted({max(1, int(f * chunk)) for f in ig_sweep} & set(range(1, n_ig * b + 1))):
        t = timeit(
            lambda ibs=ibs: cig.attribute(
                x, target=target, n_steps=n_ig, method="riemann_trapezoid", internal_batch_size=ibs
            ),
            repeats,
        )
        print(f"    captum IG internal_batch_size={ibs}: {t:.3f} s")
        best = (t, ibs) if best is None or t < best[0] else best
    ig_pair = paired(
        lambda: ig(x, class_idx=target),
        lambda: cig.attribute(x, target=target, n_steps=n_ig, method="riemann_trapezoid", internal_batch_size=best[1]),
        repeats,
    )
    print(f"  IG-{n_ig} (completeness error max {ig.completeness_error.abs().max().item():.2e}):")
    row(
        f"ours (batch_size={chunk})", ig_pair.ours, f"captum best (ibs={best[1]})", ig_pair.reference, bound_ig, ig_pair
    )
    if best[1] != chunk:  # the same inputs per pass (equal memory) as captum's best setting
        ig_same = IntegratedGradients(model, n_steps=n_ig, batch_size=best[1])
        same = paired(
            lambda: ig_same(x, class_idx=target),
            lambda: cig.attribute(
                x, target=target, n_steps=n_ig, method="riemann_trapezoid", internal_batch_size=best[1]
            ),
            repeats,
        )
        row(f"ours (batch_size={best[1]})", same.ours, f"captum best (ibs={best[1]})", same.reference, None, same)
    m_ours = peak_rss_increase(lambda: ig(x, class_idx=target))
    m_capt = peak_rss_increase(lambda: cig.attribute(x, target=target, n_steps=n_ig, internal_batch_size=best[1]))
    print(f"    peak RSS increase: ours {m_ours:.0f} MB (batch_size={chunk}), captum {m_capt:.0f} MB (ibs={best[1]})")


def bench_overheads(model: torch.nn.Module, x: torch.Tensor, repeats: int, t_fb1: float) -> None:
    """FORGrad and structured overhead over their base explainer (VanillaGrad)."""
    target = torch.arange(x.shape[0]) % 2
    vg = VanillaGrad(model)
    t_vg = timeit(lambda: vg(x, class_idx=target), repeats)
    fg = FORGrad(VanillaGrad(model), sigma=max(x.shape[2:]) / 8, reduce="abs_sum")
    t_fg = timeit(lambda: fg(x, class_idx=target), repeats)
    sgs = StructuredGradient(VanillaGrad(model), solver="seed")
    t_st = timeit(lambda: sgs(x, class_idx=target), repeats)
    sge = StructuredGradient(VanillaGrad(model), solver="exact", max_iter=200)
    t_ex = timeit(lambda: sge(x, class_idx=target), repeats)
    print(f"  overhead over VanillaGrad ({t_vg:.3f} s; bound fraction {t_fb1 / t_vg:.2f}):")
    print(f"    FORGrad             +{100 * (t_fg / t_vg - 1):6.1f} %   (target <= 5 %)")
    print(f"    structured seed     +{100 * (t_st / t_vg - 1):6.1f} %   (target <= 30 %)")
    print(
        f"    structured exact    +{100 * (t_ex / t_vg - 1):6.1f} %   ({sge.last_info['iterations']} iterations, "
        f"max rel. gap {(sge.last_info['gap'] / sge.last_info['objective'].clamp_min(1e-12)).max().item():.1e})"
    )
    print(
        f"    objective seed {sgs.last_info['objective'].mean().item():.4g} vs exact "
        f"{sge.last_info['objective'].mean().item():.4g} (mean over items, normalised units)"
    )


def bench_cam(model: torch.nn.Module, x: torch.Tensor, cam_layer: str, repeats: int) -> None:
    """Grad-CAM (B = 1 per MONAI call: its batched version mixes targets)."""
    b = x.shape[0]
    target = torch.arange(b) % 2
    cam = GradCAM(model, cam_layer)
    t_cam = timeit(lambda: cam(x, class_idx=target), repeats)
    mcam = MonaiGradCAM(model, target_layers=cam_layer)
    t_mcam = timeit(lambda: [mcam(x[i : i + 1], class_idx=int(target[i])) for i in range(b)], repeats)
    with torch.no_grad():
        t_fwd = timeit(lambda: model(x), repeats)
    row("Grad-CAM ours", t_cam, "MONAI GradCAM per item", t_mcam, t_fwd)
    cam.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke test)")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--chunk", type=int, default=None, help="our batch_size (inputs per pass)")
    parser.add_argument("--only", choices=("all", "2d", "3d"), default="all", help="run one workload only")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="parts to run")
    parser.add_argument(
        "--ig-sweep",
        type=float,
        nargs="+",
        default=[0.5, 1, 2, 4],
        help="captum internal_batch_size values tried, as multiples of --chunk",
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    quick = args.quick
    repeats = args.repeats or (1 if quick else 3)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, quick={quick}")

    if quick:
        m2 = resnet18(spatial_dims=2, n_input_channels=3, num_classes=4).eval()
        x2 = torch.randn(2, 3, 32, 32)
        bench(
            "ResNet-18 2D (quick)", m2, x2, n_sg=4, n_ig=4, chunk=args.chunk or 4, repeats=repeats, cam_layer="layer4"
        )
        m3 = DenseNet121(
            spatial_dims=3, in_channels=1, out_channels=2, init_features=8, growth_rate=8, block_config=(2, 2, 2)
        ).eval()
        x3 = torch.randn(2, 1, 16, 32, 32)
        bench(
            "DenseNet 3D (quick)",
            m3,
            x3,
            n_sg=3,
            n_ig=3,
            chunk=args.chunk or 3,
            repeats=repeats,
            cam_layer="class_layers.relu",
        )
    else:
        full = {  # --only key: (label, model builder, input shape, default chunk, CAM layer)
            "2d": (
                "ResNet-18 2D",
                lambda: resnet18(spatial_dims=2, n_input_channels=3, num_classes=1000),
                (8, 3, 224, 224),
                16,
                "layer4",
            ),
            "3d": (
                "DenseNet121 3D",
                lambda: DenseNet121(spatial_dims=3, in_channels=1, out_channels=2),
                (2, 1, 32, 96, 96),
                4,
                "class_layers.relu",
            ),
        }
        common = {"n_sg": 25, "n_ig": 50, "repeats": repeats, "ig_sweep": tuple(args.ig_sweep)}
        for only, (label, build, shape, chunk, layer) in full.items():
            if args.only in ("all", only):
                model, x = build().eval(), torch.randn(*shape)
                bench(
                    label, model, x, chunk=args.chunk or chunk, cam_layer=layer, sections=tuple(args.sections), **common
                )


if __name__ == "__main__":
    main()
