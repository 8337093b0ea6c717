"""The model registry: name -> architecture, weight sources, licence and checksum, read from YAML.

Every registered model is one YAML file: those shipped with sam2-med in
``sam2_med/configs/models/``, and any a user drops into ``<user config folder>/models/``
(``$SAM2_MED_CONFIG_DIR/models``, else e.g. ``~/.config/sam2-med/models``; see
:func:`sam2_med.config.user_config_dir`). Adding a model needs no code. The files are read once,
when this module is imported; :func:`reload_models` reads them again.

Schema of a model file (``<name>.yaml``; a key not listed here is an error)::

    name: sam2.1_hiera_tiny      # optional; must equal the file name without .yaml
    family: sam2.1               # free text: "sam2", "sam2.1", "medsam2", ...
    size: tiny                   # free text: "tiny", "small", "base_plus", "large", ...
    description: "one line for listings"
    image_size: 1024             # model input side in pixels, a positive multiple of 32
    arch:                        # optional: sam2_med.models.arch keys (not image_size);
      embed_dim: 96              #   a key not given takes the SAM 2.1 Hiera-tiny value
      stages: [1, 2, 7, 2]
    weights:                     # the checkpoint, in Meta's format ({"model": state_dict})
      filename: sam2.1_hiera_tiny.pt        # name as published and in the cache
      sha256: 7402e0d8...                   # published digest, or null when none is published
      sources:                              # download locations, in order of preference
        - hub: facebook/sam2.1-hiera-tiny   #   Hugging Face repository (hub_file: defaults
        - url: https://dl.fbaipublicfiles.com/...   # to filename) or an https URL
      # instead of sources, a file on disk (never downloaded, never copied to the cache):
      # file: my_finetune.pt          relative to this YAML file's folder, or absolute
      # package_file: weights/x.pt    relative to the installed sam2_med package (weights
      #                               shipped in the wheel; sha256 required)
    licence: Apache-2.0          # short licence name, shown wherever the model is chosen
    licence_text: "..."          # licence summary and where its full text is
    notes: ["..."]               # optional remarks for listings
    order: 10                    # optional sort key of listings (default 1000)
    protocol: sam2               # optional: "sam2" (default) or "medsam2"
    slice_layout: radiological   # optional: "radiological" (default) or "sitk"

Shipped checksums are published ones: Meta's SAM 2 / SAM 2.1 digests as pinned by micro-sam
(``micro_sam/v2/util.py``, ``HASHES``), which checks them on every download of
``dl.fbaipublicfiles.com``; MedSAM2 publishes none, so its file is used unverified and the loader
says so.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..config import Section, package_config_dir, package_dir, read_yaml, user_model_dir
from ..errors import ConfigError
from .arch import DEFAULT_ARCH, arch_to_config, complete_arch
from .errors import UnknownModelError

__all__ = [
    "PROTOCOLS",
    "SLICE_LAYOUTS",
    "ModelSpec",
    "WeightSource",
    "get_spec",
    "list_models",
    "read_model_config",
    "reload_models",
]

#: How prompts and memory are driven for a model (``protocol:`` in its YAML); the first is the
#: default.
PROTOCOLS: tuple[str, ...] = ("sam2", "medsam2")
#: How slices are laid out as frames for a model (``slice_layout:``); the first is the default.
SLICE_LAYOUTS: tuple[str, ...] = ("radiological", "sitk")

_DEFAULT_ORDER = 1000
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]*")
_HUB_REPO = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*")
_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


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
    """A registered SAM 2 model (one YAML file; see the module docstring for the schema).

    Attributes
    ----------
    name
        Registry name, e.g. ``"sam2.1_hiera_tiny"``.
    family
        ``"sam2"``, ``"sam2.1"`` or ``"medsam2"`` for the shipped models.
    size
        ``"tiny"``, ``"small"``, ``"base_plus"`` or ``"large"`` for the shipped models.
    image_size
        Model input side in pixels.
    arch
        Full architecture dict (see :func:`sam2_med.models.arch.arch_to_config`).
    filename
        File name of the checkpoint (as published, and in the cache).
    sources
        Where to download it from, in order of preference (empty for a local file).
    licence
        Short licence name.
    licence_text
        Licence summary and where its full text is; shown with the model.
    sha256
        Published SHA-256 of the file, or None when none is published.
    description
        One line for listings.
    notes
        Remarks for listings.
    protocol
        One of :data:`PROTOCOLS` (default ``"sam2"``).
    slice_layout
        One of :data:`SLICE_LAYOUTS` (default ``"radiological"``).
    local_file
        Absolute path of weights that live on disk (shipped inside the package, or a user's
        own file) instead of being downloaded into the cache; None for downloaded models.
    config_file
        The YAML file the entry was read from (None for an entry built in code).
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
    protocol: str = PROTOCOLS[0]
    slice_layout: str = SLICE_LAYOUTS[0]
    local_file: Path | None = None
    config_file: Path | None = None

    def arch_dict(self) -> dict[str, Any]:
        """A mutable copy of :attr:`arch`."""
        return complete_arch(dict(self.arch))

    def where_to_get(self) -> str:
        """Where a person can download the file by hand (or where the local file is)."""
        if self.local_file is not None:
            return str(self.local_file)
        return " or ".join(s.describe() for s in self.sources)


