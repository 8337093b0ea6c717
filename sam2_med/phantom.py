"""A small synthetic abdominal CT phantom with exact reference labels, made by this project.

Nothing here comes from third-party data: every voxel is computed from the geometry below.

The anatomy is defined in **world RAS+ millimetres** relative to :data:`BODY_CENTER_RAS` and
then sampled onto whichever voxel grid is asked for, so a rotated or flipped grid still puts
every organ in its anatomical place. Conventions:

* RAS+: +x towards the patient's **Right**, +y **Anterior**, +z **Superior** (NIfTI/nibabel).
* DICOM files written by :func:`write_phantom` use LPS+ patient coordinates, as DICOM requires
  (PS3.3 C.7.6.2.1.1); :func:`sam2_med.geometry.lps_to_ras` converts.

So the liver (patient's right) has world ``x > 0``, the spleen (patient's left) ``x < 0``, the
spine is posterior (``y < 0``) and the aorta lies in front of it, slightly to the left.

Structures (nominal HU; every voxel then gets seeded Gaussian noise, ``noise_hu`` standard
deviation, and is clipped to the CT range -1024..3071):

====  ============  ======  ==========================================================
label name          HU      shape (body-centred RAS mm)
====  ============  ======  ==========================================================
-     air           -1000   outside the body
-     fat           -100    5 mm subcutaneous layer; 2.5 mm halo around each organ
-     soft_tissue   40      body interior (muscle, bowel)
1     liver         60      ellipsoid centre (17, 4, 8), semi-axes (17, 14, 20)
2     spleen        50      ellipsoid centre (-22, -6, 12), semi-axes (8, 11, 14)
3     kidney_right  150     ellipsoid centre (18, -14, -10), semi-axes (6, 5, 12); enhanced
4     kidney_left   150     ellipsoid centre (-18, -14, -10), semi-axes (6, 5, 12); enhanced
5     aorta         180     cylinder along S-I, axis (-6, -1), radius 5, z -40..40; contrast
6     vertebra      700     cylinder along S-I, axis (0, -17), radius 7, z -40..40; bone
====  ============  ======  ==========================================================

The body is an elliptic cylinder along S-I with semi-axes 40 mm (R-L) and 30 mm (A-P). Each
structure is the set of voxels whose centre lies inside its shape (no partial-volume blending),
so the label map marks exactly the voxels that carry the structure's HU.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Literal

import numpy as np

from . import geometry
from .labels import LabelVolume
from .volume import Provenance, Volume, WindowHint

__all__ = [
    "BODY_CENTER_RAS",
    "DEFAULT_SHAPE",
    "DEFAULT_SPACING",
    "PHANTOM_HU",
    "PHANTOM_LABELS",
    "PHANTOM_OUTPUTS",
    "PROMPTED_STRUCTURES",
    "make_phantom",
    "phantom_affine",
    "write_phantom",
]

Orientation = Literal["LPS", "RAS", "oblique"]

#: Default grid ``(I, J, K)``: columns, rows, slices.
DEFAULT_SHAPE = (112, 96, 40)
#: Default voxel size in mm along ``(i, j, k)``.
DEFAULT_SPACING = (0.9, 0.9, 2.5)
#: World RAS+ mm of the body centre, which is also the centre of the voxel grid.
BODY_CENTER_RAS = (0.0, 30.0, -150.0)

#: Label value -> structure name.
PHANTOM_LABELS: Mapping[int, str] = MappingProxyType(
    {1: "liver", 2: "spleen", 3: "kidney_right", 4: "kidney_left", 5: "aorta", 6: "vertebra"}
)

#: Nominal Hounsfield units of every tissue (before noise).
PHANTOM_HU: Mapping[str, int] = MappingProxyType(
    {
        "air": -1000,
        "fat": -100,
        "soft_tissue": 40,
        "liver": 60,
        "spleen": 50,
        "kidney_right": 150,
        "kidney_left": 150,
        "aorta": 180,
        "vertebra": 700,
    }
)

#: ``write_phantom`` output key -> file or folder name.
PHANTOM_OUTPUTS: Mapping[str, str] = MappingProxyType(
    {
        "image": "phantom_ct.nii.gz",
        "image_sidecar": "phantom_ct.json",
        "labels": "phantom_labels.nii.gz",
        "label_names": "phantom_labels.json",
        "dicom": "phantom_dicom",
        "prompts": "phantom_prompts.json",
    }
)

#: Structures that :func:`write_phantom`'s prompt file asks for (one click at each centre).
PROMPTED_STRUCTURES = ("liver", "spleen")

_BODY_SEMI_AXES = (40.0, 30.0)  # R-L, A-P
_SUBCUTANEOUS_FAT_MM = 5.0
_HALO_MM = 2.5
# The "oblique" grid: the LPS grid rotated 15 degrees about the R-L axis, then 10 degrees about
# the A-P axis (both in world RAS).
_OBLIQUE_DEGREES = (15.0, 10.0)
# DICOM: an overlapping reconstruction, thicker slices than the step between them.
_DICOM_SLICE_THICKNESS = 3.0
_UID_PREFIX = "1.2.826.0.1.3680043.8.498."  # pydicom's UID root, for pydicom-made objects


@dataclass(frozen=True)
class _Shape:
    """An ellipsoid (``z_range`` None) or an elliptic cylinder along S-I, body-centred RAS mm."""

    name: str
    center: tuple[float, float, float]
    semi_axes: tuple[float, float, float]
    z_range: tuple[float, float] | None = None

    def inside(self, xyz: np.ndarray, grow: float = 0.0) -> np.ndarray:
        """(...,) bool: points ``xyz`` (..., 3) inside the shape enlarged by ``grow`` mm."""
        d = xyz - np.asarray(self.center)
        a = np.asarray(self.semi_axes) + grow
        if self.z_range is None:
            return (d / a) ** 2 @ np.ones(3) <= 1.0
        in_disc = (d[..., 0] / a[0]) ** 2 + (d[..., 1] / a[1]) ** 2 <= 1.0
        z = xyz[..., 2]
        return in_disc & (z >= self.z_range[0] - grow) & (z <= self.z_range[1] + grow)


# In label order; a later structure wins where two touch (none overlap with these numbers).
_STRUCTURES = (
    _Shape("liver", (17.0, 4.0, 8.0), (17.0, 14.0, 20.0)),
    _Shape("spleen", (-22.0, -6.0, 12.0), (8.0, 11.0, 14.0)),
    _Shape("kidney_right", (18.0, -14.0, -10.0), (6.0, 5.0, 12.0)),
    _Shape("kidney_left", (-18.0, -14.0, -10.0), (6.0, 5.0, 12.0)),
    _Shape("aorta", (-6.0, -1.0, 0.0), (5.0, 5.0, 0.0), z_range=(-40.0, 40.0)),
    _Shape("vertebra", (0.0, -17.0, 0.0), (7.0, 7.0, 0.0), z_range=(-40.0, 40.0)),
)


def _rotation(axis: int, degrees: float) -> np.ndarray:
    t = np.deg2rad(degrees)
    c, s = np.cos(t), np.sin(t)
    i, j = [a for a in range(3) if a != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def phantom_affine(
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing: tuple[float, float, float] = DEFAULT_SPACING,
    orientation: Orientation = "oblique",
) -> np.ndarray:
    """The voxel -> RAS+ mm affine of a phantom grid, centred on :data:`BODY_CENTER_RAS`.

    Parameters
    ----------
    shape : (int, int, int)
        ``(I, J, K)``.
    spacing : (float, float, float)
        Voxel size in mm along ``(i, j, k)``.
    orientation : {"LPS", "RAS", "oblique"}
        ``"LPS"``: ``i`` towards the patient's left, ``j`` posterior, ``k`` superior (the
        usual axial DICOM grid). ``"RAS"``: right, anterior, superior. ``"oblique"``: the LPS
        grid rotated 15° about the R-L axis and then 10° about the A-P axis. In every case
        ``k`` is along ``i x j`` in LPS, as a DICOM slice normal is.

    Returns
    -------
    (4, 4) float64 ndarray
        Voxel centre ``(i, j, k)`` -> RAS+ mm.

    Examples
    --------
    >>> geometry.axcodes(phantom_affine(orientation="LPS"))
    'LPS'
    >>> bool(geometry.is_oblique(phantom_affine(orientation="oblique")))
    True
    """
    if orientation == "LPS":
        r = np.diag([-1.0, -1.0, 1.0])
    elif orientation == "RAS":
        r = np.diag([1.0, 1.0, 1.0])
    elif orientation == "oblique":
        tilt, roll = _OBLIQUE_DEGREES
        r = _rotation(1, roll) @ _rotation(0, tilt) @ np.diag([-1.0, -1.0, 1.0])
    else:
        raise ValueError(f"unknown orientation {orientation!r}; use 'LPS', 'RAS' or 'oblique'")
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"shape must be three positive sizes, got {shape}")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be three positive sizes in mm, got {spacing}")
    aff = np.eye(4)
    aff[:3, :3] = r * np.asarray(spacing, dtype=np.float64)[None, :]
    centre_ijk = (np.asarray(shape, dtype=np.float64) - 1.0) / 2.0
    aff[:3, 3] = np.asarray(BODY_CENTER_RAS) - aff[:3, :3] @ centre_ijk
    return aff


def _tissue_maps(xyz: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nominal HU (int16) and labels (uint8) at body-centred RAS points ``xyz`` (..., 3)."""
    a, b = _BODY_SEMI_AXES
    x, y = xyz[..., 0], xyz[..., 1]
    body = (x / a) ** 2 + (y / b) ** 2 <= 1.0
    fat_t = _SUBCUTANEOUS_FAT_MM
    interior = (x / (a - fat_t)) ** 2 + (y / (b - fat_t)) ** 2 <= 1.0

    hu = np.full(xyz.shape[:-1], PHANTOM_HU["air"], dtype=np.int16)
    hu[body] = PHANTOM_HU["fat"]
    hu[interior] = PHANTOM_HU["soft_tissue"]
    for shape in _STRUCTURES:
        hu[shape.inside(xyz, grow=_HALO_MM) & interior] = PHANTOM_HU["fat"]

    labels = np.zeros(xyz.shape[:-1], dtype=np.uint8)
    value_of = {name: value for value, name in PHANTOM_LABELS.items()}
    for shape in _STRUCTURES:
        mask = shape.inside(xyz) & interior
        labels[mask] = value_of[shape.name]
        hu[mask] = PHANTOM_HU[shape.name]
    return hu, labels


