"""Protocols: how a volume is turned into frames and prompts for a model, and back into a mask.

A **protocol** is the whole pipeline around the network: slice layout, intensity, resizing,
prompt coordinates, how the two directions are tracked, and 3D post-processing. The network
itself is the same in every protocol. Two exist (``protocol:`` in a model's YAML file,
``Session(protocol=...)``, ``sam2_med.segment(protocol=...)``, ``sam2-med segment --protocol``):

``"sam2"`` (sam2-med's own; the default)
    Slices in the model's declared layout (radiological display for SAM 2 / 2.1), intensity in
    float (a DICOM VOI window or a percentile range, never quantised), PIL's bicubic filter
    computed in float, prompts mapped pixel centre to pixel centre, Meta's predictor behaviour
    (the backward pass continues the forward memory, holes of up to 8 low-resolution pixels
    filled), no 3D post-processing. See :mod:`sam2_med.frames` and :mod:`sam2_med.session`.

``"medsam2"`` (MedSAM2's published CT protocol)
    What MedSAM2's ``medsam2_infer_3D_CT.py`` does (bowang-lab/MedSAM2, checked against the
    script at commit 332f30d and its output in ``../shared/fixtures/medsam2_protocol``), per
    object:

    1. slices in SimpleITK's array layout, not reoriented (``slice_layout="sitk"``);
    2. the window as clip bounds ``lower, upper`` (:func:`clip_bounds`: ``c -+ w / 2``), then
       min-max over the **clipped volume** (:func:`uint8_range`) times 255, truncated to
       ``uint8`` (:func:`to_uint8`);
    3. each 8-bit slice resized to the model input with PIL's bicubic filter, in 8 bits
       (:func:`resize_uint8`), then ``/ 255`` and ImageNet normalisation, as the script does;
    4. prompts mapped as ``x * S / W``, ``y * S / H`` (no half-pixel shift);
    5. forward pass from the prompted slice, ``reset_state``, the same prompt again, reverse
       pass: the backward pass sees no forward memory (``reset_between_directions``);
    6. the union of both passes, then its largest 3D connected component
       (:func:`largest_component`, scikit-image, 26-neighbourhood). Per object: the script keeps
       one component across all lesions of a file, a bug not reproduced here;
    7. MedSAM2 builds its predictor with ``fill_hole_area=8``, but the step needs its CUDA
       extension (``sam2._C``) and is skipped without it, with a warning. So the default here
       (:func:`default_fill_hole_area`) is what MedSAM2's own code does on the same device:
       holes filled on CUDA, none on a CPU or MPS.

    Everything else of sam2-med stays: masks come back on exactly the source grid, the sidecar
    records the protocol, and the interaction log replays it.

The **slice layout** says how a slice becomes a frame (``slice_layout:`` in a model's YAML; a
model fine-tuned on slices in one orientation should be fed slices in that orientation):

``"radiological"``
    The radiological display orientation of :mod:`sam2_med.frames` (SAM 2 and 2.1, trained on
    natural video, keep it).
``"sitk"``
    SimpleITK's array layout without reorientation: the frame of slice ``k`` along voxel axis
    ``n`` has the remaining voxel axes as ``(row, column)`` in decreasing order, so an axial
    slice of a file stored ``(i, j, k)`` is ``sitk.GetArrayFromImage(image)[k]``: rows ``j``,
    columns ``i``, whatever the direction cosines say.

Importing this module imports numpy only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .intensity import IntensityTransform

__all__ = [
    "PROTOCOLS",
    "PROTOCOL_SUMMARY",
    "SLICE_LAYOUTS",
    "check_protocol",
    "check_slice_layout",
    "clip_bounds",
    "default_fill_hole_area",
    "largest_component",
    "resize_uint8",
    "to_uint8",
    "uint8_range",
]

#: The protocols; the first is the default of a model that declares none.
PROTOCOLS: tuple[str, ...] = ("sam2", "medsam2")
#: The slice layouts; the first is the default of a model that declares none.
SLICE_LAYOUTS: tuple[str, ...] = ("radiological", "sitk")

#: One line per protocol, for listings and help texts.
PROTOCOL_SUMMARY: dict[str, str] = {
    "sam2": "sam2-med's float pipeline and Meta's predictor behaviour",
    "medsam2": "MedSAM2's published CT script (8-bit frames, reset between directions, "
    "largest 3D component)",
}

#: MedSAM2's predictor setting (``fill_hole_area=8``), active only where its CUDA extension is.
MEDSAM2_FILL_HOLE_AREA = 8


def check_protocol(protocol: str) -> str:
    """``protocol`` if it is one of :data:`PROTOCOLS`, else ``ValueError`` listing them."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; use one of: {', '.join(PROTOCOLS)}")
    return protocol


def check_slice_layout(layout: str) -> str:
    """``layout`` if it is one of :data:`SLICE_LAYOUTS`, else ``ValueError`` listing them."""
    if layout not in SLICE_LAYOUTS:
        raise ValueError(f"unknown slice layout {layout!r}; use one of: {', '.join(SLICE_LAYOUTS)}")
    return layout


