"""A real PACS for the tests: Orthanc with its DICOMweb plugin on 127.0.0.1, one per test module.

Orthanc gets a temporary JSON config (storage and index in a temporary folder, free ports, no remote access, HTTP
basic authentication) and is stopped by its PID at teardown, also when a test fails. Two users: ``writer`` may do
anything, ``reader`` may search and retrieve but every POST (a STOW-RS store) is refused with HTTP 403 by a Lua
``IncomingHttpRequestFilter``: a server that rejects the store, as a read-only PACS account would.

Outside CI the tests skip with a reason when Orthanc or its DICOMweb plugin is absent; under ``CI=true`` they fail.
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests._system_tools import in_ci, require_tool

DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
USERS = {"writer": "writer-secret", "reader": "reader-secret"}
_READ_ONLY_FILTER = """
function IncomingHttpRequestFilter(method, uri, ip, username, httpHeaders)
  if username == 'reader' and method ~= 'GET' then
    return false
  end
  return true
end
"""


@dataclass(frozen=True)
class OrthancServer:
    """A running Orthanc: ``url`` is its DICOMweb root; ``env(user)`` the environment variables that log in."""

    url: str
    http_port: int
    pid: int
    log: Path

    @staticmethod
    def env(user: str = "writer") -> dict[str, str]:
        return {"MONAI_SALIENCY_DICOMWEB_USER": user, "MONAI_SALIENCY_DICOMWEB_PASSWORD": USERS[user]}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (closed again at once)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _require_plugin() -> None:
    if not DICOMWEB_PLUGIN.is_file():
        reason = f"{DICOMWEB_PLUGIN} not found (Debian package orthanc-dicomweb; .ci/run installs it)"
        if in_ci():
            pytest.fail(f"{reason}, and CI=true: system tools must be installed in CI.")
        pytest.skip(reason)


def _stop(proc: subprocess.Popen) -> None:
    """Stop Orthanc by its PID: SIGTERM, then SIGKILL if it does not exit within 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def start_orthanc(folder: Path, timeout: float = 30.0) -> tuple[OrthancServer, subprocess.Popen]:
    """Start Orthanc with a config in ``folder`` and wait until its DICOMweb root answers.

    Raises:
        RuntimeError: if Orthanc exits or does not answer within ``timeout`` seconds (its log is in the message).
    """
    exe = require_tool("Orthanc", "orthanc")
    _require_plugin()
    storage = folder / "storage"
    storage.mkdir(parents=True)
    lua = folder / "read_only_reader.lua"
    lua.write_text(_READ_ONLY_FILTER)
    http_port = free_port()
    config = {
        "Name": "monai-saliency-test",
        "StorageDirectory": str(storage),
        "IndexDirectory": str(storage),
        "HttpPort": http_port,
        "DicomPort": free_port(),
        "DicomServerEnabled": False,  # DICOMweb only; the DIMSE port would listen on every interface
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": USERS,
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "LuaScripts": [str(lua)],
    }
    cfg = folder / "orthanc.json"
    cfg.write_text(json.dumps(config, indent=2))
    log = folder / "orthanc.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([exe, str(cfg)], stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{http_port}/dicom-web"
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with code {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if requests.get(f"{url}/studies", auth=("writer", USERS["writer"]), timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Orthanc did not answer on {url} within {timeout} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.1)
    except BaseException:
        _stop(proc)
        raise
    return OrthancServer(url=url, http_port=http_port, pid=proc.pid, log=log), proc


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory) -> OrthancServer:
    """A running Orthanc with DICOMweb on 127.0.0.1 for the whole test module, stopped by its PID afterwards."""
    server, proc = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    try:
        yield server
    finally:
        _stop(proc)
