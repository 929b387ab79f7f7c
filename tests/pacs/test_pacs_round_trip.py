"""PACS round trip of the angiogram bundle against a real Orthanc (DICOMweb): studies from the server, results back.

One Orthanc per module (``tests/pacs/conftest.py``); the sample cines are uploaded once (STOW-RS with
dicomweb-client) and the bundle runs once from the server in a subprocess, as a user would run it.
"""

from __future__ import annotations

import csv
import re
import shlex
from pathlib import Path

import numpy as np
import pydicom
import pytest
import requests
from dicomweb_client.api import DICOMwebClient
from pydicom.data import get_testdata_file

from monai_saliency.data.dicom.detect import is_dicom_file
from monai_saliency.data.dicom.dicomweb import ENV_TOKEN, DICOMwebError, DICOMwebSource
from monai_saliency.data.dicom.dicomweb import main as dicomweb_main
from tests.bundles.conftest import run_bundle
from tests.pacs.conftest import USERS, OrthancServer, free_port

NAME = "angiogram_signature_activation"
BUNDLE = Path(__file__).resolve().parents[2] / "bundles" / NAME
SAMPLE = BUNDLE / "sample_data"
README = Path(__file__).resolve().parents[2] / "README.md"
README_URL = "http://localhost:8042/dicom-web"
CONFIG = "configs/inference.json"


def _client(url: str, user: str = "writer") -> DICOMwebClient:
    session = requests.Session()
    session.auth = (user, USERS[user])
    return DICOMwebClient(url=url, session=session)


def _results(output_dir: Path) -> list[Path]:
    """DICOM objects written by a run (by content, outside the hidden staging folders)."""
    return [
        p
        for p in sorted(output_dir.rglob("*"))
        if not any(part.startswith(".") for part in p.relative_to(output_dir).parts) and is_dicom_file(p)
    ]


def _env(user: str) -> dict[str, str]:
    return {ENV_TOKEN: "", **OrthancServer.env(user)}  # credentials from the environment only


def _run(url: str, output_dir: Path, *args: str, user: str = "writer"):
    env = _env(user)
    return run_bundle(
        NAME, "--config_file", CONFIG, "--dicomweb_url", url, "--output_dir", str(output_dir), *args, env=env
    )


def readme_commands() -> list[list[str]]:
    """The README's PACS round trip, one argument list per command (``\\`` continuations joined)."""
    text = README.read_text()
    block = re.search(r"```text\n(sudo apt-get install orthanc.*?)```", text, flags=re.DOTALL)
    assert block, "README.md lost its PACS round trip"
    return [shlex.split(c) for c in block.group(1).replace("\\\n", " ").strip().splitlines()]


def _on(url: str, args: list[str]) -> list[str]:
    """``args`` with the README's server replaced by the test's Orthanc."""
    assert README_URL in args
    return [url if a == README_URL else a for a in args]


@pytest.fixture(scope="module")
def sources(orthanc) -> dict[str, pydicom.Dataset]:
    """The sample XA cines, uploaded by the README's command (STOW-RS with dicomweb-client), and pydicom's
    CT_small.dcm; ``{SOPInstanceUID: dataset}`` of the XA ones."""
    _, upload, _ = readme_commands()
    assert upload[:4] == ["python", "-m", "monai_saliency.data.dicom.dicomweb", "store"]
    files = [str(f) for arg in upload[5:] for f in sorted(BUNDLE.glob(arg))]  # the shell's glob, in the bundle
    assert sorted(files) == sorted(map(str, SAMPLE.glob("*.dcm"))) and files
    with pytest.MonkeyPatch.context() as env:
        for key, value in OrthancServer.env().items():
            env.setenv(key, value)
        env.delenv(ENV_TOKEN, raising=False)
        assert dicomweb_main(_on(orthanc.url, upload[3:5]) + files) == 0
    response = _client(orthanc.url).store_instances([pydicom.dcmread(get_testdata_file("CT_small.dcm"))])
    assert not response.get("FailedSOPSequence")
    return {str(ds.SOPInstanceUID): ds for ds in map(pydicom.dcmread, files)}


