"""Signature Activation speed (issue 4): ratios measured in one run.

1. Total time of ``SignatureActivation`` vs one plain ``no_grad`` forward pass (its bound: one forward), on a 2D
   ResNet-18 (MONAI, batch 8, 3x224x224, layer4 = 512x14x14: MONAI keeps its first conv at stride 1) and a 3D
   video ResNet-18 (MONAI, batch 2, 1x16x112x112; the 3D DCT over (T, H, W) on ``layer4`` (T = 1 there, so in
   effect 2D), ``layer3`` (T = 2) and ``layer2`` (T = 4), and ``layer3`` per frame). Each row prints the layer's
   activation shape. Target (issue 18) <= 1.05x.
2. Post-processing alone (DCT/sign/IDCT/mean/min-max/bilateral/resize to 224^2) vs the authors' notebook: a per-channel
   Python loop with scipy.fftpack ``dct2``/``idct2``, then ``cv2.bilateralFilter`` and ``cv2.resize``, on 2048x7x7 and
   512x14x14 activations, for one image and per image of a batch of 8 (the notebook loops over images; ours runs the
   batch at once). Targets (issue 18): >= 10x on one 512x14x14 map, >= 20x on 2048x7x7. Each of ``--post-pairs``
   interleaved pairs times one notebook call against a block of k calls of ours of about the same length (one
   sub-millisecond call is at the timer's and the machine's noise level); the speed-up is the median pair ratio with a
   bootstrap 95 % CI. Two yardsticks: the bound (the separable forward and inverse DCTs, 2 transforms x 2 axes x 2 n^3
   flop per channel, at this machine's 512^3 matmul throughput) and, for the per-axis GEMM path, the measured time of
   those four small GEMMs at their real shapes (the floor of this approach with this BLAS).
3. Versus Grad-CAM, Grad-CAM++ and Eigen-CAM (``monai_saliency.methods.cam``) and MONAI's GradCAM on the 2D model
   (target for our Grad-CAM: <= 1.05x the forward pass).

Timings are medians of ``--repeats`` runs after one warm-up; absolute times are context only.
Run: ``python -m benchmarks.speed.bench_signature [--quick] [--threads N]``. On a machine whose cores are busy with
other work, torch's parallel regions wait for descheduled worker threads (sub-millisecond ops then take tens of
milliseconds, the plain GEMMs of the yardstick column as much as ours); ``--threads 1`` compares one core with the
notebook's single-threaded loop.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable

import cv2
import numpy as np
import torch
from monai.networks.nets import resnet18
from scipy.fftpack import dct as fp_dct
from scipy.fftpack import idct as fp_idct

from benchmarks.speed._timing import paired, timeit
from monai_saliency.methods import SignatureActivation
from monai_saliency.ops.signature import signature_map


def notebook_signature(acts: np.ndarray) -> np.ndarray:
    """The authors' notebook ``signature_activation``: per-channel scipy.fftpack loop on (H, W, C), 0..255 scale."""

    def dct2(a):
        return fp_dct(fp_dct(a, axis=0), axis=1, norm="ortho")

    def idct2(a):
        return fp_idct(fp_idct(a, axis=0), axis=1, norm="ortho")

    conv_output = acts.transpose(1, 2, 0)  # (H, W, C), as Keras
    num_filters = conv_output.shape[-1]
    sigs = [idct2(np.sign(dct2(conv_output[..., i]))) ** 2 for i in range(num_filters)]
    activations = np.mean(np.array(sigs), axis=0)
    return 255 * (activations - activations.min()) / (activations.max() - activations.min())


