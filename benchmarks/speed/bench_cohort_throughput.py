"""Cohort throughput of the angiogram bundle: a plain sequential loop against the bundle's evaluator path (DataLoader
workers reading ahead, writing in a background thread), measured in the same run (issue #22, section 2).

Data: ``--studies`` (default 100) generated 16-frame 64 x 64 angiogram cines
(:func:`monai_saliency.data.synthetic.angiogram.make_angiogram_dataset`, seed 2200), written with the package's
writers, alternately as multi-frame XA DICOM (:func:`~monai_saliency.data.dicom.xa_writer.write_xa_cine`) and as
NIfTI cines (:func:`~monai_saliency.data.nifti.save_nifti` + ``mark_nifti_cine``): the bundle's sample size.

Paths, all with the components of ``bundles/angiogram_signature_activation/configs/inference.json`` (its
preprocessing, network and shipped weights, explainers, post-processing and writers), one torch thread:

* ``sequential``: a plain loop, one study at a time: load + preprocess -> network + explainers -> post-process and
  write every file into the study's folder; no workers, no background thread, no cohort bookkeeping;
* ``evaluator``: the bundle's ``SaliencyEvaluator`` with its cohort run (staging, checksums, records, atomic moves),
  ``--num_workers`` DataLoader workers, ``--async_write`` and ``--write_process`` (the bundle's defaults);
The two paths run in ``--rounds`` (default 4) consecutive slices of the studies, alternating which goes first, and
their rows sum the rounds: the speed of a shared machine drifts by tens of percent over minutes.

* variants (full run, on the first ``--variant-studies`` studies, default 24): 0, 1 and 2 workers, the synchronous
  writer (where the defaults come from), the other background writer (a thread if the default is the forked writer
  process, ``--write_process``, or the reverse; a steady-state rate after the first studies is printed too), lighter
  writing (``--gif_scale 1 --write_overlays false``), the DICOM objects deflated instead of JPEG-LS
  (``--dicom_compression deflate``), and a model that is a larger share of a study (``--frame_size [128,128]`` with
  the lighter writing, with both writers), the last two sequential and evaluator: how the model fraction depends on
  the share of the model in a study's CPU time.

Also printed: a per-stage CPU profile (:class:`StageProfile`, ``--profile-studies``, default 16: CPU ms per study of
every stage of the evaluator path, by thread, compute or writer; ``other`` is each thread's rest: engine, collation,
the finite check), and (full run) :func:`gil_probe`: how fast the compute thread runs the network while the writer
thread writes overlays, with encoders that hold the GIL (CharLS, openjpeg) and one that releases it (zlib).

Model time (the definition printed with the results): wall-clock seconds spent inside the inferer call in the
compute thread -- the network's forward pass for the logits plus every explainer's forward and backward passes and
its map arithmetic (Signature Activation spatial and frames, Grad-CAM), i.e. the work a GPU would run -- summed over
the studies. The model fraction is model time / wall time of the path (from its first study's loading to its last
study's write and commit; config parsing, checkpoint loading and ``cohort.finish()`` -- manifest, predictions.csv,
report.html, once per run -- are excluded and ``finish`` is reported separately). Threads that share the two cores
slow the model down a little, which raises the fraction too: the model seconds per study are printed for each path
so that effect can be seen; studies per minute is the throughput itself.

Usage: ``python -m benchmarks.speed.bench_cohort_throughput [--quick] [--studies N] [--out FILE]``. The full run
takes about 4 minutes on 2 busy cores; ``--quick`` (8 studies, the default path only) takes well under a minute and
writes nothing to ``benchmarks/speed/results`` unless ``--out`` is given.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.speed._cohort_profile import (
    encoder_cpu,
    gil_probe,
    process_lines,
    profile_lines,
    run_profile,
    steady_rate,
    time_commits,
)
from benchmarks.speed._cohort_rows import (
    goal_lines,
    merge_rows,
    pair_lines,
    row_line,
    seq_model_cpu,
    variant_pairs,
    work_bound,
)

REPO = Path(__file__).resolve().parents[2]
BUNDLE = REPO / "bundles" / "angiogram_signature_activation"
RESULTS = Path(__file__).resolve().parent / "results" / "cohort_throughput.txt"
GOAL = 0.80
NIFTI_AFFINE = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.3, 0.0, -9.6], [0.0, 0.0, 0.3, -9.6], [0.0, 0.0, 0.0, 1.0]])
DEFINITION = (
    "model time = wall-clock seconds inside the inferer call in the compute thread (network forward for the logits + "
    "every explainer's forward/backward passes and map arithmetic: Signature Activation spatial and frames, "
    "Grad-CAM), summed over studies; model fraction = model time / wall time of the path (first study's loading to "
    "last study's write and commit; config parsing, checkpoint loading and the once-per-run cohort.finish() excluded)"
)


def make_studies(folder: Path, n: int, seed: int = 2200) -> list[Path]:
    """Write ``n`` generated 16-frame 64 x 64 cines to ``folder``, even indices as XA DICOM, odd ones as NIfTI."""
    from monai_saliency.data.checks import mark_nifti_cine
    from monai_saliency.data.dicom.xa_writer import write_xa_cine
    from monai_saliency.data.nifti import save_nifti
    from monai_saliency.data.synthetic.angiogram import make_angiogram_dataset

    data = make_angiogram_dataset(n, shape=(64, 64), frames=16, seed=seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        if i % 2 == 0:
            path = folder / f"study_{i:03d}.dcm"
            write_xa_cine(
                data.cine[i],
                path,
                frame_time_ms=data.frame_time_ms,
                bits_stored=12,
                patient_id=f"BENCH-{i:03d}",
                uid_seed=f"bench-{i:03d}",
            )
        else:
            path = folder / f"study_{i:03d}.nii.gz"
            mark_nifti_cine(save_nifti(data.cine[i][None], path, affine=NIFTI_AFFINE))
        paths.append(path)
    return paths


def _cpu() -> float:
    """CPU seconds used so far by this process (all threads), its reaped children (DataLoader workers) and the
    running DICOM encoder process (:func:`encoder_cpu`)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime + encoder_cpu()


