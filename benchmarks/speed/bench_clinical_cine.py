"""Resources of the angiogram bundle per study at clinical size (issue #22 §1): time per stage, peak memory, bytes
written, GIF size.

Two XA DICOM cines are generated, 512 x 512 x 48 frames and 1024 x 1024 x 30 frames (12-bit, 15 frames/s), and the
bundle (``configs/inference.json``, default options) runs on each in a fresh subprocess through
``benchmarks/speed/_bundle_probe.py``, which measures the import footprint (torch, MONAI and the package imported)
in that same process before running ``python -m monai.bundle run``. Printed per study, each against its bound:

* peak resident memory above the import footprint: <= 1 GiB at 512 x 512 x 48, scaled with the input's pixel
  count (2.5 GiB at 1024 x 1024 x 30); the whole peak of the background writer's pixel encoder process
  (:func:`monai_saliency.data.dicom.encoding.encode_in_worker_process`, a separate process) is added to it;
* bytes written / input bytes: <= 2;
* GIF: <= 5 MB, longest side <= the bundle's ``gif_max_side`` (512);

and the wall time of each stage (read, preprocess, model, explainers, invert, write). The study runs with
``--num_workers 0`` so that every stage runs in the probed process (with the default DataLoader worker, reading and
preprocessing move to a worker process: their memory then adds to a second process), but for the pixel
encoding, which the background writer runs in its encoder process (its time is inside the writers' stages).

The default generator upsamples a cine of :func:`monai_saliency.data.synthetic.angiogram.make_angiogram_dataset`
(128 x 128) to the clinical size and applies a Poisson-Gaussian detector model quantised to 12 bits, so that the
noise of a real detector makes compression no easier than on real data. Any function
``generator(shape, frames, seed) -> uint16 (T, H, W)`` (stored 12-bit values) can replace it
(:func:`run_benchmark`'s ``generator``).

Run: ``OMP_NUM_THREADS=1 python benchmarks/speed/bench_clinical_cine.py`` (about 2 minutes on one core); results
in ``benchmarks/speed/results/clinical_cine.txt``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "angiogram_signature_activation"
PROBE = Path(__file__).resolve().with_name("_bundle_probe.py")
RESULTS = Path(__file__).resolve().parent / "results" / "clinical_cine.txt"

BITS = 12
REFERENCE_PIXELS = 512 * 512 * 48  # the size the bounds are stated for
RSS_BOUND = 1 << 30  # bytes above the import footprint at REFERENCE_PIXELS, scaled with the input
BYTES_RATIO_BOUND = 2.0
GIF_BYTES_BOUND = 5_000_000
GIF_SIDE_BOUND = 512
SIZES = ((512, 48), (1024, 30))
STAGES = ("read", "preprocess", "model", "explainers", "invert", "write")

Generator = Callable[[Sequence[int], int, int], np.ndarray]


def detector_counts(
    cine: torch.Tensor | np.ndarray,
    bits: int = BITS,
    quanta: float = 1500.0,
    read_noise: float = 3.0,
    seed: int = 0,
) -> np.ndarray:
    """Stored detector values of a noiseless cine: Poisson quantum noise plus Gaussian electronic noise, quantised.

    Args:
        cine: ``(T, H, W)`` transmitted intensity in [0, 1] (1 = unattenuated).
        bits: detector bit depth (values in ``[0, 2**bits - 1]``).
        quanta: detected quanta per pixel behind an unattenuated path (sets the quantum noise).
        read_noise: standard deviation of the electronic noise, in stored units.
        seed: noise seed.

    Returns:
        ``uint16 (T, H, W)``.
    """
    top = (1 << bits) - 1
    rng = np.random.default_rng(seed)
    x = np.clip(np.asarray(cine, dtype=np.float64), 0.0, 1.0)
    gain = 0.9 * top / quanta  # stored units per quantum: an unattenuated pixel sits at 90 % of the range
    counts = rng.poisson(x * quanta) * gain + rng.normal(0.0, read_noise, x.shape) + 0.02 * top  # dark offset
    return np.clip(np.rint(counts), 0, top).astype(np.uint16)


def upsampled_synthetic_cine(shape: Sequence[int], frames: int, seed: int = 0, base: int = 128) -> np.ndarray:
    """A stand-in clinical-size cine: the synthetic angiogram at ``base`` x ``base`` (noiseless) upsampled
    (bilinear) to ``shape``, then :func:`detector_counts` (12-bit)."""
    from monai_saliency.data.synthetic.angiogram import make_angiogram_dataset

    small = make_angiogram_dataset(1, shape=(base, base), frames=frames, seed=seed, noise=0.0).cine  # (1, T, b, b)
    big = F.interpolate(small, size=tuple(int(s) for s in shape), mode="bilinear", align_corners=False)[0]
    return detector_counts(big.numpy(), seed=seed)


def clinical_cine(shape: Sequence[int], frames: int, seed: int = 0) -> np.ndarray:
    """A cine of the realistic clinical generator (:mod:`monai_saliency.data.synthetic.angiogram_clinical`: two
    crossing trees, cardiac motion, bolus, catheter, ribs, Poisson-Gaussian noise, 12-bit), one moderate lesion."""
    from monai_saliency.data.synthetic.angiogram_clinical import make_clinical_angiogram

    return np.asarray(make_clinical_angiogram(seed=seed, shape=tuple(shape), frames=frames)["cine"])


GENERATORS: dict[str, Generator] = {"clinical": clinical_cine, "upsampled": upsampled_synthetic_cine}
CONFIGS = {
    "default": "configs/inference.json",
    "clinical": "['configs/inference.json','configs/inference_clinical.json']",
}


def write_study(folder: Path, shape: Sequence[int], frames: int, generator: Generator, seed: int = 0) -> Path:
    """Generate one cine and write it as a 12-bit multi-frame XA DICOM ``folder/cine_<H>x<W>x<T>.dcm``."""
    from monai_saliency.data.dicom.xa_writer import write_xa_cine

    pixels = np.asarray(generator(shape, frames, seed))
    if pixels.dtype != np.uint16 or pixels.shape != (frames, *shape):
        raise ValueError(f"the generator must return uint16 {(frames, *shape)}, got {pixels.dtype} {pixels.shape}.")
    folder.mkdir(parents=True, exist_ok=True)
    name = f"cine_{shape[0]}x{shape[1]}x{frames}.dcm"
    return write_xa_cine(pixels, folder / name, bits_stored=BITS, uid_seed=name)


def run_study(
    dataset_dir: Path, output_dir: Path, *options: str, timeout: int = 900, config_file: str = CONFIGS["default"]
) -> dict:
    """Run the bundle on ``dataset_dir`` in a fresh subprocess under the probe; its report (see ``_bundle_probe``).

    Raises:
        RuntimeError: the run failed (its stderr tail is in the message).
    """
    report = output_dir.parent / f"{output_dir.name}_probe.json"
    cmd = [sys.executable, str(PROBE), str(report), "run", "--config_file", config_file]
    # one process: with DataLoader workers (the bundle's default 1) reading and preprocessing run in a worker
    # process, whose memory and time this process's probe would not see
    cmd += ["--bundle_root", ".", "--dataset_dir", str(dataset_dir), "--output_dir", str(output_dir)]
    cmd += ["--num_workers", "0", *options]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env.setdefault("OMP_NUM_THREADS", "1")
    env["PYTHONWARNINGS"] = "ignore"
    proc = subprocess.run(cmd, cwd=BUNDLE, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0 or not report.exists():
        raise RuntimeError(f"bundle run failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(report.read_text())


def measure(study: Path, output_dir: Path, report: dict) -> dict:
    """The bounded quantities of one run: peak above footprint, bytes written / input, the GIF's size and side."""
    from PIL import Image

    files = [p for p in output_dir.rglob("*") if p.is_file()]
    rel = [p.relative_to(output_dir) for p in files]
    # per-study files only: run-level files (csv, manifest, report) and the hidden cohort bookkeeping are excluded
    per_study = [p for p, r in zip(files, rel) if len(r.parts) > 1 and not any(q.startswith(".") for q in r.parts)]
    gifs = [p for p in per_study if p.suffix == ".gif"]
    if len(gifs) != 1:
        raise RuntimeError(f"expected one GIF in {output_dir}, found {gifs}.")
    with Image.open(gifs[0]) as im:
        side = max(im.size)
    pixels = int(np.prod([int(v) for v in study.stem.split("_")[-1].split("x")]))
    return {
        "input_bytes": study.stat().st_size,
        "written_bytes": sum(p.stat().st_size for p in per_study),
        "files": {p.name: p.stat().st_size for p in sorted(per_study)},
        "gif_bytes": gifs[0].stat().st_size,
        "gif_side": side,
        "rss_bound": RSS_BOUND * pixels / REFERENCE_PIXELS,
        # the bundle's process above its footprint plus the whole peak of its pixel encoder process (a separate
        # process since the background writer encodes there): a sum of two peaks, so an upper bound
        "peak": report["peak_above_footprint_bytes"] + report.get("encoder_peak_bytes", 0),
        "encoder_peak": report.get("encoder_peak_bytes", 0),
    }


