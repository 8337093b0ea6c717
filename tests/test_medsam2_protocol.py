"""Acceptance (issue 16): ``protocol="medsam2"`` reproduces MedSAM2's published CT script.

``../shared/fixtures/medsam2_protocol`` (README there) holds a reduced random checkpoint in
MedSAM2's format, its ``arch.json``, and what MedSAM2's own ``medsam2_infer_3D_CT.py`` produced
with it on ``../shared/data/volumes/ct_abdomen_small`` (window -175..275 HU, the liver box on
slice 15): the 8-bit volume, the resized key frame and a digest of every resized frame, the box
the prompt encoder received, per-slice low-resolution logits and object scores of both passes,
per-pass masks at the video resolution, the union and the final mask, in SimpleITK ``(k, j, i)``
and NIfTI ``(i, j, k)`` layouts.

The first tests check each step of the script without the model; the last one (about 12 s on
one CPU thread) runs :func:`sam2_med.segment` with ``protocol="medsam2"`` on the same file and
box (given in voxel indices, as a user gives it) and matches the logits within the README's tolerance (1e-4), the
per-pass masks except where the reference logit is within that tolerance of 0, and the final
mask exactly: read back with nibabel and with SimpleITK, it is the fixture's mask in both
layouts.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sam2_med.frames import IMAGENET_MEAN, IMAGENET_STD, SliceStream
from sam2_med.protocols import largest_component, resize_uint8
from tests.conftest import shared_fixture, shared_path

ATOL = 1e-4  # the README's suggested tolerance for logits and object scores
WINDOW = (50.0, 450.0)  # center, width: clip bounds -175, 275 HU, the fixture's window


@pytest.fixture(scope="module")
def ref() -> dict[str, np.ndarray]:
    with np.load(shared_fixture("medsam2_protocol", "reference.npz")) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def image_path():
    return shared_path("volumes", "ct_abdomen_small", "image.nii.gz")


@pytest.fixture(scope="module")
def volume(image_path):
    from sam2_med.io import load_volume

    return load_volume(image_path)


def _stream(volume) -> SliceStream:
    return SliceStream(
        volume, axis="axial", intensity=WINDOW, image_size=512, layout="sitk", protocol="medsam2"
    )


def _upsampled(logits: np.ndarray, hw) -> np.ndarray:
    t = torch.from_numpy(np.asarray(logits, np.float32))[:, None]
    return F.interpolate(t, size=tuple(int(v) for v in hw), mode="bilinear", align_corners=False)[
        :, 0
    ].numpy()


# ------------------------------------------------------------------ the script's steps, no model
def test_window_and_8bit_volume_are_the_scripts(volume, ref) -> None:
    s = _stream(volume)
    assert s.uint8_mapping == {
        "clip": list(ref["window_lower_upper_hu"]),
        "minmax": [-175.0, 275.0],
    }
    assert s.display_shape == tuple(ref["video_height_width"])  # (rows, cols) of a sitk slice
    u8 = np.stack([s.display_uint8(k) for k in range(s.n_slices)])
    np.testing.assert_array_equal(u8, ref["preprocessed_uint8_sitk_kji"])


def test_the_same_slices_from_a_file_simpleitk_wrote(volume, ref, tmp_path) -> None:
    """The layout is SimpleITK's array whichever reader made the volume: an MHA copy that
    SimpleITK wrote (LPS direction cosines) gives the same 8-bit frames."""
    import SimpleITK as sitk

    from sam2_med.io import load_volume

    path = tmp_path / "copy.mha"
    sitk.WriteImage(sitk.ReadImage(volume.provenance.paths[0]), str(path))
    u8 = np.stack([_stream(load_volume(path)).display_uint8(k) for k in range(volume.shape[2])])
    np.testing.assert_array_equal(u8, ref["preprocessed_uint8_sitk_kji"])


def test_resized_frames_and_their_normalisation_are_the_scripts(volume, ref) -> None:
    s = _stream(volume)
    k = int(ref["key_slice_nifti_k"])
    resized = np.stack([resize_uint8(s.display_uint8(j), 512) for j in range(s.n_slices)])
    np.testing.assert_array_equal(resized[k], ref["key_frame_resized_uint8"])
    assert hashlib.sha256(np.ascontiguousarray(resized).tobytes()).hexdigest() == str(
        ref["resized_uint8_sha256"]
    )
    # the script: float64 / 255, minus and over float32 ImageNet constants, then .float()
    x = torch.from_numpy(ref["key_frame_resized_uint8"].astype(np.float64) / 255.0)[None]
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32).view(3, 1, 1)
    expected = ((x.expand(3, -1, -1) - mean) / std).float()
    torch.testing.assert_close(s.frame(k), expected, rtol=0, atol=0)


def test_box_goes_to_the_model_as_the_script_maps_it(volume, ref) -> None:
    s = _stream(volume)
    k, xy = s.voxel_to_model_xy(ref["box_ijk"])
    assert k.tolist() == [15, 15]
    np.testing.assert_allclose(xy.astype(np.float32), ref["box_model_xy"], rtol=0, atol=1e-5)
    # sam2-med's own pixel-centre mapping is what the fixture tells apart (3.7e-3 in logits)
    own = SliceStream(volume, axis="axial", intensity=WINDOW, image_size=512, layout="sitk")
    assert np.abs(own.voxel_to_model_xy(ref["box_ijk"])[1] - ref["box_model_xy"]).max() > 1


def test_logits_come_back_to_the_slices_as_the_script_thresholds_them(volume, ref) -> None:
    s = _stream(volume)
    for name in ("forward", "reverse"):
        pairs = zip(ref[f"{name}_logits"], ref[f"{name}_masks_video_sitk"], strict=True)
        for logits, mask in pairs:
            sl = s.frame_logits_to_slice(logits) > 0  # (i, j): the NIfTI slice
            np.testing.assert_array_equal(sl.T, mask.astype(bool))


def test_largest_component_is_the_scripts_in_both_layouts(ref) -> None:
    union = ref["union_sitk_kji"].astype(bool)
    np.testing.assert_array_equal(largest_component(union), ref["mask_sitk_kji"].astype(bool))
    np.testing.assert_array_equal(
        largest_component(union.transpose(2, 1, 0)), ref["mask_nifti_ijk"].astype(bool)
    )


# ------------------------------------------------------------------------- the whole protocol
@pytest.fixture(scope="module")
def run(image_path, ref):
    """``sam2_med.segment`` with ``protocol="medsam2"`` on the fixture's image and box, with a
    session that also keeps every slice result it yields."""
    from sam2_med import segment
    from sam2_med.session import Session

    class Recording(Session):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.seen = []

        def add_prompts(self, *args, **kwargs):
            res = super().add_prompts(*args, **kwargs)
            self.seen.append(res)
            return res

        def propagate(self, **kwargs):
            for res in super().propagate(**kwargs):
                self.seen.append(res)
                yield res

    sessions = []

    def factory(*args, **kwargs):
        sessions.append(Recording(*args, **kwargs))
        return sessions[-1]

    (i0, j0, k0), (i1, j1, k1) = ref["box_ijk"].tolist()
    result = segment(
        image_path,
        {
            "space": "voxel",
            "objects": [{"name": "liver", "label": 1, "boxes": [[i0, j0, k0, i1, j1, k1]]}],
        },
        checkpoint=shared_fixture("medsam2_protocol", "checkpoint.pt"),
        arch=shared_fixture("medsam2_protocol", "arch.json"),
        window=WINDOW,
        protocol="medsam2",
        session_factory=factory,
    )
    return result, sessions[0]


def test_medsam2_protocol_matches_medsam2s_own_code(run, ref, tmp_path) -> None:
    import nibabel as nib
    import SimpleITK as sitk

    result, session = run
    assert (session.protocol, session.slice_layout) == ("medsam2", "sitk")
    assert session.reset_between_directions and session.fill_hole_area == 0  # CPU: as MedSAM2
    seen = {(r.slice_index, r.direction): r for r in session.seen}
    hw = tuple(ref["video_height_width"])
    for name, d in (("forward", 1), ("reverse", -1)):
        frames = ref[f"{name}_frames"].tolist()
        # the key slice opens both passes with the same conditioning output
        ours = [seen[(k, 0 if n == 0 else d)] for n, k in enumerate(frames)]
        logits = np.stack([r.logits[1] for r in ours])
        scores = np.array([r.scores[1] for r in ours])
        assert np.abs(logits - ref[f"{name}_logits"]).max() < ATOL, name
        assert np.abs(scores - ref[f"{name}_object_score_logits"]).max() < ATOL, name
        # per-pass masks: equal, except where the reference logit is within ATOL of 0
        up = _upsampled(ref[f"{name}_logits"], hw)
        masks = np.stack([r.masks[1].T for r in ours])  # (i, j) -> the sitk slice (j, i)
        differ = masks != ref[f"{name}_masks_video_sitk"].astype(bool)
        assert not (differ & (np.abs(up) >= ATOL)).any(), name

    # the final mask (union, largest 3D component), exactly, in both layouts
    np.testing.assert_array_equal(result.labels.array, ref["mask_nifti_ijk"])
    assert result.record["protocol"] == "medsam2" and result.record["slice_layout"] == "sitk"
    assert result.record["protocol_uint8"] == {"clip": [-175.0, 275.0], "minmax": [-175.0, 275.0]}
    out = tmp_path / "liver.nii.gz"
    result.save(out, measurements=False)
    np.testing.assert_array_equal(np.asarray(nib.load(out).dataobj), ref["mask_nifti_ijk"])
    np.testing.assert_array_equal(
        sitk.GetArrayFromImage(sitk.ReadImage(str(out))), ref["mask_sitk_kji"]
    )
    sidecar = json.loads(out.with_suffix("").with_suffix(".json").read_text())
    run_record = sidecar["extra"]["sam2_med_run"]
    assert run_record["protocol"] == "medsam2"
    assert run_record["interactions"]["session"]["protocol"] == "medsam2"
