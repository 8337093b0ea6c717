"""Small pure geometry functions on top of :mod:`nibabel`.

Conventions used everywhere in sam2-med
---------------------------------------
* A voxel index is ``(i, j, k)``: the position in ``Volume.array`` exactly as nibabel indexes a
  NIfTI file (for DICOM: ``i`` = column, ``j`` = row, ``k`` = slice in position order).
* World coordinates are **RAS+ millimetres**, the NIfTI/nibabel convention: +x points to the
  patient's Right, +y to Anterior, +z to Superior. DICOM patient coordinates are LPS+ (+x = Left, +y = Posterior, +z = Superior);
  :func:`lps_to_ras` converts between them (the same matrix works both ways).
* An affine is a float64 4x4 matrix mapping a voxel index (centre of the voxel) to world mm.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from nibabel.affines import apply_affine
from nibabel.orientations import aff2axcodes

#: diag(-1, -1, 1, 1): multiply on the left to switch an affine between LPS and RAS worlds.
LPS_RAS_FLIP = np.diag([-1.0, -1.0, 1.0, 1.0])

#: Anatomical plane name -> the RAS world axis its slices are stacked along.
PLANE_NORMAL_AXIS = {"sagittal": 0, "coronal": 1, "axial": 2}


def lps_to_ras(affine: np.ndarray) -> np.ndarray:
    """Convert a 4x4 affine between LPS+ and RAS+ world conventions.

    Parameters
    ----------
    affine : (4, 4) array_like
        Voxel index -> world mm in one convention.

    Returns
    -------
    (4, 4) float64 ndarray
        The same mapping into the other convention (the operation is its own inverse).

    Examples
    --------
    >>> lps_to_ras(np.eye(4))[:3, :3].diagonal().tolist()
    [-1.0, -1.0, 1.0]
    """
    return LPS_RAS_FLIP @ np.asarray(affine, dtype=np.float64)


def axcodes(affine: np.ndarray) -> str:
    """Orientation code of an RAS affine, as nibabel spells it (``"RAS"``, ``"LPS"``, ``"PSR"``).

    Letter ``n`` names the world direction that voxel axis ``n`` increases towards.

    >>> axcodes(np.diag([-1.0, -1.0, 1.0, 1.0]))
    'LPS'
    """
    return "".join(str(c) for c in aff2axcodes(np.asarray(affine, dtype=np.float64)))


def voxel_spacing(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size in mm along ``(i, j, k)``: the lengths of the affine's first three columns.

    >>> voxel_spacing(np.diag([2.0, -3.0, 1.5, 1.0]))
    (2.0, 3.0, 1.5)
    """
    a = np.asarray(affine, dtype=np.float64)
    return tuple(float(v) for v in np.linalg.norm(a[:3, :3], axis=0))  # type: ignore[return-value]


def slice_axis(affine: np.ndarray, plane: str) -> int:
    """Array axis along which the slices of an anatomical plane are stacked.

    Chosen from the affine, never from the array order: for ``"axial"`` it is the voxel axis whose
    direction is closest to superior-inferior, and so on.

    Parameters
    ----------
    affine : (4, 4) array_like
        Voxel -> RAS mm.
    plane : {"axial", "coronal", "sagittal"}

    Returns
    -------
    int
        0, 1 or 2: index into ``(i, j, k)``.

    Examples
    --------
    >>> slice_axis(np.diag([1.0, 1.0, 1.0, 1.0]), "axial")
    2
    >>> slice_axis(np.array([[0, 0, 1, 0], [1, 0, 0, 0], [0, -1, 0, 0], [0, 0, 0, 1.0]]), "axial")
    1
    """
    try:
        world_axis = PLANE_NORMAL_AXIS[plane.lower()]
    except (KeyError, AttributeError):
        raise ValueError(
            f"unknown plane {plane!r}; use one of {sorted(PLANE_NORMAL_AXIS)}"
        ) from None
    directions = np.asarray(affine, dtype=np.float64)[:3, :3]
    unit = directions / np.linalg.norm(directions, axis=0, keepdims=True)
    return int(np.argmax(np.abs(unit[world_axis, :])))


def voxel_to_world(affine: np.ndarray, ijk: Sequence[float] | np.ndarray) -> np.ndarray:
    """Map voxel indices ``(..., 3)`` (centres at integers) to RAS mm ``(..., 3)``."""
    return apply_affine(np.asarray(affine, dtype=np.float64), np.asarray(ijk, dtype=np.float64))


def world_to_voxel(
    affine: np.ndarray, xyz: Sequence[float] | np.ndarray, *, containing: bool = False
) -> np.ndarray:
    """Map RAS mm ``(..., 3)`` to voxel coordinates ``(..., 3)``.

    Parameters
    ----------
    affine : (4, 4) array_like
        Voxel -> RAS mm.
    xyz : (..., 3) array_like
        World points in RAS mm.
    containing : bool
        If true, return the integer index of the voxel that contains each point (voxel ``n``
        spans ``[n - 0.5, n + 0.5)``), else continuous coordinates.

    Examples
    --------
    >>> world_to_voxel(np.diag([2.0, 2.0, 2.0, 1.0]), [3.1, 0.0, -0.9], containing=True).tolist()
    [2, 0, 0]
    """
    inv = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    ijk = apply_affine(inv, np.asarray(xyz, dtype=np.float64))
    if containing:
        return np.floor(ijk + 0.5).astype(np.int64)
    return ijk


def is_oblique(affine: np.ndarray, tol: float = 1e-3) -> bool:
    """True when some voxel axis is not parallel to a world axis (cosines off by more than tol)."""
    directions = np.asarray(affine, dtype=np.float64)[:3, :3]
    unit = np.abs(directions / np.linalg.norm(directions, axis=0, keepdims=True))
    return bool(np.any(np.abs(unit.max(axis=0) - 1.0) > tol))
