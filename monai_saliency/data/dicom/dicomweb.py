"""Studies from a DICOMweb server (a PACS) and results back to it: QIDO-RS search, WADO-RS retrieve, STOW-RS store.

All HTTP goes through `dicomweb-client <https://github.com/ImagingDataCommons/dicomweb-client>`_. Credentials come
from environment variables only, never from the command line or the URL:

* ``MONAI_SALIENCY_DICOMWEB_TOKEN``: a bearer token (``Authorization: Bearer <token>``), or
* ``MONAI_SALIENCY_DICOMWEB_USER`` and ``MONAI_SALIENCY_DICOMWEB_PASSWORD``: HTTP basic authentication.

A bundle uses :class:`DICOMwebSource`: :meth:`DICOMwebSource.fetch` writes the studies as DICOM Part 10 files into a
hidden staging folder of the run's ``output_dir`` (``.dicomweb/<SOPInstanceUID>.dcm``, or
``.dicomweb/<SeriesInstanceUID>/<SOPInstanceUID>.dcm`` for bundles that read a series folder) and returns that folder,
which becomes the bundle's ``dataset_dir``; :meth:`DICOMwebSource.store` sends every DICOM object the run wrote
for those studies back to the server.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import urlsplit

import pydicom
import requests
import torch.distributed as dist
from dicomweb_client.api import DICOMwebClient

from monai_saliency.data.atomic import atomic_output
from monai_saliency.data.dicom.detect import is_dicom_file

__all__ = [
    "ENV_PASSWORD",
    "ENV_TOKEN",
    "ENV_USER",
    "STAGING_DIR",
    "DICOMwebError",
    "DICOMwebSource",
    "DICOMwebStoreError",
    "connect",
    "fetch_studies",
    "main",
    "session_from_env",
    "store_files",
    "store_results",
]

ENV_TOKEN = "MONAI_SALIENCY_DICOMWEB_TOKEN"
ENV_USER = "MONAI_SALIENCY_DICOMWEB_USER"
ENV_PASSWORD = "MONAI_SALIENCY_DICOMWEB_PASSWORD"
STAGING_DIR = ".dicomweb"
_MODALITY = "00080060"
_STUDY_UID = "0020000D"
_SERIES_UID = "0020000E"
_SERIES_DESCRIPTION = "0008103E"
_RESULT_IMAGE_TYPE = ["DERIVED", "SECONDARY"]
_UID = re.compile(r"[0-9]+(\.[0-9]+)*")
# WADO-RS in the stored transfer syntax: no transcoding (lossy or refused) by the server; pydicom decodes
_AS_STORED = (("application/dicom", "*"),)

logger = logging.getLogger(__name__)


class DICOMwebError(RuntimeError):
    """A DICOMweb server cannot be used as asked (unreachable, refused credentials, unknown study, wrong modality)."""


class DICOMwebStoreError(DICOMwebError):
    """The server did not store some result objects; they stay on disk (listed in the message)."""


def session_from_env(environ: Mapping[str, str] | None = None) -> requests.Session:
    """A ``requests.Session`` carrying the credentials of the environment variables (none if they are unset).

    Args:
        environ: the environment (default ``os.environ``).

    Returns:
        A session with ``Authorization: Bearer <token>`` for ``MONAI_SALIENCY_DICOMWEB_TOKEN``, or basic
        authentication for ``MONAI_SALIENCY_DICOMWEB_USER`` / ``MONAI_SALIENCY_DICOMWEB_PASSWORD``.

    Raises:
        ValueError: if both a token and a user are set, or a user without a password (or the reverse).
    """
    env = os.environ if environ is None else environ
    token, user, password = env.get(ENV_TOKEN), env.get(ENV_USER), env.get(ENV_PASSWORD)
    session = requests.Session()
    if token and (user or password):
        raise ValueError(f"set either {ENV_TOKEN} or {ENV_USER}/{ENV_PASSWORD}, not both.")
    if token:
        session.headers["Authorization"] = f"Bearer {token}"
    elif user or password:
        if not (user and password):
            raise ValueError(f"basic authentication needs both {ENV_USER} and {ENV_PASSWORD}.")
        session.auth = (user, password)
    return session


def connect(url: str, environ: Mapping[str, str] | None = None, attempts: int = 3) -> DICOMwebClient:
    """A ``DICOMwebClient`` for the DICOMweb root ``url`` with the credentials of the environment.

    Args:
        url: the DICOMweb root, e.g. ``https://pacs.example.org/dicom-web``.
        environ: the environment (default ``os.environ``), see :func:`session_from_env`.
        attempts: tries per request on a connection error or HTTP 408/429/503/504, 1 s then 2 s apart
            (dicomweb-client's default of 5 tries waits 30 s before reporting an unreachable server).

    Raises:
        ValueError: if ``url`` is not an http(s) URL, or carries credentials (``user:password@host``: they would
            show in the process list and shell history; use the environment variables).
    """
    parts = urlsplit(str(url))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"--dicomweb_url must be the http(s) root of a DICOMweb service, got {url!r}.")
    if parts.username or parts.password:
        raise ValueError(
            f"--dicomweb_url must not contain credentials; set {ENV_TOKEN}, or {ENV_USER} and {ENV_PASSWORD}, "
            "in the environment instead."
        )
    client = DICOMwebClient(url=str(url).rstrip("/"), session=session_from_env(environ))
    client.set_http_retry_params(max_attempts=attempts, wait_exponential_multiplier=500)
    return client


def _explain(url: str, what: str, err: requests.RequestException) -> DICOMwebError:
    """A :class:`DICOMwebError` saying what failed, with the fix for the usual causes."""
    status = getattr(getattr(err, "response", None), "status_code", None)
    if status in (401, 403):
        hint = (
            f"the server refused the request (HTTP {status}); set {ENV_TOKEN}, or {ENV_USER} and {ENV_PASSWORD}, "
            "to credentials it accepts."
        )
    elif status is not None:
        hint = f"HTTP {status}; is {url} the DICOMweb root (e.g. http://host:8042/dicom-web)?"
    else:
        hint = f"the DICOMweb server at {url} cannot be reached ({type(err).__name__}); check --dicomweb_url."
    return DICOMwebError(f"{what}: {hint} ({err})")


def _value(item: Mapping, tag: str, default: str = "") -> str:
    values = item.get(tag, {}).get("Value") or [default]
    return str(values[0])


def _uid(value: object) -> str:
    """``value`` as a UID safe to use as a file name (digits and dots only, as the standard requires)."""
    uid = str(value)
    if not _UID.fullmatch(uid):
        raise DICOMwebError(f"the server sent an invalid UID {uid!r}; refusing to use it as a file name.")
    return uid


def _series_to_fetch(client: DICOMwebClient, study_uids: Sequence[str] | None, modality: str) -> dict[str, list[str]]:
    """``{study UID: [series UIDs of modality]}`` for the listed studies, or for every study with such a series."""
    url = client.base_url
    if not study_uids:
        try:
            found = client.search_for_series(search_filters={_MODALITY: modality}, get_remaining=True)
        except requests.RequestException as err:
            raise _explain(url, f"searching {url} for {modality} series failed", err) from err
        selected: dict[str, list[str]] = defaultdict(list)
        for item in found:
            if _value(item, _MODALITY) == modality:  # a server may ignore the filter: check it
                selected[_value(item, _STUDY_UID)].append(_value(item, _SERIES_UID))
        if not selected:
            raise DICOMwebError(f"no study on {url} has a {modality} series; nothing to process.")
        return dict(selected)
    selected = {}
    for study in study_uids:
        try:
            found = client.search_for_series(study_instance_uid=str(study), get_remaining=True)
        except requests.RequestException as err:
            raise _explain(url, f"searching {url} for study {study} failed", err) from err
        if not found:
            raise DICOMwebError(f"study {study} is not on {url} (no series found); check --study_uids.")
        series = [_value(s, _SERIES_UID) for s in found if _value(s, _MODALITY) == modality]
        if not series:
            others = ", ".join(f"{_value(s, _MODALITY, '?')} '{_value(s, _SERIES_DESCRIPTION)}'" for s in found)
            raise DICOMwebError(
                f"study {study} on {url} has no {modality} series (its series: {others}); this bundle reads "
                f"{modality} studies only."
            )
        selected[str(study)] = series
    return selected


def _only_series(
    selected: Mapping[str, Sequence[str]],
    series_uids: Sequence[str],
    url: str,
    modality: str,
    study_uids: Sequence[str] | None,
    series_list: str,
) -> dict[str, list[str]]:
    """``selected`` (``{study: [series]}``) restricted to ``series_uids``; every one of them must be there."""
    wanted = {str(s) for s in series_uids}
    missing = sorted(wanted - {s for series in selected.values() for s in series})
    if missing:
        scope = f"of the studies {', '.join(study_uids)} " if study_uids else ""
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DICOMwebError(
            f"{len(missing)} series listed in {series_list} {'is' if len(missing) == 1 else 'are'} not "
            f"{modality} series {scope}on {url}: {shown}; check the SeriesInstanceUIDs"
            f"{' and --study_uids' if study_uids else ''}."
        )
    only = {study: [s for s in series if s in wanted] for study, series in selected.items()}
    return {study: series for study, series in only.items() if series}


def fetch_studies(
    client: DICOMwebClient,
    dest: str | os.PathLike,
    study_uids: Sequence[str] | None = None,
    modality: str = "XA",
    series_folders: bool = False,
    series_uids: Sequence[str] | None = None,
    series_list: str = "the series list",
) -> dict[str, list[Path]]:
    """Retrieve the ``modality`` series of the studies into ``dest`` as DICOM Part 10 files named by their UIDs.

    Instances come in the transfer syntax the server stores them in (no transcoding). Result objects of an earlier
    run (``ImageType`` ``DERIVED\\SECONDARY``) are skipped, so a study that already holds the maps of a previous round
    trip gives the same inputs (a study without anything else is skipped, or refused if listed). Files already in
    ``dest`` (same UIDs) are kept; each new file is written atomically.

    Args:
        client: see :func:`connect`.
        dest: staging folder (created).
        study_uids: StudyInstanceUIDs to fetch; ``None`` or empty: every study with a ``modality`` series.
        modality: the Modality (0008,0060) the caller reads, e.g. ``"XA"``; other series are not fetched.
        series_folders: write ``dest/<SeriesInstanceUID>/<SOPInstanceUID>.dcm`` (a series folder per study, for
            readers of multi-file series) instead of ``dest/<SOPInstanceUID>.dcm`` (one file per study).
        series_uids: SeriesInstanceUIDs: retrieve only these series of the studies (each must be one of their
            ``modality`` series, checked before anything is retrieved); ``None``: every ``modality`` series.
        series_list: where ``series_uids`` come from, named in the error (e.g. ``"the targets file t.csv"``).

    Returns:
        ``{StudyInstanceUID: [written files]}``.

    Raises:
        DICOMwebError: unreachable server, refused credentials, an unknown study, a listed study without a
            ``modality`` series, a listed series that is not a ``modality`` series of the studies, or a study left
            with no input after skipping result objects.
    """
    if isinstance(study_uids, str):
        study_uids = [study_uids]
    url = client.base_url
    dest = Path(dest)
    written: dict[str, list[Path]] = {}
    selected = _series_to_fetch(client, study_uids, modality)
    if series_uids is not None:
        selected = _only_series(selected, series_uids, url, modality, study_uids, series_list)
    for study, in_study in selected.items():
        files: list[Path] = []
        for series in in_study:
            try:
                instances = client.retrieve_series(study, series, media_types=_AS_STORED)
            except requests.RequestException as err:
                raise _explain(url, f"retrieving series {series} of study {study} failed", err) from err
            for ds in instances:
                if list(ds.get("ImageType", []))[:2] == _RESULT_IMAGE_TYPE:
                    logger.info("skipping %s of study %s: a derived result, not an input", ds.SOPInstanceUID, study)
                    continue
                folder = dest / _uid(series) if series_folders else dest
                path = folder / f"{_uid(ds.SOPInstanceUID)}.dcm"
                if not path.is_file():
                    with atomic_output(path) as tmp:
                        pydicom.dcmwrite(tmp, ds, enforce_file_format=True)
                files.append(path)
        if not files:
            message = f"study {study} on {url} holds only derived {modality} objects, no input to process"
            if study_uids:
                raise DICOMwebError(f"{message}; check --study_uids.")
            logger.warning("%s; skipped.", message)
            continue
        written[study] = files
        logger.info("fetched %d %s instance(s) of study %s from %s", len(files), modality, study, url)
    if not written:
        raise DICOMwebError(f"the {modality} studies on {url} hold only derived objects, no input to process.")
    return written


def _read_uid(path: Path, keyword: str) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True, specific_tags=[keyword])[keyword].value)


def store_files(client: DICOMwebClient, paths: Sequence[str | os.PathLike]) -> tuple[list[Path], list[str]]:
    """STOW-RS DICOM Part 10 files, one request per study.

    Args:
        client: see :func:`connect`.
        paths: the files.

    Returns:
        The stored files, and one line per group of files the server refused or failed (with its reason).
    """
    by_study: dict[str, list[Path]] = defaultdict(list)
    for path in map(Path, paths):
        by_study[_read_uid(path, "StudyInstanceUID")].append(path)
    stored: list[Path] = []
    failed: list[str] = []
    for study, files in by_study.items():
        try:
            response = client.store_instances([pydicom.dcmread(f) for f in files], study_instance_uid=study)
        except requests.RequestException as err:
            failed.append(f"{', '.join(map(str, files))} ({_explain(client.base_url, 'store', err)})")
            continue
        refused = {str(item.ReferencedSOPInstanceUID) for item in response.get("FailedSOPSequence", [])}
        for f in files:
            if _read_uid(f, "SOPInstanceUID") in refused:
                failed.append(f"{f} (refused by the server)")
            else:
                stored.append(f)
    return stored, failed


def store_results(client: DICOMwebClient, output_dir: str | os.PathLike, study_uids: Sequence[str]) -> list[Path]:
    """STOW-RS every DICOM object under ``output_dir`` (hidden folders excluded) that belongs to ``study_uids``.

    Objects are recognised by content (:func:`monai_saliency.data.dicom.detect.is_dicom_file`), whatever their
    name; one request per study.

    Args:
        client: see :func:`connect`.
        output_dir: the run's output folder.
        study_uids: the studies whose results are stored (others found there are left alone and logged).

    Returns:
        The stored files.

    Raises:
        DICOMwebStoreError: if the server refused or failed any object; the message lists them (they stay on disk).
    """
    root = Path(output_dir)
    wanted = {str(s) for s in study_uids}
    results = []
    for path in sorted(root.rglob("*")):
        if any(part.startswith(".") for part in path.relative_to(root).parts) or not is_dicom_file(path):
            continue
        if _read_uid(path, "StudyInstanceUID") in wanted:
            results.append(path)
        else:
            logger.info("not storing %s: its study was not fetched from the server", path)
    stored, failed = store_files(client, results)
    if failed:
        raise DICOMwebStoreError(
            f"{len(results) - len(stored)} of {len(results)} result objects were not stored on {client.base_url}; "
            f"every result stays in {root.resolve()}. Not stored: " + "; ".join(failed)
        )
    logger.info("stored %d result object(s) on %s", len(stored), client.base_url)
    return stored


def _study_list(study_uids: object) -> list[str] | None:
    """``--study_uids`` as a list of UIDs (a single UID string is accepted); ``None`` or empty: ``None``.

    Raises:
        ValueError: for anything else, e.g. a number (``--study_uids 1.2`` reaches Python as a float).
    """
    if study_uids is None or (isinstance(study_uids, (list, tuple)) and not study_uids):
        return None
    uids = [study_uids] if isinstance(study_uids, str) else study_uids
    if not isinstance(uids, (list, tuple)) or not all(isinstance(u, str) and _UID.fullmatch(u) for u in uids):
        raise ValueError(
            f"--study_uids must be a list of StudyInstanceUIDs (digits and dots), e.g. --study_uids \"['1.2.3.4']\", "
            f"got {study_uids!r}."
        )
    return list(uids)


class DICOMwebSource:
    """A bundle's link to a DICOMweb server: fetch its studies into ``output_dir``, store the results back.

    Args:
        url: the DICOMweb root; empty: the bundle reads ``dataset_dir`` as usual.
        output_dir: the run's output folder; the studies are written to ``output_dir/.dicomweb``.
        study_uids: StudyInstanceUIDs; ``None``: every study with a ``modality`` series.
        modality: Modality of the series the bundle reads.
        series_folders: see :func:`fetch_studies`.
        series_uids: retrieve only these series (see :func:`fetch_studies`); ``None``: every ``modality`` series.
        series_list: where ``series_uids`` come from, named in the error when one is not on the server.
    """

    def __init__(
        self,
        url: str | None,
        output_dir: str | os.PathLike,
        study_uids: Sequence[str] | str | None = None,
        modality: str = "XA",
        series_folders: bool = False,
        series_uids: Sequence[str] | None = None,
        series_list: str = "the series list",
    ) -> None:
        self.url = str(url or "")
        self.staging = Path(output_dir) / STAGING_DIR
        self.output_dir = Path(output_dir)
        self.study_uids = _study_list(study_uids)
        self.modality = modality
        self.series_folders = series_folders
        self.series_uids = None if series_uids is None else [str(u) for u in series_uids]
        self.series_list = series_list
        self.fetched: dict[str, list[Path]] | None = None
        self._client: DICOMwebClient | None = None

    @property
    def client(self) -> DICOMwebClient:
        """The ``DICOMwebClient`` (created at first use)."""
        if self._client is None:
            self._client = connect(self.url)
        return self._client

    def fetch(self) -> str:
        """Retrieve the studies into the staging folder and return it (the bundle's ``dataset_dir``).

        Raises:
            DICOMwebError: see :func:`fetch_studies`.
        """
        if self.fetched is None:
            self.fetched = fetch_studies(
                self.client,
                self.staging,
                self.study_uids,
                self.modality,
                series_folders=self.series_folders,
                series_uids=self.series_uids,
                series_list=self.series_list,
            )
            if dist.is_available() and dist.is_initialized():
                dist.barrier()  # under torchrun no process lists the folder while another still writes to it
            n = sum(len(f) for f in self.fetched.values())
            print(
                f"fetched {len(self.fetched)} {self.modality} studies ({n} instances) from {self.url} to {self.staging}"
            )
        return str(self.staging)

    def check(self, dataset_dir: str | os.PathLike, store: bool = False) -> None:
        """Refuse contradictory settings before the run: a ``dataset_dir`` other than the fetched studies while a
        server is set, storing results without a server, or storing them from several processes (torchrun).

        Raises:
            ValueError: naming the conflicting overrides.
        """
        if self.url and Path(dataset_dir).resolve() != self.staging.resolve():
            raise ValueError(
                f"--dicomweb_url {self.url} and --dataset_dir {dataset_dir} are exclusive: with a server the studies "
                "come from it; drop one of them."
            )
        if store and not self.url:
            raise ValueError("--store_results true needs --dicomweb_url (the server to store the results on).")
        if store and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            raise ValueError(
                "--store_results true runs in a single process (each process of a torchrun run sees only its own "
                "shard); run without torchrun to store the results."
            )

    def store(self) -> list[Path]:
        """Store every DICOM object the run wrote for the fetched studies on the server (STOW-RS).

        Returns:
            The stored files.

        Raises:
            ValueError: if no studies were fetched from a server.
            DICOMwebStoreError: if the server refused any object (the results stay in ``output_dir``).
        """
        if not self.url or self.fetched is None:
            raise ValueError(
                "--store_results true stores the results of studies fetched with --dicomweb_url; none were."
            )
        stored = store_results(self.client, self.output_dir, list(self.fetched))
        print(f"stored {len(stored)} result objects on {self.url}")
        return stored


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m monai_saliency.data.dicom.dicomweb store URL FILE...``: STOW-RS files to a DICOMweb server
    (credentials from the environment, as for the bundles).

    Returns:
        0 if every file was stored, 1 otherwise (the files not stored are listed on stderr).
    """
    parser = argparse.ArgumentParser(prog="python -m monai_saliency.data.dicom.dicomweb", description=main.__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    store = commands.add_parser("store", help="store DICOM Part 10 files (STOW-RS)")
    store.add_argument("url", help="the DICOMweb root, e.g. http://localhost:8042/dicom-web")
    store.add_argument("files", nargs="+", help="DICOM files")
    args = parser.parse_args(argv)
    stored, failed = store_files(connect(args.url), args.files)
    print(f"stored {len(stored)} of {len(args.files)} files on {args.url}")
    if failed:
        print("not stored: " + "; ".join(failed), file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
