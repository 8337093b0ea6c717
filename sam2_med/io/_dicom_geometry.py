"""Pure geometry of a stack of DICOM image planes (PS3.3 C.7.6.2, Image Plane Module).

Conventions
-----------
* ``iop`` is Image Orientation (Patient) (0020,0037): six direction cosines, first the *row*
  direction (the direction in which the column index increases along a row), then the *column*
  direction (the direction in which the row index increases down a column), in DICOM patient
  space **LPS+** (+x towards the patient's Left, +y Posterior, +z Superior).
* ``ipp`` is Image Position (Patient) (0020,0032): LPS mm of the centre of the first transmitted
  pixel (row 0, column 0).
* ``pixel_spacing`` is Pixel Spacing (0028,0030): ``(row spacing, column spacing)``, i.e. the
  distance between adjacent rows first, then between adjacent columns, in mm.
* The slice normal is ``row x column`` (cross product). The slice step is measured from the
  positions projected on that normal, never taken from Slice Thickness (0018,0050), which is the
  nominal thickness of the excited slab and may differ from the spacing (overlapping or gapped
  reconstructions).

The voxel grid built here indexes ``(i, j, k)`` = (column, row, slice in position order), the
order of ``pixel_array.T`` used by dcm2niix and nibabel.
"""

from __future__ import annotations

import numpy as np

#: Direction cosines further than this from unit length / orthogonality are refused.
COSINE_TOL = 1e-3
#: Two orientations (six cosines) are "the same" when no cosine differs by more than this.
ORIENTATION_TOL = 1e-3
#: Absolute floor of the position tolerances, in mm (the precision of DS positions in practice).
POSITION_ATOL_MM = 0.01
#: Relative position tolerance: a fraction of the slice step.
POSITION_RTOL = 0.01


def position_tolerance(step: float) -> float:
    """Tolerance (mm) for slice-step irregularity and in-plane drift of slice origins.

    ``max(0.01 mm, 1 % of |step|)``: tight enough that one missing slice (a step twice the others)
    or a gantry tilt of more than about 0.6 degrees is always caught, loose enough for the
    rounding of decimal-string positions written by scanners.

    >>> position_tolerance(5.0), position_tolerance(0.5)
    (0.05, 0.01)
    """
    return max(POSITION_ATOL_MM, POSITION_RTOL * abs(float(step)))


def slice_normal(iop: np.ndarray) -> np.ndarray:
    """Unit slice normal ``row x column`` from the six direction cosines (LPS).

    Parameters
    ----------
    iop : (6,) array_like
        Image Orientation (Patient).

    Returns
    -------
    (3,) float64 ndarray

    Raises
    ------
    ValueError
        The cosines are not two orthogonal unit vectors (within :data:`COSINE_TOL`).

    Examples
    --------
    >>> slice_normal([1, 0, 0, 0, 1, 0]).tolist()
    [0.0, 0.0, 1.0]
    """
    v = np.asarray(iop, dtype=np.float64).reshape(6)
    row, col = v[:3], v[3:]
    if (
        abs(np.linalg.norm(row) - 1.0) > COSINE_TOL
        or abs(np.linalg.norm(col) - 1.0) > COSINE_TOL
        or abs(float(row @ col)) > COSINE_TOL
    ):
        raise ValueError(
            f"ImageOrientationPatient {v.round(6).tolist()} is not two orthogonal unit vectors"
        )
    n = np.cross(row, col)
    return n / np.linalg.norm(n)


