"""JPEG 2000 / RLE encoding in a worker process (``encode_in_worker_process``, used by the evaluator's background
writer): the same bytes as encoding in the thread, done in another process, a dead worker costs nothing, and the
calling process's other threads keep running while it encodes (openjpeg holds the GIL when it encodes in-process)."""

from __future__ import annotations

import contextlib
import os
import threading
import time

import numpy as np
import pydicom
import pytest
import torch

from monai_saliency.data.dicom import encoding
from monai_saliency.data.dicom.encoding import encode_in_worker_process
from monai_saliency.data.dicom.secondary_capture import write_secondary_capture
from monai_saliency.data.dicom.xa_writer import write_xa_cine, write_xa_derived

RGB = np.random.default_rng(0).integers(0, 256, (3, 40, 64, 3), dtype=np.uint8)


def _sc(path, compression, worker: bool):
    with encode_in_worker_process() if worker else contextlib.nullcontext():
        return pydicom.dcmread(write_secondary_capture(RGB, path, frame_time_ms=66.7, compression=compression))


@pytest.mark.parametrize("compression", ["jpegls", "jpeg2000", "rle"])
def test_same_bytes_from_the_worker_process(tmp_path, compression):
    here = _sc(tmp_path / "here.dcm", compression, worker=False)
    there = _sc(tmp_path / "there.dcm", compression, worker=True)
    assert there.file_meta.TransferSyntaxUID == here.file_meta.TransferSyntaxUID
    assert there.PixelData == here.PixelData and there.PhotometricInterpretation == here.PhotometricInterpretation
    np.testing.assert_array_equal(there.pixel_array, RGB)
    proc = encoding._WORKER.proc
    assert proc is not None and proc.poll() is None and proc.pid != os.getpid()  # encoded in another process
    source = write_xa_cine(np.random.default_rng(1).uniform(0.1, 0.9, (3, 48, 40)), tmp_path / "cine.dcm")
    sal = torch.rand(1, 3, 48, 40, generator=torch.Generator().manual_seed(2))
    plain = pydicom.dcmread(write_xa_derived(sal, source, tmp_path / "a.dcm", compression=compression))
    with encode_in_worker_process():
        moved = pydicom.dcmread(write_xa_derived(sal, source, tmp_path / "b.dcm", compression=compression))
    assert moved.PixelData == plain.PixelData  # 16-bit grey frames too


def test_a_dead_worker_is_replaced_or_bypassed(tmp_path):
    want = _sc(tmp_path / "want.dcm", "jpeg2000", worker=False).PixelData
    assert _sc(tmp_path / "a.dcm", "jpeg2000", worker=True).PixelData == want
    encoding._WORKER.proc.kill()
    encoding._WORKER.proc.wait()
    assert _sc(tmp_path / "b.dcm", "jpeg2000", worker=True).PixelData == want  # a new worker is started
    encoding._WORKER.close()
    assert encoding._WORKER.proc is None


def test_other_threads_keep_running_while_the_worker_encodes(tmp_path):
    """A background thread writes the same JPEG 2000 capture (two 512 x 512 RGB frames) over and over; the main
    thread sleeps 1 ms again and again and records how late it wakes (waking needs the GIL). In-thread, openjpeg holds
    the GIL for a whole frame (~0.1 s here), so one wake-up in ten or more comes that late; with the worker process
    the main thread wakes on time (the 90th percentile of the delays at least 4x shorter, whatever the cores)."""
    frames = np.random.default_rng(3).integers(0, 256, (2, 512, 512, 3), dtype=np.uint8)

    def wake_delay_p90(worker: bool) -> float:
        stop = threading.Event()

        def write() -> None:
            with encode_in_worker_process() if worker else contextlib.nullcontext():
                while not stop.is_set():
                    write_secondary_capture(frames, tmp_path / "bg.dcm", frame_time_ms=66.7, compression="jpeg2000")

        thread = threading.Thread(target=write, daemon=True)
        thread.start()
        time.sleep(0.2)  # the writer is encoding
        delays, end = [], time.perf_counter() + 1.5
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            time.sleep(0.001)
            delays.append(time.perf_counter() - t0)
        stop.set()
        thread.join()
        return float(np.percentile(delays, 90))

    _sc(tmp_path / "warm.dcm", "jpeg2000", worker=True)  # the worker is up
    in_thread, in_worker = wake_delay_p90(False), wake_delay_p90(True)
    assert in_thread > 0.02 and in_worker * 4 < in_thread, (in_worker, in_thread)


@pytest.mark.parametrize("chunk", [1, 2 * 40 * 64 * 3])  # one frame per request; two frames, then one
def test_frames_sent_in_chunks_give_the_same_bytes(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(encoding, "_CHUNK_BYTES", chunk)
    here = _sc(tmp_path / "here.dcm", "jpeg2000", worker=False)
    there = _sc(tmp_path / "there.dcm", "jpeg2000", worker=True)
    assert there.PixelData == here.PixelData and int(there.NumberOfFrames) == 3
    single = RGB[0]  # a single-frame capture
    a = pydicom.dcmread(write_secondary_capture(single, tmp_path / "a.dcm", compression="jpeg2000"))
    with encode_in_worker_process():
        b = pydicom.dcmread(write_secondary_capture(single, tmp_path / "b.dcm", compression="jpeg2000"))
    assert a.PixelData == b.PixelData
    np.testing.assert_array_equal(b.pixel_array, single)