def default_fill_hole_area(protocol: str, device_type: str) -> int:
    """Hole filling of a protocol on a device, in low-resolution pixels (0: off).

    ``"sam2"``: Meta's 8 everywhere (sam2-med computes it with scipy, on any device).
    ``"medsam2"``: 8 on CUDA, 0 elsewhere. MedSAM2 fills holes with its CUDA extension only;
    without it (always on a CPU or MPS) its code skips the step, so its published script run on
    a CPU has no hole filling, and neither does its reproduction here.
    """
    if check_protocol(protocol) == "medsam2":
        return MEDSAM2_FILL_HOLE_AREA if device_type == "cuda" else 0
    from .postprocess import FILL_HOLE_AREA

    return FILL_HOLE_AREA


def clip_bounds(transform: IntensityTransform) -> tuple[float, float]:
    """The clip bounds ``(lower, upper)`` MedSAM2's script uses for an intensity choice.

    The script reads a window as ``lower, upper`` (DeepLesion's ``DICOM_windows``); a window
    given as center and width is ``(c - w / 2, c + w / 2)`` (50/450 HU: -175, 275). A
    percentile or fixed range is its ``(low, high)``; identity is ``(0, 1)``.
    """
    if transform.kind == "window":
        assert transform.center is not None and transform.width is not None
        half = transform.width / 2.0
        return transform.center - half, transform.center + half
    if transform.kind in ("percentile", "range"):
        assert transform.low is not None and transform.high is not None
        return float(transform.low), float(transform.high)
    return 0.0, 1.0


def uint8_range(array: np.ndarray, lower: float, upper: float) -> tuple[float, float]:
    """Minimum and maximum of ``clip(array, lower, upper)`` over the whole volume.

    These, not the window, are what the script maps to 0 and 255: for a volume that does not
    reach both bounds they are its own extremes. NaN voxels are ignored.

    Parameters
    ----------
    array : ndarray, any shape
        The whole volume (HU for CT).
    lower, upper : float
        Clip bounds, ``lower <= upper``.

    Returns
    -------
    (float, float)
    """
    a = np.asarray(array)
    finite = ~np.isnan(a) if np.issubdtype(a.dtype, np.floating) else None
    if finite is not None and not finite.all():
        a = a[finite]
    if a.size == 0:
        return float(lower), float(lower)
    lo = float(np.clip(np.float64(a.min()), lower, upper))
    hi = float(np.clip(np.float64(a.max()), lower, upper))
    return lo, hi


def to_uint8(array: np.ndarray, lower: float, upper: float, lo: float, hi: float) -> np.ndarray:
    """MedSAM2's CT intensity step: ``uint8((clip(x, lower, upper) - lo) / (hi - lo) * 255)``.

    In float64 and in the script's order of operations, so that applied to a slice it gives
    exactly the values of the script on the whole volume.

    Parameters
    ----------
    array : ndarray, any shape
        Voxel values (a slice or the volume).
    lower, upper : float
        Clip bounds (:func:`clip_bounds`).
    lo, hi : float
        :func:`uint8_range` of the whole volume.

    Returns
    -------
    ndarray of uint8, same shape
        NaN voxels become 0. When ``hi == lo`` (the volume lies outside the window) every value
        is 0; the script would divide by zero there.
    """
    x = np.clip(np.asarray(array, dtype=np.float64), lower, upper)
    if hi <= lo:
        return np.zeros(x.shape, np.uint8)
    x = (x - lo) / (hi - lo) * 255.0
    np.nan_to_num(x, copy=False, nan=0.0)
    return x.astype(np.uint8)  # truncation, as np.uint8(...) in the script


def resize_uint8(image: np.ndarray, size: int) -> np.ndarray:
    """An 8-bit grey image resized to ``size x size`` with Pillow's bicubic filter, in 8 bits.

    The script's ``Image.fromarray(img).convert("RGB").resize((size, size))``: Pillow's default
    filter for RGB is bicubic, and with three equal channels each is this grey resize.

    Parameters
    ----------
    image : (H, W) uint8 ndarray
    size : int

    Returns
    -------
    (size, size) uint8 ndarray
    """
    from PIL import Image

    img = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    return np.asarray(img.resize((int(size), int(size)), Image.Resampling.BICUBIC))


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest connected component of a 3D mask (the script's ``getLargestCC``).

    :func:`skimage.measure.label` with its default full connectivity (26-neighbourhood in 3D);
    of equally large components the first in the array's C order is kept, so call it on the
    array in the script's layout (slices along axis 0) for the script's choice.

    Parameters
    ----------
    mask : ndarray of bool, any dimension

    Returns
    -------
    ndarray of bool, same shape
        All False when ``mask`` is empty.
    """
    from skimage.measure import label

    m = np.asarray(mask, dtype=bool)
    out = np.zeros(m.shape, bool)
    if not m.any():
        return out
    # label the bounding box only (an organ is a small part of a CT); cropping keeps the
    # components and their C order, so the same one wins a tie
    box = []
    for ax in range(m.ndim):
        hit = np.flatnonzero(m.any(axis=tuple(a for a in range(m.ndim) if a != ax)))
        box.append(slice(int(hit[0]), int(hit[-1]) + 1))
    labels = label(m[tuple(box)])
    keep = int(np.argmax(np.bincount(labels.ravel())[1:])) + 1
    out[tuple(box)] = labels == keep
    return out