class TimedInferer:
    """Wraps the bundle's inferer and sums the wall time of its calls (the model time, see :data:`DEFINITION`)."""

    def __init__(self, inferer) -> None:
        self.inferer = inferer
        self.seconds = 0.0
        self.cpu_seconds = 0.0  # CPU time of the calling thread (torch runs one thread here)
        self.calls = 0

    def __call__(self, *args, **kwargs):
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            return self.inferer(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - t0
            self.cpu_seconds += time.thread_time() - c0
            self.calls += 1


def _private_scripts(node, package: str):
    """The config with its ``scripts.`` targets pointing at the bundle's scripts under a private package name
    (every bundle's ``scripts`` package has one name, so an in-process run must not import it as ``scripts``)."""
    if isinstance(node, dict):
        return {k: _private_scripts(v, package) for k, v in node.items()}
    if isinstance(node, list):
        return [_private_scripts(v, package) for v in node]
    if isinstance(node, str) and node.startswith("scripts."):
        return package + node[len("scripts") :]
    return node


def bundle_parser(dataset_dir: Path, output_dir: Path, **overrides):
    """The angiogram bundle's ``configs/inference.json`` parsed in this process, with ``overrides`` (config ids)."""
    from monai.bundle import ConfigParser

    from monai_saliency._deprecation import bundle_scripts

    package = bundle_scripts(BUNDLE.name, "cine_io").__name__.rsplit(".", 1)[0]
    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    parser.config = _private_scripts(parser.config, package)
    parser.update(
        {
            "bundle_root": str(BUNDLE),
            "dataset_dir": str(dataset_dir),
            "output_dir": str(output_dir),
            "handlers": [],  # no progress bar; the weights are loaded by the caller (load_weights)
            **overrides,
        }
    )
    return parser


def load_weights(network: torch.nn.Module) -> None:
    state = torch.load(BUNDLE / "models" / "model.pt", map_location="cpu", weights_only=True)
    network.load_state_dict(state)


def run_sequential(dataset_dir: Path, output_dir: Path, name: str = "sequential loop", **overrides) -> dict:
    """The plain loop: one study at a time, load -> preprocess -> network + explainers -> post-process and write."""
    from monai.data import decollate_batch, list_data_collate
    from monai.engines.utils import engine_apply_transform
    from monai.networks.utils import eval_mode
    from monai.utils import CommonKeys

    from monai_saliency.engines.cohort import discover_studies, plan_layout

    parser = bundle_parser(dataset_dir, output_dir, **overrides)
    preprocessing = parser.get_parsed_content("preprocessing")
    network = parser.get_parsed_content("network")
    load_weights(network)
    inferer = TimedInferer(parser.get_parsed_content("inferer"))
    postprocessing = parser.get_parsed_content("postprocessing")
    studies = plan_layout(discover_studies(dataset_dir, output_dir, ("nifti", "dicom")), {})
    output_dir.mkdir(parents=True, exist_ok=True)
    c0, t0 = _cpu(), time.perf_counter()
    for study in studies:
        item = preprocessing({"study": study.study_id, "image": study.path})
        folder = output_dir / study.folder
        folder.mkdir(parents=True, exist_ok=True)
        batch = list_data_collate([item])
        batch["study_dir"] = [str(folder)]
        with eval_mode(network):
            pred = inferer(batch[CommonKeys.IMAGE], network)
        output = {CommonKeys.IMAGE: batch[CommonKeys.IMAGE], CommonKeys.LABEL: None, CommonKeys.PRED: pred}
        for b, o in zip(decollate_batch(batch), decollate_batch(output)):
            engine_apply_transform(b, o, postprocessing)
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    return {
        "name": name,
        "n": len(studies),
        "wall": wall,
        "model": inferer.seconds,
        "finish": 0.0,
        "cpu": cpu,
        "model_cpu": inferer.cpu_seconds,
    }


def run_evaluator(dataset_dir: Path, output_dir: Path, name: str, **overrides) -> dict:
    """The bundle's evaluator path (cohort, DataLoader workers, background writer) with config ``overrides``."""
    parser = bundle_parser(dataset_dir, output_dir, **overrides)
    evaluator = parser.get_parsed_content("evaluator")
    load_weights(evaluator.network)
    cohort = parser.get_parsed_content("cohort")
    evaluator.inferer = inferer = TimedInferer(evaluator.inferer)
    commits = time_commits(cohort, lambda: inferer.seconds)
    c0, t0 = _cpu(), time.perf_counter()
    evaluator.run()
    wall, cpu = time.perf_counter() - t0, _cpu() - c0
    t1 = time.perf_counter()
    counts = cohort.finish()
    finish = time.perf_counter() - t1
    if counts["ok"] != len(cohort.studies):
        raise RuntimeError(f"{name}: not every study succeeded: {counts}")
    workers = parser.get_parsed_content("dataloader#num_workers")
    return {
        "name": name,
        "n": counts["ok"],
        "wall": wall,
        "model": inferer.seconds,
        "finish": finish,
        "cpu": cpu,
        "model_cpu": inferer.cpu_seconds,
        "workers": workers,
        "async": evaluator.async_write,
        "steady": steady_rate(commits),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="8 studies, the default evaluator path only")
    ap.add_argument("--studies", type=int, default=None, help="number of generated studies (default 100, quick 8)")
    ap.add_argument(
        "--variant-studies", type=int, default=24, help="studies for the variant rows of a full run (0: none)"
    )
    ap.add_argument(
        "--rounds", type=int, default=4, help="slices of the studies, the two paths alternating first (quick: 1)"
    )
    ap.add_argument(
        "--profile-studies", type=int, default=16, help="studies of the per-stage CPU profile (0: none; quick: 4)"
    )
    ap.add_argument("--out", type=Path, default=None, help=f"results file (default {RESULTS} for a full run)")
    ap.add_argument("--workdir", type=Path, default=None, help="where the studies and outputs go (default a temp dir)")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    from monai.bundle import ConfigParser

    n = args.studies or (8 if args.quick else 100)
    if args.quick:
        args.rounds = 1
    defaults = ConfigParser.load_config_file(str(BUNDLE / "configs" / "inference.json"))
    default_workers, default_async = defaults["num_workers"], defaults["async_write"]
    default_process = defaults["write_process"]
    work = Path(tempfile.mkdtemp(prefix="bench_cohort_", dir=args.workdir))
    lines = []
    try:
        t0 = time.perf_counter()
        data = work / "data"
        make_studies(data, n)
        gen = time.perf_counter() - t0
        load0 = os.getloadavg()
        warm = work / "warm"
        make_studies(warm, 2, seed=9999)
        run_sequential(warm, work / "warm_out_seq")  # imports, first-call costs: not timed
        run_evaluator(warm, work / "warm_out_eval", "warm-up")  # and the background writer's encoder process
        profile_n = min(n, 4 if args.quick else args.profile_studies)
        stage_lines: list[str] = []
        largest = ""
        if profile_n > 0:
            sub = work / "profile"
            sub.mkdir()
            for path in sorted(data.iterdir())[:profile_n]:
                os.link(path, sub / path.name)
            profile_parser = bundle_parser(sub, work / "out_profile", num_workers=0, write_process=False)
            profile, done = run_profile(profile_parser, load_weights)
            stage_lines = [
                (
                    f"per-stage CPU time (the first {done} studies; the bundle's evaluator path with the DataLoader's "
                    "work in the compute thread, num_workers=0, and the background writer thread, which does the "
                    "work the writer process does):"
                ),
                *profile_lines(profile, done),
                "",
            ]
            rest = sorted((r for r in profile.rows(done) if not r[1].startswith("model")), key=lambda r: -r[2])
            largest = "; the largest non-model stages (profile above): " + ", ".join(
                f"{stage} {ms:.0f} ms" + ("" if role == "encoder" else f" ({role} thread)")
                for role, stage, ms in rest[:3]
            )
        probe = gil_probe(bundle_parser(work, work).get_parsed_content("network"), work) if not args.quick else None
        # Rounds over consecutive slices of the studies, the two paths alternating first: the speed of a shared
        # machine drifts by tens of percent over minutes, and alternating puts the same drift on both paths.
        default = f"evaluator (workers={default_workers}, async write={default_async}, write process={default_process})"
        rounds = max(1, min(args.rounds, n))
        names = sorted(data.iterdir())
        runs: dict[str, list[dict]] = {"seq": [], "eval": []}
        for k in range(rounds):
            part = work / f"part{k}"
            part.mkdir()
            for path in names[k * n // rounds : (k + 1) * n // rounds]:
                os.link(path, part / path.name)
            order = ("seq", "eval") if k % 2 == 0 else ("eval", "seq")
            for kind in order:
                if kind == "seq":
                    runs[kind].append(run_sequential(part, work / f"out_seq{k}"))
                else:
                    runs[kind].append(run_evaluator(part, work / f"out_eval{k}", default))
        results = [merge_rows(runs["seq"], f"sequential loop ({rounds} rounds)"), merge_rows(runs["eval"], default)]
        variants = []
        if not args.quick and args.variant_studies > 0:
            sub = work / "subset"
            sub.mkdir()
            for path in sorted(data.iterdir())[: args.variant_studies]:
                os.link(path, sub / path.name)
            base = f"async write={default_async}, write process={default_process}"
            settings = [(f"workers={w}, {base}", {"num_workers": w}) for w in (0, 1, 2)]
            settings.append((f"workers={default_workers}, async write=False", {"async_write": False}))
            other = f"workers={default_workers}, async write=True, write process={not default_process}"
            settings.append((other, {"write_process": not default_process}))
            settings.append(
                (
                    f"workers={default_workers}, {base}, --gif_scale 1 --write_overlays false",
                    {"gif_scale": 1, "write_overlays": False},
                )
            )
            settings.append(
                (f"workers={default_workers}, {base}, --dicom_compression deflate", {"dicom_compression": "deflate"})
            )
            for i, (label, overrides) in enumerate(settings):
                variants.append(run_evaluator(sub, work / f"out_v{i}", f"evaluator ({label})", **overrides))
            deflated = {"dicom_compression": "deflate"}
            label = "--dicom_compression deflate"
            variants.append(run_sequential(sub, work / "out_ds", f"sequential loop ({label})", **deflated))
            # a model that is a larger share of a study: 4x the network input (the network is fully convolutional)
            heavy = {"frame_size": [128, 128], "gif_scale": 1, "write_overlays": False}
            label = "--frame_size [128,128] --gif_scale 1 --write_overlays false"
            variants.append(run_sequential(sub, work / "out_hs", f"sequential loop ({label})", **heavy))
            variants.append(run_evaluator(sub, work / "out_he", f"evaluator (defaults, {label})", **heavy))
            label_p = f"write process={not default_process}, {label}"
            heavy_p = {**heavy, "write_process": not default_process}
            variants.append(run_evaluator(sub, work / "out_hp", f"evaluator ({label_p})", **heavy_p))
        load1 = os.getloadavg()
        seq, best = results
        frac = best["model"] / best["wall"]
        verdict = "PASS" if frac >= GOAL else "FAIL"
        cores = min(2, os.cpu_count() or 1)
        bound, bound_text = work_bound(seq, cores)
        lines += [
            f"cohort throughput, angiogram bundle, {n} generated studies (64x64x16 cines, half XA DICOM, half NIfTI)",
            (
                f"torch threads 1, cpus {os.cpu_count()}, load average before {load0[0]:.2f} after {load1[0]:.2f} "
                f"(other processes share the cores); study generation {gen:.1f} s"
            ),
            f"definition: {DEFINITION}",
            "",
            *[row_line(r) for r in results],
            "",
            *stage_lines,
            *(
                [
                    (
                        "compute thread while the writer thread writes DICOM overlays in a loop (network forward "
                        f"passes per second, alone {probe['alone']:.0f}/s): "
                        + ", ".join(f"{k} {100 * v:.0f} %" for k, v in probe.items() if k != "alone")
                        + " of its speed alone (CharLS's and openjpeg's encoders hold the GIL while they encode, zlib "
                        "releases it; the bundle's background writer encodes JPEG-LS in a worker process; with one "
                        "free core "
                        "the threads and processes also share that core)"
                    ),
                    "",
                ]
                if probe
                else []
            ),
            *(
                [
                    (
                        f"variants (the first {args.variant_studies} studies; the default's worker count and writer, "
                        "lighter writing, deflated DICOM, a larger model share):"
                    ),
                    *[row_line(r) for r in variants],
                    "",
                ]
                if variants
                else []
            ),
            f"speed-up of the bundle's default path over the sequential loop: x{seq['wall'] / best['wall']:.2f}",
            f"goal: model fraction >= {100 * GOAL:.0f} % on the default path: {100 * frac:.1f} % -> {verdict}",
            f"bound: {bound_text}",
        ]
        lines += pair_lines(variants, "deflate", "with --dicom_compression deflate", "deflate variant", cores)
        lines += pair_lines(variants, "frame_size", "for the 128x128 variant", "128x128 variant", cores)
        # the two background writers over the same studies: the default's variant row and the other writer's
        same = f"evaluator (workers={default_workers}, async write={default_async}, write process={default_process})"
        swapped = f"evaluator (workers={default_workers}, async write=True, write process={not default_process})"
        lines += process_lines(variants, *((same, swapped) if default_process else (swapped, same)))
        goal_text, goal_met = goal_lines(variant_pairs([("default path", seq, best)], variants), GOAL, cores)
        lines += [
            (
                f"goal where the work allows it (model fraction >= {100 * GOAL:.0f} %, the smaller of the wall-time and "
                "CPU fractions, wherever the sequential loop's work bounds it at >= the goal):"
            ),
            *goal_text,
            f"goal met wherever the work allows it: {'yes' if goal_met else 'no'}",
        ]
        if verdict == "FAIL":
            rest = (seq["cpu"] - seq["model_cpu"]) / seq["n"]
            lines.append(
                f"why not met: per study the reading, preprocessing, post-processing, writing and cohort bookkeeping "
                f"take {1000 * rest:.0f} CPU ms against {1000 * seq_model_cpu(seq):.0f} in the model; overlapping "
                "hides that work on the other core only while it is at most the model's own time"
                + largest
                + (
                    f", so {100 * GOAL:.0f} % cannot be reached with this work on {cores} cores"
                    if bound < GOAL
                    else "; the rest is contention for the cores (see the load average) and the compute thread's own "
                    "work around the inferer"
                )
                + ". The wall-clock model time also grows when other threads or processes take the model's core, "
                "which raises the measured fraction without any gain (compare the model ms/study of the rows)."
            )
        text = "\n".join(lines) + "\n"
        print(text, end="")
        out = args.out if args.out is not None else (None if args.quick else RESULTS)
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(text)
        return 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
