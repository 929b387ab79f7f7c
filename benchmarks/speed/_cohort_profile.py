"""Per-stage CPU profile and GIL probe of the angiogram bundle's cohort path, for
:mod:`benchmarks.speed.bench_cohort_throughput` (split out of it to keep modules small)."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from pathlib import Path

import torch

__all__ = ["ENCODER_STAGE", "STAGE_NAMES", "StageProfile", "encoder_cpu", "gil_probe", "profile_lines", "run_profile"]

ENCODER_STAGE = "pixel encoding (encoder process)"


def encoder_cpu() -> float:
    """CPU seconds used so far by the DICOM encoder process of the background writer
    (:func:`monai_saliency.data.dicom.encoding.encode_in_worker_process`; it keeps running, so it is not yet among the
    reaped children), from ``/proc``; 0 when none runs."""
    from monai_saliency.data.dicom import encoding

    proc = encoding._WORKER.proc
    if proc is None or proc.poll() is not None:
        return 0.0
    try:
        fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


class StageProfile:
    """CPU seconds per stage and thread of one evaluator run: each stage's calls add their thread CPU time
    (:func:`time.thread_time`) to ``(thread, stage)``, the thread being ``"compute"`` (the engine's thread) or
    ``"writer"`` (the background writer); ``other`` is the rest of each thread's CPU time (engine, collation,
    decollation, the finite check), from the compute thread's total around ``run()`` and the writer's write jobs;
    ``"encoder"`` is the CPU time of the writer's DICOM encoder process (:func:`encoder_cpu`)."""

    def __init__(self) -> None:
        self.cpu: dict[tuple[str, str], float] = {}
        self.totals = {"compute": 0.0, "writer": 0.0}

    @staticmethod
    def role() -> str:
        return "writer" if threading.current_thread().name == "saliency-writer" else "compute"

    def add(self, stage: str, seconds: float) -> None:
        key = (self.role(), stage)
        self.cpu[key] = self.cpu.get(key, 0.0) + seconds

    def timed(self, stage: str, fn):
        """``fn`` with its calls timed as ``stage``."""

        def call(*args, **kwargs):
            c0 = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                self.add(stage, time.thread_time() - c0)

        return call

    def time_transform(self, transform, stage: str) -> None:
        """Time ``transform``'s calls in place: its class becomes a subclass of the same name whose ``__call__`` is
        timed (identity, ``isinstance`` and ``Invertd``'s trace of it are unchanged)."""
        cls = type(transform)
        profile = self

        def __call__(obj, *args, **kwargs):
            c0 = time.thread_time()
            try:
                return cls.__call__(obj, *args, **kwargs)
            finally:
                profile.add(stage, time.thread_time() - c0)

        transform.__class__ = type(cls.__name__, (cls,), {"__call__": __call__, "__qualname__": cls.__qualname__})

    def rows(self, n: int) -> list[tuple[str, str, float]]:
        """``(thread, stage, CPU ms per study)``, each thread's stages then its ``other``."""
        out = []
        for role in ("compute", "writer"):
            stages = [(s, c) for (r, s), c in self.cpu.items() if r == role]
            out += [(role, s, 1000 * c / n) for s, c in stages]
            out.append((role, "other", 1000 * (self.totals[role] - sum(c for _, c in stages)) / n))
        return out + [(r, s, 1000 * c / n) for (r, s), c in self.cpu.items() if r == "encoder"]


STAGE_NAMES = {
    "LoadCined": "read + decode (LoadCined)",
    "EnsureTyped": "preprocess: EnsureTyped",
    "CopyItemsd": "preprocess: CopyItemsd",
    "AntiAliasd": "preprocess: AntiAliasd",
    "Resized": "preprocess: Resized",
    "FlattenSubKeysd": "post: FlattenSubKeysd",
    "Invertd": "post: Invertd (maps to the input grid)",
    "ScaleToUnitd": "post: ScaleToUnitd",
    "SaveMapsd": "write: NIfTI maps (SaveMapsd)",
    "SaveXADerivedd": "write: derived XA DICOM (SaveXADerivedd)",
    "SaveCineGifd": "write: animated GIF (SaveCineGifd)",
    "SaveOverlaySCd": "write: DICOM overlay (SaveOverlaySCd)",
}


