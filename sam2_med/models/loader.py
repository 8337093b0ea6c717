"""Find, verify and load SAM 2 weights: the hub cache, hand-imported files, local checkpoints.

Checkpoints are untrusted files. Meta-format ``.pt`` files are read with
``torch.load(weights_only=True)``, which refuses any pickle that would construct objects other
than tensors and plain containers (so a file cannot run code when loaded); transformers folders
are read from safetensors only.

The cache is a plain folder, ``$SAM2_MED_CACHE`` or ``~/.cache/sam2-med`` (``$XDG_CACHE_HOME``
honoured; ``%LOCALAPPDATA%\\sam2-med\\Cache`` on Windows), laid out as
``<cache>/<model name>/<published file name>`` plus a ``.sha256.json`` record beside each file.
A machine with no network installs weights with :func:`import_weights` (the command line's
``sam2-med weights import FILE --model NAME``), after which everything works offline.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import torch
from transformers import Sam2VideoModel

from .._files import check_regular_file, umask_file_mode
from ..errors import Sam2MedError, Sam2MedWarning
from .arch import arch_to_config, complete_arch
from .convert import hf_to_meta_state_dict, infer_arch, load_meta_state_dict
from .errors import (
    CheckpointError,
    ChecksumError,
    DeviceUnavailableError,
    WeightsNotFoundError,
)
from .loaded import LoadedModel
from .precision import Precision, resolve_precision
from .registry import _REGISTRY, ModelSpec, get_spec, list_models

__all__ = [
    "CacheEntry",
    "cached_weights",
    "default_cache_dir",
    "import_weights",
    "load_model",
    "save_meta_checkpoint",
    "verify_cache",
]

#: seconds to wait for a server to answer before declaring the network unavailable
CONNECT_TIMEOUT_S = 4.0
#: seconds a running download may stall before it is abandoned
READ_TIMEOUT_S = 30.0
_CHUNK = 1 << 20
_CUSTOM_LICENCE = "unknown: a custom checkpoint carries the licence of whoever published it"


# --------------------------------------------------------------------------- cache location
def default_cache_dir() -> Path:
    """The weights cache folder: ``$SAM2_MED_CACHE``, else the platform's user cache folder.

    Returns
    -------
    pathlib.Path
        Not created by this call.
    """
    env = os.environ.get("SAM2_MED_CACHE")
    if env:
        return Path(env).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
        return base / "sam2-med" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "sam2-med"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "sam2-med"


def _cache(cache_dir: str | os.PathLike[str] | None) -> Path:
    return Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()


def _cache_path(spec: ModelSpec, cache: Path) -> Path:
    return cache / spec.name / spec.filename


def _record_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256.json")


def _offline(offline: bool | None) -> bool:
    if offline is not None:
        return bool(offline)
    flags = (os.environ.get("SAM2_MED_OFFLINE", ""), os.environ.get("HF_HUB_OFFLINE", ""))
    return any(f.strip().lower() in {"1", "true", "yes", "on"} for f in flags)


# --------------------------------------------------------------------------- hashing / records
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def _write_record(path: Path, sha: str, spec: ModelSpec, origin: str) -> None:
    st = path.stat()
    record = {
        "sha256": sha,
        "size": st.st_size,
        "mtime_ns": st.st_mtime_ns,
        "published_sha256": spec.sha256,
        "origin": origin,
        "recorded": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    tmp = _record_path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=1) + "\n")
    os.replace(tmp, _record_path(path))


def _read_record(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(_record_path(path).read_text())
    except (OSError, ValueError):
        return None


def _check_sha(path: Path, spec: ModelSpec, sha: str) -> None:
    if spec.sha256 is not None and sha != spec.sha256:
        what = f"not the published {spec.filename} of {spec.name!r}"
        raise ChecksumError(
            f"{what}; if it is a fine-tune, load it with "
            f"load_model(checkpoint=..., arch={spec.name!r})",
            path,
            expected=spec.sha256,
            actual=sha,
            cli=f"{what}; if it is a fine-tune, use --checkpoint FILE --arch {spec.name} "
            "(without --model)",
        )


def published_model(sha256: str) -> ModelSpec | None:
    """The registered model whose published SHA-256 is ``sha256``, or None.

    Parameters
    ----------
    sha256
        Hexadecimal digest of a checkpoint file.

    Returns
    -------
    ModelSpec or None
    """
    for spec in _REGISTRY.values():
        if spec.sha256 is not None and spec.sha256 == sha256:
            return spec
    return None


def _trusted_cached_file(path: Path, spec: ModelSpec) -> None:
    """Verify a cached file, re-hashing only when its size or mtime changed since recorded."""
    st = path.stat()
    rec = _read_record(path)
    if rec and rec.get("size") == st.st_size and rec.get("mtime_ns") == st.st_mtime_ns:
        _check_sha(path, spec, rec["sha256"])
        return
    sha = _sha256(path)
    _check_sha(path, spec, sha)
    _write_record(path, sha, spec, origin=(rec or {}).get("origin", "found in cache"))


# --------------------------------------------------------------------------- reading checkpoints
def _read_meta_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """``torch.load(weights_only=True)`` of a Meta-format file -> its state dict."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=False)
    except Exception as exc:  # UnpicklingError, RuntimeError (bad zip), EOFError...
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"refused to load: not a weights-only PyTorch checkpoint ({type(exc).__name__}: "
            f"{reason[:300]}); sam2-med never unpickles code or arbitrary objects",
            path,
        ) from None
    sd = obj.get("model", obj) if isinstance(obj, Mapping) else None
    if (
        not isinstance(sd, Mapping)
        or not sd
        or not all(isinstance(v, torch.Tensor) for v in sd.values())
    ):
        raise CheckpointError(
            "not a SAM 2 checkpoint in Meta's format (expected a dict with a 'model' state dict)",
            path,
        )
    return dict(sd)


