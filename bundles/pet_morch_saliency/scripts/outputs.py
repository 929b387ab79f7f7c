"""Computing and writing the Mørch maps of the ``pet_morch_saliency`` bundle (``inference.json``).

Mørch saliency (``monai_saliency.analysis.morch``) is a property of a trained (PCA + tanh net) model **over a set of
scans**: one map per model, not one per scan, so the unit of work is a study folder. :func:`compute_maps` gives the
first / second / exact orders in one pass (voxels split across ``torch.distributed`` ranks with
``distributed=True``); :func:`write_outputs` writes NIfTI in the scans' geometry, DICOM Parametric Maps referencing
a PT series for DICOM studies, a 3D figure and ``summary.csv``/``summary.json``, atomically (a failed run removes
what it had written).
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from monai.data import MetaTensor

from monai_saliency.analysis import MorchSaliency
from monai_saliency.data.atomic import atomic_output
from monai_saliency.data.nifti import save_nifti
from monai_saliency.data.synthetic.pet_phantom import PETStudy
from monai_saliency.engines.evaluator import as_bool
from monai_saliency.engines.sharding import gather_shards, shard_bounds
from monai_saliency.metrics.roc_auc import nmse, roc_auc

from .model import MorchModel

__all__ = ["ORDER_NAMES", "compute_maps", "shard_cost_changes", "summarize", "write_outputs"]

logger = logging.getLogger("pet_morch_saliency")
ORDER_NAMES = ("first", "second", "exact")


def shard_cost_changes(
    sal: MorchSaliency, x: torch.Tensor, y: torch.Tensor, orders: Sequence[str], rank: int, world: int
) -> dict[str, torch.Tensor]:
    """Cost changes of this rank's contiguous voxel range only (every rank computes the shared projections);
    concatenating the ranks' results in rank order equals ``sal.cost_changes(x, y, orders)``."""
    n_vox = int(sal.projection.n_voxels)
    return sal.cost_changes(x, y, orders=orders, voxel_range=shard_bounds(n_vox, rank, world))


def compute_maps(
    sal: MorchSaliency,
    study: PETStudy,
    model: MorchModel,
    orders: Sequence[str] = ORDER_NAMES,
    distributed: bool = False,
) -> dict[str, torch.Tensor] | None:
    """Per-voxel cost changes ``{order: (I,) float64}`` (mask order) for the study's scans and targets.

    With ``distributed=True`` (an initialised ``torch.distributed`` group), each rank computes a contiguous
    voxel range and rank 0 gathers them; other ranks return None.

    Raises:
        ValueError: an unknown order.
    """
    orders = list(orders)
    for o in orders:
        if o not in ORDER_NAMES:
            raise ValueError(f"orders must be among {ORDER_NAMES}, got {o!r}.")
    y = study.targets - model.target_offset
    if not distributed:
        return sal.cost_changes(study.images, y, orders=orders)
    import torch.distributed as dist

    rank, world = dist.get_rank(), dist.get_world_size()
    local = shard_cost_changes(sal, study.images, y, orders, rank, world)
    n = model.pca.n_voxels
    out = {o: gather_shards(local[o], n) for o in orders}
    logger.info(f"rank {rank}/{world}: computed voxels {shard_bounds(n, rank, world)} of {n}")
    return out if rank == 0 else None


def summarize(maps: dict[str, torch.Tensor], study: PETStudy, model: MorchModel) -> list[dict[str, Any]]:
    """One row per order: range, share of negative values, NMSE against the exact change, ROC AUC vs the truth."""
    truth = study.truth[model.pca.mask] if study.truth is not None else None
    rows = []
    for o, v in maps.items():
        row = {
            "order": o,
            "min": float(v.min()),
            "max": float(v.max()),
            "sum": float(v.sum()),
            "fraction_negative": float((v < 0).double().mean()),
        }
        if "exact" in maps:
            row["nmse_vs_exact"] = nmse(v, maps["exact"])
        if truth is not None:  # NaN when the truth mask is all in or all out of the brain mask (AUC undefined)
            row["roc_auc_vs_truth"] = roc_auc(v, truth) if 0 < int(truth.sum()) < truth.numel() else float("nan")
        rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------ writing
def _write_parametric_maps(vols: dict[str, torch.Tensor], study: PETStudy, out: Path, written: dict[str, Path]) -> None:
    """``morch_<order>.dcm``: DICOM Parametric Maps referencing ``study.reference_series``. The writer is passed
    to ``SaveImage`` explicitly: nothing is registered for ``.dcm`` globally."""
    from monai_saliency.data.dicom.parametric_map import parametric_map_saver

    saver = parametric_map_saver(out)
    for o, vol in vols.items():
        meta = {
            "source_series": str(study.reference_series),
            "affine": study.affine.clone(),
            "parametric_map_label": f"morch_{o}",
            "parametric_map_description": f"Morch saliency ({o} order): training cost change",
        }
        target = out / f"morch_{o}"
        saver(MetaTensor(vol.float(), meta=meta), filename=str(target))
        written[f"{o}_dicom"] = target.with_suffix(".dcm")


