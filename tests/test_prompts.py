"""Prompt plain data -> voxel prompts: spaces, validation messages, mask prompts on the grid."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from sam2_med import PromptError, Volume
from sam2_med.prompts import (
    cli_object,
    load_prompts,
    mask_prompt_objects,
    mask_to_image_grid,
    parse_point_arg,
    parse_prompts,
    to_voxel,
)

# An LPS-stored volume (like the shared MR): i -> Left, j -> Posterior, k -> Superior, 2x3x4 mm.
LPS_AFFINE = np.array([[-2.0, 0, 0, 10.0], [0, -3.0, 0, 20.0], [0, 0, 4.0, -30.0], [0, 0, 0, 1.0]])


@pytest.fixture
def vol() -> Volume:
    return Volume(np.zeros((10, 12, 8), dtype=np.int16), LPS_AFFINE, modality="MR")


def test_voxel_points_default_positive_and_negative(vol):
    ps = parse_prompts(
        {"space": "voxel", "objects": [{"name": "a", "points": [[1, 2, 3], [4, 5, 3, 0]]}]}, vol
    )
    (obj,) = ps.objects
    assert obj.label == 1 and obj.name == "a"
    assert obj.points.tolist() == [[1, 2, 3], [4, 5, 3]]
    assert obj.point_labels.tolist() == [1, 0]
    assert ps.axis_index == 2  # axial -> k for this affine
    assert obj.slices(2) == (3,)


@pytest.mark.parametrize("ijk", [(0, 0, 0), (9, 11, 7), (3, 7, 2)])
def test_world_ras_and_lps_map_to_the_voxel(vol, ijk):
    ras = vol.voxel_to_world(np.asarray(ijk, dtype=float))
    # a point 0.4 voxel away from the centre is still in the same voxel
    ras_off = ras + LPS_AFFINE[:3, :3] @ np.array([0.4, -0.4, 0.4])
    lps = ras_off * np.array([-1.0, -1.0, 1.0])
    assert to_voxel([ras_off], vol, "world_ras").tolist() == [list(ijk)]
    assert to_voxel([lps], vol, "world_lps").tolist() == [list(ijk)]
    # confusing the conventions (x and y flipped) never gives the same voxel
    try:
        confused = to_voxel([lps], vol, "world_ras").tolist()
    except PromptError:
        confused = None
    assert confused != [list(ijk)]


def test_outside_point_names_source_and_valid_range(vol):
    with pytest.raises(PromptError) as err:
        parse_prompts(
            {"space": "voxel", "objects": [{"points": [[10, 0, 0]]}]}, vol, source="p.json"
        )
    msg = str(err.value)
    assert msg.startswith("p.json: ")
    assert "outside the image" in msg and "0..9, 0..11, 0..7" in msg
    assert "\n" not in msg


def test_world_point_outside_says_which_voxel(vol):
    with pytest.raises(PromptError, match=r"falls in voxel \(15, 13, 0\)"):
        to_voxel([[20.0, 20.0, -30.0]], vol, "world_lps", where="x")


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        ({"objects": [{"points": [[1, 1, 1]]}]}, "missing 'space'"),
        ({"space": "ijk", "objects": [{"points": [[1, 1, 1]]}]}, "'space' must be one of"),
        ({"space": "voxel", "objects": []}, "'objects' is empty"),
        (
            {"space": "voxel", "objects": [{"pionts": [[1, 1, 1]]}]},
            r"unknown key\(s\) \['pionts'\]",
        ),
        ({"space": "voxel", "objects": [{"name": "x"}]}, "has no points, boxes or mask"),
        ({"space": "voxel", "objects": [{"points": [[1.5, 1, 1]]}]}, "is not integer"),
        ({"space": "voxel", "objects": [{"points": [[1, 1]]}]}, "list of 3 or 4 numbers"),
        ({"space": "voxel", "objects": [{"points": [[1, 1, 1, 2]]}]}, "must be 1 .positive."),
        ({"space": "voxel", "objects": [{"label": 0, "points": [[1, 1, 1]]}]}, "1..65535"),
        (
            {"space": "voxel", "objects": [{"boxes": [[1, 1, 1, 5, 5, 2]]}]},
            "fall on slices 1 and 2",
        ),
        ({"space": "voxel", "objects": [{"boxes": [[1, 1, 1, 1, 5, 1]]}]}, "degenerate"),
        (
            {
                "space": "voxel",
                "objects": [
                    {"label": 1, "name": "a", "points": [[1, 1, 1]]},
                    {"label": 1, "name": "b", "points": [[2, 2, 1]]},
                ],
            },
            "two names",
        ),
        ([1, 2], "must be a JSON object"),
        (
            {"space": "voxel", "objects": [{"boxes": [[1, 1, 1, 5, 5, 1], [2, 2, 1, 6, 6, 1]]}]},
            "several boxes on slice 1",
        ),
    ],
)
def test_schema_errors_are_one_line_with_source(vol, data, pattern):
    with pytest.raises(PromptError, match=pattern) as err:
        parse_prompts(data, vol, source="prompts.json")
    assert str(err.value).startswith("prompts.json: ")
    assert "\n" not in str(err.value)


def test_labels_default_to_free_values_and_merge(vol):
    ps = parse_prompts(
        {
            "space": "voxel",
            "objects": [
                {"label": 1, "name": "liver", "points": [[1, 1, 1]]},
                {"name": "spleen", "points": [[2, 2, 2]]},
                {"label": 1, "boxes": [[0, 0, 4, 3, 3, 4]]},
            ],
        },
        vol,
    )
    assert ps.labels == (1, 2)
    liver = ps.objects[0]
    assert liver.name == "liver" and len(liver.points) == 1 and len(liver.boxes) == 1
    assert liver.slices(2) == (1, 4)
    assert ps.names == {1: "liver", 2: "spleen"}


def test_box_world_corners(vol):
    a = vol.voxel_to_world(np.array([1.0, 2.0, 3.0]))
    b = vol.voxel_to_world(np.array([5.0, 6.0, 3.0]))
    ps = parse_prompts(
        {"space": "world_ras", "objects": [{"boxes": [[*a, *b]]}]}, vol, source="p.json"
    )
    (corner_a, corner_b) = ps.objects[0].boxes[0]
    assert corner_a.tolist() == [1, 2, 3] and corner_b.tolist() == [5, 6, 3]


def test_axis_choice_checks_boxes_on_that_axis(vol):
    # coronal slices of this volume are stacked along j: a box at constant j is valid
    ps = parse_prompts(
        {"space": "voxel", "objects": [{"boxes": [[1, 4, 1, 5, 4, 6]]}]}, vol, axis="coronal"
    )
    assert ps.axis_index == 1
    with pytest.raises(PromptError, match="unknown axis"):
        parse_prompts({"space": "voxel", "objects": [{"points": [[1, 1, 1]]}]}, vol, axis="xy")


def _save(arr, affine, path):
    nib.Nifti1Image(arr, affine).to_filename(path)
    return path


def test_mask_file_largest_slice_value_and_relative_path(tmp_path, vol):
    arr = np.zeros(vol.shape, dtype=np.int16)
    arr[2:5, 2:5, 3] = 7  # 9 voxels on slice 3
    arr[2:4, 2:4, 5] = 7  # 4 voxels on slice 5
    arr[6:8, 6:8, 1] = 2
    _save(arr, LPS_AFFINE, tmp_path / "m.nii.gz")
    spec = {
        "space": "voxel",
        "objects": [
            {"name": "big", "label": 3, "mask": {"file": "m.nii.gz", "value": 7}},
            {"name": "chosen", "label": 4, "mask": {"file": "m.nii.gz", "value": 7, "slice": 5}},
            {"name": "any", "label": 5, "mask": "m.nii.gz"},
        ],
    }
    (tmp_path / "p.json").write_text(json.dumps(spec))
    ps = load_prompts(tmp_path / "p.json", vol)
    big, chosen, anyv = ps.objects
    assert big.masks[0][0] == 3 and np.array_equal(big.masks[0][1], arr[:, :, 3] == 7)
    assert chosen.masks[0][0] == 5 and chosen.masks[0][1].sum() == 4
    assert anyv.masks[0][0] == 3 and anyv.masks[0][1].shape == (10, 12)


def test_mask_prompt_objects_one_per_value_with_sidecar_names(tmp_path, vol):
    arr = np.zeros(vol.shape, dtype=np.uint8)
    arr[1:3, 1:3, 2] = 5
    arr[5:9, 5:9, 6] = 1
    _save(arr, LPS_AFFINE, tmp_path / "labels.nii.gz")
    (tmp_path / "labels.json").write_text(json.dumps({"1": "spleen", "5": "liver"}))
    objs = mask_prompt_objects(tmp_path / "labels.nii.gz", vol)
    assert [(o.label, o.name, o.masks[0][0]) for o in objs] == [(1, "spleen", 6), (5, "liver", 2)]
    only = mask_prompt_objects(tmp_path / "labels.nii.gz", vol, values=[5])
    assert [o.label for o in only] == [5]
    with pytest.raises(PromptError, match=r"\[9\] not in the mask"):
        mask_prompt_objects(tmp_path / "labels.nii.gz", vol, values=[9])


def test_mask_in_another_orientation_is_reindexed_exactly(tmp_path, vol):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 4, size=vol.shape).astype(np.uint8)
    # the same voxels stored LAS and with i/k swapped: flip j, then transpose
    flipped = np.flip(arr, axis=1)
    flip_aff = LPS_AFFINE.copy()
    flip_aff[:3, 1] *= -1
    flip_aff[:3, 3] = LPS_AFFINE[:3, :3] @ np.array([0, vol.shape[1] - 1, 0]) + LPS_AFFINE[:3, 3]
    perm = np.transpose(flipped, (2, 1, 0))
    perm_aff = flip_aff[:, [2, 1, 0, 3]]
    mask = Volume(perm, perm_aff)
    assert mask.orientation == "SAL"
    assert np.array_equal(mask_to_image_grid(mask, vol, where="m"), arr)


@pytest.mark.parametrize(
    "affine",
    [
        np.diag([2.0, 3.0, 5.0, 1.0]),  # different spacing
        LPS_AFFINE + np.array([[0, 0, 0, 1.0], [0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]),  # half
    ],
)
def test_mask_off_grid_is_refused(vol, affine):
    mask = Volume(np.ones(vol.shape, dtype=np.uint8), affine)
    with pytest.raises(PromptError, match="not on the image grid"):
        mask_to_image_grid(mask, vol, where="m.nii.gz")


def test_mask_other_extent_is_refused(vol):
    mask = Volume(np.ones((10, 12, 7), dtype=np.uint8), LPS_AFFINE)
    with pytest.raises(PromptError, match="different extent"):
        mask_to_image_grid(mask, vol, where="m.nii.gz")


def test_mask_and_clicks_on_one_slice_are_refused(tmp_path, vol):
    arr = np.zeros(vol.shape, dtype=np.uint8)
    arr[2:5, 2:5, 3] = 1
    _save(arr, LPS_AFFINE, tmp_path / "m.nii.gz")
    spec = {"space": "voxel", "objects": [{"mask": "m.nii.gz", "points": [[3, 3, 3]]}]}
    with pytest.raises(PromptError, match="a mask and points or a box on slice 3"):
        parse_prompts(spec, vol, base_dir=tmp_path)
    spec["objects"][0]["points"] = [[3, 3, 4]]  # another slice: fine
    assert parse_prompts(spec, vol, base_dir=tmp_path).objects[0].slices(2) == (3, 4)


def test_mask_errors(tmp_path, vol):
    _save(np.zeros(vol.shape, dtype=np.uint8), LPS_AFFINE, tmp_path / "empty.nii.gz")
    with pytest.raises(PromptError, match="empty"):
        parse_prompts(
            {"space": "voxel", "objects": [{"mask": "empty.nii.gz"}]}, vol, base_dir=tmp_path
        )
    with pytest.raises(PromptError, match="mask prompt file not found") as err:
        parse_prompts(
            {"space": "voxel", "objects": [{"mask": "nope.nii.gz"}]}, vol, base_dir=tmp_path
        )
    assert str(err.value).startswith(str(tmp_path / "nope.nii.gz"))
    (tmp_path / "junk.nii.gz").write_bytes(b"not a nifti at all")
    with pytest.raises(PromptError, match="cannot read mask prompt") as err:
        mask_prompt_objects(tmp_path / "junk.nii.gz", vol)
    assert str(err.value).startswith(str(tmp_path / "junk.nii.gz"))


def test_bad_json_names_file_line_and_column(tmp_path, vol):
    p = tmp_path / "p.json"
    p.write_text('{"space": "voxel",\n "objects": [}\n')
    with pytest.raises(PromptError, match=r"invalid JSON at line 2 column \d+") as err:
        load_prompts(p, vol)
    assert str(err.value).startswith(str(p))
    with pytest.raises(PromptError, match="prompt file not found"):
        load_prompts(tmp_path / "missing.json", vol)


def test_command_line_syntax(vol):
    assert parse_point_arg("1,2,3") == ([1.0, 2.0, 3.0], 1)
    assert parse_point_arg("1,2,3:neg") == ([1.0, 2.0, 3.0], 0)
    with pytest.raises(PromptError, match="expected 3 comma-separated"):
        parse_point_arg("1,2")
    with pytest.raises(PromptError, match=":pos' or ':neg'"):
        parse_point_arg("1,2,3:maybe")
    obj = cli_object(
        vol, points=["1,2,3", "2,2,3:neg"], boxes=["0,0,3,4,4,3"], label=2, name="x", where="img"
    )
    assert obj.label == 2 and obj.point_labels.tolist() == [1, 0] and len(obj.boxes) == 1
    assert cli_object(vol) is None
    with pytest.raises(PromptError) as err:
        cli_object(vol, points=["1,2,30"], where="img.nii.gz")
    assert str(err.value).startswith("img.nii.gz: --point (1, 2, 30) is outside the image")