@dataclass(frozen=True)
class _ArchChoice:
    """The architecture a checkpoint is loaded with, and how it was chosen."""

    arch: dict[str, Any]
    assumed: ModelSpec | None = None  # chosen among several fitting registered models
    candidates: tuple[ModelSpec, ...] = ()  # every registered model the weights fit


def _fitting_specs(inferred: Mapping[str, Any]) -> list[ModelSpec]:
    return [s for s in _REGISTRY.values() if all(s.arch[k] == v for k, v in inferred.items())]


def _resolve_arch(
    spec: ModelSpec | None,
    arch: Mapping[str, Any] | None,
    sd: Mapping[str, torch.Tensor],
    *,
    file_name: str | None = None,
) -> _ArchChoice:
    """The architecture to build for state dict ``sd``.

    ``spec`` (a registered model: named, recognised by checksum, or given as ``arch=NAME``)
    fixes it, ``arch`` overrides keys. Without either, the registered models whose architecture
    the weights fit are the candidates: the one whose published file name is ``file_name``
    (``MedSAM2_latest.pt`` -> medsam2), else the first in registry order, is *assumed*.
    """
    inferred = infer_arch(sd)
    assumed = None
    candidates: tuple[ModelSpec, ...] = ()
    if spec is not None:
        final = complete_arch({**spec.arch_dict(), **(arch or {})})
        origin = f"model {spec.name!r}" + (" with arch overrides" if arch else "")
    else:
        matches = _fitting_specs(inferred)
        if arch is None:
            if not matches:
                raise CheckpointError(
                    f"the checkpoint fits no registered architecture (it says {inferred}); "
                    "pass arch= with at least image_size, num_heads, global_att_blocks",
                    cli=f"the checkpoint fits no registered architecture (it says {inferred}); "
                    "give --arch FILE.json with at least image_size, num_heads, "
                    "global_att_blocks",
                )
            named = [s for s in matches if file_name is not None and s.filename == file_name]
            assumed = (named or matches)[0]
            candidates = tuple(matches)
        base = assumed or (matches[0] if matches else None)
        final = complete_arch({**(base.arch_dict() if base else {}), **inferred, **(arch or {})})
        origin = "the given arch" if arch else f"the architecture of {assumed.name!r}"  # type: ignore[union-attr]
    conflicts = [f"{k}={v!r} (not {final[k]!r})" for k, v in inferred.items() if final[k] != v]
    if conflicts:
        what = f"the checkpoint does not have the architecture of {origin}: it has " + ", ".join(
            conflicts
        )
        raise CheckpointError(
            f"{what}; pass arch= with the checkpoint's values if this is a variant",
            cli=f"{what}; give --arch FILE.json with the checkpoint's values if this is a variant",
        )
    return _ArchChoice(final, assumed, candidates)


