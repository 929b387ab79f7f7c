"""DICOM Parametric Maps (highdicom) referencing a PT source series: write/read functions and a MONAI ``ImageWriter``.

Usage::

    from monai.transforms import SaveImage
    from monai_saliency.data.dicom.parametric_map import ParametricMapWriter, register_parametric_map_writer

    SaveImage(output_dir="out", output_ext=".dcm", writer=ParametricMapWriter, output_dtype=None)(saliency_map)
    register_parametric_map_writer()  # only where a caller wants ".dcm" to resolve to it globally
    SaveImage(output_dir="out", output_ext=".dcm", output_dtype=None)(saliency_map)

Metadata the writer needs (``MetaTensor.meta`` or ``meta_data``):

* ``"source_series"`` (preferred) or ``"filename_or_obj"``: the PT series the map is derived from, as a folder of
  its single-frame files, one file of it (its folder is used), or a list of its files. ``LoadImage(reader=
  "PydicomReader")`` on a series folder sets ``filename_or_obj`` to that folder, so a map computed from a loaded
  series carries what is needed.
* ``"affine"`` (optional): the map's RAS voxel-to-world matrix. If given and it differs from the series' grid by
  axis flips/permutations only (e.g. after ``Orientationd``), the map is re-oriented onto the series' grid;
  any other difference is an error (resample the map first, e.g. with ``Invertd``). Without it, the array must
  already be laid out as the series: ``(X = columns, Y = rows, Z = slices in position order)``.
* ``"parametric_map_label"``, ``"parametric_map_description"`` (optional): LUT label / explanation, overriding
  the writer's ``label`` / ``description``.

The map is stored as 32-bit float frames with an identity real-world value mapping (``output_dtype`` and
``scale`` from ``SaveImage`` are ignored: a saliency keeps its values). One channel per file. The file is
written atomically (temporary file + rename) and never over a file of the source series.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.data import ImageWriter, MetaTensor, register_writer

from monai_saliency.data.atomic import atomic_output
from monai_saliency.data.dicom.pet_series import _LPS, _as_volume, read_pet_series
from monai_saliency.data.dicom.values import covering_window

__all__ = [
    "ParametricMapWriter",
    "parametric_map_saver",
    "read_parametric_map",
    "register_parametric_map_writer",
    "source_series_folder",
    "write_parametric_map",
]


def write_parametric_map(
    values: torch.Tensor | np.ndarray,
    source_datasets: Sequence,
    path: str | os.PathLike,
    label: str = "saliency",
    description: str = "Morch saliency: change of training cost when the voxel is removed",
    series_number: int = 100,
    protect: Sequence[str | os.PathLike] = (),
) -> Path:
    """Write a per-voxel map (e.g. a saliency) as a DICOM Parametric Map (highdicom) referencing a PT series.

    Args:
        values: ``(X, Y, Z)`` or ``(1, X, Y, Z)`` on the grid of the source series.
        source_datasets: the PT series' datasets in slice order (as from :func:`read_pet_series`).
        path: output ``.dcm`` file (written atomically, never over a source file).
        label: LUT label of the real-world value mapping.
        description: LUT explanation.
        series_number: series number of the map.
        protect: further input files never to overwrite.

    Returns:
        The written path.

    Raises:
        ValueError: if the map's shape does not match the source series.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    vol = _as_volume(values).astype(np.float32)
    rows, cols = int(source_datasets[0].Rows), int(source_datasets[0].Columns)
    if vol.shape != (cols, rows, len(source_datasets)):
        raise ValueError(
            f"map shape {vol.shape} does not match the source series (X={cols}, Y={rows}, Z={len(source_datasets)})."
        )
    frames = np.ascontiguousarray(np.transpose(vol, (2, 1, 0)))  # (Z, rows, cols), source slice order
    lo, hi = float(frames.min()), float(frames.max())
    center, width = covering_window(lo, hi)
    mapping = hd.pm.RealWorldValueMapping(
        lut_label=label[:16],
        lut_explanation=description[:64],
        unit=codes.UCUM.NoUnits,
        value_range=(lo, hi if hi > lo else lo + 1.0),
        slope=1.0,
        intercept=0.0,
    )
    pm = hd.pm.ParametricMap(
        source_images=list(source_datasets),
        pixel_array=frames,
        series_instance_uid=generate_uid(),
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer="monai_saliency",
        manufacturer_model_name="MorchSaliency",
        software_versions="0.1",
        device_serial_number="0",
        contains_recognizable_visual_features=False,
        real_world_value_mappings=[mapping],
        voi_lut_transformations=[
            hd.VOILUTTransformation(
                # one-item lists: highdicom (0.28) stores a bare str explanation as a list of its characters
                window_center=[center],
                window_width=[width],
                window_explanation=["map value range"],
                voi_lut_function="LINEAR_EXACT",  # a saliency range is often < 1 wide: LINEAR needs width >= 1
            )
        ],
        content_label=label.upper().replace(" ", "_")[:16],
        content_description=description[:64],
    )
    for kw in ("BodyPartExamined", "Laterality"):  # General Series: Laterality is required for a paired body part
        if kw in source_datasets[0] and kw not in pm:
            setattr(pm, kw, source_datasets[0].data_element(kw).value)
    srcs = [getattr(ds, "filename", None) for ds in source_datasets]
    with atomic_output(path, protect=[*[s for s in srcs if s], *protect]) as tmp:
        pm.save_as(tmp)
    return Path(path)


