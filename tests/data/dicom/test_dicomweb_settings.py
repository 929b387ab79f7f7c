"""DICOMweb settings that need no server: credentials from the environment only, contradictory overrides refused.

The round trip against a real Orthanc is in ``tests/pacs/test_pacs_round_trip.py``.
"""

from __future__ import annotations

import pytest

from monai_saliency.data.dicom.dicomweb import (
    ENV_PASSWORD,
    ENV_TOKEN,
    ENV_USER,
    STAGING_DIR,
    DICOMwebSource,
    connect,
    session_from_env,
)

URL = "http://127.0.0.1:8042/dicom-web"


def test_bearer_token_and_basic_auth_come_from_the_environment():
    assert session_from_env({ENV_TOKEN: "abc"}).headers["Authorization"] == "Bearer abc"
    basic = session_from_env({ENV_USER: "ann", ENV_PASSWORD: "pw"})
    assert basic.auth == ("ann", "pw") and "Authorization" not in basic.headers
    none = session_from_env({})
    assert none.auth is None and "Authorization" not in none.headers
    client = connect(URL, {ENV_TOKEN: "abc"})
    assert client._session.headers["Authorization"] == "Bearer abc"  # what every request of the client sends


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({ENV_TOKEN: "abc", ENV_USER: "ann", ENV_PASSWORD: "pw"}, "not both"),
        ({ENV_USER: "ann"}, "needs both"),
        ({ENV_PASSWORD: "pw"}, "needs both"),
    ],
)
def test_incomplete_or_conflicting_credentials_are_refused(environ, message):
    with pytest.raises(ValueError, match=message):
        session_from_env(environ)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("http://ann:pw@127.0.0.1:8042/dicom-web", "must not contain credentials"),
        ("127.0.0.1:8042/dicom-web", "http"),
        ("ftp://pacs/dicom-web", "http"),
    ],
)
def test_urls_with_credentials_or_without_http_are_refused(url, message):
    with pytest.raises(ValueError, match=message):
        connect(url, {})


def test_contradictory_overrides_are_refused_before_the_run(tmp_path):
    source = DICOMwebSource(URL, tmp_path)
    source.check(tmp_path / STAGING_DIR, store=True)  # the fetched folder: fine
    with pytest.raises(ValueError, match="--dicomweb_url .* and --dataset_dir .* are exclusive"):
        source.check(tmp_path / "my_cines")
    with pytest.raises(ValueError, match="--store_results true needs --dicomweb_url"):
        DICOMwebSource("", tmp_path).check(tmp_path / "my_cines", store=True)
    DICOMwebSource("", tmp_path).check(tmp_path / "my_cines")  # no server: the folder as before
    with pytest.raises(ValueError, match="none were"):
        source.store()  # nothing fetched: nothing to store


def test_storing_from_several_processes_is_refused(tmp_path, monkeypatch):
    """Under torchrun each process sees its own shard of the results: storing is for single-process runs."""
    import torch.distributed as dist

    source = DICOMwebSource(URL, tmp_path)
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "get_world_size", lambda: 2)
    with pytest.raises(ValueError, match="single process"):
        source.check(tmp_path / STAGING_DIR, store=True)
    source.check(tmp_path / STAGING_DIR)  # fetching under torchrun is fine


@pytest.mark.parametrize("bad", [1.2, ["1.2", 3], ["1.2.3/../x"], "abc"])
def test_study_uids_must_be_uids(tmp_path, bad):
    with pytest.raises(ValueError, match="--study_uids must be a list of StudyInstanceUIDs"):
        DICOMwebSource(URL, tmp_path, bad)


def test_study_uids_forms(tmp_path):
    assert DICOMwebSource(URL, tmp_path, "1.2.3").study_uids == ["1.2.3"]
    assert DICOMwebSource(URL, tmp_path, ("1.2.3", "4.5")).study_uids == ["1.2.3", "4.5"]
    assert DICOMwebSource(URL, tmp_path, []).study_uids is None  # every study of the modality
