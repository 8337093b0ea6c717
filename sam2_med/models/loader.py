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
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import Sam2VideoModel

from ..errors import Sam2MedError
from .arch import arch_to_config, complete_arch
from .convert import hf_to_meta_state_dict, infer_arch, load_meta_state_dict
from .errors import (
    CheckpointError,
    ChecksumError,
    DeviceUnavailableError,
    WeightsNotFoundError,
)
from .loaded import LoadedModel
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
        raise ChecksumError(
            f"not the published {spec.filename} of {spec.name!r}; if it is a fine-tune, load it "
            f"with load_model(checkpoint=..., arch=get_spec({spec.name!r}).arch_dict())",
            path,
            expected=spec.sha256,
            actual=sha,
        )


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


def _resolve_arch(
    spec: ModelSpec | None, arch: Mapping[str, Any] | None, sd: Mapping[str, torch.Tensor]
) -> dict[str, Any]:
    inferred = infer_arch(sd)
    if spec is not None:
        final = complete_arch({**spec.arch_dict(), **(arch or {})})
        origin = f"model {spec.name!r}" + (" with arch= overrides" if arch else "")
    else:
        matches = [
            s for s in _REGISTRY.values() if all(s.arch[k] == v for k, v in inferred.items())
        ]
        if arch is None:
            if not matches:
                raise CheckpointError(
                    f"the checkpoint fits no registered architecture (it says {inferred}); "
                    "pass arch= with at least image_size, num_heads, global_att_blocks"
                )
            if len({s.image_size for s in matches}) > 1:
                names = ", ".join(s.name for s in matches)
                raise CheckpointError(
                    f"the checkpoint fits several registered models with different input sizes "
                    f"({names}); pass name= or arch={{'image_size': ...}}"
                )
        base = matches[0].arch_dict() if matches else complete_arch({})
        final = complete_arch({**base, **inferred, **(arch or {})})
        origin = "arch=" if arch else f"the architecture of {matches[0].name!r}"
    conflicts = [f"{k}={v!r} (not {final[k]!r})" for k, v in inferred.items() if final[k] != v]
    if conflicts:
        raise CheckpointError(
            f"the checkpoint does not have the architecture of {origin}: it has "
            + ", ".join(conflicts)
            + "; pass arch= with the checkpoint's values if this is a variant"
        )
    return final


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


def _not_found(spec: ModelSpec, cache: Path, why: str) -> WeightsNotFoundError:
    sha = f" (published sha256 {spec.sha256})" if spec.sha256 else " (no published sha256)"
    return WeightsNotFoundError(
        f"weights of {spec.name!r} are not in the cache {cache} and cannot be downloaded now "
        f"({why}). On a machine with internet access download {spec.filename} from "
        f"{spec.where_to_get()}{sha}, copy it here and run: "
        f"sam2-med weights import {spec.filename} --model {spec.name} "
        f"(in Python: sam2_med.models.import_weights(path, {spec.name!r}))"
    )


def _ensure_cached(spec: ModelSpec, cache: Path, offline: bool) -> tuple[Path, str]:
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