def read_parametric_map(path: str | os.PathLike) -> MetaTensor:
    """Read a (single-mapping) Parametric Map written by :func:`write_parametric_map`.

    Frames are put in slice order from their per-frame ImagePositionPatient (highdicom may store them in
    another order), and the real-world value mapping (slope, intercept) is applied.

    Returns:
        ``(1, X, Y, Z)`` float32 MetaTensor with the RAS affine of the map's geometry.
    """
    import pydicom

    ds = pydicom.dcmread(str(path))
    arr = ds.pixel_array.astype(np.float64)
    if arr.ndim == 2:
        arr = arr[None]
    shared = ds.SharedFunctionalGroupsSequence[0]
    iop = np.asarray(shared.PlaneOrientationSequence[0].ImageOrientationPatient, dtype=np.float64)
    dr, dc = (float(v) for v in shared.PixelMeasuresSequence[0].PixelSpacing)
    pos = np.array(
        [
            np.asarray(f.PlanePositionSequence[0].ImagePositionPatient, dtype=np.float64)
            for f in ds.PerFrameFunctionalGroupsSequence
        ]
    )
    normal = np.cross(iop[:3], iop[3:])
    order = np.argsort(pos @ normal)
    arr, pos = arr[order], pos[order]
    rwv = shared.get("RealWorldValueMappingSequence")
    if rwv:
        arr = arr * float(rwv[0].RealWorldValueSlope) + float(rwv[0].RealWorldValueIntercept)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 3] = iop[:3] * dc, iop[3:] * dr, pos[0]
    lps[:3, 2] = (pos[-1] - pos[0]) / (len(pos) - 1) if len(pos) > 1 else normal
    vol = torch.as_tensor(np.transpose(arr, (2, 1, 0)), dtype=torch.float32)[None]
    return MetaTensor(vol, affine=torch.as_tensor(_LPS @ lps))


def source_series_folder(meta: Mapping[str, Any]) -> Path:
    """The PT series folder named by ``meta["source_series"]`` or ``meta["filename_or_obj"]``.

    Raises:
        ValueError: if neither key names an existing file or folder.
    """
    for key in ("source_series", "filename_or_obj"):
        value = meta.get(key)
        if isinstance(value, (list, tuple)) and value:
            value = value[0]
        if isinstance(value, (str, os.PathLike)) and str(value):
            p = Path(value)
            if p.is_dir():
                return p
            if p.is_file():
                return p.parent
    raise ValueError(
        "the parametric map needs its PT source series: set meta['source_series'] (or 'filename_or_obj') to the "
        "series folder or one of its files."
    )


