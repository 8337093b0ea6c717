"""The one volume type that crosses module boundaries: voxels plus geometry plus provenance."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import geometry


@dataclass(frozen=True)
class WindowHint:
    """A display window stored with the image (DICOM Window Center/Width, PS3.3 C.11.2).

    Attributes
    ----------
    center, width : float
        In the units of ``Volume.array`` after the modality LUT (HU for CT).
    explanation : str or None
        DICOM Window Center & Width Explanation, if any.
    """

    center: float
    width: float
    explanation: str | None = None


@dataclass(frozen=True)
class SourceFrame:
    """Where one slice ``k`` of a DICOM-derived volume came from.

    Attributes
    ----------
    path : str
        The file holding it (for ``.dcm.gz`` the compressed file's path).
    sop_instance_uid : str
        SOP Instance UID of that file.
    frame : int or None
        0-based frame index inside an enhanced multi-frame file; ``None`` for single-frame files.
    """

    path: str
    sop_instance_uid: str
    frame: int | None = None


@dataclass(frozen=True)
class Provenance:
    """What was read to make a volume.

    Attributes
    ----------
    format : str
        ``"dicom"``, ``"nifti"``, ``"nrrd"``, ``"mha"``, ``"synthetic"`` ...
    paths : tuple of str
        Every file read.
    series_uid, study_uid, frame_of_reference_uid, sop_class_uid : str or None
        DICOM identifiers (DICOM inputs only).
    source_frames : tuple of SourceFrame
        DICOM only: one entry per slice index ``k``, in array order.
    description : str or None
        Series description or file name.
    source_orientation : str
        Orientation code (nibabel axcodes in RAS) of the volume as read, e.g. ``"LPS"``.
    nifti_qform, nifti_sform : (4, 4) ndarray or None; nifti_qform_code, nifti_sform_code : int
        NIfTI inputs only: the header's two transforms and their codes, so a mask written for
        this image carries exactly the same header geometry.
    notes : tuple of str
        Anything done explicitly while reading (for example "dropped localiser files").
    extra : dict
        Reader-specific details (read-only by convention).
    """

    format: str = "synthetic"
    paths: tuple[str, ...] = ()
    series_uid: str | None = None
    study_uid: str | None = None
    frame_of_reference_uid: str | None = None
    sop_class_uid: str | None = None
    source_frames: tuple[SourceFrame, ...] = ()
    description: str | None = None
    source_orientation: str = ""
    nifti_qform: np.ndarray | None = None
    nifti_qform_code: int = 0
    nifti_sform: np.ndarray | None = None
    nifti_sform_code: int = 0
    notes: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)


def _readonly(a: np.ndarray) -> np.ndarray:
    view = a.view()
    view.flags.writeable = False
    return view


class Volume:
    """A 3D image: voxel array, voxel->world affine, modality and provenance.

    Immutable in spirit: the array is exposed as a read-only view, the affine is copied on
    construction, and every operation returns a new object (:meth:`replace`).

    Parameters
    ----------
    array : (I, J, K) ndarray
        Voxel values indexed ``(i, j, k)`` as nibabel indexes a NIfTI file. For CT, Hounsfield
        units (modality LUT already applied). Not copied; stored as a read-only view.
    affine : (4, 4) array_like
        Voxel index (voxel centre) -> world millimetres in the **RAS+** convention. Copied to
        float64 and made read-only.
    modality : str
        DICOM modality code (``"CT"``, ``"MR"``, ``"PT"``...), ``"OT"`` when unknown.
    provenance : Provenance, optional
    window : WindowHint, optional
        The display window stored with the image, if any.

    Attributes
    ----------
    convention : str
        Always ``"RAS"``: the world convention of :attr:`affine`.
    """

    convention = "RAS"

    def __init__(
        self,
        array: np.ndarray,
        affine: np.ndarray,
        *,
        modality: str = "OT",
        provenance: Provenance | None = None,
        window: WindowHint | None = None,
    ) -> None:
        array = np.asarray(array)
        if array.ndim != 3:
            raise ValueError(f"a Volume needs a 3D array, got shape {array.shape}")
        aff = np.array(affine, dtype=np.float64, copy=True)
        if aff.shape != (4, 4):
            raise ValueError(f"affine must be 4x4, got {aff.shape}")
        if not np.all(np.isfinite(aff)) or abs(np.linalg.det(aff[:3, :3])) < 1e-12:
            raise ValueError("affine must be finite and invertible")
        aff.flags.writeable = False
        self._array = _readonly(array)
        self._affine = aff
        self.modality = modality or "OT"
        self.provenance = provenance if provenance is not None else Provenance()
        self.window = window

    # -- data --------------------------------------------------------------------------------
    @property
    def array(self) -> np.ndarray:
        """(I, J, K) read-only voxel array."""
        return self._array

    @property
    def affine(self) -> np.ndarray:
        """(4, 4) float64 read-only affine, voxel index -> RAS+ mm."""
        return self._affine

    @property
    def lps_affine(self) -> np.ndarray:
        """(4, 4) float64 affine, voxel index -> DICOM LPS+ mm (a new array)."""
        return geometry.lps_to_ras(self._affine)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self._array.shape  # type: ignore[return-value]

    @property
    def dtype(self) -> np.dtype:
        return self._array.dtype

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along ``(i, j, k)``."""
        return geometry.voxel_spacing(self._affine)

    @property
    def orientation(self) -> str:
        """nibabel orientation code of the array axes in RAS, e.g. ``"LPS"`` or ``"PSR"``."""
        return geometry.axcodes(self._affine)

    # -- operations --------------------------------------------------------------------------
    def replace(self, **changes: Any) -> Volume:
        """A new Volume with some of ``array``, ``affine``, ``modality``, ``provenance``,
        ``window`` replaced."""
        kwargs: dict[str, Any] = {
            "array": self._array,
            "affine": self._affine,
            "modality": self.modality,
            "provenance": self.provenance,
            "window": self.window,
        }
        unknown = set(changes) - set(kwargs)
        if unknown:
            raise TypeError(f"unknown Volume fields: {sorted(unknown)}")
        kwargs.update(changes)
        array = kwargs.pop("array")
        affine = kwargs.pop("affine")
        return Volume(array, affine, **kwargs)

    def with_provenance(self, **changes: Any) -> Volume:
        """A new Volume whose provenance has some fields replaced."""
        return self.replace(provenance=dataclasses.replace(self.provenance, **changes))

    def voxel_to_world(self, ijk: np.ndarray) -> np.ndarray:
        """Voxel indices ``(..., 3)`` -> RAS mm ``(..., 3)``."""
        return geometry.voxel_to_world(self._affine, ijk)

    def world_to_voxel(self, xyz: np.ndarray, *, containing: bool = True) -> np.ndarray:
        """RAS mm ``(..., 3)`` -> voxel index of the containing voxel (or continuous)."""
        return geometry.world_to_voxel(self._affine, xyz, containing=containing)

    def __repr__(self) -> str:
        sp = ", ".join(f"{s:.3g}" for s in self.spacing)
        return (
            f"Volume(shape={self.shape}, dtype={self.dtype}, spacing=({sp}) mm, "
            f"orientation={self.orientation}, modality={self.modality}, "
            f"format={self.provenance.format})"
        )