@pytest.fixture(scope="module")
def round_trip(orthanc, sources, tmp_path_factory):
    """The README's bundle run: every XA study of the server in, every result object back."""
    out = tmp_path_factory.mktemp("pacs_run")
    _, _, run = readme_commands()
    assert run[:4] == ["python", "-m", "monai.bundle", "run"] and run[-2:] == ["--store_results", "true"]
    args = _on(orthanc.url, run[4:])
    assert args[:2] == ["--config_file", CONFIG] and args[2:4] == ["--bundle_root", "."]
    res = run_bundle(NAME, *args[4:], "--config_file", CONFIG, "--output_dir", str(out), env=_env("writer"))
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-4000:]
    return out, res


def test_studies_come_from_the_server(round_trip, sources):
    out, res = round_trip
    staged = sorted((out / ".dicomweb").glob("*.dcm"))
    assert {p.stem for p in staged} == set(sources)  # every XA study, named by UID; the CT study is not fetched
    for path in staged:  # Part 10 files identical in content to what was uploaded
        ds, src = pydicom.dcmread(path), sources[path.stem]
        assert ds.file_meta.TransferSyntaxUID and ds.StudyInstanceUID == src.StudyInstanceUID
        np.testing.assert_array_equal(ds.pixel_array, src.pixel_array)
    with open(out / "predictions.csv") as f:
        rows = [r for r in csv.reader(f) if r[0] != "study"]  # without the header row, if any
    assert sorted(Path(r[0]).stem for r in rows) == sorted(sources)
    assert "fetched 4 XA studies" in res.stdout and "stored 8 result objects" in res.stdout  # derived XA + SC


def test_results_are_on_the_server_and_reference_their_sources(round_trip, sources, orthanc):
    out, _ = round_trip
    client = _client(orthanc.url)
    local = _results(out)
    overlays = [p for p in local if p.name.endswith("_overlay.dcm")]  # the Secondary Capture of each cine
    local = [p for p in local if p not in overlays]
    assert len(local) == len(overlays) == len(sources)  # one derived XA and one Secondary Capture per cine
    for path in overlays:  # on the server too, in the source's study
        sc = pydicom.dcmread(path, stop_before_pixels=True)
        assert str(sc.SourceImageSequence[0].ReferencedSOPInstanceUID) in sources
        found = client.search_for_instances(
            study_instance_uid=sc.StudyInstanceUID, series_instance_uid=sc.SeriesInstanceUID
        )
        assert [i["00080018"]["Value"][0] for i in found] == [sc.SOPInstanceUID]
    for path in local:
        written = pydicom.dcmread(path)
        source = sources[str(written.SourceImageSequence[0].ReferencedSOPInstanceUID)]
        assert written.StudyInstanceUID == source.StudyInstanceUID
        found = client.search_for_instances(
            study_instance_uid=written.StudyInstanceUID,
            series_instance_uid=written.SeriesInstanceUID,
        )
        assert [i["00080018"]["Value"][0] for i in found] == [written.SOPInstanceUID]  # QIDO finds it
        served = client.retrieve_instance(
            written.StudyInstanceUID, written.SeriesInstanceUID, written.SOPInstanceUID
        )  # WADO-RS
        assert served.SourceImageSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert served.SourceImageSequence[0].ReferencedSOPClassUID == source.SOPClassUID
        series_ref = served.ReferencedSeriesSequence[0]
        assert series_ref.SeriesInstanceUID == source.SeriesInstanceUID
        assert series_ref.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        assert served.SeriesInstanceUID != source.SeriesInstanceUID
        assert served.pixel_array.dtype == written.pixel_array.dtype
        np.testing.assert_array_equal(served.pixel_array, written.pixel_array)


