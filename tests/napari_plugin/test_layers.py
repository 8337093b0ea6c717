"""The volume <-> napari layer geometry helpers (pure numpy, no GUI)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from sam2_med.napari_plugin._layers import (
    LayerGeometry,
    data_to_voxel,
    display_axes,
    image_layer_data,
    layer_affine,
    voxel_to_data,
)
from sam2_med.volume import Volume


def _affine(perm, flips, spacing=(0.7, 1.1, 2.5), origin=(-12.0, 30.0, 5.0)):
    m = np.zeros((4, 4))
    for voxel_axis, world_axis in enumerate(perm):
        m[world_axis, voxel_axis] = spacing[voxel_axis] * flips[voxel_axis]
    m[:3, 3] = origin
    m[3, 3] = 1.0
    return m


CASES = [
    (perm, flips)
    for perm in itertools.permutations(range(3))
    for flips in [(1, 1, 1), (-1, -1, 1), (1, -1, -1)]
]


@pytest.mark.parametrize(("perm", "flips"), CASES)
def test_layer_axes_line_up_with_world_axes(perm, flips):
    aff = _affine(perm, flips)
    axes = display_axes(aff)
    lay = layer_affine(aff, axes)
    # each data axis d moves along world axis d only: napari slices in data space
    off_diagonal = lay[:3, :3] - np.diag(np.diag(lay[:3, :3]))
    assert np.allclose(off_diagonal, 0.0)
    rng = np.random.default_rng(0)
    ijk = rng.integers(0, 20, size=(10, 3)).astype(float)
    world_from_volume = (aff @ np.c_[ijk, np.ones(10)].T).T[:, :3]
    world_from_layer = (lay @ np.c_[voxel_to_data(ijk, axes), np.ones(10)].T).T[:, :3]
    assert np.allclose(world_from_volume, world_from_layer)
    assert np.array_equal(data_to_voxel(voxel_to_data(ijk, axes), axes), ijk)


def test_oblique_affine_keeps_the_closest_axes():
    theta = np.deg2rad(20)
    rot = np.array(
        [[np.cos(theta), 0, np.sin(theta)], [0, 1, 0], [-np.sin(theta), 0, np.cos(theta)]]
    )
    aff = np.eye(4)
    aff[:3, :3] = rot[:, [1, 2, 0]]
    assert display_axes(aff) == (2, 0, 1)


def test_image_layer_data_is_a_view_with_geometry():
    arr = np.arange(2 * 3 * 4, dtype=np.int16).reshape(2, 3, 4)
    vol = Volume(arr, _affine((1, 2, 0), (1, -1, 1)), modality="MR")
    data, kwargs, kind = image_layer_data(vol, name="x")
    geo = kwargs["metadata"]["sam2_med"]
    assert kind == "image" and isinstance(geo, LayerGeometry)
    assert np.shares_memory(data, vol.array)
    assert data.shape == tuple(arr.shape[a] for a in geo.axes)
    assert np.array_equal(geo.from_data(data), arr)
    lo, hi = kwargs["contrast_limits"]
    assert lo < hi


def test_ct_contrast_limits_come_from_a_window():
    vol = Volume(np.full((3, 3, 3), -1000, np.int16), np.eye(4), modality="CT")
    _, kwargs, _ = image_layer_data(vol, name="ct")
    # the soft-tissue preset W400/L40 in HU (not the data range, a single value here), with
    # the DICOM linear window's black/white points, as the model's frames use it
    assert kwargs["contrast_limits"] == [-160.0, 239.0]


def test_oblique_volume_is_displayed_on_its_grid_around_its_true_centre():
    theta = np.deg2rad(15)
    rot = np.array(
        [[1, 0, 0], [0, np.cos(theta), -np.sin(theta)], [0, np.sin(theta), np.cos(theta)]]
    )
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([-0.9, -0.9, 2.5])
    aff[:3, 3] = [10.0, -20.0, 30.0]
    vol = Volume(np.zeros((8, 6, 4), np.int16), aff, modality="CT")
    geo = LayerGeometry.for_volume(vol)
    assert geo.oblique_degrees == pytest.approx(15.0, abs=1e-6)
    disp = geo.display_affine
    assert np.allclose(disp[:3, :3], np.diag([-0.9, -0.9, 2.5]))
    centre = (np.array(vol.shape) - 1) / 2
    assert np.allclose(geo.voxel_to_world(centre), vol.voxel_to_world(centre))
    # a point maps back to the voxel drawn there
    ijk = np.array([[1, 2, 3], [7, 0, 0], [4, 5, 2]])
    assert np.array_equal(geo.world_to_voxel(geo.voxel_to_world(ijk + 0.4)), ijk)
    # exports keep the true affine
    assert np.array_equal(geo.volume.affine, aff)