def _assumed_warning(path: Path, sha: str, choice: _ArchChoice) -> Sam2MedWarning:
    """One line: which architecture an unrecognised checkpoint was loaded with, and how to
    choose another (Python and command-line wording)."""
    assumed = choice.assumed
    assert assumed is not None
    by_name = " (by its file name)" if assumed.filename == path.name else ""
    head = (
        f"{path.name} (sha256 {sha[:12]}...) is not a file with a published checksum; assumed the "
        f"architecture of {assumed.name}{by_name} ({assumed.image_size} px)"
    )
    other_sizes: dict[int, str] = {}  # one registered example per other input size
    for s in choice.candidates:
        if s.image_size != assumed.image_size:
            other_sizes.setdefault(s.image_size, s.name)
    example = next(iter(other_sizes.values()), "NAME")
    also = ", ".join(f"{n} ({px} px)" for px, n in other_sizes.items())
    head += f"; it also fits {also}" if also else ""
    return Sam2MedWarning(
        f"{head}; choose another with arch={example!r} (a registered name) or an arch dict",
        cli=f"{head}; choose another with --arch {example} or --arch FILE.json",
    )


# --------------------------------------------------------------------------- downloading
def _reachable(url: str, timeout: float) -> str | None:
    """None when a server answers ``url`` within ``timeout`` seconds, else the reason."""
    req = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "sam2-med"})
    try:
        with urllib.request.urlopen(req, timeout=timeout):
            return None
    except urllib.error.HTTPError:
        return None  # the server answered (even 4xx/5xx means the network works)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return str(getattr(exc, "reason", exc))


def _download_to(spec: ModelSpec, part_dir: Path) -> tuple[Path, str]:
    """Fetch the file into ``part_dir``; returns (path, origin). Raises OSError on failure."""
    reasons = []
    for src in spec.sources:
        if src.hub_repo:
            reason = _reachable(
                f"https://huggingface.co/api/models/{src.hub_repo}", CONNECT_TIMEOUT_S
            )
            if reason is None:
                from huggingface_hub import hf_hub_download

                try:
                    got = hf_hub_download(
                        src.hub_repo,
                        src.hub_filename,
                        local_dir=part_dir,
                        etag_timeout=CONNECT_TIMEOUT_S,
                    )
                    return Path(got), f"hf://{src.hub_repo}/{src.hub_filename}"
                except Exception as exc:
                    reason = f"{type(exc).__name__}: {exc}"
            reasons.append(f"huggingface.co/{src.hub_repo}: {reason}")
        if src.url:
            reason = _reachable(src.url, CONNECT_TIMEOUT_S)
            if reason is None:
                dest = part_dir / spec.filename
                try:
                    req = urllib.request.Request(src.url, headers={"User-Agent": "sam2-med"})
                    with (
                        urllib.request.urlopen(req, timeout=READ_TIMEOUT_S) as r,
                        open(dest, "wb") as f,
                    ):
                        shutil.copyfileobj(r, f, _CHUNK)
                    return dest, src.url
                except (urllib.error.URLError, OSError) as exc:
                    reason = str(exc)
            reasons.append(f"{src.url}: {reason}")
    raise OSError("; ".join(reasons) or "no download source")


def download_urls(spec: ModelSpec) -> list[str]:
    """Direct download links of a registered model's file (no web pages), in preference order.

    A Hugging Face Hub source becomes its ``/resolve/main/`` file URL.
    """
    urls = []
    for src in spec.sources:
        if src.hub_repo:
            urls.append(f"https://huggingface.co/{src.hub_repo}/resolve/main/{src.hub_filename}")
        if src.url:
            urls.append(src.url)
    return urls


def _not_found(spec: ModelSpec, cache: Path, why: str) -> WeightsNotFoundError:
    target = _cache_path(spec, cache)
    sha = f"sha256 {spec.sha256}" if spec.sha256 else "no published sha256"
    urls = download_urls(spec)
    get = [f"download {spec.filename} ({sha}) from", *(f"  {u}" for u in urls)]
    where = f"it is checked and copied to {target}"
    err = WeightsNotFoundError(
        f"weights of {spec.name!r} are not in the cache and cannot be downloaded now ({why})",
        details=[
            *get,
            f"then run: sam2_med.models.import_weights('{spec.filename}', {spec.name!r})",
            f"  ({where}; the command line: sam2-med weights import {spec.filename} "
            f"--model {spec.name})",
            f"or load a copy you have: load_model(checkpoint='{spec.filename}')",
        ],
        cli=f"weights of {spec.name} are not in the cache and cannot be downloaded now ({why})",
        cli_details=[
            *get,
            f"then run: sam2-med weights import {spec.filename} --model {spec.name}",
            f"  ({where})",
            f"or use a copy you have: --checkpoint {spec.filename}",
        ],
    )
    # the pieces, for interfaces that word the advice their own way (the napari widget)
    # (not "filename": an OSError subclass would print it)
    err.model, err.weights_file, err.checksum = spec.name, spec.filename, sha
    err.urls, err.target = urls, target
    return err