# --------------------------------------------------------------------------- reading one file
def _arch(sec: Section | None, image_size: int) -> dict[str, Any]:
    arch: dict[str, Any] = {}
    for key, value in sec.items() if sec is not None else ():
        assert sec is not None
        if key == "image_size":
            raise sec.error("give the input size once, as the top-level image_size", key)
        if key not in DEFAULT_ARCH:
            known = ", ".join(k for k in DEFAULT_ARCH if k != "image_size")
            raise sec.error(f"unknown architecture key; known: {known}", key)
        default = DEFAULT_ARCH[key]
        if isinstance(default, bool):
            ok, what = isinstance(value, bool), "true or false"
        elif isinstance(default, int):
            ok = isinstance(value, int) and not isinstance(value, bool) and value > 0
            what = "a positive integer"
        else:
            ok = isinstance(value, list) and all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in value
            )
            what = "a list of integers"
        if not ok:
            raise sec.error(f"must be {what} (like {default!r}), got {value!r}", key)
        arch[key] = value
    arch["image_size"] = image_size
    return complete_arch(arch)


def _weights(sec: Section, yaml_dir: Path) -> dict[str, Any]:
    sha = sec.value("sha256", str, required=False)
    if sha is not None and not _SHA256.fullmatch(sha):
        raise sec.error(f"must be 64 hexadecimal digits (or null), got {sha!r}", "sha256")
    file = sec.value("file", str, required=False)
    pkg = sec.value("package_file", str, required=False)
    sources = []
    for src in sec.sections("sources"):
        hub = src.value("hub", str, required=False)
        url = src.value("url", str, required=False)
        hub_file = src.value("hub_file", str, required=False)
        src.done()
        if (hub is None) == (url is None):
            raise src.error("give exactly one of 'hub' (a Hugging Face repository) or 'url'")
        if hub is not None and not _HUB_REPO.fullmatch(hub):
            raise src.error(f"must be a Hugging Face repository id owner/name, got {hub!r}", "hub")
        if url is not None and not url.startswith("https://"):
            raise src.error(f"must be an https:// URL, got {url!r}", "url")
        if hub_file is not None and hub is None:
            raise src.error("hub_file goes with hub", "hub_file")
        sources.append((hub, hub_file, url))
    if sum(x is not None for x in (file, pkg)) + bool(sources) != 1:
        raise sec.error(
            "give exactly one of 'sources' (download locations), 'file' (a weights file on "
            "disk) or 'package_file' (weights shipped inside the sam2_med package)"
        )
    local: Path | None = None
    if file is not None:
        local = Path(file).expanduser()
        local = local if local.is_absolute() else (yaml_dir / local).resolve()
    elif pkg is not None:
        root = package_dir()
        local = (root / pkg).resolve()
        if Path(pkg).is_absolute() or not local.is_relative_to(root):
            raise sec.error(
                f"must be a path inside the sam2_med package, got {pkg!r}", "package_file"
            )
        if sha is None:
            raise sec.error("weights shipped inside the package need their sha256", "sha256")
    filename = sec.value("filename", str, required=local is None)
    filename = filename if filename is not None else local.name  # type: ignore[union-attr]
    if "/" in filename or "\\" in filename or filename in {".", ".."}:
        raise sec.error(f"must be a file name without folders, got {filename!r}", "filename")
    sec.done()
    return {
        "filename": filename,
        "sha256": sha.lower() if sha else None,
        "sources": tuple(
            WeightSource(hub_repo=h, hub_filename=(hf or filename) if h else None, url=u)
            for h, hf, u in sources
        ),
        "local_file": local,
    }