def test_a_rejected_store_keeps_the_results_and_fails(round_trip, sources, orthanc, tmp_path):
    """``reader`` may retrieve but not store (HTTP 403): the run writes its results, says which were not stored,
    and exits non-zero. Runs after the round trip, so the study also holds the derived series of that run, which is
    a result and not an input: it is not fetched again."""
    study = next(iter(sources.values())).StudyInstanceUID
    client = _client(orthanc.url)
    before = len(client.search_for_instances(study_instance_uid=study))
    res = _run(orthanc.url, tmp_path, "--study_uids", f"['{study}']", "--store_results", "true", user="reader")
    assert res.returncode != 0
    assert (
        "2 of 2 result objects were not stored" in res.stderr
    )  # derived XA + Secondary Capture and "HTTP 403" in res.stderr
    assert str(tmp_path.resolve()) in res.stderr  # the message says where the results are
    assert len(_results(tmp_path)) == 2 and (tmp_path / "predictions.csv").is_file()
    assert len(list((tmp_path / ".dicomweb").glob("*.dcm"))) == 1  # the source only, not the derived series
    assert len(client.search_for_instances(study_instance_uid=study)) == before


def test_bad_server_input_is_refused_by_the_bundle(orthanc, sources, tmp_path):
    """One subprocess for the exit code and message on the command line (a closed port); the other cases in
    process below, where they cost no interpreter start."""
    res = _run(f"http://127.0.0.1:{free_port()}/dicom-web", tmp_path / "out")
    assert res.returncode != 0
    assert "cannot be reached" in res.stderr and "--dicomweb_url" in res.stderr
    assert not _results(tmp_path)


@pytest.mark.parametrize(
    ("study", "message"),
    [
        ("1.2.826.0.1.3680043.8.498.1", "is not on"),  # unknown StudyInstanceUID
        ("ct", "has no XA series (its series: CT"),  # pydicom's CT_small.dcm: the wrong modality, refused by name
    ],
)
def test_unknown_study_and_wrong_modality(orthanc, sources, tmp_path, monkeypatch, study, message):
    if study == "ct":
        study = str(pydicom.dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True).StudyInstanceUID)
    for key, value in orthanc.env().items():
        monkeypatch.setenv(key, value)
    with pytest.raises(DICOMwebError, match=message.replace("(", r"\(")):
        DICOMwebSource(orthanc.url, tmp_path, [study]).fetch()
    assert not list(tmp_path.rglob("*.dcm"))


def test_credentials_are_required_and_checked(orthanc, sources, tmp_path, monkeypatch):
    monkeypatch.delenv("MONAI_SALIENCY_DICOMWEB_USER", raising=False)
    monkeypatch.setenv(ENV_TOKEN, "not-a-token-orthanc-knows")
    with pytest.raises(DICOMwebError, match="HTTP 401.*MONAI_SALIENCY_DICOMWEB_TOKEN"):
        DICOMwebSource(orthanc.url, tmp_path).fetch()


def test_documented_overrides_exist():
    """Every ``--override`` of the PACS commands in the bundle's docs and the README is a key of the bundle config
    (a misspelt override would silently add an unused key); needs no server."""
    import json

    keys = set(json.loads((BUNDLE / CONFIG).read_text())) | {"config_file", "bundle_root"}
    docs = (BUNDLE / "docs" / "README.md").read_text()
    start = docs.index("## From a PACS (DICOMweb)")
    section = docs[start : docs.index("\n## ", start)]  # up to the next section
    used = set(re.findall(r"--(\w+)", section + " ".join(" ".join(c) for c in readme_commands())))
    assert {"dicomweb_url", "study_uids", "store_results"} <= used <= keys, used - keys


def test_instances_come_in_their_stored_transfer_syntax(round_trip, orthanc, tmp_path, monkeypatch):
    """An RLE-compressed cine (a new study, uploaded after the round trip) is fetched as stored, not transcoded."""
    from pydicom.uid import RLELossless, generate_uid

    ds = pydicom.dcmread(min(SAMPLE.glob("*.dcm")))
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = generate_uid(), generate_uid(), generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.compress(RLELossless)
    assert not _client(orthanc.url).store_instances([ds]).get("FailedSOPSequence")
    for key, value in orthanc.env().items():
        monkeypatch.setenv(key, value)
    DICOMwebSource(orthanc.url, tmp_path, [ds.StudyInstanceUID]).fetch()
    staged = pydicom.dcmread(tmp_path / ".dicomweb" / f"{ds.SOPInstanceUID}.dcm")
    assert staged.file_meta.TransferSyntaxUID == RLELossless
    np.testing.assert_array_equal(staged.pixel_array, ds.pixel_array)