def make_phantom(
    *,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing: tuple[float, float, float] = DEFAULT_SPACING,
    orientation: Orientation = "oblique",
    seed: int = 0,
    noise_hu: float = 6.0,
) -> tuple[Volume, LabelVolume]:
    """Build the synthetic CT phantom and its exact label map.

    Parameters
    ----------
    shape : (int, int, int)
        Grid size ``(I, J, K)`` = (columns, rows, slices). The default ``(112, 96, 40)`` covers
        about 101 x 86 x 100 mm, the whole body cross-section.
    spacing : (float, float, float)
        Voxel size in mm along ``(i, j, k)``; default ``(0.9, 0.9, 2.5)``.
    orientation : {"LPS", "RAS", "oblique"}
        Grid orientation (see :func:`phantom_affine`); the anatomy stays put in world space.
    seed : int
        Seed of the noise; the same arguments always give the same voxels.
    noise_hu : float
        Standard deviation of the Gaussian noise in HU (0 for the nominal values).

    Returns
    -------
    volume : Volume
        int16 HU array ``(I, J, K)``, RAS+ affine, modality ``"CT"``, window hint soft tissue
        (40/400 HU), provenance format ``"synthetic"``.
    labels : LabelVolume
        uint8 labels on the same grid, names :data:`PHANTOM_LABELS`; ``extra`` holds the
        nominal HU per structure.

    Examples
    --------
    >>> vol, lab = make_phantom(shape=(24, 20, 10), spacing=(4.0, 4.0, 8.0), orientation="RAS")
    >>> vol.array.dtype, lab.array.dtype, vol.orientation
    (dtype('int16'), dtype('uint8'), 'RAS')
    """
    if noise_hu < 0:
        raise ValueError(f"noise_hu must be >= 0, got {noise_hu}")
    shape = tuple(int(s) for s in shape)  # type: ignore[assignment]
    affine = phantom_affine(shape, spacing, orientation)
    ijk = np.stack(np.meshgrid(*(np.arange(n) for n in shape), indexing="ij"), axis=-1)
    xyz = geometry.voxel_to_world(affine, ijk) - np.asarray(BODY_CENTER_RAS)
    hu, labels = _tissue_maps(xyz)
    if noise_hu > 0:
        rng = np.random.default_rng(seed)
        noisy = hu + rng.normal(0.0, noise_hu, size=hu.shape)
        hu = np.clip(np.rint(noisy), -1024, 3071).astype(np.int16)

    provenance = Provenance(
        format="synthetic",
        description=f"sam2-med synthetic CT phantom ({orientation}, seed {seed})",
        source_orientation=geometry.axcodes(affine),
        notes=(f"generated by sam2_med.phantom.make_phantom, noise {noise_hu:g} HU",),
        extra={"generator": "sam2_med.phantom", "seed": seed, "orientation": orientation},
    )
    volume = Volume(
        hu,
        affine,
        modality="CT",
        provenance=provenance,
        window=WindowHint(40.0, 400.0, "SOFT_TISSUE"),
    )
    label_volume = LabelVolume(
        labels,
        volume,
        dict(PHANTOM_LABELS),
        {"nominal_hu": {name: PHANTOM_HU[name] for name in PHANTOM_LABELS.values()}},
    )
    return volume, label_volume


