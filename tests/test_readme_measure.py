"""The README's measurement section: the Python example runs as printed on the generated
phantom, and the bad-input lines are exactly what the command line prints."""

from __future__ import annotations

import re
import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest

from sam2_med.cli import main
from tests.conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")
TITLE = "Measurements, RT Structure Set and report"


def _section() -> str:
    start = README.index(f"\n## {TITLE}\n")
    return README[start : README.find("\n## ", start + 1)]


@pytest.fixture(scope="module")
def phantom_dir(tmp_path_factory):
    from sam2_med.phantom import write_phantom

    root = tmp_path_factory.mktemp("readme")
    write_phantom(root / "sample_data" / "generated")
    return root


def test_python_example_runs_as_printed(phantom_dir, monkeypatch, capsys):
    (code,) = re.findall(r"```python\n(.*?)```", _section(), flags=re.S)
    monkeypatch.chdir(phantom_dir)
    exec(compile(code, "README.md", "exec"), {})
    out = capsys.readouterr().out
    assert re.search(r"^liver: \d+\.\d mL, RECIST \d+\.\d x \d+\.\d mm", out, flags=re.M)
    ds = pydicom.dcmread(phantom_dir / "phantom_rs.dcm")
    assert [r.ROIName for r in ds.StructureSetROISequence][:2] == ["liver", "spleen"]
    assert (phantom_dir / "phantom_report" / "report.html").is_file()
    assert (ROOT / "docs" / "images" / "report.png").is_file()


def test_bad_input_lines_are_what_the_cli_prints(phantom_dir, monkeypatch, capsys):
    (text,) = re.findall(r"```text\n(.*?)```", _section(), flags=re.S)
    expected = text.strip().splitlines()
    gen = phantom_dir / "sample_data" / "generated"
    monkeypatch.chdir(phantom_dir)
    shutil.copy(gen / "phantom_ct.nii.gz", "ct.nii.gz")
    shutil.copy(gen / "phantom_ct.json", "ct.json")
    shutil.copy(gen / "phantom_labels.nii.gz", "organs.nii.gz")
    img = nib.load("organs.nii.gz")
    coarse = np.asarray(img.dataobj)[::2, ::2]
    nib.Nifti1Image(coarse, img.affine @ np.diag([2.0, 2.0, 1.0, 1.0])).to_filename("coarse.nii.gz")
    got = []
    for args in (
        ["measure", "coarse.nii.gz", "--image", "ct.nii.gz"],
        ["measure", "organs.nii.gz", "--image", "ct.nii.gz", "--label", "9"],
        ["measure", "organs.nii.gz", "--image", "ct.nii.gz", "--rtstruct", "rs.dcm"],
    ):
        assert main(args) == 2
        got.append(capsys.readouterr().err.strip())
    assert got == expected