def verdicts(m: dict) -> list[tuple[str, str, str, bool]]:
    """``(quantity, value, bound, passed)`` rows."""
    ratio = m["written_bytes"] / m["input_bytes"]
    return [
        ("peak RSS above import footprint", f"{m['peak'] / 2**20:.0f} MiB (encoder process {m['encoder_peak'] / 2**20:.0f})",
         f"{m['rss_bound'] / 2**20:.0f} MiB", m["peak"] <= m["rss_bound"]),
        ("bytes written / input bytes", f"{ratio:.2f} ({m['written_bytes'] / 1e6:.1f} / {m['input_bytes'] / 1e6:.1f} MB)",
         f"{BYTES_RATIO_BOUND:g}", ratio <= BYTES_RATIO_BOUND),
        ("GIF size", f"{m['gif_bytes'] / 1e6:.2f} MB", f"{GIF_BYTES_BOUND / 1e6:g} MB", m["gif_bytes"] <= GIF_BYTES_BOUND),
        ("GIF longest side", f"{m['gif_side']} px", f"{GIF_SIDE_BOUND} px", m["gif_side"] <= GIF_SIDE_BOUND),
    ]  # fmt: skip


def format_study(study: Path, report: dict, m: dict) -> list[str]:
    lines = [f"## {study.name} ({m['input_bytes'] / 1e6:.1f} MB input)", ""]
    times = report["stage_seconds"]
    peaks = report["stage_peak_above_footprint_bytes"]
    lines.append("stage            time (s)   peak RSS above footprint during the stage (MiB)")
    writers = sorted(k for k in times if k.startswith("write:"))
    times = {**times, "write": sum(times[k] for k in writers)}
    peaks = {**peaks, "write": max([peaks[k] for k in writers], default=0)}
    for s in (*STAGES, *writers):
        label = f"  {s.split(':')[1]}" if ":" in s else s
        lines.append(f"{label:<16} {times.get(s, 0.0):8.2f}   {peaks.get(s, 0) / 2**20:8.0f}")
    lines.append(
        f"{'total run':<16} {report['total_seconds']:8.2f}   (import footprint {report['footprint_bytes'] / 2**20:.0f} MiB)"
    )
    lines += ["", "files written:"]
    lines += [f"  {name:<48} {size / 1e6:8.2f} MB" for name, size in m["files"].items()]
    lines += ["", f"{'quantity':<34} {'value':<30} {'bound':<10} verdict"]
    lines += [f"{q:<34} {v:<30} {b:<10} {'PASS' if ok else 'FAIL'}" for q, v, b, ok in verdicts(m)]
    return [*lines, ""]  # fmt: skip


