"""PACS round trip of the PET bundle against a real Orthanc (DICOMweb): PT series from the server, results back.

One Orthanc per module (``tests/pacs/conftest.py``). Two subjects of the PET sample study (2 studies, 16 PT series of
16 slices) are uploaded once; the targets file names each series by its SeriesInstanceUID; the bundle runs once
from the server in a subprocess with ``--store_results true``, as a user would run it.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient

from monai_saliency.data.dicom.detect import is_dicom_file
from monai_saliency.data.dicom.dicomweb import ENV_TOKEN
from tests.bundles.conftest import run_bundle
from tests.pacs.conftest import USERS, OrthancServer

NAME = "pet_morch_saliency"
SAMPLE = Path(__file__).resolve().parents[2] / "bundles" / NAME / "sample_data"
SUBJECTS = ("sub-01", "sub-02")
CONFIG = "configs/inference.json"


def _client(url: str) -> DICOMwebClient:
    session = requests.Session()
    session.auth = ("writer", USERS["writer"])
    return DICOMwebClient(url=url, session=session)


def _run(url: str, output_dir: Path, targets: Path, *args: str):
    env = {ENV_TOKEN: "", **OrthancServer.env("writer")}  # credentials from the environment only
    return run_bundle(
        NAME,
        "--config_file",
        CONFIG,
        "--dicomweb_url",
        url,
        "--targets_file",
        str(targets),
        "--output_dir",
        str(output_dir),
        *args,
        env=env,
    )


def _targets(path: Path, rows: list[tuple[str, str]]) -> Path:
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([("scan", "target"), *rows])
    return path


@pytest.fixture(scope="module")
def uploaded(orthanc) -> dict[str, dict[str, str]]:
    """The PT series of two sample subjects on the server; ``{SeriesInstanceUID: its row of the sample's
    targets.csv}`` in the file's order."""
    with open(SAMPLE / "targets.csv", newline="") as f:
        rows = [r for r in csv.DictReader(f) if r["scan"].split("/")[0] in SUBJECTS]
    client, series = _client(orthanc.url), {}
    for row in rows:
        datasets = [pydicom.dcmread(p) for p in sorted((SAMPLE / row["scan"]).glob("*.dcm"))]
        assert not client.store_instances(datasets).get("FailedSOPSequence")
        series[str(datasets[0].SeriesInstanceUID)] = row
    assert len(series) == 8 * len(SUBJECTS)
    return series


@pytest.fixture(scope="module")
def round_trip(orthanc, uploaded, tmp_path_factory):
    """One bundle run: every study with a PT series (no --study_uids), the listed series in, the results back."""
    work = tmp_path_factory.mktemp("pet_pacs")
    targets = _targets(work / "targets.csv", [(uid, row["target"]) for uid, row in uploaded.items()])
    res = _run(orthanc.url, work / "out", targets, "--store_results", "true")
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    return work / "out", res


def test_series_come_from_the_server(round_trip, uploaded):
    out, res = round_trip
    staged = out / ".dicomweb"
    assert {p.name for p in staged.iterdir()} == set(uploaded)  # one folder per listed series, named by its UID
    for uid in list(uploaded)[:2]:
        fetched = {d.SOPInstanceUID: d for d in map(pydicom.dcmread, staged.glob(f"{uid}/*.dcm"))}
        sample = {d.SOPInstanceUID: d for d in map(pydicom.dcmread, (SAMPLE / uploaded[uid]["scan"]).glob("*.dcm"))}
        assert len(fetched) == 16 and fetched.keys() == sample.keys()
        for sop, ds in fetched.items():
            np.testing.assert_array_equal(ds.pixel_array, sample[sop].pixel_array)
    assert f"fetched {len(SUBJECTS)} PT studies ({16 * len(uploaded)} instances)" in res.stdout
    summary = (out / "morch_maps" / "summary.json").read_text()
    assert '"scans": 16' in summary


