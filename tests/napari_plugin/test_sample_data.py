"""The phantom sample opens in world millimetres, with its reference labels on the same grid."""

from __future__ import annotations

import numpy as np
import pytest

from sam2_med.napari_plugin._layers import geometry_of, voxel_to_data


@pytest.mark.gui
def test_phantom_sample_is_placed_by_its_affine(make_napari_viewer):
    pytest.importorskip("sam2_med.phantom")
    viewer = make_napari_viewer()
    layers = viewer.open_sample("sam2-med", "phantom")
    image, truth = layers
    geo = geometry_of(image.metadata)
    assert geo is not None and geometry_of(truth.metadata) is geo
    vol = geo.volume
    ijk = np.array([0, 1, 2])
    assert np.allclose(image.data_to_world(voxel_to_data(ijk, geo.axes)), geo.voxel_to_world(ijk))
    # the default phantom is oblique: shown on its voxel grid, centred where it truly is
    assert geo.oblique_degrees > 5
    centre = (np.array(vol.shape) - 1) / 2
    assert np.allclose(geo.voxel_to_world(centre), vol.voxel_to_world(centre))
    assert np.allclose(truth.affine.affine_matrix, image.affine.affine_matrix)
    assert truth.data.shape == image.data.shape and np.any(truth.data)