def run_benchmark(
    generator: Generator = upsampled_synthetic_cine,
    sizes: Sequence[tuple[int, int]] = SIZES,
    options: Sequence[str] = (),
    workdir: Path | None = None,
    config_file: str = CONFIGS["default"],
) -> tuple[list[str], bool]:
    """Generate, run and measure each ``(side, frames)`` study; the report lines and whether every bound holds.

    Args:
        generator: ``generator(shape, frames, seed) -> uint16 (T, H, W)`` stored 12-bit values.
        sizes: ``(side, frames)`` of the square cines.
        options: extra bundle options (e.g. ``("--map_dtype", "float16")``).
        workdir: where studies and outputs go (default a temporary folder, removed afterwards).
        config_file: the bundle's ``--config_file`` (:data:`CONFIGS`: the default 64 x 64 model or the clinical
            128 x 128 override).
    """
    torch.set_num_threads(1)
    lines, ok = [], True
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(workdir or tmp)
        for side, frames in sizes:
            data = root / f"data_{side}x{frames}"
            study = write_study(data, (side, side), frames, generator)
            out = root / f"out_{side}x{frames}"
            report = run_study(data, out, *options, config_file=config_file)
            m = measure(study, out, report)
            ok &= all(v[-1] for v in verdicts(m))
            lines += format_study(study, report, m)
            print("\n".join(format_study(study, report, m)), flush=True)
    return lines, ok


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default=",".join(f"{s}x{t}" for s, t in SIZES), help="e.g. 512x48,1024x30")
    parser.add_argument("--no-save", action="store_true", help="do not write the results file")
    parser.add_argument("--generator", choices=sorted(GENERATORS), default="clinical", help="cine generator")
    parser.add_argument("--config", choices=sorted(CONFIGS), default="clinical", help="bundle configuration")
    parser.add_argument("options", nargs="*", help="extra bundle options after --, e.g. -- --map_dtype float16")
    args = parser.parse_args()
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    lines, ok = run_benchmark(
        GENERATORS[args.generator], sizes=sizes, options=args.options, config_file=CONFIGS[args.config]
    )
    header = [
        "# Angiogram bundle per study at clinical size (benchmarks/speed/bench_clinical_cine.py)",
        f"# bundle options: {' '.join(args.options) or '(defaults)'}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '')}",
        f"# generator: {args.generator} ({(GENERATORS[args.generator].__doc__ or '').split(chr(10))[0].strip()})",
        f"# bundle configuration: {args.config} ({CONFIGS[args.config]})",
        f"# all bounds: {'PASS' if ok else 'FAIL'}",
        "",
    ]  # fmt: skip
    if not args.no_save:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text("\n".join(header + lines))
    print(header[-2])
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