def notebook_postprocess(acts: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The notebook's signature, then ``cv2.bilateralFilter(map, 2, 140, 140)`` (radius 1: 5 taps) and ``cv2.resize``."""
    activations = notebook_signature(acts)
    filtered = cv2.bilateralFilter(activations.astype(np.float32), 2, 140, 140)
    return cv2.resize(filtered, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)


def matmul_gflops(n: int = 512, repeats: int = 3) -> float:
    a = torch.randn(n, n)
    t = timeit(lambda: a @ a, repeats)
    return 2 * n**3 / t / 1e9


def section_total(name: str, model: torch.nn.Module, x: torch.Tensor, layers: list[tuple[str, str]], repeats: int):
    model.eval()

    def forward() -> object:
        with torch.no_grad():
            return model(x)

    t_fwd = timeit(forward, repeats)
    print(f"\n[{name}] input {tuple(x.shape)}: plain no_grad forward {t_fwd * 1e3:.1f} ms")
    print(f"  {'method':<50} {'ms':>9} {'x forward (interleaved, 95% CI)':>34} {'fraction of bound':>18}")
    for layer, axes in layers:
        with SignatureActivation(model, layer, dct_axes=axes) as sa:
            with torch.no_grad():
                shape = "x".join(map(str, sa.forward_with_activations(x)[1][sa.hooks.names[0]].shape[1:]))
            pair = paired(lambda: sa(x), forward, repeats)  # ratio = forward / ours
        label = f"SignatureActivation {layer} {shape} ({axes})"
        ci = f"{1 / pair.ratio:.3f} [{1 / pair.ci[1]:.3f}, {1 / pair.ci[0]:.3f}]"
        print(f"  {label:<50} {pair.ours * 1e3:>9.1f} {ci:>34} {pair.ratio:>18.2f}")
    return t_fwd


def section_cams(model: torch.nn.Module, x: torch.Tensor, layer: str, repeats: int) -> None:
    """Every CAM and Signature Activation interleaved with the plain forward pass (ratio with a 95 % CI)."""

    def forward() -> object:
        with torch.no_grad():
            return model(x)

    with SignatureActivation(model, layer) as sa:
        sa_row = ("SignatureActivation (ours)", paired(lambda: sa(x), forward, repeats))
    rows = [sa_row]
    try:
        from monai_saliency.methods.cam import EigenCAM, GradCAM, GradCAMpp

        for cls in (GradCAM, GradCAMpp, EigenCAM):
            with cls(model, layer) as cam:
                rows.append((f"{cls.__name__} (monai_saliency)", paired(lambda: cam(x), forward, repeats)))
    except ImportError as err:  # cam.py not available
        print(f"  (monai_saliency.methods.cam unavailable: {err})")
    from monai.visualize import GradCAM as MonaiGradCAM

    mcam = MonaiGradCAM(nn_module=model, target_layers=layer)
    rows.append(("GradCAM (MONAI)", paired(lambda: mcam(x), forward, repeats)))
    t_sig = sa_row[1].ours
    print(f"\n[vs CAMs] same model and input, layer {layer}; each method interleaved with the forward pass")
    print(f"  {'method':<32} {'ms':>9} {'x forward (95% CI)':>26} {'x SignatureActivation':>22}")
    for label, pair in rows:
        ci = f"{1 / pair.ratio:.3f} [{1 / pair.ci[1]:.3f}, {1 / pair.ci[0]:.3f}]"
        print(f"  {label:<32} {pair.ours * 1e3:>9.1f} {ci:>26} {pair.ours / t_sig:>22.2f}")


def _dct_gemms(c: int, side: int, n: int) -> Callable[[], object]:
    """The four one-axis DCT products of our separable forward + inverse transform of ``n`` items, at their real
    shapes and grouping (``side x side`` maps, batched over as many groups as threads): the floor of our approach
    with this machine's BLAS."""
    groups = math.gcd(torch.get_num_threads(), n if n > 1 else c)
    mat = torch.randn(side, side).expand(groups, side, side)
    rows = torch.randn(groups, n * c * side // groups, side)
    cols = torch.randn(groups, side, side * n * c // groups)

    def run() -> None:
        for _ in range(2):
            torch.bmm(mat, rows.mT)
        torch.bmm(mat.mT, cols)
        torch.matmul(mat[0].T, cols.view(groups * side, side, -1))

    return run


def _post_callables(
    acts: np.ndarray, size: tuple[int, int], full: bool
) -> tuple[Callable[[], object], Callable[[], object]]:
    """(notebook, ours) on the items of ``acts``: the whole post-processing, or (``full=False``, first item) the
    signature step alone (DCT, sign, IDCT, square, channel mean, min-max: no filter, no resize)."""
    a = torch.from_numpy(acts)
    if not full:
        return (lambda: notebook_signature(acts[0])), (lambda: signature_map(a[:1], bilateral=False))
    return (lambda: [notebook_postprocess(item, size) for item in acts]), (lambda: signature_map(a, spatial_size=size))


def _blocked(fn: Callable[[], object], k: int) -> Callable[[], object]:
    return lambda: [fn() for _ in range(k)]


def section_postprocess(shapes: list[tuple[int, int, int]], size: tuple[int, int], repeats: int, batch: int) -> None:
    gflops = matmul_gflops()
    print(f"\n[post-processing] resize to {size}; matmul throughput {gflops:.1f} GFLOP/s (for the bound)")
    print("  interleaved pairs: one notebook call vs a block of k calls of ours of about the same length")
    print(
        f"  {'activations, steps':<24} {'notebook ms':>11} {'ours ms':>8} {'speed-up [95% CI]':>22} {'bound ms':>9} "
        f"{'x bound':>8} {'4 GEMMs ms':>10} {'x GEMMs':>8} {'max |diff|':>11}"
    )
    rng = np.random.default_rng(0)
    for c, h, w in shapes:
        acts = np.maximum(rng.normal(size=(batch, c, h, w)), 0).astype(np.float32)
        # bound: forward and inverse DCT over both axes, 2 n^3 flop per axis and channel, at the matmul throughput
        flop = c * 2 * (2 * h * h * w + 2 * w * w * h)
        t_bound = flop / (gflops * 1e9)
        a = torch.from_numpy(acts)
        rows = [(f"{c}x{h}x{w} full", 1, True), (f"{c}x{h}x{w} full, B={batch}", batch, True)]
        rows.append((f"{c}x{h}x{w} signature", 1, False))
        for label, n, full in rows:
            ref, ours = _post_callables(acts[:n], size, full)
            k = max(1, round(timeit(ref, 1) / timeit(ours, 3)))
            res = paired(_blocked(ours, k), ref, repeats)
            t_ours, t_ref = res.ours / k / n, res.reference / n
            t_gemm = timeit(_dct_gemms(c, h, n), 5) / n if h == w and h * w > 64 else float("nan")
            if n > 1:
                diff = ""
            elif full:
                diff = f"{_notebook_difference(acts[0], size):>11.4f}"
            else:
                ref_s = notebook_signature(acts[0].astype(np.float64)) / 255.0
                ours_s = signature_map(a[:1].double(), bilateral=False, dct_scaling="notebook")[0, 0].numpy()
                diff = f"{np.abs(ref_s - ours_s).max():>11.4f}"
            speed = f"{res.ratio * k:.1f} [{res.ci[0] * k:.1f}, {res.ci[1] * k:.1f}]"
            gemm = f"{'-':>10} {'-':>8}" if math.isnan(t_gemm) else f"{t_gemm * 1e3:>10.3f} {t_gemm / t_ours:>8.2f}"
            print(
                f"  {label:<24} {t_ref * 1e3:>11.2f} {t_ours * 1e3:>8.3f} {speed:>22} {t_bound * 1e3:>9.3f} "
                f"{t_bound / t_ours:>8.3f} {gemm} {diff}"
            )


def _notebook_difference(acts: np.ndarray, size: tuple[int, int]) -> float:
    """Max difference to the notebook on the [0, 1] scale with the notebook's DCT scaling (its filter is the default),
    in float64 (the notebook's precision: float32 cannot resolve the signs of coefficients within ~2 eps of zero)."""
    ref = notebook_postprocess(acts.astype(np.float64), size) / 255.0
    ours = signature_map(
        torch.from_numpy(acts)[None].double(),
        spatial_size=size,
        dct_scaling="notebook",
    )[0, 0].numpy()
    return float(np.abs((ref - ref.min()) / (ref.max() - ref.min()) - ours).max())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes (smoke run)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--post-pairs", type=int, default=15, help="interleaved pairs per post-processing row")
    parser.add_argument("--only", choices=("all", "models", "post"), default="all", help="run one part only")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads (default: torch's); 1 on a machine whose cores are busy",
    )
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    repeats = 2 if args.quick else args.repeats
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, quick={args.quick}, "
        f"model pairs {repeats}, post-processing pairs {3 if args.quick else args.post_pairs}"
    )

    if args.only in ("all", "models"):
        run_models(args.quick, repeats)
    if args.only in ("all", "post"):
        shapes = [(256, 7, 7), (64, 14, 14)] if args.quick else [(2048, 7, 7), (512, 14, 14)]
        pairs = 3 if args.quick else args.post_pairs
        section_postprocess(shapes, (64, 64) if args.quick else (224, 224), pairs, batch=2 if args.quick else 8)


def run_models(quick: bool, repeats: int) -> None:
    """Sections 1 and 3: whole explanations on the 2D and 3D ResNet-18."""
    m2 = resnet18(spatial_dims=2, n_input_channels=3, num_classes=1000).eval()
    x2 = torch.randn(2, 3, 64, 64) if quick else torch.randn(8, 3, 224, 224)
    section_total("2D ResNet-18", m2, x2, [("layer4", "spatial")], repeats)
    section_cams(m2, x2, "layer4", repeats)

    m3 = resnet18(spatial_dims=3, n_input_channels=1, num_classes=2).eval()
    x3 = torch.randn(1, 1, 8, 32, 32) if quick else torch.randn(2, 1, 16, 112, 112)
    layers3 = [("layer4", "spatial"), ("layer3", "spatial"), ("layer2", "spatial"), ("layer3", "frames")]
    section_total("3D video ResNet-18", m3, x3, layers3, repeats)


if __name__ == "__main__":
    main()