def _local_weights(spec: ModelSpec) -> tuple[Path, str]:
    """A model whose YAML names a file on disk (shipped in the package, or the user's own)."""
    path = spec.local_file
    assert path is not None
    if not path.is_file():
        raise WeightsNotFoundError(f"weights file of model {spec.name!r} is missing", path)
    _check_sha(path, spec, _sha256(path))
    return path, f"{path} (named by {spec.config_file})"


def _ensure_cached(spec: ModelSpec, cache: Path, offline: bool) -> tuple[Path, str]:
    if spec.local_file is not None:
        return _local_weights(spec)
    path = _cache_path(spec, cache)
    if path.is_file():
        _trusted_cached_file(path, spec)
        rec = _read_record(path) or {}
        return path, f"{path} (cached from {rec.get('origin', 'an earlier download or import')})"
    if offline:
        raise _not_found(spec, cache, "offline mode")
    path.parent.mkdir(parents=True, exist_ok=True)
    part_dir = Path(tempfile.mkdtemp(prefix=".download-", dir=path.parent))
    try:
        try:
            got, origin = _download_to(spec, part_dir)
        except OSError as exc:
            shutil.rmtree(part_dir, ignore_errors=True)
            with contextlib.suppress(OSError):
                path.parent.rmdir()  # only if empty: leave no trace of a failed attempt
            raise _not_found(spec, cache, f"download failed: {exc}") from None
        sha = _sha256(got)
        _check_sha(got, spec, sha)
        os.replace(got, path)
        _write_record(path, sha, spec, origin)
    finally:
        shutil.rmtree(part_dir, ignore_errors=True)
    return path, f"{path} (downloaded from {origin})"


# --------------------------------------------------------------------------- public: cache
@dataclass(frozen=True)
class CacheEntry:
    """One weights file in the cache.

    Attributes
    ----------
    name
        Registry name the file is cached under.
    path
        The file.
    size
        Bytes.
    sha256
        Digest (recorded at download/import for :func:`cached_weights`; recomputed by
        :func:`verify_cache`), or None if never recorded.
    status
        ``"verified"`` (equals the published digest), ``"unverified"`` (no published digest;
        unchanged since it was recorded), ``"checksum mismatch"``, ``"changed since recorded"``,
        ``"not yet checked"``, or ``"local file"`` (weights a model's YAML names on disk, e.g.
        shipped in the package; listed but not hashed by :func:`cached_weights`).
    """

    name: str
    path: Path
    size: int
    sha256: str | None
    status: str


def _entries(cache: Path, rehash: bool) -> list[CacheEntry]:
    out = []
    for name in list_models():
        spec = get_spec(name)
        path = spec.local_file or _cache_path(spec, cache)
        if not path.is_file():
            continue
        rec = _read_record(path)
        sha = _sha256(path) if rehash else (rec or {}).get("sha256")
        if spec.local_file is not None and not rehash:
            status = "local file"  # hashed when loaded, and by verify_cache
        elif sha is None:
            status = "not yet checked"
        elif spec.sha256 is not None:
            status = "verified" if sha == spec.sha256 else "checksum mismatch"
        elif rec is None:
            status = "unverified" if spec.local_file is not None else "not yet checked"
        else:
            status = "unverified" if sha == rec.get("sha256") else "changed since recorded"
        out.append(CacheEntry(name, path, path.stat().st_size, sha, status))
    return out


def cached_weights(cache_dir: str | os.PathLike[str] | None = None) -> list[CacheEntry]:
    """The registered models whose weights are in the cache (no hashing; fast).

    Parameters
    ----------
    cache_dir
        Cache folder; default :func:`default_cache_dir`.

    Returns
    -------
    list of CacheEntry
        Status as recorded at download or import time.
    """
    return _entries(_cache(cache_dir), rehash=False)


