"""Finding the studies of a dataset folder and giving each one output folder of its own.

A study is one file found under ``dataset_dir`` (recursively): a NIfTI file by suffix (``.nii``, ``.nii.gz``) or a
DICOM file by content (:func:`monai_saliency.data.dicom.detect.is_dicom_file`, whatever its name). Its id is its POSIX
path relative to ``dataset_dir``; its output folder, relative to ``output_dir``, is ``<relative parent>/<stem>`` where
the stem is the name without ``.nii.gz``/``.nii``/``.dcm``/``.dicom`` (:func:`monai_saliency.data.atomic.study_stem`).

Collision rule (documented in the bundles' docs): when two studies would get the same folder (``a.dcm`` + ``a.nii.gz``;
compared case-insensitively, as on macOS/Windows file systems), when a study's folder would be a folder holding other
studies (``x.nii.gz`` beside ``x/y.nii.gz``), when it would be an input file's own path (a DICOM named ``IM0001``
without suffix), or when it would take a run-level name (``predictions.csv``, ...), the
study's folder becomes ``<stem>_<suffix>`` with the suffix's dots as underscores (``a_dcm``, ``a_nii_gz``;
``<stem>_file`` for a name without suffix). A folder an earlier run recorded for a study is kept for it. A collision
that remains is a :class:`LayoutError` before anything is written.

Not studies: hidden names (starting with ``.``), everything under ``output_dir`` when it lies inside ``dataset_dir``
(when it *is* ``dataset_dir``: the run-level files and every output folder an earlier run recorded).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from monai_saliency.data.atomic import study_stem
from monai_saliency.data.dicom.detect import is_dicom_file

__all__ = ["KINDS", "RUN_LEVEL_NAMES", "LayoutError", "Study", "discover_studies", "plan_layout"]

#: names at the top of ``output_dir`` that belong to the run, never to a study
RUN_LEVEL_NAMES = ("predictions.csv", "run_manifest.json", "report.html", ".cohort", ".staging", ".cohort.lock")
#: the kinds of study :func:`discover_studies` can look for
KINDS = ("nifti", "dicom")
_NIFTI_SUFFIXES = (".nii.gz", ".nii")


class LayoutError(ValueError):
    """The studies cannot be given distinct, safe output folders (raised before anything is written)."""


@dataclass(frozen=True)
class Study:
    """One study of a cohort run.

    Attributes:
        study_id: POSIX path relative to ``dataset_dir`` (the name used in logs, the manifest and predictions.csv).
        path: absolute path of the input file.
        folder: POSIX path of its output folder, relative to ``output_dir``.
    """

    study_id: str
    path: str
    folder: str


def _is_within(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def _kind(path: Path, kinds: Sequence[str]) -> str | None:
    if "nifti" in kinds and path.name.lower().endswith(_NIFTI_SUFFIXES):
        return "nifti"
    if "dicom" in kinds and is_dicom_file(path):
        return "dicom"
    return None


def discover_studies(
    dataset_dir: str | os.PathLike,
    output_dir: str | os.PathLike | None = None,
    kinds: Sequence[str] = KINDS,
    exclude_folders: Iterable[str] = (),
) -> list[tuple[str, str]]:
    """Studies under ``dataset_dir``, recursively, sorted by id.

    Args:
        dataset_dir: the folder of studies.
        output_dir: the run's output folder; when inside ``dataset_dir`` its subtree is skipped; its run-level names
            and ``exclude_folders`` are always skipped (``dataset_dir`` may be ``output_dir`` or lie inside it).
        kinds: ``"nifti"`` (by suffix) and/or ``"dicom"`` (by content).
        exclude_folders: output folders (relative to ``output_dir``) of earlier runs, never read as studies.

    Returns:
        ``(study id, absolute path)`` pairs.

    Raises:
        FileNotFoundError: ``dataset_dir`` is not a folder.
        ValueError: unknown kind.
    """
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown study kinds {sorted(unknown)}; use {list(KINDS)}.")
    root = Path(os.path.abspath(dataset_dir))
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder {root} does not exist; set --dataset_dir to a folder of studies.")
    out = Path(os.path.abspath(output_dir)) if output_dir is not None else None
    skip = set()
    if out is not None:  # earlier outputs are never studies, wherever output_dir lies
        skip |= {out / name for name in RUN_LEVEL_NAMES} | {out / f for f in exclude_folders}
        if out != root and _is_within(out, root):
            skip.add(out)
    found = []
    for folder, dirs, files in os.walk(root, followlinks=False):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and here / d not in skip)
        for name in sorted(files):
            path = here / name
            if name.startswith(".") or path in skip or _kind(path, kinds) is None:
                continue
            found.append((path.relative_to(root).as_posix(), str(path)))
    return sorted(found)


def _tagged(study_id: str) -> str:
    p = PurePosixPath(study_id)
    stem = study_stem(p.name)
    suffix = p.name[len(stem) :].lstrip(".").replace(".", "_") or "file"
    return str(p.parent / f"{stem}_{suffix}") if str(p.parent) != "." else f"{stem}_{suffix}"


def _default(study_id: str) -> str:
    p = PurePosixPath(study_id)
    stem = study_stem(p.name)
    return str(p.parent / stem) if str(p.parent) != "." else stem


def _conflicts(folders: Mapping[str, str], input_dirs: set[str]) -> set[str]:
    """Studies whose folder equals another's (case-insensitively), holds studies, is an input file's path (a DICOM
    without suffix: ``IM0001`` would be its own folder when ``output_dir`` is ``dataset_dir``), or takes a run-level
    name."""
    inputs = {sid.casefold() for sid in folders}
    by_key: dict[str, list[str]] = {}
    for sid, folder in folders.items():
        by_key.setdefault(folder.casefold(), []).append(sid)
    bad = {sid for sids in by_key.values() if len(sids) > 1 for sid in sids}
    reserved = {n.casefold() for n in RUN_LEVEL_NAMES}
    ancestors = {folder.casefold() for folder in folders.values() for folder in _parents(folder)}
    for sid, folder in folders.items():
        key = folder.casefold()
        if key in input_dirs or key in ancestors or key in reserved or key in inputs:
            bad.add(sid)
    return bad


def _parents(folder: str) -> list[str]:
    return [str(p) for p in PurePosixPath(folder).parents if str(p) != "."]


def plan_layout(studies: Sequence[tuple[str, str]], recorded: Mapping[str, str] | None = None) -> list[Study]:
    """Give every study a distinct output folder (see the module docstring for the rule).

    Args:
        studies: ``(study id, absolute path)`` pairs from :func:`discover_studies`.
        recorded: study id -> output folder an earlier run used (kept when still free of conflicts).

    Returns:
        The studies with their folders, in the order given.

    Raises:
        LayoutError: a collision the rule cannot resolve, naming the studies.
    """
    recorded = dict(recorded or {})
    input_dirs = {p.casefold() for sid, _ in studies for p in _parents(sid)}
    folders = {sid: recorded.get(sid) or _default(sid) for sid, _ in studies}
    for sid in _conflicts(folders, input_dirs):
        if sid not in recorded:
            folders[sid] = _tagged(sid)
    remaining = _conflicts(folders, input_dirs)
    if remaining:
        listing = ", ".join(f"{sid!r} -> {folders[sid]!r}" for sid in sorted(remaining))
        raise LayoutError(
            f"these studies cannot be given distinct output folders: {listing}. Rename the inputs or move them "
            "into separate folders; nothing was written."
        )
    return [Study(sid, path, folders[sid]) for sid, path in studies]
