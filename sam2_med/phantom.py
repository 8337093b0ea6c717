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

Random anatomy
--------------
:func:`make_random_phantom` draws a new abdomen from a seed: the same structures (plus liver
lesions, label 7) with random shapes (rotated, resized, two-lobed liver, a smooth elastic warp
of the whole body), positions, sizes, tissue values and texture, noise, voxel spacing, field of
view and grid orientation (LPS, RAS or a random oblique), as CT (HU) or as an MR-like image
(T1- or T2-like tissue contrast, a smooth bias field, Rician noise). Labels stay exact: a voxel
is labelled by the shape its centre lies in. Seeds are split once and for all:
:data:`TRAIN_SEEDS` for training, :data:`EVAL_SEEDS` for evaluation, never overlapping
(:func:`phantom_seed` maps a split and an index to a seed).
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
    "EVAL_SEEDS",
    "PHANTOM_HU",
    "PHANTOM_LABELS",
    "PHANTOM_OUTPUTS",
    "PROMPTED_STRUCTURES",
    "RANDOM_LABELS",
    "TRAIN_SEEDS",
    "make_phantom",
    "make_random_phantom",
    "phantom_affine",
    "phantom_seed",
    "seed_split",
    "write_phantom",
    "write_random_phantom",
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


# -- random anatomy ------------------------------------------------------------------------------
#: Label value -> name of the random phantoms: the fixed phantom's structures plus liver lesions.
RANDOM_LABELS: Mapping[int, str] = MappingProxyType({**PHANTOM_LABELS, 7: "liver_lesion"})

#: Seeds of phantoms that training may use.
TRAIN_SEEDS = range(0, 1_000_000)
#: Seeds of phantoms kept for evaluation; disjoint from :data:`TRAIN_SEEDS`.
EVAL_SEEDS = range(1_000_000, 2_000_000)

_SPLITS = {"train": TRAIN_SEEDS, "eval": EVAL_SEEDS}


def phantom_seed(split: Literal["train", "eval"], index: int) -> int:
    """The seed of the ``index``-th random phantom of a split.

    Examples
    --------
    >>> phantom_seed("train", 5), phantom_seed("eval", 5)
    (5, 1000005)
    """
    seeds = _SPLITS.get(split)
    if seeds is None:
        raise ValueError(f"unknown split {split!r}; use 'train' or 'eval'")
    return seeds[int(index)]  # IndexError beyond the split


def seed_split(seed: int) -> str:
    """``"train"``, ``"eval"`` or ``"other"``: which split a phantom seed belongs to."""
    for name, seeds in _SPLITS.items():
        if int(seed) in seeds:
            return name
    return "other"


@dataclass(frozen=True)
class _Blob:
    """A rotated ellipsoid (``z_range`` None) or a tilted elliptic tube along S-I (RAS mm)."""

    name: str
    center: np.ndarray  # (3,)
    semi_axes: np.ndarray  # (3,); tubes use the first two
    rotation: np.ndarray  # (3, 3): columns are the local axes in world coordinates
    z_range: tuple[float, float] | None = None
    slope: tuple[float, float] = (0.0, 0.0)  # tube axis drift in x, y per mm of z

    def inside(self, xyz: tuple[np.ndarray, ...], grow: float = 0.0) -> np.ndarray:
        """Bool array: points ``xyz = (x, y, z)`` (three float32 arrays) inside, grown by
        ``grow`` mm."""
        x, y, z = xyz
        dx = x - np.float32(self.center[0])
        dy = y - np.float32(self.center[1])
        dz = z - np.float32(self.center[2])
        if self.z_range is None:
            r = self.rotation.astype(np.float32)
            acc = None
            for i in range(3):
                u = dx * r[0, i] + dy * r[1, i] + dz * r[2, i]
                u *= np.float32(1.0 / (self.semi_axes[i] + grow))
                u *= u
                acc = u if acc is None else acc + u
            return acc <= 1.0
        dx -= np.float32(self.slope[0]) * dz
        dy -= np.float32(self.slope[1]) * dz
        a, b = self.semi_axes[:2] + grow
        lo, hi = self.z_range
        dx *= np.float32(1.0 / a)
        dy *= np.float32(1.0 / b)
        return (dx * dx + dy * dy <= 1.0) & (z >= lo - grow) & (z <= hi + grow)