def run_profile(parser, load_weights) -> tuple[StageProfile, int]:
    """The bundle's evaluator path with every stage timed (:class:`StageProfile`), the DataLoader's work in the
    compute thread (``num_workers=0``, so reading is timed too; with workers it moves to a worker process at the same
    cost) and the default background writer: ``parser`` is the bundle's config parser made with ``num_workers=0``,
    ``load_weights(network)`` loads the checkpoint. Returns the profile and the number of studies."""
    evaluator = parser.get_parsed_content("evaluator")
    load_weights(evaluator.network)
    cohort = parser.get_parsed_content("cohort")
    profile = StageProfile()
    for transform in [*parser.get_parsed_content("preprocessing").transforms]:
        profile.time_transform(transform, STAGE_NAMES.get(type(transform).__name__, type(transform).__name__))
    for transform in parser.get_parsed_content("postprocessing").transforms:
        profile.time_transform(transform, STAGE_NAMES.get(type(transform).__name__, type(transform).__name__))
    evaluator.inferer = profile.timed("model (inferer: network + explainers)", evaluator.inferer)
    cohort.stage = profile.timed("cohort: staging folder", cohort.stage)
    cohort.commit = profile.timed("cohort: commit (checksums, records, atomic move)", cohort.commit)
    write_study = evaluator._write_study

    def job(*args, **kwargs):
        c0 = time.thread_time()
        try:
            return write_study(*args, **kwargs)
        finally:
            profile.totals["writer"] += time.thread_time() - c0

    evaluator._write_study = job
    c0, e0 = time.thread_time(), encoder_cpu()
    evaluator.run()
    profile.totals["compute"] += time.thread_time() - c0
    profile.cpu[("encoder", ENCODER_STAGE)] = encoder_cpu() - e0
    counts = cohort.finish()
    if counts["ok"] != len(cohort.studies):
        raise RuntimeError(f"profile: not every study succeeded: {counts}")
    return profile, counts["ok"]


def profile_lines(profile: StageProfile, n: int) -> list[str]:
    """The per-stage table of a profile."""
    rows = profile.rows(n)
    lines = [f"{'thread':<8} {'stage':<52} {'CPU ms/study':>12}"]
    for role in ("compute", "writer", "encoder"):
        mine = [r for r in rows if r[0] == role]
        lines += [f"{r:<8} {s:<52} {ms:12.1f}" for r, s, ms in mine]
        if role != "encoder":
            lines.append(f"{role:<8} {'= ' + role + ' thread total':<52} {sum(ms for _, _, ms in mine):12.1f}")
    total = sum(ms for _, _, ms in rows)
    model = sum(ms for _, s, ms in rows if s.startswith("model"))
    lines.append(f"{'both':<8} {'= total (model ' + f'{model:.1f}, the rest {total - model:.1f})':<52} {total:12.1f}")
    return lines


