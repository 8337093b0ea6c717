"""DICOM SEG segment labels and codes that viewers and validators accept (issue 11, items 16
and 21).

Every SEG written here is checked with Debian's ``dciodvfy`` (dicom3tools): no line may start
with ``Error``. The test skips, saying so, where dicom3tools is not installed (CI installs it).
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.sr.codedict import codes

from sam2_med.io import load_volume, save_dicom_seg
from tests.conftest import dciodvfy_errors
from tests.io.test_dicom_seg import _write_series


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    folder = tmp_path_factory.mktemp("series")
    _write_series(folder)
    return load_volume(folder)


def _labels(reference, n: int) -> np.ndarray:
    lab = np.zeros(reference.shape, np.uint8)
    for v in range(1, n + 1):
        lab[v, 1:4, v % reference.shape[2]] = v
    return lab


NASTY = {
    1: "liver\\tumour",  # backslash: the multi-value delimiter of every string VR
    2: "spleen\twith tab",
    3: "kidney\nleft",
    4: "nul\x00inside",
    5: "",
    6: "   ",
    7: "x" * 80,  # LO holds 64 characters
    8: "肝脏肿瘤",  # Chinese: "liver tumour"
}


def test_segment_labels_are_valid_lo_and_pass_dciodvfy(reference, tmp_path):
    out = save_dicom_seg(
        _labels(reference, len(NASTY)), tmp_path / "seg.dcm", reference=reference, label_names=NASTY
    )
    assert dciodvfy_errors(out) == []
    ds = pydicom.dcmread(out)
    labels = [str(item.SegmentLabel) for item in ds.SegmentSequence]
    for label in labels:
        assert label.strip() and len(label) <= 64
        assert "\\" not in label and not any(ord(c) < 32 for c in label)
    assert labels[0] == "liver/tumour"
    assert labels[1] == "spleen with tab"
    assert labels[4] == "label 5" and labels[5] == "label 6"
    assert labels[7] == "肝脏肿瘤"  # stored, not "??"
    assert "ISO_IR 192" in ds.SpecificCharacterSet
    seg = hd.seg.segread(out)
    assert seg.get_segment_description(8).segment_label == "肝脏肿瘤"


def test_ascii_labels_keep_the_source_character_set(reference, tmp_path):
    out = save_dicom_seg(
        _labels(reference, 1), tmp_path / "seg.dcm", reference=reference, label_names={1: "liver"}
    )
    assert dciodvfy_errors(out) == []
    assert "ISO_IR 192" not in (pydicom.dcmread(out).get("SpecificCharacterSet") or "")


def test_segments_are_coded_by_what_they_are_named(reference, tmp_path):
    names = {1: "liver tumour", 2: "Lung_nodule", 3: "liver", 4: "kidney_left", 5: "label_5",
             6: "metastases", 7: "aorta"}  # fmt: skip
    out = save_dicom_seg(
        _labels(reference, len(names)), tmp_path / "seg.dcm", reference=reference, label_names=names
    )
    assert dciodvfy_errors(out) == []
    seg = hd.seg.segread(out)

    def coding(number):
        d = seg.get_segment_description(number)
        return d.segmented_property_category, d.segmented_property_type

    abnormal = codes.SCT.MorphologicallyAbnormalStructure
    anatomy = codes.SCT.AnatomicalStructure
    assert coding(1) == (abnormal, codes.SCT.Neoplasm)
    assert coding(2) == (abnormal, codes.SCT.Nodule)
    assert coding(3) == (anatomy, codes.SCT.Liver)
    assert coding(4) == (anatomy, codes.SCT.Kidney)
    assert coding(5) == (codes.SCT.Tissue, codes.SCT.Tissue)  # nothing known: the default
    assert coding(6) == (abnormal, codes.SCT.Metastasis)
    assert coding(7) == (anatomy, codes.SCT.Aorta)