def packaged_path(spec: ModelSpec) -> Path:
    """The file of weights shipped inside the package (see ``ModelSpec.package_file``).

    Raises
    ------
    WeightsNotFoundError
        The installation lacks the file (a broken or partial install).
    """
    from importlib import resources

    path = Path(str(resources.files("sam2_med").joinpath(spec.package_file or "")))
    if not path.is_file():
        raise WeightsNotFoundError(
            f"the weights of {spec.name!r} should ship with sam2-med but are missing; "
            "reinstall sam2-med",
            path,
        )
    return path


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
        ``"verified"`` (equals the published digest), ``"shipped"`` (weights inside the
        package, as registered), ``"unverified"`` (no published digest;
        unchanged since it was recorded), ``"checksum mismatch"``, ``"changed since recorded"``
        or ``"not yet checked"``.
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
        if spec.package_file:
            try:
                path = packaged_path(spec)
            except WeightsNotFoundError:
                continue
            sha = _sha256(path) if rehash else spec.sha256
            status = "shipped" if sha == spec.sha256 else "checksum mismatch"
            out.append(CacheEntry(name, path, path.stat().st_size, sha, status))
            continue
        path = _cache_path(spec, cache)
        if not path.is_file():
            continue
        rec = _read_record(path)
        sha = _sha256(path) if rehash else (rec or {}).get("sha256")
        if sha is None:
            status = "not yet checked"
        elif spec.sha256 is not None:
            status = "verified" if sha == spec.sha256 else "checksum mismatch"
        elif rec is None:
            status = "not yet checked"
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
    if spec.package_file:
        raise CheckpointError(f"{spec.name!r} ships with sam2-med: there is nothing to import", src)
    if not src.is_file():
        raise WeightsNotFoundError("no such file", src)
    dest = _cache_path(spec, _cache(cache_dir))
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.filename}.", suffix=".partial", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        h = hashlib.sha256()
        with open(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
            while chunk := fin.read(_CHUNK):
                h.update(chunk)
                fout.write(chunk)
            fout.flush()
            os.fsync(fout.fileno())
        sha = h.hexdigest()
        _check_sha(src, spec, sha)
        try:
            _resolve_arch(spec, None, _read_meta_checkpoint(tmp))
        except CheckpointError as exc:
            raise CheckpointError(exc.problem, src) from None
        os.replace(tmp, dest)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    _write_record(dest, sha, spec, origin=f"imported from {src}")
    return dest


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
        raise DeviceUnavailableError(
            f"device {device!r} requested but CUDA is not available here (no NVIDIA GPU, or a "
            "CPU-only PyTorch build); use device='cpu'"
        )
    if dev.type == "mps" and not (
        hasattr(torch.backends, "mps") and torch.backends.mps.is_available()
    ):
        raise DeviceUnavailableError(
            f"device {device!r} requested but Apple MPS is not available; use device='cpu'"
        )
    if dev.type not in {"cpu", "cuda", "mps"}:
        raise DeviceUnavailableError(f"unsupported device {device!r}; use 'cpu', 'cuda' or 'mps'")
    return dev


def _dtype(dtype: str | torch.dtype) -> torch.dtype:
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16}
    if isinstance(dtype, torch.dtype) and dtype in table.values():
        return dtype
    if isinstance(dtype, str) and dtype in table:
        return table[dtype]
    raise DeviceUnavailableError(
        f"unsupported dtype {dtype!r}; use 'float32' or 'bfloat16' (bfloat16 means autocast)"
    )


def _load_transformers_folder(
    folder: Path, spec: ModelSpec | None, device: torch.device, dtype: torch.dtype
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
        dtype=dtype,
        licence=spec.licence_text if spec else _CUSTOM_LICENCE,
        source=str(folder),
    )


def load_model(
    name: str | None = None,
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "float32",
    cache_dir: str | os.PathLike[str] | None = None,
    offline: bool | None = None,
    arch: Mapping[str, Any] | None = None,
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
    dtype
        Compute dtype: ``"float32"`` or ``"bfloat16"`` (autocast; parameters stay float32).
    cache_dir
        Weights cache; default ``$SAM2_MED_CACHE`` or ``~/.cache/sam2-med``.
    offline
        True: never touch the network. None: offline when ``SAM2_MED_OFFLINE`` or
        ``HF_HUB_OFFLINE`` is set.
    arch
        Architecture overrides (:func:`sam2_med.models.arch.arch_to_config` keys) for custom or
        reduced Meta-format checkpoints; what the weights themselves show (widths, block and layer
        counts) must agree with it.

    Returns
    -------
    LoadedModel
        The model in eval mode on ``device``, with its name, input size, licence and source.

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
    dev, cdtype = _device(device), _dtype(dtype)
    spec = get_spec(name) if name is not None else None
    if checkpoint is not None:
        path = Path(checkpoint).expanduser()
        if path.is_dir():
            if arch is not None:
                raise CheckpointError(
                    "arch= applies to Meta-format files; a folder has its config.json", path
                )
            return _load_transformers_folder(path, spec, dev, cdtype)
        if not path.is_file():
            raise WeightsNotFoundError("no such checkpoint file", path)
        if spec is not None and spec.sha256 is not None:
            _check_sha(path, spec, _sha256(path))
        source = str(path)
    elif spec is None:
        raise Sam2MedError(f"give a model name ({', '.join(list_models())}) or checkpoint=")
    elif spec.package_file:
        path = packaged_path(spec)
        _check_sha(path, spec, _sha256(path))
        source = f"{path} (shipped with sam2-med)"
    else:
        path, source = _ensure_cached(spec, _cache(cache_dir), _offline(offline))
    state = _read_meta_checkpoint(path)
    final_arch = _resolve_arch(spec, arch, state)
    model = Sam2VideoModel(arch_to_config(final_arch))
    try:
        load_meta_state_dict(model, state)
    except CheckpointError as exc:
        raise CheckpointError(exc.problem, path) from None
    del state
    model = model.to(dev).eval()
    if spec is not None and spec.sha256 is None:
        source += " [no published checksum: unverified]"
    return LoadedModel(
        model=model,
        name=spec.name if spec else "custom",
        image_size=int(final_arch["image_size"]),
        device=dev,
        dtype=cdtype,
        licence=spec.licence_text if spec else _CUSTOM_LICENCE,
        source=source,
    )
