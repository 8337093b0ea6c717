"""SliceStream: anatomical axis, display orientation, frames, and exact inverse mappings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sam2_med.frames import IMAGENET_MEAN, IMAGENET_STD, SliceStream, display_orientation
from sam2_med.geometry import lps_to_ras
from sam2_med.intensity import IntensityTransform
from sam2_med.volume import Volume
from tests._geometry import rotation as _rot


def _affine(m3: np.ndarray, t=(10.0, -20.0, 30.0)) -> np.ndarray:
    a = np.eye(4)
    a[:3, :3] = m3
    a[:3, 3] = t
    return a


AFFINES = {
    # i -> right, j -> anterior, k -> superior
    "RAS": _affine(np.diag([1.5, 1.5, 3.0])),
    # DICOM-like: i -> left, j -> posterior, k -> superior (an LPS-stored axial series)
    "LPS": lps_to_ras(_affine(np.diag([0.8, 0.8, 2.5]))),
    # oblique: LPS series tilted 20 degrees about S and 12 about R
    "oblique": _affine(_rot(0, 12) @ _rot(2, 20) @ np.diag([-0.9, -0.9, 2.0])),
    # sagittal acquisition stored permuted: i -> posterior, j -> inferior, k -> right
    "sagittal_permuted": _affine(np.array([[0.0, 0.0, 1.2], [-0.7, 0.0, 0.0], [0.0, -0.7, 0.0]])),
}
PLANES = ("axial", "coronal", "sagittal")
# display direction per plane: world step of one row / one column, sign of the component
# along the world axis it must follow (RAS: -y = posterior, -x = left, -z = inferior)
EXPECTED = {
    "axial": ((1, -1), (0, -1)),
    "coronal": ((2, -1), (0, -1)),
    "sagittal": ((2, -1), (1, -1)),
}


def _volume(name: str, shape=(5, 6, 7)) -> Volume:
    rng = np.random.default_rng(0)
    arr = rng.integers(-200, 300, size=shape).astype(np.int16)
    return Volume(arr, AFFINES[name], modality="CT")


@pytest.mark.parametrize("name", list(AFFINES))
@pytest.mark.parametrize("plane", PLANES)
def test_voxel_display_round_trip_covers_every_voxel(name: str, plane: str) -> None:
    vol = _volume(name)
    st = SliceStream(vol, axis=plane, image_size=32)
    ijk = np.stack(np.meshgrid(*[np.arange(n) for n in vol.shape], indexing="ij"), -1).reshape(
        -1, 3
    )
    k, r, c = st.voxel_to_display(ijk)
    rows, cols = st.display_shape
    assert r.min() == 0 and r.max() == rows - 1 and c.min() == 0 and c.max() == cols - 1
    # one-to-one: every (k, r, c) distinct
    assert len({(a, b, d) for a, b, d in zip(k, r, c, strict=True)}) == ijk.shape[0]
    np.testing.assert_array_equal(st.display_to_voxel(k, r, c), ijk)
    # model-pixel round trip too
    k2, xy = st.voxel_to_model_xy(ijk)
    np.testing.assert_array_equal(k2, ijk[:, st.axis_index])
    for kk in range(st.n_slices):
        sel = k2 == kk
        np.testing.assert_array_equal(st.model_xy_to_voxel(kk, xy[sel]), ijk[sel])


@pytest.mark.parametrize("name", list(AFFINES))
@pytest.mark.parametrize("plane", PLANES)
def test_display_runs_in_radiological_directions(name: str, plane: str) -> None:
    vol = _volume(name)
    st = SliceStream(vol, axis=plane, image_size=32)
    assert st.axis_index == display_orientation(vol.affine, plane).axis_index
    w = vol.voxel_to_world(st.display_to_voxel(1, [0, 1, 0], [0, 0, 1]))
    (row_axis, row_sign), (col_axis, col_sign) = EXPECTED[plane]
    down, right = w[1] - w[0], w[2] - w[0]
    assert np.sign(down[row_axis]) == row_sign
    assert np.sign(right[col_axis]) == col_sign
    # the in-plane direction each display axis follows dominates that step
    assert abs(down[row_axis]) >= abs(down[col_axis])
    assert abs(right[col_axis]) >= abs(right[row_axis])


@pytest.mark.parametrize("name", list(AFFINES))
def test_display_image_matches_voxel_mapping(name: str) -> None:
    vol = _volume(name)
    st = SliceStream(vol, axis="axial", intensity=IntensityTransform.fixed_range(-200, 300))
    k = 2
    disp = st.display(k)
    rows, cols = st.display_shape
    assert disp.shape == (rows, cols) and disp.dtype == np.float32
    rr, cc = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    ijk = st.display_to_voxel(k, rr.ravel(), cc.ravel())
    expected = (vol.array[tuple(ijk.T)].astype(np.float64) + 200) / 500
    np.testing.assert_allclose(disp.ravel(), expected, atol=1e-6)
    # from_display undoes to_display, and the slice order is np.take's
    s = st.slice_array(k)
    np.testing.assert_array_equal(s, np.take(vol.array, k, axis=st.axis_index))
    np.testing.assert_array_equal(st.from_display(st.to_display(s)), s)
    lab = np.zeros(vol.shape, np.uint8)
    lab[st.slice_to_volume_index(k)] = 1
    assert lab.sum() == s.size and np.all(np.take(lab, k, axis=st.axis_index) == 1)


@pytest.mark.parametrize("name", list(AFFINES))
@pytest.mark.parametrize("plane", PLANES)
@pytest.mark.parametrize("size", [32, 45])
def test_mask_pasted_into_frame_maps_back_to_the_same_voxels(
    name: str, plane: str, size: int
) -> None:
    vol = _volume(name, shape=(9, 11, 13))
    st = SliceStream(vol, axis=plane, image_size=size)
    rng = np.random.default_rng(1)
    mask = rng.random(st.slice_shape) > 0.6
    m = st.mask_to_frame(mask)
    assert m.shape == (size, size) and m.dtype == torch.float32
    back = st.frame_logits_to_slice(2 * m - 1)
    assert back.shape == st.slice_shape
    np.testing.assert_array_equal(back > 0, mask)
    # and through the volume: exactly the original voxels of slice 4
    lab = np.zeros(vol.shape, bool)
    lab[st.slice_to_volume_index(4)] = back > 0
    ijk = np.argwhere(lab)
    assert np.all(ijk[:, st.axis_index] == 4)
    np.testing.assert_array_equal(np.take(lab, 4, axis=st.axis_index), mask)


def test_low_resolution_logits_map_back_in_place() -> None:
    """An asymmetric blob at a quarter resolution comes back where it was (no transposition)."""
    vol = _volume("oblique", shape=(40, 56, 6))
    st = SliceStream(vol, axis="axial", image_size=64)
    mask = np.zeros(st.slice_shape, bool)
    mask[5:20, 30:50] = True
    low = torch.nn.functional.interpolate(
        (st.mask_to_frame(mask) * 20 - 10)[None, None],
        size=(16, 16),
        mode="bilinear",
        align_corners=False,
        antialias=True,
    )[0, 0]
    back = st.frame_logits_to_slice(low) > 0
    iou = (back & mask).sum() / (back | mask).sum()
    assert iou > 0.85


def test_frames_are_normalised_three_channel_tensors() -> None:
    arr = np.full((6, 8, 4), 40, np.int16)  # exactly the soft-tissue window centre
    vol = Volume(arr, AFFINES["LPS"], modality="CT")
    st = SliceStream(vol, axis="axial", intensity="auto", image_size=16)
    f = st.frame(1)
    assert f.shape == (3, 16, 16) and f.dtype == torch.float32
    x = st.intensity(np.array([40.0]))[0]
    for ch in range(3):
        torch.testing.assert_close(
            f[ch],
            torch.full((16, 16), (x - IMAGENET_MEAN[ch]) / IMAGENET_STD[ch]),
            rtol=0,
            atol=1e-6,
        )
    fs = st.frames([0, 3])
    assert fs.shape == (2, 3, 16, 16)
    with pytest.raises(IndexError):
        st.frame(4)
