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
