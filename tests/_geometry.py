"""Affines for geometry tests: rotations about a voxel axis and 4x4 affines from a 3x3 part."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def rotation(axis: int, degrees: float) -> np.ndarray:
    """``(3, 3)`` rotation by ``degrees`` about coordinate ``axis`` (0, 1 or 2), right-handed."""
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    i, j = [a for a in range(3) if a != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


def affine(m3: np.ndarray, origin: Sequence[float] = (5.0, -7.0, 11.0)) -> np.ndarray:
    """``(4, 4)`` voxel-to-RAS affine with linear part ``m3`` (mm per voxel) and ``origin`` (mm)."""
    a = np.eye(4)
    a[:3, :3] = m3
    a[:3, 3] = origin
    return a


def _test_affines() -> dict[str, np.ndarray]:
    from sam2_med.geometry import lps_to_ras

    return {
        "RAS": affine(np.diag([0.9, 0.9, 2.0])),
        "LPS": lps_to_ras(affine(np.diag([0.9, 0.9, 2.0]))),
        "oblique": affine(rotation(0, 15) @ rotation(2, 25) @ np.diag([-0.9, -0.9, 2.0])),
        # sagittal acquisition stored permuted: i -> posterior, j -> inferior, k -> right
        "sagittal_permuted": affine(
            np.array([[0.0, 0.0, 1.2], [-0.7, 0.0, 0.0], [0.0, -0.7, 0.0]])
        ),
    }


#: Voxel-to-RAS affines of the session and protocol tests: RAS-stored, LPS-stored (DICOM-like),
#: oblique, and a sagittal acquisition stored with permuted axes.
AFFINES = _test_affines()


def blob_volume(name: str, shape: tuple[int, int, int] = (36, 44, 24)):
    """A CT-like ``Volume`` of ``shape`` voxels on ``AFFINES[name]``: noise (sd 30 HU) and a
    bright ellipsoid (+250 HU) at the centre, seeded."""
    from sam2_med.volume import Volume

    rng = np.random.default_rng(0)
    arr = rng.normal(0.0, 30.0, shape).astype(np.float32)
    ii, jj, kk = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    arr[(ii / 0.6) ** 2 + (jj / 0.5) ** 2 + (kk / 0.8) ** 2 < 1] += 250.0
    return Volume(arr, AFFINES[name], modality="CT")