# -- files ---------------------------------------------------------------------------------------
def _ds(value: float) -> str:
    """A DICOM Decimal String (at most 16 characters) with micrometre precision."""
    text = f"{float(value):.6f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _write_nifti_image(volume: Volume, path: Path) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(np.asarray(volume.array), volume.affine)
    hdr = img.header
    hdr.set_data_dtype(np.int16)
    hdr.set_xyzt_units("mm")
    img.set_qform(volume.affine, code=1)  # scanner-based anatomical, like the mask writer
    img.set_sform(volume.affine, code=1)
    hdr["scl_slope"] = 1.0
    hdr["scl_inter"] = 0.0
    hdr["descrip"] = b"sam2-med synthetic CT phantom (HU)"
    nib.save(img, str(path))


def _write_image_sidecar(path: Path) -> None:
    """What dcm2niix writes beside a converted CT: the modality a bare NIfTI cannot carry."""
    meta = {"Modality": "CT", "Manufacturer": "sam2-med synthetic phantom", "BodyPart": "ABDOMEN"}
    path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def _write_labels_nifti(labels: LabelVolume, path: Path) -> None:
    """The label map via ``sam2_med.io.save_mask`` (NIfTI + ``<stem>.json`` with the names)."""
    from .io import save_mask

    save_mask(labels, path, reference=labels.reference, label_names=dict(PHANTOM_LABELS))


