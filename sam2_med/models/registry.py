"""The model registry: name -> architecture, weight sources, licence and checksum.

Every entry is a published checkpoint in Meta's original format (``{"model": state_dict}``).
Checksums are listed only where they are published: Meta's SAM 2 / SAM 2.1 digests as pinned
by micro-sam (``micro_sam/v2/util.py``, ``HASHES``), which checks them on every download of
``dl.fbaipublicfiles.com``; MedSAM2 publishes none, so its file is used unverified and the loader
says so.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from types import MappingProxyType
from typing import Any

from .arch import complete_arch
from .errors import UnknownModelError

__all__ = ["ModelSpec", "WeightSource", "get_spec", "list_models"]

_META_LICENCE = (
    "Apache License 2.0 (SAM 2 code and checkpoints, Meta Platforms). "
    "Text: https://github.com/facebookresearch/sam2/blob/main/LICENSE"
)
_MEDSAM2_LICENCE = (
    "MedSAM2 weights: research use. The Hugging Face model card (huggingface.co/wanglab/MedSAM2) "
    "lists CC-BY-SA-4.0; check the terms at https://github.com/bowang-lab/MedSAM2 and on the model "
    "card before any use, and do not use it for clinical decisions. It is a fine-tune of SAM 2.1 "
    "(Apache-2.0, Meta Platforms)."
)


@dataclass(frozen=True)
class WeightSource:
    """One place a checkpoint file can be fetched from.

    Attributes
    ----------
    hub_repo, hub_filename
        Hugging Face Hub repository id and file name, or None.
    url
        A direct HTTPS download URL, or None.
    """

    hub_repo: str | None = None
    hub_filename: str | None = None
    url: str | None = None

    def describe(self) -> str:
        """Human-readable location (hub first, then URL)."""
        parts = []
        if self.hub_repo:
            parts.append(f"https://huggingface.co/{self.hub_repo}/blob/main/{self.hub_filename}")
        if self.url:
            parts.append(self.url)
        return " or ".join(parts)


@dataclass(frozen=True)
class ModelSpec:
    """A registered SAM 2 model.

    Attributes
    ----------
    name
        Registry name, e.g. ``"sam2.1_hiera_tiny"``.
    family
        ``"sam2"``, ``"sam2.1"`` or ``"medsam2"``.
    size
        ``"tiny"``, ``"small"``, ``"base_plus"`` or ``"large"``.
    image_size
        Model input side in pixels.
    arch
        Full architecture dict (see :func:`sam2_med.models.arch.arch_to_config`).
    filename
        File name of the checkpoint (as published, and in the cache).
    sources
        Where to download it from, in order of preference.
    licence
        Short licence name.
    licence_text
        Licence summary and where its full text is; shown with the model.
    sha256
        Published SHA-256 of the file, or None when none is published.
    description
        One line for listings.
    notes
        Caveats shown with the model.
    package_file
        Path of weights shipped inside the ``sam2_med`` package (relative to it), or None for
        weights that are downloaded into the cache.
    """

    name: str
    family: str
    size: str
    image_size: int
    arch: MappingProxyType
    filename: str
    sources: tuple[WeightSource, ...]
    licence: str
    licence_text: str
    sha256: str | None
    description: str
    notes: tuple[str, ...] = field(default=())
    package_file: str | None = None

    def arch_dict(self) -> dict[str, Any]:
        """A mutable copy of :attr:`arch`."""
        return complete_arch(dict(self.arch))

    def where_to_get(self) -> str:
        """Where a person can download the file by hand."""
        if self.package_file:
            return f"the sam2-med package itself (sam2_med/{self.package_file})"
        return " or ".join(s.describe() for s in self.sources)


_TRUNKS: dict[str, dict[str, Any]] = {
    "tiny": {
        "embed_dim": 96,
        "num_heads": 1,
        "stages": [1, 2, 7, 2],
        "global_att_blocks": [5, 7, 9],
    },
    "small": {
        "embed_dim": 96,
        "num_heads": 1,
        "stages": [1, 2, 11, 2],
        "global_att_blocks": [7, 10, 13],
    },
    "base_plus": {
        "embed_dim": 112,
        "num_heads": 2,
        "stages": [2, 3, 16, 3],
        "global_att_blocks": [12, 16, 20],
        "window_pos_embed_bkg_spatial_size": [14, 14],
    },
    "large": {
        "embed_dim": 144,
        "num_heads": 2,
        "stages": [2, 6, 36, 4],
        "global_att_blocks": [23, 33, 43],
        "window_spec": [8, 4, 16, 8],
    },
}
_SAM20_SWITCHES = {"no_obj_embed_spatial": False, "proj_tpos_enc_in_obj_ptrs": False}

# Published digests (see the module docstring)
_SHA256 = {
    "sam2_hiera_tiny": "65b50056e05bcb13694174f51bb6da89c894b57b75ccdf0ba6352c597c5d1125",
    "sam2_hiera_small": "95949964d4e548409021d47b22712d5f1abf2564cc0c3c765ba599a24ac7dce3",
    "sam2_hiera_base_plus": "d0bb7f236400a49669ffdd1be617959a8b1d1065081789d7bbff88eded3a8071",
    "sam2_hiera_large": "7442e4e9b732a508f80e141e7c2913437a3610ee0c77381a66658c3a445df87b",
    "sam2.1_hiera_tiny": "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69",
    "sam2.1_hiera_small": "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38",
    "sam2.1_hiera_base_plus": "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5",
    "sam2.1_hiera_large": "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318",
}
_HUB_SIZE = {"tiny": "tiny", "small": "small", "base_plus": "base-plus", "large": "large"}


def _meta_spec(family: str, size: str) -> ModelSpec:
    name = f"{family}_hiera_{size}"
    arch = {**_TRUNKS[size], **(_SAM20_SWITCHES if family == "sam2" else {})}
    dated = "092824" if family == "sam2.1" else "072824"
    hub = f"facebook/{family}-hiera-{_HUB_SIZE[size]}"
    return ModelSpec(
        name=name,
        family=family,
        size=size,
        image_size=1024,
        arch=MappingProxyType(complete_arch(arch)),
        filename=f"{name}.pt",
        sources=(
            WeightSource(hub_repo=hub, hub_filename=f"{name}.pt"),
            WeightSource(
                url=f"https://dl.fbaipublicfiles.com/segment_anything_2/{dated}/{name}.pt"
            ),
        ),
        licence="Apache-2.0",
        licence_text=_META_LICENCE,
        sha256=_SHA256[name],
        description=f"Meta {'SAM 2.1' if family == 'sam2.1' else 'SAM 2'} Hiera-{size}, 1024 px, natural images and video",
    )


def _medsam2_spec() -> ModelSpec:
    # MedSAM2 fine-tunes SAM 2.1 tiny at 512 px (configs/sam2.1_hiera_t512.yaml in its repository).
    # Forks of that YAML disagree on multimask_output_for_tracking and on the memory-attention
    # depth; the depth is read from the checkpoint and checked against this entry.
    return ModelSpec(
        name="medsam2",
        family="medsam2",
        size="tiny",
        image_size=512,
        arch=MappingProxyType(complete_arch({**_TRUNKS["tiny"], "image_size": 512})),
        filename="MedSAM2_latest.pt",
        sources=(WeightSource(hub_repo="wanglab/MedSAM2", hub_filename="MedSAM2_latest.pt"),),
        licence="research use (model card: CC-BY-SA-4.0)",
        licence_text=_MEDSAM2_LICENCE,
        sha256=None,
        description="MedSAM2 (Ma et al. 2025): SAM 2.1 tiny fine-tuned on CT/MRI/PET, ultrasound and endoscopy, 512 px",
        notes=(
            "No published SHA-256: the file is not verified.",
            "multimask_output_for_tracking differs between forks of MedSAM2's YAML; "
            "this entry uses Meta's SAM 2.1 value (true).",
        ),
    )


#: Models whose weights ship inside the package: ``sam2_med/weights/<name>.json`` holds all
#: their registry data (architecture, file, SHA-256, licence, statement), in one place.
_PACKAGED = ("sam2med_demo_phantom",)


def _packaged_spec(name: str) -> ModelSpec | None:
    """The registry entry of weights shipped in ``sam2_med/weights`` (None when absent)."""
    try:
        text = resources.files("sam2_med").joinpath("weights", f"{name}.json").read_text("utf-8")
    except (FileNotFoundError, OSError):
        return None
    d = json.loads(text)
    arch = complete_arch(d["arch"])
    return ModelSpec(
        name=d["name"],
        family=d["family"],
        size=d["size"],
        image_size=int(arch["image_size"]),
        arch=MappingProxyType(arch),
        filename=d["file"],
        sources=(),
        licence=d["licence"],
        licence_text=f"{d['licence_text']} {d['statement']}",
        sha256=d["sha256"],
        description=d["description"],
        notes=(d["statement"],),
        package_file=f"weights/{d['file']}",
    )


_REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in [
        *(_meta_spec("sam2.1", s) for s in _TRUNKS),
        *(_meta_spec("sam2", s) for s in _TRUNKS),
        _medsam2_spec(),
        *(_packaged_spec(n) for n in _PACKAGED),
    ]
    if spec is not None
}


def list_models() -> list[str]:
    """Names of the registered models, in registry order.

    Returns
    -------
    list of str
    """
    return list(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The registry entry of a model.

    Parameters
    ----------
    name
        A name from :func:`list_models`.

    Returns
    -------
    ModelSpec

    Raises
    ------
    UnknownModelError
        ``name`` is not registered; the message lists the registered names.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; registered models: {', '.join(_REGISTRY)}"
        ) from None