def gil_probe(network: torch.nn.Module, folder: Path, seconds: float = 2.0) -> dict[str, float]:
    """How fast the compute thread runs the bundle's network while the writer thread writes overlays, relative to
    alone: the network's forward pass on a 64 x 64 x 16 cine in a loop for ``seconds`` in the main thread, alone and
    with a background thread writing one study's Secondary Capture overlay (:func:`save_cine_overlay_sc`) again and
    again in each compression. A writer whose encoder holds Python's global interpreter lock (GIL) stops the compute
    thread's Python work while it encodes, however many cores are free; one that releases it (zlib) only shares the
    cores; the worker-process cases encode in a worker process (:func:`encode_in_worker_process`, what the bundle's
    background writer does). Returns ``{"alone": forward passes per second, <case>: fraction of that}``."""
    from monai_saliency.data.dicom.encoding import encode_in_worker_process
    from monai_saliency.data.synthetic.angiogram import make_angiogram_dataset
    from monai_saliency.visualize.secondary_capture import save_cine_overlay_sc

    network = network.eval()
    cine = torch.as_tensor(make_angiogram_dataset(1, shape=(64, 64), frames=16, seed=7).cine[0]).float()
    x = cine[None, None]

    def rate() -> float:
        count, t0 = 0, time.perf_counter()
        with torch.no_grad():
            while time.perf_counter() - t0 < seconds:
                network(x)
                count += 1
        return count / (time.perf_counter() - t0)

    alone = rate()
    out = {"alone": alone}
    for name in (
        "jpegls in the thread",
        "jpegls in a worker process",
        "jpeg2000 in the thread",
        "jpeg2000 in a worker process",
        "deflate",
    ):
        stop = threading.Event()
        compression = name.split()[0]
        where = encode_in_worker_process if "worker" in name else contextlib.nullcontext

        def write(compression: str = compression, stop: threading.Event = stop, where=where) -> None:
            with where():
                while not stop.is_set():
                    save_cine_overlay_sc(cine, cine, folder / "probe.dcm", frame_time_ms=66.7, compression=compression)

        thread = threading.Thread(target=write, daemon=True)
        thread.start()
        out[name] = rate() / alone
        stop.set()
        thread.join()
    return out


def time_commits(cohort, model_seconds) -> list[tuple[float, float]]:
    """Record, at every study's commit of ``cohort`` (its ``commit`` wrapped), the time and ``model_seconds()`` (the
    model time so far); returns the list it fills."""
    times: list[tuple[float, float]] = []
    commit = cohort.commit

    def timed(*args, **kwargs):
        commit(*args, **kwargs)
        times.append((time.perf_counter(), model_seconds()))

    cohort.commit = timed
    return times


def steady_rate(times: list[tuple[float, float]]) -> tuple[float, int, float] | None:
    """Studies per minute between the commits after the first third of a run (at most 8 skipped: the writer process's
    start, about 4 s of imports, and first-call costs) and the last one, how many commits were skipped, and the model
    fraction over that span; None for fewer than 6 commits."""
    if len(times) < 6:
        return None
    skip = min(8, len(times) // 3)
    (t0, m0), (t1, m1) = times[skip], times[-1]
    return 60.0 * (len(times) - 1 - skip) / (t1 - t0), skip, (m1 - m0) / (t1 - t0)


def process_lines(rows: list[dict], process_name: str, thread_name: str) -> list[str]:
    """The comparison of the writer-process row ``process_name`` with the writer-thread row ``thread_name`` of the same
    studies (none if either was not run, or they are rows of different studies)."""
    proc = next((r for r in rows if r["name"] == process_name), None)
    thread = next((r for r in rows if r["name"] == thread_name), None)
    if proc is None or thread is None or proc["n"] != thread["n"]:
        return []
    rate_p, rate_t = 60 * proc["n"] / proc["wall"], 60 * thread["n"] / thread["wall"]
    text = (
        f"writer process against writer thread ({proc['n']} studies): {rate_p:.1f} against {rate_t:.1f} studies/min "
        f"(x{rate_p / rate_t:.2f}, the child's start included)"
    )
    if proc.get("steady") and thread.get("steady"):
        text += (
            f"; steady state {proc['steady'][0]:.1f} against {thread['steady'][0]:.1f} studies/min "
            f"(x{proc['steady'][0] / thread['steady'][0]:.2f}), model fraction {100 * proc['steady'][2]:.1f} % "
            f"against {100 * thread['steady'][2]:.1f} %"
        )
    return [text]
