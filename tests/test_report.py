"""write_report: files, refusal to overwrite, and pictures in the radiological convention."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from sam2_med.io import OutputExistsError
from sam2_med.measure import MeasurementError, measure
from sam2_med.phantom import PHANTOM_LABELS, make_phantom, phantom_affine
from sam2_med.report import _View, render_structure_png, write_report


@pytest.mark.parametrize("orientation", ["LPS", "RAS", "oblique"])
def test_axial_picture_has_patient_right_on_the_left_and_anterior_up(orientation):
    shape = (20, 18, 10)
    affine = phantom_affine(shape, (1.0, 1.2, 3.0), orientation)
    view = _View(affine, 2, np.array([0, 0]), np.array([shape[0] - 1, shape[1] - 1]))
    centre = (np.array(shape) - 1) / 2
    inv = np.linalg.inv(affine)
    # a step of 5 mm to the patient's right and one 5 mm anterior, as voxel coordinates
    right = (inv[:3, :3] @ [5.0, 0, 0])[:2] + centre[:2]
    anterior = (inv[:3, :3] @ [0, 5.0, 0])[:2] + centre[:2]
    (cx, cy), (rx, _), (_, ay) = view.points(np.array([centre[:2], right, anterior]))
    assert rx < cx and ay < cy
    assert view.letters == ("R", "L", "A", "P")


def test_coronal_and_sagittal_layouts():
    shape = (16, 16, 16)
    affine = phantom_affine(shape, (1.0, 1.0, 1.0), "LPS")
    inv = np.linalg.inv(affine)
    centre = (np.array(shape) - 1) / 2
    for axis, first, down in ((1, [5.0, 0, 0], [0, 0, -5.0]), (0, [0, -5.0, 0], [0, 0, -5.0])):
        uv = [a for a in range(3) if a != axis]
        view = _View(affine, axis, np.zeros(2, int), np.array(shape)[uv] - 1)
        to_uv = [(inv[:3, :3] @ d + centre)[uv] for d in ([0, 0, 0], first, down)]
        (cx, cy), (fx, _), (_, dy) = view.points(np.array(to_uv))
        # coronal: patient's right on the left; sagittal: anterior on the left; inferior down
        assert (fx > cx) == (axis == 0) and dy > cy


def test_report_files_and_overwrite(tmp_path):
    volume, labels = make_phantom(shape=(40, 36, 16), spacing=(2.5, 2.4, 6.0))
    out = write_report(labels, tmp_path / "rep", title="Phantom <1>")
    names = sorted(p.name for p in (tmp_path / "rep").iterdir())
    assert names[:3] == ["001_liver.png", "002_spleen.png", "003_kidney_right.png"]
    assert {"report.html", "measurements.csv", "measurements.json"} <= set(names)
    html = out.read_text()
    assert "Phantom &lt;1&gt;" in html  # escaped
    for name in PHANTOM_LABELS.values():
        assert name in html
    with pytest.raises(OutputExistsError):
        write_report(labels, tmp_path / "rep")
    write_report(labels, tmp_path / "rep", overwrite=True)
    with pytest.raises(MeasurementError, match="no labelled voxels"):
        write_report(labels.__class__(np.zeros_like(labels.array), volume), tmp_path / "e")


def test_picture_draws_outline_and_both_axes():
    _, labels = make_phantom(shape=(56, 48, 20), spacing=(1.8, 1.8, 5.0), orientation="RAS")
    [liver] = measure(labels, label_values=[1])
    png = render_structure_png(labels, liver)
    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    red = (img[..., 0] > 200) & (img[..., 1] < 80) & (img[..., 2] < 80)
    cyan = (img[..., 0] < 80) & (img[..., 1] > 180) & (img[..., 2] > 200)
    yellow = (img[..., 0] > 200) & (img[..., 1] > 180) & (img[..., 2] < 80)
    assert red.sum() > 50 and cyan.sum() > 50 and yellow.sum() > 50
    assert max(img.shape[:2]) <= 384 + 22
