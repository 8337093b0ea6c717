"""Outputs are shared as the umask says, replaced as a unit, and never replace files the user did
not name (issue 11, items 11, 17 and 18)."""

from __future__ import annotations

import json
import os
import stat
import threading

import nibabel as nib
import numpy as np
import pytest

from sam2_med import Volume
from sam2_med.io import MaskWriteError, OutputExistsError, load_volume, save_mask
from sam2_med.io.writers import save_outputs
from sam2_med.labels import LabelVolume

SHAPE = (6, 7, 5)


@pytest.fixture
def ref() -> Volume:
    return Volume(np.zeros(SHAPE, np.int16), np.diag([0.8, 0.8, 2.0, 1.0]), modality="CT")


@pytest.fixture
def umask():
    """Set the process umask for one test, and put the old one back."""
    old = os.umask(0o022)
    os.umask(old)
    yield lambda mask: os.umask(mask)
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# ------------------------------------------------------------------------------- item 11
@pytest.mark.parametrize("mask, expected", [(0o002, 0o664), (0o022, 0o644), (0o077, 0o600)])
def test_outputs_honour_the_umask(ref, tmp_path, umask, mask, expected):
    umask(mask)
    out = save_mask(np.ones(SHAPE, np.uint8), tmp_path / "m.nii.gz", reference=ref)
    assert _mode(out) == expected
    assert _mode(tmp_path / "m.json") == expected
    save_mask(np.zeros(SHAPE, np.uint8), out, reference=ref, overwrite=True)
    assert _mode(out) == expected


# ------------------------------------------------------------------------------- item 17
def test_racing_overwrites_never_mix_two_runs(ref, tmp_path):
    """Two writers replace the same mask and sidecar at the same moment, round after round;
    after every round the mask and its sidecar come from the same writer (the sidecar's label
    name says which). Before the fix some rounds mixed them."""
    out = tmp_path / "m.nii.gz"
    rounds = 150
    barrier = threading.Barrier(3)  # two writers and the checker
    errors: list[BaseException] = []

    def writer(value: int) -> None:
        labels = LabelVolume(np.full(SHAPE, value, np.uint8), ref, {value: f"writer{value}"})
        try:
            for _ in range(rounds):
                barrier.wait(timeout=60)
                save_mask(labels, out, reference=ref, overwrite=True)
                barrier.wait(timeout=60)
        except BaseException as err:  # reported by the assertion below
            errors.append(err)
            barrier.abort()

    threads = [threading.Thread(target=writer, args=(v,)) for v in (1, 2)]
    for t in threads:
        t.start()
    mixed = 0
    try:
        for _ in range(rounds):
            barrier.wait(timeout=60)  # both writers start
            barrier.wait(timeout=60)  # both writers are done
            value = int(np.asarray(nib.load(out).dataobj).max())
            names = json.loads((tmp_path / "m.json").read_text())["label_names"]
            mixed += names != {str(value): f"writer{value}"}
    finally:
        for t in threads:
            t.join(timeout=60)
    assert not errors, errors
    assert mixed == 0, f"{mixed} of {rounds} rounds mixed the two runs' mask and sidecar"


def test_outputs_of_one_run_are_published_together(ref, tmp_path, monkeypatch):
    """Mask, sidecar (and a DICOM SEG when asked) are written by one all-or-nothing call, so a
    racing run replaces all of them or none."""
    from sam2_med.io import _atomic

    calls = []
    real = _atomic.write_files_atomically

    def spy(contents, **kwargs):
        calls.append(sorted(p.name for p in contents))
        return real(contents, **kwargs)

    monkeypatch.setattr(_atomic, "write_files_atomically", spy)
    save_outputs(LabelVolume(np.ones(SHAPE, np.uint8), ref, {1: "a"}), ref, mask=tmp_path / "m.nii")
    assert calls == [["m.json", "m.nii"]]


# ------------------------------------------------------------------------------- item 18
def test_a_foreign_file_at_the_sidecar_path_is_never_replaced(ref, tmp_path):
    """``--prompts p.json --out p.nii.gz --overwrite`` would replace the prompt file with the
    sidecar: a derived path holding a file sam2-med did not write is refused, even with
    overwrite."""
    prompts = tmp_path / "p.json"
    prompts.write_text('{"space": "voxel", "objects": []}')
    before = prompts.read_bytes()
    with pytest.raises(MaskWriteError, match="not a sam2-med sidecar") as info:
        save_mask(np.ones(SHAPE, np.uint8), tmp_path / "p.nii.gz", reference=ref, overwrite=True)
    assert not isinstance(info.value, OutputExistsError)
    assert prompts.read_bytes() == before
    assert not (tmp_path / "p.nii.gz").exists()


def test_the_sidecar_of_another_mask_is_not_replaced(ref, tmp_path):
    """``a.nii`` and ``a.nii.gz`` share ``a.json``: writing one must not steal the other's."""
    save_mask(np.ones(SHAPE, np.uint8), tmp_path / "a.nii.gz", reference=ref)
    with pytest.raises(MaskWriteError, match=r"a\.nii\.gz"):
        save_mask(np.ones(SHAPE, np.uint8), tmp_path / "a.nii", reference=ref, overwrite=True)
    assert json.loads((tmp_path / "a.json").read_text())["mask"]["file"] == "a.nii.gz"


def test_own_sidecar_is_replaced_with_overwrite(ref, tmp_path):
    out = save_mask(np.ones(SHAPE, np.uint8), tmp_path / "a.nii.gz", reference=ref)
    save_mask(np.zeros(SHAPE, np.uint8), out, reference=ref, overwrite=True)
    assert json.loads((tmp_path / "a.json").read_text())["labels"] == []


def test_dcm2niix_sidecar_the_reader_used_is_never_replaced(tmp_path):
    """``--out ct.nii --overwrite`` beside ``ct.nii.gz`` + dcm2niix's ``ct.json`` (which gave the
    modality): the sidecar path is an input of the reference."""
    image = tmp_path / "ct.nii.gz"
    nib.Nifti1Image(np.zeros(SHAPE, np.int16), np.eye(4)).to_filename(image)
    side = tmp_path / "ct.json"
    # even one that looks like a sam2-med sidecar of ct.nii: the reader used it, it is an input
    side.write_text(
        json.dumps({"Modality": "CT", "sam2_med_version": "x", "mask": {"file": "ct.nii"}})
    )
    before = side.read_bytes()
    volume = load_volume(image)
    assert volume.modality == "CT"
    with pytest.raises(MaskWriteError, match=r"ct\.json: refusing to overwrite a file the refer"):
        save_mask(np.ones(SHAPE, np.uint8), tmp_path / "ct.nii", reference=volume, overwrite=True)
    assert side.read_bytes() == before