def _write_dicom_series(volume: Volume, folder: Path, seed: int) -> None:
    """One CT Image Storage file per slice, explicit VR little endian, LPS+ geometry.

    Stored pixels are uint16 with Rescale Slope 1 / Intercept -1024 (HU = stored - 1024), the
    usual scanner convention. Files are named in a shuffled order and Instance Numbers run
    against the slice normal, so only Image Position (Patient) gives the slice order.
    """
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import (
        PYDICOM_IMPLEMENTATION_UID,
        CTImageStorage,
        ExplicitVRLittleEndian,
        generate_uid,
    )

    def uid(*parts: object) -> str:
        return generate_uid(_UID_PREFIX, ["sam2-med-phantom", str(seed), *map(str, parts)])

    study_uid, series_uid, for_uid = uid("study"), uid("series"), uid("frame-of-reference")
    lps = geometry.lps_to_ras(volume.affine)  # voxel -> LPS+ mm
    spacing = volume.spacing
    row_dir = lps[:3, 0] / spacing[0]  # along a row: increasing column index i
    col_dir = lps[:3, 1] / spacing[1]  # down a column: increasing row index j
    iop = [_ds(v) for v in (*row_dir, *col_dir)]
    n_i, n_j, n_k = volume.shape
    hu = np.asarray(volume.array)
    order = np.random.default_rng(seed).permutation(n_k)

    folder.mkdir()
    for file_index, k in enumerate(order):
        k = int(k)
        sop_uid = uid("instance", k)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID

        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20260101"
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
        ds.AccessionNumber = ""
        ds.Modality = "CT"
        ds.Manufacturer = "sam2-med"
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "sam2-med synthetic phantom"
        ds.SeriesDescription = "Phantom CT oblique"
        ds.PatientName = "Phantom^SAM2MED"
        ds.PatientID = "SAM2MED-PHANTOM"
        ds.PatientBirthDate = ""
        ds.PatientSex = "O"
        ds.BodyPartExamined = "ABDOMEN"
        ds.SliceThickness = _ds(_DICOM_SLICE_THICKNESS)
        ds.KVP = ""
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = 1
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = n_k - k  # descending along the normal, as many scanners do
        ds.ImagePositionPatient = [_ds(v) for v in lps[:3, :3] @ [0.0, 0.0, k] + lps[:3, 3]]
        ds.ImageOrientationPatient = iop
        ds.FrameOfReferenceUID = for_uid
        ds.PositionReferenceIndicator = ""
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = n_j
        ds.Columns = n_i
        ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]  # row spacing, column spacing
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.WindowCenter = "40"
        ds.WindowWidth = "400"
        ds.WindowCenterWidthExplanation = "SOFT_TISSUE"
        ds.RescaleIntercept = "-1024"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        # rows are j, columns are i: the DICOM frame is the (I, J) slice transposed
        stored = (hu[:, :, k].T.astype(np.int32) + 1024).astype("<u2")
        ds.PixelData = np.ascontiguousarray(stored).tobytes()
        ds.save_as(folder / f"IM{file_index:04d}.dcm", enforce_file_format=True)


