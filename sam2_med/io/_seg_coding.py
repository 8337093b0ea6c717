"""Segment labels and codes for DICOM SEG: what a segment is called and what it is.

* **Labels** (Segment Label, VR LO, PS3.5 6.2): at most 64 characters, no backslash (the
  multi-value delimiter), no control characters. :func:`segment_label` makes any name fit;
  names outside ASCII need the SEG's Specific Character Set to say ``ISO_IR 192`` (UTF-8).
* **Codes** (Segmented Property Category, CID 7150, and Type): chosen from the segment's name
  with SNOMED CT concepts as pydicom's code dictionary spells them, never invented codes. A
  lesion-like name (lesion, tumour, nodule, mass, cyst, metastasis...) is a *Morphologically
  Abnormal Structure* of that type; a named organ or structure (liver, kidney, aorta...) an
  *Anatomical Structure* of that type; fat is *Tissue*; anything else *Tissue* / *Tissue*.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["needs_unicode", "segment_coding", "segment_label"]

#: Segment Label is LO: 64 characters at most (PS3.5 Table 6.2-1).
LO_MAX_CHARS = 64

# Abnormal findings: a word of the name -> pydicom ``codes.SCT`` attribute (the type).
_ABNORMAL_WORDS = {
    "lesion": "Lesion",
    "tumour": "Neoplasm",
    "tumor": "Neoplasm",
    "neoplasm": "Neoplasm",
    "cancer": "Neoplasm",
    "carcinoma": "Carcinoma",
    "nodule": "Nodule",
    "mass": "Mass",
    "cyst": "Cyst",
    "metastasis": "Metastasis",
    "metastases": "Metastasis",
    "met": "Metastasis",
    "mets": "Metastasis",
    "abscess": "Abscess",
    "haemorrhage": "Hemorrhage",
    "hemorrhage": "Hemorrhage",
    "oedema": "Edema",
    "edema": "Edema",
    "necrosis": "Necrosis",
}

# Anatomy: phrases first (several words), then single words -> ``codes.SCT`` attribute.
_ANATOMY_PHRASES = {
    ("small", "intestine"): "SmallIntestine",
    ("small", "bowel"): "SmallIntestine",
    ("gall", "bladder"): "Gallbladder",
    ("urinary", "bladder"): "Bladder",
    ("adrenal", "gland"): "AdrenalGland",
    ("blood", "vessel"): "BloodVessel",
}
_ANATOMY_WORDS = {
    "liver": "Liver",
    "spleen": "Spleen",
    "kidney": "Kidney",
    "pancreas": "Pancreas",
    "lung": "Lung",
    "heart": "Heart",
    "brain": "Brain",
    "stomach": "Stomach",
    "gallbladder": "Gallbladder",
    "bladder": "Bladder",
    "prostate": "Prostate",
    "esophagus": "Esophagus",
    "oesophagus": "Esophagus",
    "colon": "Colon",
    "duodenum": "Duodenum",
    "adrenal": "AdrenalGland",
    "trachea": "Trachea",
    "thyroid": "Thyroid",
    "aorta": "Aorta",
    "artery": "Artery",
    "vein": "Vein",
    "vessel": "BloodVessel",
    "bone": "Bone",
    "vertebra": "Vertebra",
    "vertebrae": "Vertebra",
    "rib": "Rib",
    "femur": "Femur",
    "skull": "Skull",
    "muscle": "Muscle",
}
_TISSUE_WORDS = {"fat": "AdiposeTissue", "adipose": "AdiposeTissue"}


def _words(name: str) -> list[str]:
    return [w for w in re.split(r"[^a-z0-9]+", name.lower()) if w]


def _singular(word: str) -> list[str]:
    out = [word]
    if word.endswith("es"):
        out.append(word[:-2])
    if word.endswith("s"):
        out.append(word[:-1])
    return out


def segment_coding(name: str) -> tuple[Any, Any]:
    """(Segmented Property Category, Segmented Property Type) for a segment called ``name``.

    Parameters
    ----------
    name : str
        The structure's name, e.g. ``"liver"``, ``"Lung_nodule"``, ``"kidney_left"``.

    Returns
    -------
    (pydicom.sr.coding.Code, pydicom.sr.coding.Code)
        SNOMED CT codes from ``pydicom.sr.codedict.codes.SCT``. An abnormal finding wins over
        the organ it sits in (``"liver tumour"`` is a Neoplasm).

    Examples
    --------
    >>> [c.meaning for c in segment_coding("liver tumour")]
    ['Morphologically Abnormal Structure', 'Neoplasm']
    >>> [c.meaning for c in segment_coding("label_3")]
    ['Tissue', 'Tissue']
    """
    from pydicom.sr.codedict import codes

    words = _words(name)
    for w in words:
        for form in _singular(w):
            if form in _ABNORMAL_WORDS:
                sct = getattr(codes.SCT, _ABNORMAL_WORDS[form])
                return codes.SCT.MorphologicallyAbnormalStructure, sct
    for i in range(len(words) - 1):
        key = (words[i], _singular(words[i + 1])[-1])
        phrase = _ANATOMY_PHRASES.get((words[i], words[i + 1])) or _ANATOMY_PHRASES.get(key)
        if phrase:
            return codes.SCT.AnatomicalStructure, getattr(codes.SCT, phrase)
    for w in words:
        for form in _singular(w):
            if form in _ANATOMY_WORDS:
                return codes.SCT.AnatomicalStructure, getattr(codes.SCT, _ANATOMY_WORDS[form])
            if form in _TISSUE_WORDS:
                return codes.SCT.Tissue, getattr(codes.SCT, _TISSUE_WORDS[form])
    return codes.SCT.Tissue, codes.SCT.Tissue


def segment_label(name: str, value: int) -> str:
    """``name`` as a valid Segment Label (VR LO).

    Backslashes become ``/``, control characters (tab, newline, NUL...) spaces, runs of spaces
    one space; the result is stripped and cut to 64 characters. An empty result becomes
    ``"label <value>"``.

    >>> segment_label("liver\\\\tumour", 1), segment_label(" \\t", 5)
    ('liver/tumour', 'label 5')
    """
    text = str(name).replace("\\", "/")
    text = re.sub(r"[\x00-\x1f\x7f]", " ", text)
    text = " ".join(text.split())[:LO_MAX_CHARS].strip()
    return text or f"label {int(value)}"


def needs_unicode(texts: list[str]) -> bool:
    """True when some text is not plain ASCII (the default character repertoire)."""
    return any(not t.isascii() for t in texts)