def test_results_are_on_the_server_reference_their_series_and_give_the_same_pixels(round_trip, uploaded, orthanc):
    out, res = round_trip
    written = [p for p in sorted((out / "morch_maps").iterdir()) if is_dicom_file(p)]
    maps = [p for p in written if not p.name.endswith("_overlay.dcm")]
    overlays = [p for p in written if p.name.endswith("_overlay.dcm")]
    assert [p.name for p in maps] == ["morch_exact.dcm", "morch_first.dcm", "morch_second.dcm"]
    assert [p.name for p in overlays] == ["morch_exact_overlay.dcm"]
    assert f"stored {len(written)} result objects" in res.stdout
    client = _client(orthanc.url)
    fetched = {p.stem: p.parent.name for p in (out / ".dicomweb").glob("*/*.dcm")}  # {SOP UID: series UID}
    for path in written:
        local = pydicom.dcmread(path)
        sources = {fetched[str(i.ReferencedSOPInstanceUID)] for i in local.SourceImageSequence}
        assert len(sources) == 1 and sources <= set(uploaded)  # references fetched instances of one PT series ...
        series = sources.pop()
        if "ReferencedSeriesSequence" in local:  # Parametric Map: also the series itself
            assert local.ReferencedSeriesSequence[0].SeriesInstanceUID == series
        source = pydicom.dcmread(next((out / ".dicomweb" / series).glob("*.dcm")), stop_before_pixels=True)
        assert local.StudyInstanceUID == source.StudyInstanceUID  # ... and lies in its study
        assert local.SeriesInstanceUID not in uploaded
        found = client.search_for_instances(
            study_instance_uid=local.StudyInstanceUID, series_instance_uid=local.SeriesInstanceUID
        )  # QIDO-RS
        assert [i["00080018"]["Value"][0] for i in found] == [local.SOPInstanceUID]
        served = client.retrieve_instance(local.StudyInstanceUID, local.SeriesInstanceUID, local.SOPInstanceUID)
        assert served.SOPClassUID == local.SOPClassUID
        assert served.SourceImageSequence == local.SourceImageSequence
        assert served.pixel_array.dtype == local.pixel_array.dtype
        np.testing.assert_array_equal(served.pixel_array, local.pixel_array)  # WADO-RS: the same pixels


def test_a_series_not_on_the_server_is_refused_by_name(orthanc, uploaded, tmp_path):
    """A targets row naming a series the server does not have: one clear line, exit non-zero, nothing retrieved."""
    absent = "1.2.826.0.1.3680043.8.498.99999"
    listed = [(uid, row["target"]) for uid, row in uploaded.items()][:3]
    targets = _targets(tmp_path / "targets.csv", [*listed, (absent, "1")])
    res = _run(orthanc.url, tmp_path / "out", targets)
    assert res.returncode != 0
    assert f"1 series listed in the targets file {targets.resolve()} is not PT series on {orthanc.url}" in res.stderr
    assert absent in res.stderr and "Traceback" not in res.stderr
    assert not list((tmp_path / "out").rglob("*.dcm"))


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (None, "--dicomweb_url needs --targets_file"),  # no targets file given
        ([("sub-01/scan-01", "1"), ("sub-01/scan-02", "-1")], "names each PT series by its SeriesInstanceUID"),
    ],
)
def test_targets_file_is_required_and_keyed_by_series_uid(tmp_path, rows, message):
    """Refused when the run is configured, before any request (needs no server)."""
    from tests.bundles.conftest import load_bundle_scripts

    pacs = load_bundle_scripts(NAME, "pacs")
    targets = None if rows is None else _targets(tmp_path / "t.csv", rows)
    with pytest.raises(ValueError, match=message):
        pacs.PETDICOMweb("http://127.0.0.1:9/dicom-web", tmp_path / "out", None, targets)
    assert pacs.PETDICOMweb("", tmp_path / "out", None, "t.csv").targets_file == "t.csv"  # no server: unchanged


def test_documented_overrides_exist():
    """Every ``--override`` of the PACS section of the bundle's docs is a key of its config (needs no server)."""
    import json
    import re

    bundle = SAMPLE.parent
    keys = set(json.loads((bundle / CONFIG).read_text())) | {"config_file", "bundle_root"}
    docs = (bundle / "docs" / "README.md").read_text()
    section = docs[docs.index("## From a PACS (DICOMweb)") : docs.index("## Runs, reruns, failures")]
    used = set(re.findall(r"--(\w+)", section))
    assert {"dicomweb_url", "study_uids", "store_results", "targets_file"} <= used <= keys, used - keys
