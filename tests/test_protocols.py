"""Protocols and slice layouts (issue 16): MedSAM2's published CT protocol as an option of every
front end, with sam2-med's geometry kept.

Tiny random models on synthetic volumes: the masks mean nothing; layouts, coordinates, the
8-bit mapping, defaults, the per-object 3D step and the record are exact. The match with
MedSAM2's own code is ``tests/test_medsam2_protocol.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sam2_med.frames import SliceStream
from sam2_med.interactions import load_interactions
from sam2_med.models import LoadedModel
from sam2_med.models.testing import random_model, tiny_config
from sam2_med.protocols import (
    default_fill_hole_area,
    largest_component,
    to_uint8,
    uint8_range,
)
from sam2_med.session import Session, resolve_protocol
from sam2_med.volume import Volume
from tests._geometry import blob_volume


@pytest.fixture(scope="module")
def model():
    return LoadedModel.from_module(random_model(tiny_config(128), seed=0), name="tiny-test")


def _volume(name: str = "RAS", shape=(36, 44, 24)) -> Volume:
    return blob_volume(name, shape)


# ------------------------------------------------------------------------------ slice layouts
@pytest.mark.parametrize(
    ("name", "axis", "axis_index"),
    [
        ("RAS", "axial", 2),
        ("LPS", "axial", 2),
        ("oblique", "axial", 2),
        ("sagittal_permuted", "sagittal", 2),
        ("RAS", "coronal", 1),
    ],
)
def test_sitk_layout_is_the_stored_array_never_reoriented(name, axis, axis_index) -> None:
    """Whatever the direction cosines, slice ``k`` of the sitk layout is the array's slice with
    rows along the higher voxel axis: ``sitk.GetArrayFromImage(image)[k]`` for axial."""
    vol = _volume(name)
    s = SliceStream(vol, axis=axis, intensity=(40, 400), image_size=128, layout="sitk")
    assert s.axis_index == axis_index
    k = 7
    expected = np.take(vol.array, k, axis=axis_index).T
    np.testing.assert_array_equal(s.to_display(s.slice_array(k)), expected)
    if name == "RAS" and axis == "axial":  # the radiological display is turned by 180 degrees
        r = SliceStream(vol, axis=axis, intensity=(40, 400), image_size=128)
        np.testing.assert_array_equal(r.to_display(r.slice_array(k)), expected[::-1, ::-1])


@pytest.mark.parametrize("name", ["LPS", "oblique", "sagittal_permuted"])
@pytest.mark.parametrize("protocol", ["sam2", "medsam2"])
def test_prompts_and_masks_land_on_their_voxels_in_the_sitk_layout(model, name, protocol) -> None:
    vol = _volume(name)
    axis = "sagittal" if name == "sagittal_permuted" else "axial"
    s = Session(model, vol, axis=axis, protocol=protocol, slice_layout="sitk")
    st = s.stream
    a, b = st.slice_shape
    ijk = np.zeros((a * b, 3), np.int64)
    p, q = st.orientation.in_plane
    ijk[:, p], ijk[:, q] = np.divmod(np.arange(a * b), b)
    ijk[:, s.axis_index] = 9
    k, xy = st.voxel_to_model_xy(ijk)
    assert (k == 9).all()
    np.testing.assert_array_equal(st.model_xy_to_voxel(9, xy), ijk)  # every voxel round-trips
    mask = np.zeros((a, b), bool)
    mask[3:11, 5:9] = True
    mask[11:14, 5:7] = True  # not symmetric under flips or transposes
    lab = s.add_object()
    res = s.add_prompts(lab, mask=mask, slice_index=9)
    np.testing.assert_array_equal(res.masks[lab], mask)
    np.testing.assert_array_equal(s.label_map().array[s.stream.slice_to_volume_index(9)] > 0, mask)


def test_medsam2_box_mapping_has_no_half_pixel_shift() -> None:
    vol = _volume("LPS")
    med = SliceStream(vol, intensity=(40, 400), image_size=128, layout="sitk", protocol="medsam2")
    own = SliceStream(vol, intensity=(40, 400), image_size=128, layout="sitk")
    rows, cols = med.display_shape  # (44, 36): rows j, columns i
    _, xy = med.voxel_to_model_xy([[10, 20, 3]])
    np.testing.assert_allclose(xy, [[10 * 128 / cols, 20 * 128 / rows]])
    _, xy = own.voxel_to_model_xy([[10, 20, 3]])
    np.testing.assert_allclose(xy, [[10.5 * 128 / cols - 0.5, 20.5 * 128 / rows - 0.5]])


# ---------------------------------------------------------------------------- 8-bit intensity
def test_uint8_mapping_uses_the_clipped_volumes_own_extremes() -> None:
    vol = np.array([-50.0, 0.0, 100.0, 175.0, 300.0])
    assert uint8_range(vol, -175, 275) == (-50.0, 275.0)  # lower bound never reached
    u8 = to_uint8(vol, -175, 275, -50.0, 275.0)
    assert u8.dtype == np.uint8
    assert u8.tolist() == [0, int(50 / 325 * 255), int(150 / 325 * 255), int(225 / 325 * 255), 255]
    # truncation, not rounding: 254.9... -> 254
    assert to_uint8(np.array([274.9]), -175, 275, -175, 275).tolist() == [254]
    # NaN voxels are ignored for the range and become 0; a volume outside the window is all 0
    assert uint8_range(np.array([np.nan, 10.0, 20.0]), 0, 100) == (10.0, 20.0)
    assert to_uint8(np.array([np.nan, 20.0]), 0, 100, 10.0, 20.0).tolist() == [0, 255]
    assert to_uint8(np.array([-900.0, -800.0]), -175, 275, -175, -175).tolist() == [0, 0]


def test_medsam2_frames_are_8bit_slices() -> None:
    vol = _volume()
    med = SliceStream(vol, intensity=(40, 400), image_size=128, layout="sitk", protocol="medsam2")
    lo, hi = med.uint8_mapping["minmax"]
    assert med.uint8_mapping["clip"] == [-160.0, 240.0] and -160 <= lo < hi <= 240
    d = med.display(4)
    np.testing.assert_array_equal(np.round(d * 255).astype(np.uint8), med.display_uint8(4))
    frames = med.frames([3, 4])
    assert frames.dtype == torch.float32 and tuple(frames.shape) == (2, 3, 128, 128)
    with pytest.raises(ValueError, match="medsam2"):
        SliceStream(vol, intensity=(40, 400), image_size=128).display_uint8(0)


# --------------------------------------------------------------------------------- defaults
def test_protocol_defaults_follow_the_models_declaration(model) -> None:
    vol = _volume()
    med = LoadedModel.from_module(model.model, name="medsam2")  # the registered medsam2
    assert resolve_protocol(model) == ("sam2", "radiological")
    assert resolve_protocol(med) == ("medsam2", "sitk")
    s = Session(med, vol)
    assert (s.protocol, s.slice_layout, s.reset_between_directions) == ("medsam2", "sitk", True)
    assert s.fill_hole_area == 0 and s.largest_component  # CPU: MedSAM2 fills no holes here
    # the float pipeline for the fine-tune: still the layout it was trained on, Meta's behaviour
    s = Session(med, vol, protocol="sam2")
    assert (s.protocol, s.slice_layout, s.reset_between_directions) == ("sam2", "sitk", False)
    assert s.fill_hole_area == 8 and not s.largest_component
    s = Session(model, vol, protocol="medsam2")
    assert (s.protocol, s.slice_layout) == ("medsam2", "sitk")
    asked = LoadedModel.from_module(model.model, name="medsam2")
    object.__setattr__(asked, "protocol", "sam2")  # what load_model(protocol="sam2") records
    assert resolve_protocol(asked) == ("sam2", "sitk")
    assert Session(med, vol, fill_hole_area=8, slice_layout="radiological").slice_layout == (
        "radiological"
    )
    with pytest.raises(ValueError, match="unknown protocol 'meta'"):
        Session(model, vol, protocol="meta")


def test_hole_filling_under_medsam2_is_what_medsam2_does_on_that_device() -> None:
    assert default_fill_hole_area("medsam2", "cpu") == 0
    assert default_fill_hole_area("medsam2", "mps") == 0
    assert default_fill_hole_area("medsam2", "cuda") == 8
    assert default_fill_hole_area("sam2", "cpu") == 8


# ----------------------------------------------------------------- the per-object 3D component
def _two_blobs(shape, big, small) -> np.ndarray:
    m = np.zeros(shape, bool)
    m[2 : 2 + big[0], 2 : 2 + big[1]] = True
    m[-2 - small[0] : -2, -2 - small[1] : -2] = True
    return m


@pytest.mark.parametrize("protocol", ["sam2", "medsam2"])
def test_largest_component_is_kept_per_object(model, protocol) -> None:
    """MedSAM2's script keeps one component across all lesions of a file; here each object
    keeps its own largest, so a small lesion next to a large one survives."""
    vol = _volume()
    s = Session(model, vol, protocol=protocol)
    shape = s.stream.slice_shape
    big = _two_blobs(shape, (6, 6), (2, 2))  # object 1: 36 voxels + a 4-voxel island
    small = _two_blobs(shape, (3, 3), (1, 1))  # object 2: 9 voxels + a 1-voxel island; the
    #                                  script's union of both objects would keep only the 36
    one, two = s.add_object("large"), s.add_object("small")
    s.add_prompts(one, mask=big, slice_index=5)
    s.add_prompts(two, mask=small, slice_index=15)
    lm = s.label_map().array
    idx5, idx15 = s.stream.slice_to_volume_index(5), s.stream.slice_to_volume_index(15)
    if protocol == "medsam2":
        assert (lm == one).sum() == 36 and (lm == two).sum() == 9
        np.testing.assert_array_equal(lm[idx5] == one, largest_component(big))
        np.testing.assert_array_equal(s.object_volume(two)[idx15], largest_component(small))
        np.testing.assert_array_equal(s.mask(one, 5), big)  # the per-slice output is kept
    else:
        assert (lm == one).sum() == 40 and (lm == two).sum() == 10


def test_largest_component_uses_26_connectivity() -> None:
    m = np.zeros((3, 4, 4), bool)
    m[0, 0, 0] = m[1, 1, 1] = m[2, 2, 2] = True  # diagonal: one component
    m[0, 3, 0] = m[1, 3, 0] = True  # two face neighbours elsewhere (largest with 6-connectivity)
    kept = largest_component(m)
    assert kept.sum() == 3 and kept[1, 1, 1] and not kept[0, 3, 0]
    assert not largest_component(np.zeros((2, 2, 2), bool)).any()


# ------------------------------------------------------------------------ record and replay
def test_medsam2_session_records_and_replays_its_protocol(model) -> None:
    from sam2_med.api import segment_volume

    vol = _volume("LPS")
    s = Session(model, vol, protocol="medsam2")
    lab = s.add_object("blob")
    s.add_prompts(lab, box=([10, 12, 11], [25, 30, 11]))
    list(s.propagate())
    rec = s.run_record()
    assert (rec["protocol"], rec["slice_layout"]) == ("medsam2", "sitk")
    assert rec["protocol_uint8"]["clip"] == [-160.0, 240.0]  # "auto" for CT: soft tissue
    assert rec["protocol_postprocess"].startswith("largest 3D connected component")
    log = s.interactions()
    assert log["session"]["protocol"] == "medsam2" and log["session"]["fill_hole_area"] == 0
    again = segment_volume(vol, load_interactions(log, vol), model)
    np.testing.assert_array_equal(again.labels.array, s.label_map().array)
    assert again.record["protocol"] == "medsam2"
    with pytest.raises(Exception, match="recorded session used the medsam2 protocol"):
        segment_volume(vol, load_interactions(log, vol), model, protocol="sam2")


def test_a_log_from_before_protocols_replays_as_it_was_made(model) -> None:
    vol = _volume()
    med = LoadedModel.from_module(model.model, name="medsam2")  # now declares medsam2
    s = Session(med, vol, protocol="sam2", slice_layout="radiological")
    lab = s.add_object()
    s.add_prompts(lab, points=[[18, 22, 12]], point_labels=[1])
    log = s.interactions()
    for key in ("protocol", "slice_layout"):
        del log["session"][key]  # what a version-1 log written before issue 16 holds
    old = load_interactions(log, vol)
    assert old.protocol == "sam2"
    kw = old.session_kwargs()
    assert (kw["protocol"], kw["slice_layout"]) == ("sam2", "radiological")
    log["session"]["protocol"] = "MedSAM2"
    with pytest.raises(Exception, match="protocol must be one of sam2, medsam2"):
        load_interactions(log, vol)
