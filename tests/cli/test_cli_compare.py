"""``sam2-med segment --compare GT``: each object's Dice against known labels, after the mask."""

from __future__ import annotations

import re

import numpy as np


def test_compare_prints_each_objects_dice(cli, tmp_path, model_args):
    from sam2_med.phantom import write_phantom

    ph = write_phantom(tmp_path / "ph")
    out = tmp_path / "mask.nii.gz"
    code, stdout, err = cli(
        "segment",
        ph["image"],
        "--prompts",
        ph["prompts"],
        "--compare",
        ph["labels"],
        "--out",
        out,
        *model_args,
    )
    assert code == 0, err
    (line,) = [x for x in stdout.splitlines() if x.startswith("Dice against")]
    found = dict(re.findall(r"(\w+) (\d\.\d{3})", line))
    assert set(found) == {"liver", "spleen"}
    import nibabel as nib

    pred = np.asarray(nib.load(out).dataobj)
    gt = np.asarray(nib.load(ph["labels"]).dataobj)
    # the liver, added first, keeps every voxel of its own mask in the label map
    p, g = pred == 1, gt == 1
    assert float(found["liver"]) == round(2 * (p & g).sum() / (p.sum() + g.sum()), 3)
    assert 0.0 <= float(found["spleen"]) <= 1.0


def test_compare_refuses_labels_off_the_grid_before_any_work(cli, tmp_path, model_args):
    import nibabel as nib

    from sam2_med.phantom import write_phantom

    ph = write_phantom(tmp_path / "ph")
    lab = nib.load(ph["labels"])
    aff = lab.affine.copy()
    aff[0, 3] += 0.4
    bad = tmp_path / "shifted.nii.gz"
    nib.save(nib.Nifti1Image(np.asarray(lab.dataobj), aff), bad)
    out = tmp_path / "mask.nii.gz"
    code, _o, err = cli(
        "segment",
        ph["image"],
        "--prompts",
        ph["prompts"],
        "--compare",
        bad,
        "--out",
        out,
        *model_args,
    )
    assert code == 2 and str(bad) in err and "not on the image grid" in err
    assert not out.exists()