def verify_cache(cache_dir: str | os.PathLike[str] | None = None) -> list[CacheEntry]:
    """Re-hash every cached weights file and compare with the published digest.

    Parameters
    ----------
    cache_dir
        Cache folder; default :func:`default_cache_dir`.

    Returns
    -------
    list of CacheEntry
        One per cached file; ``status`` says whether it is intact.
    """
    return _entries(_cache(cache_dir), rehash=True)


def import_weights(
    file: str | os.PathLike[str], name: str, *, cache_dir: str | os.PathLike[str] | None = None
) -> Path:
    """Install a hand-copied checkpoint into the cache (for machines without internet).

    The file is hashed while it is copied; a file whose SHA-256 differs from the published one is
    refused, and so is one that is not a weights-only Meta checkpoint of this model's
    architecture. The copy is atomic (a temporary file renamed into place), so an interrupted
    import leaves no half file.

    Parameters
    ----------
    file
        The downloaded ``.pt`` file, e.g. ``sam2.1_hiera_tiny.pt`` or ``MedSAM2_latest.pt``.
    name
        Registry name (see :func:`sam2_med.models.list_models`).
    cache_dir
        Cache folder; default :func:`default_cache_dir`.

    Returns
    -------
    pathlib.Path
        The cached file.

    Raises
    ------
    UnknownModelError, ChecksumError, CheckpointError, FileNotFoundError
    """
    spec = get_spec(name)
    src = Path(file).expanduser()
    if spec.local_file is not None:
        raise CheckpointError(
            f"model {spec.name!r} uses the weights file its configuration names "
            f"({spec.local_file}): there is nothing to import",
            src,
        )
    if not src.exists():
        raise WeightsNotFoundError("no such file", src)
    check_regular_file(src, "checkpoint", CheckpointError)
    if not src.is_file():
        raise WeightsNotFoundError("not a file", src)
    dest = _cache_path(spec, _cache(cache_dir))
    created = _make_folders(dest.parent)
    tmp: Path | None = None
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{spec.filename}.", suffix=".partial", dir=dest.parent
        )
        tmp = Path(tmp_name)
        h = hashlib.sha256()
        with open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
            while chunk := fin.read(_CHUNK):
                h.update(chunk)
                fout.write(chunk)
            fout.flush()
            os.fchmod(fout.fileno(), umask_file_mode())
            os.fsync(fout.fileno())
        sha = h.hexdigest()
        _check_sha(src, spec, sha)
        try:
            _resolve_arch(spec, None, _read_meta_checkpoint(tmp))
        except CheckpointError as exc:
            raise CheckpointError(exc.problem, src, **exc.wording()) from None
        os.replace(tmp, dest)
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()
        for folder in reversed(created):  # leave no empty cache folders behind
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise
    _write_record(dest, sha, spec, origin=f"imported from {src}")
    return dest


def _make_folders(folder: Path) -> list[Path]:
    """``mkdir -p folder``; returns the folders created, outermost first."""
    missing = []
    p = folder
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    folder.mkdir(parents=True, exist_ok=True)
    return list(reversed(missing))