class ParametricMapWriter(ImageWriter):
    """Write a single-channel 3D map as a DICOM Parametric Map referencing the PT series it was computed on.

    See the module docstring for the metadata it reads.

    Args:
        output_dtype: accepted for ``SaveImage`` compatibility and ignored (frames are float32).
        scale: accepted and ignored.
        label: default real-world value mapping label (16 characters at most are kept).
        description: default LUT explanation / content description (64 characters at most).
        series_number: SeriesNumber of the map.
        kwargs: further attributes (``ImageWriter`` convention).
    """

    def __init__(
        self,
        output_dtype: Any = None,
        scale: Any = None,
        label: str = "saliency",
        description: str = "saliency map",
        series_number: int = 100,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            output_dtype=output_dtype,
            scale=scale,
            label=label,
            description=description,
            series_number=series_number,
            **kwargs,
        )
        self.source_datasets: list | None = None
        self.source_dir: Path | None = None
        self.meta: dict[str, Any] = {}

    def set_data_array(
        self,
        data_array: torch.Tensor | np.ndarray,
        channel_dim: int | None = 0,
        squeeze_end_dims: bool = True,
        **kwargs: Any,
    ) -> None:
        """Store a ``(1, X, Y, Z)`` (``channel_dim=0``) or ``(X, Y, Z)`` (``channel_dim=None``) map.

        Raises:
            ValueError: several channels, not 3D, or NaN/Inf values.
        """
        arr = data_array.detach().cpu().numpy() if isinstance(data_array, torch.Tensor) else np.asarray(data_array)
        if channel_dim is not None:
            if arr.shape[channel_dim] != 1:
                raise ValueError(
                    f"a parametric map holds one channel; got {arr.shape[channel_dim]} (write them one by one)."
                )
            arr = np.take(arr, 0, axis=channel_dim)
        if arr.ndim != 3:
            raise ValueError(f"expected a 3D map (X, Y, Z) on the PT series grid, got shape {arr.shape}.")
        if not np.isfinite(arr).all():
            raise ValueError("the map contains NaN/Inf; a parametric map cannot store them.")
        self.data_obj = arr.astype(np.float32)

    def set_metadata(self, meta_dict: Mapping | None, resample: bool = False, **options: Any) -> None:
        """Read the source series named in ``meta_dict`` and bring the map onto its grid.

        Raises:
            ValueError: no source series in the meta, a map whose grid differs from the series' by more than
                axis flips/permutations, or a shape mismatch.
        """
        meta = dict(meta_dict or {})
        self.meta = meta
        self.source_dir = source_series_folder(meta)
        vol, dss = read_pet_series(self.source_dir)
        self.source_datasets = dss
        src_affine = vol.affine.numpy().astype(np.float64)
        src_shape = tuple(vol.shape[1:])
        if self.data_obj is None:
            raise ValueError("call set_data_array before set_metadata.")
        arr = self.data_obj
        affine = meta.get("affine")
        if affine is not None:
            aff = np.asarray(torch.as_tensor(affine).detach().cpu(), dtype=np.float64)
            aff = aff[0] if aff.ndim == 3 else aff
            if not np.allclose(aff, src_affine, atol=1e-3):
                ornt = nib.orientations.ornt_transform(nib.io_orientation(aff), nib.io_orientation(src_affine))
                arr = nib.orientations.apply_orientation(arr, ornt)
                new_aff = aff @ nib.orientations.inv_ornt_aff(ornt, self.data_obj.shape)
                if arr.shape != src_shape or not np.allclose(new_aff, src_affine, atol=1e-3):
                    raise ValueError(
                        f"the map's grid (affine {aff.round(3).tolist()}, shape {self.data_obj.shape}) is not the source "
                        f"series' grid (shape {src_shape}); resample the map onto the series first (e.g. Invertd)."
                    )
        if arr.shape != src_shape:
            raise ValueError(f"map shape {arr.shape} does not match the source series {self.source_dir} {src_shape}.")
        self.data_obj = np.ascontiguousarray(arr, dtype=np.float32)

    def write(self, filename: str | os.PathLike, verbose: bool = False, **kwargs: Any) -> None:
        """Write the parametric map to ``filename`` (atomically, never over a source file).

        Raises:
            ValueError: if ``set_data_array`` / ``set_metadata`` were not called.
        """
        super().write(filename, verbose=verbose)
        if self.data_obj is None or self.source_datasets is None:
            raise ValueError("call set_data_array and set_metadata before write.")
        label = str(self.meta.get("parametric_map_label", self.label))
        description = str(self.meta.get("parametric_map_description", self.description))
        write_parametric_map(
            self.data_obj,
            self.source_datasets,
            filename,
            label=label,
            description=description,
            series_number=int(self.series_number),
        )

    @classmethod
    def create_backend_obj(cls, data_array: Any, **kwargs: Any) -> np.ndarray:
        """The float32 array (the backend object is built in :meth:`write`)."""
        return np.asarray(data_array, dtype=np.float32)


def register_parametric_map_writer(ext: Sequence[str] | str = ("dcm",)) -> None:
    """Make ``SaveImage(output_ext=".dcm")`` (without ``writer=``) use :class:`ParametricMapWriter` first.

    Args:
        ext: extension(s) to register, without the dot.
    """
    for e in [ext] if isinstance(ext, str) else ext:
        register_writer(e, ParametricMapWriter)


def parametric_map_saver(output_dir: str | os.PathLike, **kwargs: Any) -> Any:
    """A ``SaveImage`` writing ``.dcm`` Parametric Maps with :class:`ParametricMapWriter` passed explicitly (no
    global registration), values kept (``output_dtype=None``), no per-image sub-folder, no log line.

    Args:
        output_dir: destination folder.
        kwargs: further ``SaveImage`` arguments (override the defaults above).

    Returns:
        The ``monai.transforms.SaveImage``.
    """
    from monai.transforms import SaveImage

    opts = {"output_ext": ".dcm", "output_dtype": None, "separate_folder": False, "print_log": False, **kwargs}
    return SaveImage(output_dir=str(output_dir), writer=ParametricMapWriter, **opts)