def _random_rotation(
    rng: np.random.Generator, max_degrees: tuple[float, float, float]
) -> np.ndarray:
    ax, ay, az = (rng.uniform(-m, m) for m in max_degrees)
    return _rotation(2, az) @ _rotation(1, ay) @ _rotation(0, ax)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std Gaussian-filtered white noise of ``shape`` (sigma in voxels)."""
    from scipy.ndimage import gaussian_filter

    f = gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="wrap")
    std = float(f.std())
    return f / std if std > 0 else f


def _random_anatomy(rng: np.random.Generator, body: tuple[float, float]) -> list[_Blob]:
    """The organs of one random abdomen (body-centred RAS mm), in painting order."""
    a, b = body
    sx, sy = a / _BODY_SEMI_AXES[0], b / _BODY_SEMI_AXES[1]
    blobs: list[_Blob] = []
    present = {name: rng.random() < p for name, p in _PRESENCE.items()}

    def place(nominal: tuple[float, float, float], jitter: float) -> np.ndarray:
        x, y, z = nominal
        return np.array([x * sx, y * sy, z]) + rng.normal(0.0, jitter, 3)

    def size(nominal: tuple[float, float, float], lo: float = 0.75, hi: float = 1.3) -> np.ndarray:
        return np.asarray(nominal) * rng.uniform(lo, hi, 3) * np.array([sx, sy, 1.0]) ** 0.5

    if present["liver"]:
        c = place((17.0, 4.0, 8.0), 3.0)
        axes = size((17.0, 14.0, 20.0))
        rot = _random_rotation(rng, (10, 10, 25))
        blobs.append(_Blob("liver", c, axes, rot))
        # a second lobe overlapping the first: liver shapes are not ellipsoids
        lobe_c = c + rot @ (axes * rng.uniform(-0.6, 0.6, 3))
        lobe_axes = axes * rng.uniform(0.45, 0.8, 3)
        blobs.append(_Blob("liver", lobe_c, lobe_axes, _random_rotation(rng, (20, 20, 40))))
    if present["spleen"]:
        blobs.append(
            _Blob(
                "spleen",
                place((-22.0, -6.0, 12.0), 3.0),
                size((8.0, 11.0, 14.0)),
                _random_rotation(rng, (15, 15, 35)),
            )
        )
    for name, x in (("kidney_right", 18.0), ("kidney_left", -18.0)):
        if present[name]:
            blobs.append(
                _Blob(
                    name,
                    place((x, -14.0, -10.0), 2.5),
                    size((6.0, 5.0, 12.0)),
                    _random_rotation(rng, (15, 15, 30)),
                )
            )
    for name, xy, r in (("aorta", (-6.0, -1.0), 5.0), ("vertebra", (0.0, -17.0), 7.0)):
        if present[name]:
            c = place((*xy, 0.0), 1.5)
            rad = r * rng.uniform(0.75, 1.25) * np.ones(3)
            rad[1] *= rng.uniform(0.85, 1.15)
            slope = tuple(rng.uniform(-0.08, 0.08, 2))
            blobs.append(_Blob(name, c, rad, np.eye(3), (-60.0, 60.0), slope))
    return blobs


_PRESENCE = {
    "liver": 0.95,
    "spleen": 0.9,
    "kidney_right": 0.9,
    "kidney_left": 0.9,
    "aorta": 0.95,
    "vertebra": 0.95,
}


def _warp(
    rng: np.random.Generator, xyz: tuple[np.ndarray, ...]
) -> tuple[tuple[np.ndarray, ...], float]:
    """A smooth random elastic displacement of body-centred points (a few mm), and a bound on
    its length in mm."""
    out = [c.copy() for c in xyz]
    bound = 0.0
    for _ in range(3):
        k = rng.normal(0.0, 1.0, 3)
        k *= 2 * np.pi / rng.uniform(50.0, 120.0) / np.linalg.norm(k)
        amp = rng.normal(0.0, 1.5, 3)
        wave = np.sin(
            xyz[0] * np.float32(k[0])
            + xyz[1] * np.float32(k[1])
            + xyz[2] * np.float32(k[2])
            + np.float32(rng.uniform(0, 2 * np.pi))
        )
        for c in range(3):
            out[c] += wave * np.float32(amp[c])
        bound += float(np.linalg.norm(amp))
    return tuple(out), bound


def _low_frequency_field(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """A smooth zero-mean field of about unit amplitude varying over the whole grid."""
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    field = np.zeros(shape, np.float32)
    for _ in range(3):
        phase = rng.uniform(0, 2 * np.pi)
        arg = sum(
            g.astype(np.float32) * np.float32(rng.uniform(-1, 1) * np.pi / max(n, 1))
            for g, n in zip(grids, shape, strict=True)
        )
        field += np.cos(arg + np.float32(phase))
    return field / np.float32(np.sqrt(1.5))


def _tissue_values(rng: np.random.Generator, modality: str) -> dict[str, float]:
    """Mean intensity per tissue: HU for CT, arbitrary units for the MR-like contrasts."""
    if modality == "CT":
        liver = rng.uniform(45, 120)
        return {
            "air": -1000.0,
            "fat": rng.uniform(-120, -70),
            "soft_tissue": rng.uniform(20, 50),
            "liver": liver,
            "spleen": liver + rng.uniform(-30, 20),
            "kidney": rng.uniform(110, 220),
            "aorta": rng.uniform(130, 320),
            "vertebra": rng.uniform(250, 450),
            "cortex": rng.uniform(600, 1100),
            "lesion": liver + rng.choice([-1.0, 1.0]) * rng.uniform(25, 70),
        }
    t1 = rng.random() < 0.5
    if t1:
        liver = rng.uniform(380, 520)
        v = {
            "fat": rng.uniform(750, 1000),
            "soft_tissue": rng.uniform(250, 340),
            "liver": liver,
            "spleen": rng.uniform(260, 360),
            "kidney": rng.uniform(300, 600),
            "aorta": rng.uniform(40, 140) if rng.random() < 0.5 else rng.uniform(650, 900),
            "vertebra": rng.uniform(450, 650),
            "cortex": rng.uniform(60, 150),
            "lesion": liver - rng.uniform(120, 250),
        }
    else:
        liver = rng.uniform(150, 240)
        v = {
            "fat": rng.uniform(450, 750),
            "soft_tissue": rng.uniform(200, 300),
            "liver": liver,
            "spleen": rng.uniform(380, 520),
            "kidney": rng.uniform(450, 650),
            "aorta": rng.uniform(30, 110),
            "vertebra": rng.uniform(250, 380),
            "cortex": rng.uniform(40, 120),
            "lesion": liver + rng.uniform(250, 600),
        }
    v["air"] = rng.uniform(0, 15)
    return v


def make_random_phantom(
    seed: int, *, modality: Literal["CT", "MR"] | None = None
) -> tuple[Volume, LabelVolume]:
    """A random synthetic abdomen with exact labels, drawn from ``seed``.

    Parameters
    ----------
    seed : int
        Everything (anatomy, contrast, noise, grid) follows from it; the same seed always
        gives the same voxels. Use :data:`TRAIN_SEEDS` for training and :data:`EVAL_SEEDS`
        for evaluation (see :func:`phantom_seed`).
    modality : {"CT", "MR"}, optional
        Force the contrast; default: drawn from the seed (CT with probability 0.7).

    Returns
    -------
    volume : Volume
        ``(I, J, K)`` int16 array (HU for CT, arbitrary positive units for MR), RAS+ affine;
        in-plane spacing 0.6-1.3 mm, slices 1-5 mm apart, LPS, RAS or a random oblique grid
        (tilts up to 20 degrees), the field of view cropping the body by a random margin and
        covering 50-100 mm along S-I. Provenance ``extra`` holds the seed, its split and the
        drawn parameters.
    labels : LabelVolume
        uint8 labels on the same grid, names :data:`RANDOM_LABELS` (a structure may be absent
        or cut by the field of view; lesions, label 7, are 0-3 spheroids carved out of the
        liver).

    Examples
    --------
    >>> vol, lab = make_random_phantom(phantom_seed("eval", 0))
    >>> vol.provenance.extra["split"], lab.array.dtype
    ('eval', dtype('uint8'))
    """
    rng = np.random.default_rng([int(seed), 0x5A2])
    if modality is None:
        modality = "CT" if rng.random() < 0.7 else "MR"
    if modality not in ("CT", "MR"):
        raise ValueError(f"modality must be 'CT' or 'MR', got {modality!r}")
    body = (rng.uniform(32.0, 46.0), rng.uniform(24.0, 34.0))
    blobs = _random_anatomy(rng, body)

    # grid: orientation, spacing, field of view
    orient = str(rng.choice(["LPS", "RAS", "oblique"], p=[0.4, 0.3, 0.3]))
    if orient == "LPS":
        rot = np.diag([-1.0, -1.0, 1.0])
    elif orient == "RAS":
        rot = np.eye(3)
    else:
        rot = _random_rotation(rng, (20, 20, 20)) @ np.diag([-1.0, -1.0, 1.0])
    inplane = rng.uniform(0.6, 1.3)
    step = rng.uniform(1.0, 5.0)
    margin = rng.uniform(-6.0, 30.0, 2)  # negative: the body is cropped
    extent = np.array([2 * body[0] + margin[0], 2 * body[1] + margin[1]])
    inplane = max(inplane, float(extent.max()) / 160.0)
    z_extent = rng.uniform(50.0, 100.0)
    shape = (
        int(np.ceil(extent[0] / inplane)),
        int(np.ceil(extent[1] / inplane)),
        max(12, int(np.ceil(z_extent / step))),
    )
    spacing = (inplane, inplane, step)
    center = np.array([0.0, 0.0, rng.uniform(-15.0, 15.0)]) + rng.normal(0.0, 2.0, 3) * [1, 1, 0]
    affine = np.eye(4)
    affine[:3, :3] = rot * np.asarray(spacing)[None, :]
    affine[:3, 3] = (
        np.asarray(BODY_CENTER_RAS) + center - affine[:3, :3] @ ((np.asarray(shape) - 1) / 2)
    )

    i, j, k = (g.astype(np.float32) for g in np.ogrid[: shape[0], : shape[1], : shape[2]])
    rel = affine[:3, 3] - np.asarray(BODY_CENTER_RAS)
    world = tuple(
        i * np.float32(affine[c, 0])
        + j * np.float32(affine[c, 1])
        + k * np.float32(affine[c, 2])
        + np.float32(rel[c])
        for c in range(3)
    )
    xyz, warp_mm = _warp(rng, world)
    values = _tissue_values(rng, modality)
    to_voxel = np.linalg.inv(affine)

    def region(blob: _Blob, grow: float = 0.0) -> np.ndarray:
        """``blob.inside`` on the whole grid, computed only in the voxel box that can hold it."""
        reach = float(np.max(blob.semi_axes[:2] if blob.z_range else blob.semi_axes))
        reach += abs(grow) + warp_mm + 1.0
        lo = blob.center - reach
        hi = blob.center + reach
        if blob.z_range is not None:
            lo[2], hi[2] = (
                blob.z_range[0] - abs(grow) - warp_mm - 1.0,
                blob.z_range[1] + abs(grow) + warp_mm + 1.0,
            )
            lo[:2] -= np.abs(blob.slope) * max(abs(lo[2]), abs(hi[2])) + 1.0
            hi[:2] += np.abs(blob.slope) * max(abs(lo[2]), abs(hi[2])) + 1.0
        corners = np.array(
            [[x, y, z, 1.0] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
        )
        corners[:, :3] += np.asarray(BODY_CENTER_RAS)
        vox = (to_voxel @ corners.T)[:3]
        a = np.maximum(np.floor(vox.min(axis=1)).astype(int) - 1, 0)
        b = np.minimum(np.ceil(vox.max(axis=1)).astype(int) + 2, shape)
        out = np.zeros(shape, bool)
        if np.any(b <= a):
            return out
        box = tuple(slice(int(u), int(v)) for u, v in zip(a, b, strict=True))
        sub = tuple(np.broadcast_to(c, shape)[box] for c in xyz)
        out[box] = blob.inside(sub, grow=grow)
        return out

    # paint: body, fat layer and halos, organs, lesions
    a, b = body
    x, y = xyz[0], xyz[1]
    fat_t = rng.uniform(2.0, 9.0)
    in_body = (x / a) ** 2 + (y / b) ** 2 <= 1.0
    interior = (x / (a - fat_t)) ** 2 + (y / (b - fat_t)) ** 2 <= 1.0
    tissue = np.zeros(shape, np.uint8)  # index into the tissue list below
    names = ["air", "fat", "soft_tissue", "liver", "spleen", "kidney", "aorta", "vertebra"]
    names += ["cortex", "lesion"]
    code = {n: i for i, n in enumerate(names)}
    tissue[in_body] = code["fat"]
    tissue[interior] = code["soft_tissue"]
    halo = rng.uniform(0.5, 3.0)
    for blob in blobs:
        tissue[region(blob, halo) & interior] = code["fat"]
    labels = np.zeros(shape, np.uint8)
    value_of = {n: v for v, n in RANDOM_LABELS.items()}
    for blob in blobs:
        m = region(blob) & interior
        labels[m] = value_of[blob.name]
        t = blob.name.split("_")[0] if blob.name.startswith("kidney") else blob.name
        tissue[m] = code[t]
        if blob.name == "vertebra":
            core = region(blob, -rng.uniform(1.0, 2.5))
            tissue[m & ~core] = code["cortex"]
    liver = labels == value_of["liver"]
    n_lesions = int(rng.choice([0, 1, 2, 3], p=[0.35, 0.35, 0.2, 0.1])) if liver.any() else 0
    liver_blob = next((bl for bl in blobs if bl.name == "liver"), None)
    for _ in range(n_lesions):
        u = rng.normal(size=3)
        u *= rng.uniform(0.0, 0.6) / np.linalg.norm(u)
        c = liver_blob.center + liver_blob.rotation @ (u * liver_blob.semi_axes)
        les = _Blob(
            "liver_lesion",
            c,
            rng.uniform(2.5, 8.0) * rng.uniform(0.8, 1.2, 3),
            _random_rotation(rng, (30, 30, 30)),
        )
        m = region(les) & liver
        labels[m] = value_of["liver_lesion"]
        tissue[m] = code["lesion"]

    # intensities, texture, noise
    base = np.array([values.get(n, 0.0) for n in names], np.float32)
    img = base[tissue]
    texture_amp = rng.uniform(0.0, 12.0) if modality == "CT" else rng.uniform(0.0, 0.06)
    if texture_amp > 0:
        tex = _smooth_field(rng, shape, sigma=rng.uniform(0.8, 2.0))
        if modality == "CT":
            img += (texture_amp * tex) * (tissue != code["air"])
        else:
            img *= 1.0 + texture_amp * tex
    if modality == "CT":
        noise = rng.uniform(3.0, 18.0)
        img += rng.standard_normal(shape, dtype=np.float32) * np.float32(noise)
        arr = np.clip(np.rint(img), -1024, 3071).astype(np.int16)
    else:
        bias = np.exp(np.float32(rng.uniform(0.05, 0.25)) * _low_frequency_field(rng, shape))
        img *= bias
        noise = rng.uniform(5.0, 25.0)
        n1 = rng.standard_normal(shape, dtype=np.float32) * np.float32(noise)
        n2 = rng.standard_normal(shape, dtype=np.float32) * np.float32(noise)
        arr = np.clip(np.rint(np.sqrt((img + n1) ** 2 + n2**2)), 0, 32767).astype(np.int16)

    params = {
        "modality": modality,
        "orientation": orient,
        "shape": list(shape),
        "spacing_mm": [round(float(s), 4) for s in spacing],
        "body_semi_axes_mm": [round(float(v), 2) for v in body],
        "noise": round(float(noise), 3),
        "lesions": n_lesions,
        "structures": sorted({bl.name for bl in blobs}),
    }
    split = seed_split(seed)
    provenance = Provenance(
        format="synthetic",
        description=f"sam2-med random phantom (seed {seed}, {split} split, {modality})",
        source_orientation=geometry.axcodes(affine),
        notes=("generated by sam2_med.phantom.make_random_phantom",),
        extra={"generator": "sam2_med.phantom", "seed": int(seed), "split": split, **params},
    )
    volume = Volume(
        arr,
        affine,
        modality=modality,
        provenance=provenance,
        window=WindowHint(40.0, 400.0, "SOFT_TISSUE") if modality == "CT" else None,
    )
    return volume, LabelVolume(labels, volume, dict(RANDOM_LABELS), {"random_phantom": params})


def write_random_phantom(
    out_dir: str | os.PathLike[str], seed: int, *, overwrite: bool = False
) -> dict[str, Path]:
    """Write a random phantom (:func:`make_random_phantom`) as NIfTI image, labels and prompts.

    Parameters
    ----------
    out_dir : path-like
        Folder to write into (created if missing).
    seed : int
        Phantom seed (see :func:`phantom_seed`).
    overwrite : bool
        Replace existing outputs; default: refuse if any exists.

    Returns
    -------
    dict of str -> Path
        ``"image"``: ``random_<seed>_image.nii.gz`` (int16; HU for CT), ``"image_sidecar"``:
        its ``.json`` (``Modality``), ``"labels"``: ``random_<seed>_labels.nii.gz`` with
        ``"label_names"`` beside it, ``"prompts"``: ``random_<seed>_prompts.json``, one positive
        click (voxel indices) at the most interior point of the largest axial cross-section of
        each of :data:`PROMPTED_STRUCTURES` present. Written atomically (temporary folder, then
        renamed).
    """
    from .evaluate import derive_prompt
    from .io import OutputExistsError
    from .prompts import axis_index_for

    out = Path(out_dir)
    stem = f"random_{int(seed)}"
    names = {
        "image": f"{stem}_image.nii.gz",
        "image_sidecar": f"{stem}_image.json",
        "labels": f"{stem}_labels.nii.gz",
        "label_names": f"{stem}_labels.json",
        "prompts": f"{stem}_prompts.json",
    }
    targets = {k: out / n for k, n in names.items()}
    existing = [p for p in targets.values() if p.exists()]
    if existing and not overwrite:
        names_found = ", ".join(p.name for p in existing)
        raise OutputExistsError(
            f"phantom outputs exist ({names_found}); pass overwrite=True",
            out,
            cli=f"phantom outputs exist ({names_found}); give --overwrite to replace them",
        )
    volume, labels = make_random_phantom(seed)
    axis_index = axis_index_for(volume, "axial", None)
    objects = []
    value_of = {n: v for v, n in RANDOM_LABELS.items()}
    for name in PROMPTED_STRUCTURES:
        m = labels.array == value_of[name]
        if m.any():
            p = derive_prompt(m, axis_index, label=value_of[name], name=name, mode="point")
            objects.append(
                {"name": name, "label": value_of[name], "points": [[*map(int, p.points[0]), 1]]}
            )
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".phantom-", dir=out))
    try:
        from .io import save_mask

        _write_nifti_image(volume, tmp / names["image"])
        meta = {"Modality": volume.modality, "Manufacturer": "sam2-med random phantom"}
        (tmp / names["image_sidecar"]).write_text(json.dumps(meta, indent=2) + "\n")
        save_mask(labels, tmp / names["labels"], reference=volume, label_names=dict(RANDOM_LABELS))
        prompts = {"space": "voxel", "objects": objects}
        (tmp / names["prompts"]).write_text(json.dumps(prompts, indent=2) + "\n")
        for key, dest in targets.items():
            os.replace(tmp / names[key], dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return targets