def _read(file: Path, build: bool = True) -> tuple[int, ModelSpec]:
    sec = Section(read_yaml(file), file)
    stem = file.name.rsplit(".", 1)[0]
    name = sec.value("name", str, required=False, default=stem)
    if not _NAME.fullmatch(name):
        raise sec.error(
            f"must start with a letter or digit and hold only letters, digits, '.', '_', '+' "
            f"and '-', got {name!r}",
            "name",
        )
    if name != stem:
        raise sec.error(f"must equal the file name without .yaml ({stem!r}), got {name!r}", "name")
    family = sec.value("family", str)
    size = sec.value("size", str)
    description = sec.value("description", str)
    image_size = sec.value("image_size", int)
    if image_size <= 0 or image_size % 32:
        raise sec.error(f"must be a positive multiple of 32, got {image_size}", "image_size")
    arch = _arch(sec.section("arch", required=False), image_size)
    try:
        if build:  # ~20 ms a model: skipped for the shipped files (a test builds every one)
            arch_to_config(arch)
    except ValueError as exc:
        raise sec.error(f"not an architecture the model can be built with: {exc}", "arch") from None
    weights = _weights(sec.section("weights"), file.parent)  # type: ignore[arg-type]
    spec = ModelSpec(
        name=name,
        family=family,
        size=size,
        image_size=image_size,
        arch=MappingProxyType(arch),
        licence=sec.value("licence", str),
        licence_text=" ".join(sec.value("licence_text", str).split()),
        description=description,
        notes=sec.strings("notes"),
        protocol=sec.choice("protocol", PROTOCOLS, PROTOCOLS[0]),
        slice_layout=sec.choice("slice_layout", SLICE_LAYOUTS, SLICE_LAYOUTS[0]),
        config_file=file,
        **weights,
    )
    order = sec.value("order", int, required=False, default=_DEFAULT_ORDER)
    sec.done()
    return order, spec


def read_model_config(file: str | Path) -> ModelSpec:
    """Read and check one model YAML file (without registering it).

    Parameters
    ----------
    file
        A model YAML file (schema in this module's docstring).

    Returns
    -------
    ModelSpec

    Raises
    ------
    ConfigError
        The file is not YAML or breaks the schema; the message names the file and the key.
    """
    return _read(Path(file))[1]


# --------------------------------------------------------------------------- the registry
def _yaml_files(folder: Path) -> list[Path]:
    try:
        return sorted(
            p
            for p in folder.iterdir()
            if p.suffix in {".yaml", ".yml"} and not p.name.startswith(".") and p.is_file()
        )
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise ConfigError(f"cannot list the model configuration folder: {exc}", folder) from None


def _read_registry() -> dict[str, ModelSpec]:
    found: dict[str, tuple[int, int, ModelSpec]] = {}
    for rank, folder in enumerate((package_config_dir() / "models", user_model_dir())):
        for file in _yaml_files(folder):
            order, spec = _read(file, build=rank > 0)
            if spec.name in found:
                raise ConfigError(
                    f"model {spec.name!r} is already registered by {found[spec.name][2].config_file}",
                    file,
                    "name",
                )
            found[spec.name] = (order, rank, spec)
    ranked = sorted(found.values(), key=lambda t: (t[0], t[1], t[2].name))
    return {spec.name: spec for _, _, spec in ranked}


_REGISTRY: dict[str, ModelSpec] = _read_registry()


def reload_models() -> list[str]:
    """Read the model YAML files again (the shipped ones and the user's folder).

    The registry is replaced only when every file is valid.

    Returns
    -------
    list of str
        The registered names, as :func:`list_models` now returns them.

    Raises
    ------
    ConfigError
        A file that breaks the schema (file and key named), or a name registered twice.
    """
    fresh = _read_registry()
    _REGISTRY.clear()
    _REGISTRY.update(fresh)
    return list(_REGISTRY)


def list_models() -> list[str]:
    """Names of the registered models, in registry order.

    Returns
    -------
    list of str
        Sorted by each file's ``order`` (shipped models first at equal order), then name.
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
        ``name`` is not registered; the message lists the registered names and where model
        files are read from.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; registered models: {', '.join(_REGISTRY)} "
            f"(add one with a YAML file in {user_model_dir()})"
        ) from None