def _write_summaries(
    rows: list[dict[str, Any]], study: PETStudy, model: MorchModel, out: Path, written: dict[str, Path]
) -> None:
    """``summary.csv`` (one row per order) and ``summary.json`` (study, model, rows, outputs)."""
    protect = study.input_files
    keys = sorted({k for r in rows for k in r}, key=lambda k: (k != "order", k))
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=keys)
    w.writeheader()
    w.writerows(rows)
    with atomic_output(out / "summary.csv", protect=protect) as tmp:
        tmp.write_text(buf.getvalue())
    written["summary_csv"] = out / "summary.csv"
    info = {
        "study": str(study.folder),
        "scans": len(study.names),
        "kind": study.kind,
        "reference_series": None if study.reference_series is None else str(study.reference_series),
        "model": {"config": model.config, "train": {k: v for k, v in model.train.items() if k != "scans"}},
        "orders": rows,
        "outputs": {k: Path(v).name for k, v in written.items()},  # beside this file
    }
    with atomic_output(out / "summary.json", protect=protect) as tmp:
        tmp.write_text(json.dumps(info, indent=1))
    written["summary_json"] = out / "summary.json"


def _write_overlay(
    vol: torch.Tensor, order: str, bg: torch.Tensor, study: PETStudy, model: MorchModel, out: Path
) -> Path:
    """``morch_<order>_overlay.dcm``: a Secondary Capture of the axial, coronal and sagittal slices through the map's
    peak over ``bg``, in the reference PT series' patient and study (NIfTI studies: a new study named after the
    folder; see :mod:`monai_saliency.data.dicom.secondary_capture`)."""
    from monai_saliency.visualize.secondary_capture import OverlayStyle, save_orthogonal_overlay_sc

    k, hidden = model.train.get("K", model.pca.k), model.config.get("hidden", "?")
    return save_orthogonal_overlay_sc(
        bg,
        vol,
        study.affine,
        out / f"morch_{order}_overlay.dcm",
        source=study.reference_series,
        source_name=Path(study.folder).name if study.folder is not None else "synthetic PET study",
        style=OverlayStyle(
            method=f"Morch saliency ({order} order): training cost change",
            model=f"PCA ({k} components) + tanh net ({hidden} hidden), {len(study.images)} scans",
        ),
        body_part="BRAIN",
        protect=study.input_files,
    )


def write_outputs(
    maps: dict[str, torch.Tensor] | None,
    study: PETStudy,
    model: MorchModel,
    output_dir: str | os.PathLike,
    write_dicom: bool = True,
    figure_order: str | None = "exact",
    figure_quantile: float = 0.99,
    write_overlays: bool = True,
) -> dict[str, Path]:
    """Write the maps: ``morch_<order>.nii.gz`` (scans' geometry, 0 outside the mask), ``morch_<order>.dcm``
    (Parametric Map referencing ``study.reference_series``; DICOM studies only), ``morch_<order>_3d.png``,
    ``summary.csv`` and ``summary.json``; with ``write_overlays``, ``morch_<order>_overlay.dcm`` (a Secondary
    Capture of three orthogonal slices through the peak of the ``figure_order`` map, or of the last computed order).

    Nothing is written for ``maps=None`` (non-zero ranks). Every file is written atomically and never over an
    input; if any write fails, the files this call wrote are removed before the error propagates.

    Returns:
        ``{name: path}`` of the written files.

    Raises:
        ValueError: ``figure_order`` is not among the computed orders.
    """
    if maps is None:
        return {}
    from monai_saliency.visualize.surface3d import save_surface_figure

    # command-line flags arrive as strings ("--write_dicom false"): parsed strictly, never truthy by accident
    write_dicom, write_overlays = as_bool(write_dicom, "write_dicom"), as_bool(write_overlays, "write_overlays")

    if figure_order and figure_order not in maps:
        raise ValueError(
            f"figure_order {figure_order!r} is not among the computed orders {list(maps)}; add it to orders."
        )
    out = Path(output_dir)
    written: dict[str, Path] = {}
    vols = {o: model.pca.to_volume(v)[None] for o, v in maps.items()}  # (1, *spatial)
    rows = summarize(maps, study, model)
    try:
        for o, vol in vols.items():
            written[f"{o}_nifti"] = save_nifti(
                vol.float(), out / f"morch_{o}.nii.gz", affine=study.affine, protect=study.input_files
            )
        if write_dicom and study.reference_series is not None:
            _write_parametric_maps(vols, study, out, written)
        bg = study.anatomy if study.anatomy is not None else study.images.as_tensor().mean(0)
        if figure_order:
            written["figure"] = save_surface_figure(
                vols[figure_order][0],
                out / f"morch_{figure_order}_3d.png",
                anatomy=bg,
                affine=study.affine,
                quantile=figure_quantile,
                mask=model.pca.mask,
                title=f"Mørch saliency ({figure_order} order), top {100 * (1 - figure_quantile):g}% of brain voxels",
            )
        if write_overlays:
            order = figure_order or list(vols)[-1]
            written["overlay_sc"] = _write_overlay(vols[order][0], order, bg, study, model, out)
        _write_summaries(rows, study, model, out, written)
    except BaseException:
        for p in written.values():
            Path(p).unlink(missing_ok=True)
        raise
    for r in rows:
        auc = f", ROC AUC vs truth {r['roc_auc_vs_truth']:.3f}" if "roc_auc_vs_truth" in r else ""
        logger.info(f"{r['order']:>6} order: range [{r['min']:.3g}, {r['max']:.3g}]{auc}")
    logger.info(f"Mørch saliency maps of {len(study.names)} scans: {len(written)} files written to {out.resolve()}")
    return written