# --------------------------------------------------------------------------- public: save/load
def save_meta_checkpoint(
    model_or_state_dict: torch.nn.Module | Mapping[str, torch.Tensor], path: str | os.PathLike[str]
) -> Path:
    """Write a transformers SAM 2 model as a checkpoint in Meta's format.

    The inverse of the conversion :func:`load_model` applies: keys renamed to Meta's names,
    saved as ``torch.save({"model": state_dict})``. Used by tests to send random models through
    the real loading path.

    Parameters
    ----------
    model_or_state_dict
        A ``Sam2VideoModel`` or its ``state_dict()``.
    path
        Destination file (written atomically).

    Returns
    -------
    pathlib.Path
    """
    sd = (
        model_or_state_dict.state_dict()
        if isinstance(model_or_state_dict, torch.nn.Module)
        else model_or_state_dict
    )
    meta = {k: v.detach().to("cpu").contiguous() for k, v in hf_to_meta_state_dict(sd).items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    torch.save({"model": meta}, tmp)
    os.replace(tmp, path)
    return path


def _device(device: str | torch.device) -> torch.device:
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise DeviceUnavailableError(f"invalid device {device!r}: {exc}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        why = (
            f"device {device!r} requested but CUDA is not available here (no NVIDIA GPU, or a "
            "CPU-only PyTorch build)"
        )
        raise DeviceUnavailableError(f"{why}; use device='cpu'", cli=f"{why}; use --device cpu")
    if dev.type == "mps" and not (
        hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
    ):
        why = f"device {device!r} requested but Apple MPS is not available"
        raise DeviceUnavailableError(f"{why}; use device='cpu'", cli=f"{why}; use --device cpu")
    if dev.type not in {"cpu", "cuda", "mps"}:
        raise DeviceUnavailableError(f"unsupported device {device!r}; use 'cpu', 'cuda' or 'mps'")
    return dev


def _precision(
    precision: str | torch.dtype | None, dtype: str | torch.dtype | None, device: torch.device
) -> Precision:
    """The precision policy resolved for ``device``; ``dtype`` is its older name."""
    if precision is not None and dtype is not None:
        a, b = resolve_precision(precision, device), resolve_precision(dtype, device)
        if a.requested != b.requested:
            raise DeviceUnavailableError(
                f"precision={a.requested!r} and dtype={b.requested!r} disagree; give precision "
                "alone (dtype is its older name)",
                cli=f"--precision {a.requested} and --dtype {b.requested} disagree; give "
                "--precision alone",
            )
    return resolve_precision(precision if precision is not None else dtype or "auto", device)


def _load_transformers_folder(
    folder: Path,
    spec: ModelSpec | None,
    device: torch.device,
    precision: Precision,
    protocol: str | None = None,
) -> LoadedModel:
    if not (folder / "config.json").is_file() or not any(folder.glob("*.safetensors")):
        raise CheckpointError(
            "not a transformers model folder (needs config.json and .safetensors weights)", folder
        )
    try:
        model, info = Sam2VideoModel.from_pretrained(
            folder, use_safetensors=True, local_files_only=True, output_loading_info=True
        )
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot load the transformers folder: {exc}", folder) from None
    problems = {k: v for k, v in info.items() if k != "error_msgs" and v}
    if problems:
        raise CheckpointError(
            "transformers folder does not match its config: "
            + "; ".join(f"{k}: {', '.join(map(str, sorted(v)[:12]))}" for k, v in problems.items()),
            folder,
        )
    model = model.to(device=device, dtype=torch.float32).eval()
    size = model.config.image_size
    return LoadedModel(
        model=model,
        name=spec.name if spec else "custom",
        image_size=int(size[0] if isinstance(size, (list, tuple)) else size),
        device=device,
        dtype=precision.dtype,
        licence=spec.licence_text if spec else _CUSTOM_LICENCE,
        source=str(folder),
        protocol=protocol or (spec.protocol if spec else None),
        slice_layout=spec.slice_layout if spec else None,
        precision=precision,
    )


def load_model(
    name: str | None = None,
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    precision: str | None = None,
    dtype: str | torch.dtype | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
    arch: Mapping[str, Any] | str | None = None,
    protocol: str | None = None,
) -> LoadedModel:
    """Load a SAM 2 model for inference.

    Parameters
    ----------
    name
        Registry name (:func:`sam2_med.models.list_models`). Alone: the cached file is used, or
        downloaded into the cache. With ``checkpoint``: the file is that model (its published
        checksum, when there is one, is enforced and its architecture is checked).
    checkpoint
        A local Meta-format ``.pt`` file (SAM 2, SAM 2.1, MedSAM2 and their fine-tunes; converted
        to transformers names at load time, strictly), or a transformers folder
        (``config.json`` + safetensors).
    device
        ``"cpu"`` (default; never CUDA by default), ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
    precision
        ``"auto"`` (default): bfloat16 autocast where the device computes bfloat16 natively (CUDA
        with bf16 support, CPUs with AMX-BF16 or AVX512-BF16), float32 elsewhere;
        ``"float32"`` or ``"bfloat16"`` force one (:mod:`sam2_med.models.precision`).
        Parameters stay float32 either way.
    dtype
        Older name of ``precision`` (``"float32"``, ``"bfloat16"`` or a ``torch.dtype``).
    cache_dir
        Weights cache; default ``$SAM2_MED_CACHE`` or ``~/.cache/sam2-med``.
    offline
        True: never touch the network. None: offline when ``SAM2_MED_OFFLINE`` or
        ``HF_HUB_OFFLINE`` is set.
    arch
        For a checkpoint file that is not a published one: a registered model name whose
        architecture it has (``"medsam2"`` for a MedSAM2 fine-tune), or architecture keys
        (:func:`sam2_med.models.arch.arch_to_config`) for custom or reduced checkpoints. What
        the weights themselves show (widths, block and layer counts) must agree with it.
        Without it, a file whose SHA-256 is a registered model's published digest is that
        model whatever its name; any other file gets the architecture of the registered model
        it fits (the one whose published file name it has, else the first in registry order),
        with a :class:`~sam2_med.errors.Sam2MedWarning` naming the assumption.
    protocol
        ``"sam2"`` or ``"medsam2"`` (:mod:`sam2_med.protocols`): the protocol sessions use
        with this model unless told otherwise. None: the declared one of the registered model
        whose architecture the file has (``name``, ``arch``, or the assumed one); a file
        loaded with architecture keys declares none (``"sam2"``).

    Returns
    -------
    LoadedModel
        The model in eval mode on ``device``, with its name, input size, licence, source,
        the file's SHA-256 and the architecture used.

    Raises
    ------
    WeightsNotFoundError
        Not cached and not downloadable now (offline, or no network within a few seconds); the
        message says where to get the file and how to import it.
    ChecksumError
        The file differs from the published one.
    CheckpointError
        A file that is not a weights-only checkpoint, or keys/shapes that do not fit.
    UnknownModelError, DeviceUnavailableError
    """
    if protocol is not None:
        from ..protocols import check_protocol

        check_protocol(protocol)
    dev = _device(device)
    prec = _precision(precision, dtype, dev)
    spec = get_spec(name) if name is not None else None
    arch_spec = get_spec(arch) if isinstance(arch, str) else None  # arch="medsam2"
    overrides = None if isinstance(arch, str) else arch
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if path.is_dir():
            if arch is not None:
                raise CheckpointError(
                    "arch= applies to Meta-format files; a folder has its config.json",
                    path,
                    cli="--arch applies to Meta-format files; a folder has its config.json",
                )
            return _load_transformers_folder(path, spec, dev, prec, protocol)
        if not path.exists():
            raise WeightsNotFoundError("no such checkpoint file", path)
        check_regular_file(path, "checkpoint", CheckpointError)
        sha = _sha256(path)
        if spec is not None and spec.sha256 is not None:
            _check_sha(path, spec, sha)
        if spec is None:
            spec = published_model(sha)  # Meta's own file under any name is that model
        source = str(path)
    elif spec is None:
        raise Sam2MedError(
            f"give a model name ({', '.join(list_models())}) or checkpoint=",
            cli=f"give --model NAME ({', '.join(list_models())}) or --checkpoint FILE",
        )
    else:
        path, source = _ensure_cached(spec, _cache(cache_dir), _offline(offline))
        sha = (_read_record(path) or {}).get("sha256") or _sha256(path)
    state = _read_meta_checkpoint(path)
    try:
        choice = _resolve_arch(spec or arch_spec, overrides, state, file_name=path.name)
    except CheckpointError as exc:
        raise CheckpointError(exc.problem, path, **exc.wording()) from None
    if choice.assumed is not None:
        warnings.warn(_assumed_warning(path, sha, choice), stacklevel=2)
    model = Sam2VideoModel(arch_to_config(choice.arch))
    try:
        load_meta_state_dict(model, state)
    except CheckpointError as exc:
        raise CheckpointError(exc.problem, path, **exc.wording()) from None
    del state
    model = model.to(dev).eval()
    if spec is not None and spec.sha256 is None:
        source += " [no published checksum: unverified]"
    declared = spec or arch_spec or choice.assumed  # the registered model it is built as
    return LoadedModel(
        model=model,
        name=spec.name if spec else "custom",
        image_size=int(choice.arch["image_size"]),
        device=dev,
        dtype=prec.dtype,
        precision=prec,
        licence=spec.licence_text if spec else _CUSTOM_LICENCE,
        source=source,
        sha256=sha,
        arch=MappingProxyType(dict(choice.arch)),
        published=spec.name if spec is not None and spec.sha256 == sha else None,
        arch_from=(
            f"registered model {spec.name}"
            if spec is not None
            else f"arch={arch_spec.name!r}"
            if arch_spec is not None
            else "the given arch"
            if overrides is not None
            else f"assumed: {choice.assumed.name}"  # type: ignore[union-attr]
        ),
        arch_candidates=tuple(s.name for s in choice.candidates),
        protocol=protocol or (declared.protocol if declared else None),
        slice_layout=declared.slice_layout if declared else None,
    )
