"""Model-ready frames from a :class:`~sam2_med.Volume`, and the exact way back to voxels.

A :class:`SliceStream` cuts a volume into 2D slices along an *anatomical* axis (chosen from the
affine with :func:`sam2_med.geometry.slice_axis`, never from the array order), shows each slice
in a fixed radiological orientation, and turns it into the tensor SAM 2 expects for a video
frame. Everything happens in memory, in float; there is no 8-bit or JPEG round trip.

Coordinate systems
------------------
slice ``(a, b)``
    The 2D array ``np.take(volume.array, k, axis=axis_index)``: its axes are the two remaining
    voxel axes in increasing order (for ``axis_index == 1``: ``a = i``, ``b = k``).
display ``(row, col)``
    The slice turned into the radiological display orientation below, using only a transpose
    and flips (no resampling). Its shape is :attr:`SliceStream.display_shape` ``(R, C)``.

    ========  =============================  ===============================
    plane     rows run                       columns run
    ========  =============================  ===============================
    axial     anterior -> posterior          patient right -> patient left
    coronal   superior -> inferior           patient right -> patient left
    sagittal  superior -> inferior           anterior -> posterior
    ========  =============================  ===============================

    For oblique volumes each in-plane voxel axis is assigned to the display axis its direction
    is closest to, then flipped to run the way the table says.
frame ``(y, x)``
    The model input: the display image resized to ``image_size x image_size`` with no aspect
    preservation and the filter Meta's and MedSAM2's frame loaders use (PIL's bicubic, see
    :meth:`SliceStream.frames`). Pixel centres are aligned: display row ``r`` has its centre at
    frame row ``y = (r + 0.5) * S / R - 0.5``. Point prompts are given to SAM 2 as ``(x, y)``
    in these model-input pixels.

The slice index ``k`` along the axis is the voxel index along ``axis_index`` (slice ``k`` is
frame ``k`` of the video SAM 2 sees); it is not reordered.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from . import geometry

if TYPE_CHECKING:
    from .intensity import IntensityTransform
    from .volume import Volume

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DisplayOrientation",
    "SliceStream",
    "display_orientation",
]

#: ImageNet channel means and standard deviations SAM 2 normalises video frames with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# plane -> ((world axis rows follow, sign in RAS), (world axis columns follow, sign in RAS)).
# Sign -1 means: increasing row/column index moves towards decreasing RAS coordinate
# (anterior->posterior is -y, right->left is -x, superior->inferior is -z).
_DISPLAY_AXES = {
    "axial": ((1, -1.0), (0, -1.0)),
    "coronal": ((2, -1.0), (0, -1.0)),
    "sagittal": ((2, -1.0), (1, -1.0)),
}


@dataclass(frozen=True)
class DisplayOrientation:
    """How a slice ``(a, b)`` becomes the display image ``(row, col)``.

    Attributes
    ----------
    axis_index : int
        Voxel axis the slices are stacked along (0, 1 or 2).
    in_plane : (int, int)
        The voxel axes of the slice's ``a`` and ``b`` dimensions (increasing order).
    transpose : bool
        True when display rows follow slice axis ``b`` (the slice is transposed first).
    flip_rows, flip_cols : bool
        Reverse the display rows / columns after the optional transpose.
    """

    axis_index: int
    in_plane: tuple[int, int]
    transpose: bool
    flip_rows: bool
    flip_cols: bool


def display_orientation(affine: np.ndarray, plane: str) -> DisplayOrientation:
    """Transpose and flips that show slices of ``plane`` in the radiological orientation.

    Parameters
    ----------
    affine : (4, 4) array_like
        Voxel index -> RAS mm.
    plane : {"axial", "coronal", "sagittal"}

    Returns
    -------
    DisplayOrientation

    Examples
    --------
    >>> o = display_orientation(np.eye(4), "axial")  # i -> right, j -> anterior, k -> superior
    >>> (o.axis_index, o.transpose, o.flip_rows, o.flip_cols)
    (2, True, True, True)
    """
    plane = plane.lower()
    axis_index = geometry.slice_axis(affine, plane)
    in_plane = tuple(a for a in range(3) if a != axis_index)
    m = np.asarray(affine, dtype=np.float64)[:3, :3]
    unit = m / np.linalg.norm(m, axis=0, keepdims=True)
    (row_w, row_s), (col_w, col_s) = _DISPLAY_AXES[plane]
    p, q = in_plane
    # assignment of voxel axes to (rows, cols) that best matches the desired world axes
    keep = abs(unit[row_w, p]) + abs(unit[col_w, q])
    swap = abs(unit[row_w, q]) + abs(unit[col_w, p])
    transpose = bool(swap > keep)
    row_axis, col_axis = (q, p) if transpose else (p, q)
    # flip when the voxel axis runs against the desired display direction
    flip_rows = bool(unit[row_w, row_axis] * row_s < 0)
    flip_cols = bool(unit[col_w, col_axis] * col_s < 0)
    return DisplayOrientation(axis_index, (p, q), transpose, flip_rows, flip_cols)  # type: ignore[arg-type]


class SliceStream:
    """Lazy, invertible model frames of one volume along one anatomical axis.

    Parameters
    ----------
    volume : Volume
        The image; ``volume.array`` is indexed ``(i, j, k)``, ``volume.affine`` maps to RAS mm.
    axis : {"axial", "coronal", "sagittal"}
        Anatomical plane of the slices; the voxel axis is chosen from the affine.
    intensity : None, "auto", str, (center, width) or IntensityTransform
        Passed to :func:`sam2_med.intensity.resolve_intensity` once; the same parameters are
        applied to every slice. ``None`` means ``"auto"``.
    image_size : int
        Side ``S`` of the square model input in pixels.

    Attributes
    ----------
    axis : str
    axis_index : int
        Voxel axis of the slices.
    orientation : DisplayOrientation
    n_slices : int
        Number of slices (``volume.shape[axis_index]``).
    slice_shape : (int, int)
        Shape ``(A, B)`` of ``np.take(volume.array, k, axis=axis_index)``.
    display_shape : (int, int)
        Shape ``(R, C)`` of a slice in display orientation.
    intensity : IntensityTransform
    image_size : int
    """

    def __init__(
        self,
        volume: Volume,
        *,
        axis: str = "axial",
        intensity: str | tuple[float, float] | IntensityTransform | None = None,
        image_size: int = 1024,
    ) -> None:
        from .intensity import resolve_intensity

        self.volume = volume
        self.axis = axis.lower()
        self.orientation = display_orientation(volume.affine, self.axis)
        self.axis_index = self.orientation.axis_index
        self.n_slices = int(volume.shape[self.axis_index])
        p, q = self.orientation.in_plane
        self.slice_shape = (int(volume.shape[p]), int(volume.shape[q]))
        self.display_shape = (
            self.slice_shape[::-1] if self.orientation.transpose else self.slice_shape
        )
        self.intensity = resolve_intensity(volume, intensity)
        self.image_size = int(image_size)
        self._mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)

    def __len__(self) -> int:
        return self.n_slices

    def __repr__(self) -> str:
        return (
            f"SliceStream(axis={self.axis!r}, axis_index={self.axis_index}, "
            f"n_slices={self.n_slices}, display_shape={self.display_shape}, "
            f"image_size={self.image_size}, intensity={self.intensity.name!r})"
        )

    # -- slices and display orientation ---------------------------------------------------
    def _check_k(self, k: int) -> int:
        k = int(k)
        if not 0 <= k < self.n_slices:
            raise IndexError(f"slice index {k} outside 0..{self.n_slices - 1}")
        return k

    def slice_array(self, k: int) -> np.ndarray:
        """Raw voxel values of slice ``k``: ``np.take(volume.array, k, axis=axis_index)``, (A, B)."""
        return np.take(self.volume.array, self._check_k(k), axis=self.axis_index)

    def slice_to_volume_index(self, k: int) -> tuple[int | slice, ...]:
        """Index into a volume-shaped array selecting slice ``k`` in ``(A, B)`` order.

        ``labels[stream.slice_to_volume_index(k)] = mask2d`` writes a slice-shaped mask.
        """
        k = self._check_k(k)
        return tuple(k if ax == self.axis_index else slice(None) for ax in range(3))

    def to_display(self, arr: np.ndarray) -> np.ndarray:
        """Slice-shaped ``(A, B, ...)`` array -> display orientation ``(R, C, ...)`` (a view)."""
        o = self.orientation
        out = np.swapaxes(arr, 0, 1) if o.transpose else arr
        if o.flip_rows:
            out = out[::-1]
        if o.flip_cols:
            out = out[:, ::-1]
        return out

    def from_display(self, arr: np.ndarray) -> np.ndarray:
        """Display-oriented ``(R, C, ...)`` array -> slice order ``(A, B, ...)`` (a view)."""
        o = self.orientation
        out = arr
        if o.flip_rows:
            out = out[::-1]
        if o.flip_cols:
            out = out[:, ::-1]
        return np.swapaxes(out, 0, 1) if o.transpose else out

    def display(self, k: int) -> np.ndarray:
        """Slice ``k`` after the intensity transform, in display orientation: (R, C) float32 in [0, 1]."""
        return np.ascontiguousarray(self.to_display(self.intensity(self.slice_array(k))))

    # -- frames -----------------------------------------------------------------------------
    def _resize(self, img: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(N, C, h, w) float in [0, 1] -> (N, C, *size), as Meta's and MedSAM2's loaders do.

        Both load a frame as an 8-bit image and resize it with PIL's default bicubic filter
        (Keys, a = -0.5; the kernel widened when shrinking, half-pixel centres): a horizontal
        pass, then a vertical one, each clipped to the 8-bit range. The same filter, pass order
        and clipping in float (torch's antialiased bicubic is PIL's resampling; they agree
        within 1e-6), without rounding to 8 bits: the frames differ from Meta's by that
        rounding alone (at most about 1/255 per pixel).
        """
        h, w = (int(v) for v in img.shape[-2:])
        out = img
        if w != size[1]:
            out = F.interpolate(
                out, size=(h, size[1]), mode="bicubic", align_corners=False, antialias=True
            ).clamp_(0.0, 1.0)
        if h != size[0]:
            out = F.interpolate(
                out, size=tuple(size), mode="bicubic", align_corners=False, antialias=True
            ).clamp_(0.0, 1.0)
        return out

    def frame(self, k: int) -> torch.Tensor:
        """Model input of slice ``k``.

        Returns
        -------
        (3, S, S) float32 torch.Tensor
            Display-oriented slice, intensity-transformed to [0, 1], resized to ``S = image_size``,
            grey repeated to 3 channels, normalised with ImageNet mean/std.
        """
        return self.frames([k])[0]

    def frames(self, ks: Sequence[int]) -> torch.Tensor:
        """Model inputs of several slices: (N, 3, S, S) float32, in the order of ``ks``."""
        s = self.image_size
        if len(ks) == 0:
            return torch.empty(0, 3, s, s)
        disp = np.stack([self.display(k) for k in ks])[:, None]
        img = self._resize(torch.from_numpy(disp), (s, s))
        img = img.expand(-1, 3, -1, -1)
        return ((img - self._mean) / self._std).contiguous()

    # -- coordinates ------------------------------------------------------------------------
    def voxel_to_display(self, ijk: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Voxel indices -> (slice index, display row, display column).

        Parameters
        ----------
        ijk : (N, 3) array_like of int
            Voxel indices ``(i, j, k)`` of ``volume.array``.

        Returns
        -------
        k, row, col : (N,) int64 ndarrays
        """
        v = np.asarray(ijk, dtype=np.int64).reshape(-1, 3)
        o = self.orientation
        p, q = o.in_plane
        a, b = v[:, p], v[:, q]
        r0, c0 = (b, a) if o.transpose else (a, b)
        rows, cols = self.display_shape
        r = rows - 1 - r0 if o.flip_rows else r0
        c = cols - 1 - c0 if o.flip_cols else c0
        return v[:, self.axis_index].copy(), r, c

    def display_to_voxel(self, k: np.ndarray | int, row: np.ndarray, col: np.ndarray) -> np.ndarray:
        """(slice index, display row, display column) -> voxel indices (N, 3) int64."""
        row = np.atleast_1d(np.asarray(row, dtype=np.int64))
        col = np.atleast_1d(np.asarray(col, dtype=np.int64))
        k = np.broadcast_to(np.asarray(k, dtype=np.int64), row.shape)
        o = self.orientation
        rows, cols = self.display_shape
        r0 = rows - 1 - row if o.flip_rows else row
        c0 = cols - 1 - col if o.flip_cols else col
        a, b = (c0, r0) if o.transpose else (r0, c0)
        out = np.empty((row.shape[0], 3), dtype=np.int64)
        p, q = o.in_plane
        out[:, self.axis_index] = k
        out[:, p] = a
        out[:, q] = b
        return out

    def display_to_model_xy(self, row: np.ndarray, col: np.ndarray) -> np.ndarray:
        """Display pixel centres -> model-input pixel ``(x, y)`` (N, 2) float64 (centres aligned)."""
        s = self.image_size
        rows, cols = self.display_shape
        y = (np.asarray(row, dtype=np.float64) + 0.5) * (s / rows) - 0.5
        x = (np.asarray(col, dtype=np.float64) + 0.5) * (s / cols) - 0.5
        return np.stack([np.atleast_1d(x), np.atleast_1d(y)], axis=-1)

    def model_xy_to_display(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Model-input pixel ``(x, y)`` (N, 2) -> nearest display (row, col), int64, clipped."""
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        s = self.image_size
        rows, cols = self.display_shape
        r = np.floor((xy[:, 1] + 0.5) * (rows / s)).astype(np.int64)
        c = np.floor((xy[:, 0] + 0.5) * (cols / s)).astype(np.int64)
        return np.clip(r, 0, rows - 1), np.clip(c, 0, cols - 1)

    def voxel_to_model_xy(self, ijk: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Voxel indices (N, 3) -> (slice index (N,), model-input ``(x, y)`` (N, 2) float64)."""
        k, r, c = self.voxel_to_display(ijk)
        return k, self.display_to_model_xy(r, c)

    def model_xy_to_voxel(self, k: int, xy: np.ndarray) -> np.ndarray:
        """Model-input ``(x, y)`` (N, 2) on slice ``k`` -> voxel containing it, (N, 3) int64."""
        r, c = self.model_xy_to_display(xy)
        return self.display_to_voxel(int(k), r, c)

    # -- masks and logits -------------------------------------------------------------------
    def mask_to_frame(self, mask2d: np.ndarray) -> torch.Tensor:
        """Slice-shaped mask (A, B) -> (S, S) float32 0/1 frame mask.

        Each frame pixel takes the value of the display pixel its centre falls in (nearest
        neighbour), so :meth:`frame_logits_to_slice` of ``2 * m - 1`` gives the mask back
        exactly whenever ``S`` is at least the display size.
        """
        mask2d = np.asarray(mask2d)
        if mask2d.shape != self.slice_shape:
            raise ValueError(
                f"mask shape {mask2d.shape} differs from the slice shape {self.slice_shape}"
            )
        disp = np.ascontiguousarray(self.to_display(mask2d != 0))
        s = self.image_size
        rows, cols = self.display_shape
        ri = np.floor((np.arange(s) + 0.5) * (rows / s)).astype(np.int64).clip(0, rows - 1)
        ci = np.floor((np.arange(s) + 0.5) * (cols / s)).astype(np.int64).clip(0, cols - 1)
        return torch.from_numpy(disp[np.ix_(ri, ci)].astype(np.float32))

    def frame_logits_to_display(self, logits: torch.Tensor | np.ndarray) -> np.ndarray:
        """Square frame logits (h, w), any resolution -> display-shaped (R, C) float32.

        Bilinear with half-pixel centres and no antialiasing: what SAM 2 does to turn its
        low-resolution mask logits into masks at the video resolution.
        """
        t = torch.as_tensor(logits).detach().to(torch.float32)
        if t.ndim != 2:
            raise ValueError(f"logits must be 2D (h, w), got shape {tuple(t.shape)}")
        size = self.display_shape
        if tuple(t.shape) != tuple(size):
            t = F.interpolate(t[None, None], size=size, mode="bilinear", align_corners=False)[0, 0]
        return t.cpu().numpy()

    def frame_logits_to_slice(self, logits: torch.Tensor | np.ndarray) -> np.ndarray:
        """Square frame logits (h, w) -> slice-shaped (A, B) float32 logits.

        Resized to the display shape (see :meth:`frame_logits_to_display`) and un-flipped /
        un-transposed into the order of ``np.take(volume.array, k, axis=axis_index)``;
        ``logits > 0`` is the mask.
        """
        return np.ascontiguousarray(self.from_display(self.frame_logits_to_display(logits)))