def write_phantom(
    out_dir: str | os.PathLike[str],
    *,
    overwrite: bool = False,
    seed: int = 0,
    orientation: Orientation = "oblique",
) -> dict[str, Path]:
    """Write the phantom as NIfTI image + labels and as a DICOM CT series, all on one grid.

    Parameters
    ----------
    out_dir : path-like
        Folder to write into (created if missing). Other files in it are left alone.
    overwrite : bool
        Replace existing phantom outputs. Default: refuse if any of them exists.
    seed : int
        Noise seed, also the entropy of the DICOM UIDs (same seed, same UIDs).
    orientation : {"LPS", "RAS", "oblique"}
        Grid orientation of both the NIfTI files and the DICOM series (default oblique).

    Returns
    -------
    dict of str -> Path
        ``"image"``: ``phantom_ct.nii.gz`` (int16 HU; qform = sform, code 1);
        ``"image_sidecar"``: ``phantom_ct.json``, a dcm2niix/BIDS-style sidecar saying
        ``"Modality": "CT"`` so the NIfTI reads as CT (HU windows apply);
        ``"labels"``: ``phantom_labels.nii.gz`` (uint8, written by
        :func:`sam2_med.io.save_mask`); ``"label_names"``: ``phantom_labels.json`` (its
        sidecar: names, voxel counts, geometry); ``"dicom"``: ``phantom_dicom/``, one CT Image
        Storage file per slice. The DICOM voxels are the NIfTI voxels at the same world
        positions: Image Position/Orientation (Patient) are the NIfTI affine in LPS+.
        ``"prompts"``: ``phantom_prompts.json``, a :mod:`sam2_med.prompts` file with one
        positive click (world RAS+ mm, so it fits every orientation) at the centre of each of
        :data:`PROMPTED_STRUCTURES`, labelled as in the label map.

    Raises
    ------
    sam2_med.io.OutputExistsError
        (a :class:`FileExistsError`) an output exists and ``overwrite`` is false.

    Notes
    -----
    Everything is first written into a temporary folder inside ``out_dir`` and then renamed
    into place, so an interrupted run leaves no half-written phantom behind.
    """
    from .io import OutputExistsError

    out = Path(out_dir)
    targets = {key: out / name for key, name in PHANTOM_OUTPUTS.items()}
    existing = [p for p in targets.values() if p.exists() or p.is_symlink()]
    if existing and not overwrite:
        names = ", ".join(p.name for p in existing)
        raise OutputExistsError(
            f"phantom outputs exist ({names}); pass overwrite=True",
            out,
            cli=f"phantom outputs exist ({names}); give --overwrite to replace them",
        )

    volume, labels = make_phantom(seed=seed, orientation=orientation)
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".phantom-", dir=out))
    try:
        _write_nifti_image(volume, tmp / PHANTOM_OUTPUTS["image"])
        _write_image_sidecar(tmp / PHANTOM_OUTPUTS["image_sidecar"])
        _write_labels_nifti(labels, tmp / PHANTOM_OUTPUTS["labels"])
        _add_phantom_record(tmp / PHANTOM_OUTPUTS["label_names"], seed, orientation)
        _write_dicom_series(volume, tmp / PHANTOM_OUTPUTS["dicom"], seed)
        _write_prompts(tmp / PHANTOM_OUTPUTS["prompts"])
        for key, dest in targets.items():
            src = tmp / PHANTOM_OUTPUTS[key]
            if dest.is_dir() and not dest.is_symlink():
                shutil.rmtree(dest)
            elif src.is_dir() and (dest.exists() or dest.is_symlink()):
                dest.unlink()
            os.replace(src, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return targets


def _write_prompts(path: Path) -> None:
    """The README's prompt file: a positive click at the centre of each prompted structure."""
    value_of = {name: value for value, name in PHANTOM_LABELS.items()}
    objects = []
    for shape in _STRUCTURES:
        if shape.name in PROMPTED_STRUCTURES:
            centre = np.add(BODY_CENTER_RAS, shape.center).round(3).tolist()
            objects.append(
                {"name": shape.name, "label": value_of[shape.name], "points": [[*centre, 1]]}
            )
    data = {"space": "world_ras", "objects": objects}
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _add_phantom_record(sidecar: Path, seed: int, orientation: str) -> None:
    """Add what the phantom is to the label sidecar that ``save_mask`` wrote."""
    record = json.loads(sidecar.read_text(encoding="utf-8"))
    record["phantom"] = {
        "generator": "sam2_med.phantom.write_phantom",
        "seed": seed,
        "orientation": orientation,
        "nominal_hu": dict(PHANTOM_HU),
        "third_party_data": False,
    }
    sidecar.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