def same_orientation(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two IOPs agree within :data:`ORIENTATION_TOL` on every cosine."""
    return bool(np.max(np.abs(np.asarray(a, float) - np.asarray(b, float))) <= ORIENTATION_TOL)


def stack_problems(
    positions: np.ndarray, normal: np.ndarray
) -> tuple[np.ndarray, float, list[str]]:
    """Sort planes along the normal and list everything that keeps them from a regular grid.

    Parameters
    ----------
    positions : (K, 3) array_like
        Image Position (Patient) of each plane, LPS mm, any order. ``K >= 2`` and no two planes
        at the same position along the normal (callers check duplicates first).
    normal : (3,) array_like
        Unit slice normal.

    Returns
    -------
    order : (K,) int ndarray
        Sort order by projected position.
    step : float
        ``(d[-1] - d[0]) / (K - 1)`` with ``d`` the sorted projections (mm).
    problems : list of str
        Empty for a regular, untilted stack. Otherwise human-readable findings:

        * *gantry tilt*: a slice origin lies off the line through the first origin along the
          normal by more than :func:`position_tolerance` (the stack is sheared, as in a CT
          acquired with a tilted gantry). Handling it would need resampling; sam2-med refuses.
        * *uneven spacing / missing slices*: a step between consecutive slices differs from the
          median step by more than :func:`position_tolerance`.

    Examples
    --------
    >>> pos = [[0, 0, 2.0], [0, 0, 0.0], [0, 0, 1.0]]
    >>> order, step, problems = stack_problems(pos, [0, 0, 1.0])
    >>> order.tolist(), step, problems
    ([1, 2, 0], 1.0, [])
    """
    pos = np.asarray(positions, dtype=np.float64)
    n = np.asarray(normal, dtype=np.float64)
    d = pos @ n
    order = np.argsort(d, kind="stable")
    d_sorted = d[order]
    steps = np.diff(d_sorted)
    step = float((d_sorted[-1] - d_sorted[0]) / (len(d_sorted) - 1))
    median = float(np.median(steps))
    tol = position_tolerance(median)
    problems: list[str] = []

    # In-plane drift of each origin relative to the first one (gantry tilt / shear).
    rel = pos[order] - pos[order[0]]
    inplane = rel - np.outer(rel @ n, n)
    drift = np.linalg.norm(inplane, axis=1)
    if np.max(drift) > tol:
        k = int(np.argmax(drift))
        angle = float(np.degrees(np.arctan2(drift[k], abs(d_sorted[k] - d_sorted[0]))))
        problems.append(
            "gantry tilt: slice positions are not along the slice normal (slice "
            f"{k} is shifted {drift[k]:.3f} mm in-plane, a tilt of about {angle:.2f} degrees); "
            "sam2-med does not resample tilted stacks"
        )

    bad = np.flatnonzero(np.abs(steps - median) > tol)
    if bad.size:
        ratio = steps[bad] / median if median > 0 else np.full(bad.size, np.inf)
        missing = bool(np.any(np.abs(ratio - np.round(ratio)) < 0.05) and np.any(ratio > 1.5))
        what = "missing slices" if missing else "uneven slice spacing"
        problems.append(
            f"{what}: the spacing between consecutive slice positions ranges from "
            f"{steps.min():.4g} to {steps.max():.4g} mm (median {median:.4g} mm, tolerance "
            f"{tol:.3g} mm; first irregular step after sorted slice {int(bad[0])})"
        )
    return order, step, problems


def lps_affine(
    iop: np.ndarray, first_position: np.ndarray, pixel_spacing: np.ndarray, step: float
) -> np.ndarray:
    """Voxel ``(i, j, k)`` = (column, row, slice) -> LPS mm affine (PS3.3 C.7.6.2.1.1).

    Parameters
    ----------
    iop : (6,) array_like
        Row then column direction cosines (LPS).
    first_position : (3,) array_like
        Image Position (Patient) of slice ``k = 0`` (LPS mm).
    pixel_spacing : (2,) array_like
        ``(row spacing, column spacing)`` mm, as stored in Pixel Spacing.
    step : float
        Slice step along the normal ``row x column`` (mm; negative flips ``k``).

    Returns
    -------
    (4, 4) float64 ndarray

    Examples
    --------
    >>> a = lps_affine([1, 0, 0, 0, 1, 0], [10, 20, 30], [0.5, 0.25], 2.0)
    >>> a[:3].tolist()
    [[0.25, 0.0, 0.0, 10.0], [0.0, 0.5, 0.0, 20.0], [0.0, 0.0, 2.0, 30.0]]
    """
    v = np.asarray(iop, dtype=np.float64).reshape(6)
    row, col = v[:3], v[3:]
    ps = np.asarray(pixel_spacing, dtype=np.float64).reshape(2)
    aff = np.eye(4)
    aff[:3, 0] = row * ps[1]  # i = column index: moves along a row, by the column spacing
    aff[:3, 1] = col * ps[0]  # j = row index: moves down a column, by the row spacing
    aff[:3, 2] = slice_normal(v) * float(step)
    aff[:3, 3] = np.asarray(first_position, dtype=np.float64).reshape(3)
    return aff
