"""Training data: labelled volumes (files, a MONAI datalist, or synthetic phantoms) and clips.

A **case** is an image :class:`~sam2_med.Volume` with an integer label map on exactly its voxel
grid. Cases come from

* image/label file pairs read by sam2-med's own loaders (NIfTI, NRRD, MHA, DICOM folders), the
  label map re-indexed onto the image grid without interpolation (a label map on another grid
  is refused, naming the file);
* a MONAI Decathlon datalist (``monai.data.load_decathlon_datalist``: ``{"training": [{"image":
  ..., "label": ...}], "validation": [...]}``), the same loaders behind it;
* the seeded random phantoms of :func:`sam2_med.phantom.make_random_phantom` (training seeds
  only; evaluation seeds are refused), an unlimited stream of distinct volumes.

Loaded cases are cached with ``monai.data.CacheDataset``. A **clip** is what SAM 2 trains on:
``T`` consecutive slices along an anatomical axis, shown to the model exactly as inference
shows them (:class:`sam2_med.frames.SliceStream`: same axis choice, orientation, intensity
transform and resize), with one object's mask on each frame in model-input pixels. The object is
one label value, or (optionally) one connected component of it; the first frame holds the
object. Clip frames and masks go through MONAI's random affine, contrast and noise transforms.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import Sam2MedError
from ..frames import IMAGENET_MEAN, IMAGENET_STD, SliceStream
from ..volume import Volume

__all__ = [
    "Case",
    "CaseSource",
    "Clip",
    "ClipSampler",
    "DataError",
    "PhantomSource",
    "load_case",
    "load_datalist",
]


class DataError(Sam2MedError, ValueError):
    """Training data that cannot be used (off-grid or empty labels, missing files...)."""


@dataclass
class Case:
    """One labelled volume.

    Attributes
    ----------
    name : str
    volume : Volume
    labels : (I, J, K) ndarray of int
        On ``volume``'s grid, indexed like ``volume.array``; 0 is background.
    names : dict of int -> str
        Structure names (``label_<n>`` when unknown).
    source : str
        Where it came from (file paths or the phantom seed).
    """

    name: str
    volume: Volume
    labels: np.ndarray
    names: dict[int, str] = field(default_factory=dict)
    source: str = ""

    @property
    def present(self) -> list[int]:
        """Label values present in the map, ascending."""
        vals = np.unique(self.labels)
        return [int(v) for v in vals if v != 0]


# ------------------------------------------------------------------------------------ loading
def load_case(image: str | os.PathLike[str], label: str | os.PathLike[str], name: str = "") -> Case:
    """Read an image and its label map with sam2-med's loaders; the map must share the grid.

    Raises
    ------
    DataError
        Missing file, labels not on the image grid, fractional labels or an empty label map,
        each naming the file.
    """
    from ..evaluate import load_ground_truth, read_label_names
    from ..io import load_volume

    img_p, lab_p = Path(image), Path(label)
    for p in (img_p, lab_p):
        if not p.exists():
            raise DataError("file not found", p)
    try:
        volume = load_volume(img_p)
        labels = load_ground_truth(lab_p, volume)
    except Sam2MedError as err:
        raise DataError(err.problem, err.path) from None
    if not labels.any():
        raise DataError("the label map is empty (no structure to train on)", lab_p)
    names: dict[int, str] = {}
    side = _sidecar(lab_p)
    if side is not None:
        try:
            names = read_label_names(side)
        except Sam2MedError:
            names = {}
    present = [int(v) for v in np.unique(labels) if v]
    return Case(
        name=name or _stem(img_p),
        volume=volume,
        labels=labels,
        names={v: names.get(v, f"label_{v}") for v in present},
        source=f"{img_p} + {lab_p}",
    )


def _sidecar(path: Path) -> Path | None:
    name = path.name
    for suffix in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"):
        if name.lower().endswith(suffix):
            side = path.with_name(name[: -len(suffix)] + ".json")
            return side if side.is_file() else None
    return None


def _stem(path: Path) -> str:
    from ..evaluate import _stem as stem

    return stem(path)


def load_datalist(path: str | os.PathLike[str], key: str = "training") -> list[dict[str, str]]:
    """The ``key`` section of a MONAI Decathlon datalist as ``[{"image", "label"}]`` paths.

    Paths are resolved against the datalist's folder (``monai.data.load_decathlon_datalist``).

    Raises
    ------
    DataError
        Unreadable JSON, a missing section, an entry without a label, or a file an entry names
        that does not exist (the first one is named).
    """
    from monai.data import load_decathlon_datalist

    p = Path(path)
    if not p.is_file():
        raise DataError("datalist not found", p)
    try:
        raw = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"cannot read the datalist: {err}", p) from None
    if not isinstance(raw, dict) or key not in raw:
        raise DataError(f'the datalist has no "{key}" section', p)
    try:
        items = load_decathlon_datalist(str(p), is_segmentation=True, data_list_key=key)
    except (ValueError, KeyError, TypeError) as err:
        raise DataError(f'invalid "{key}" section: {err}', p) from None
    out = []
    for n, item in enumerate(items):
        if not isinstance(item, Mapping) or "image" not in item or "label" not in item:
            raise DataError(f'entry {n} of "{key}" needs "image" and "label"', p)
        for k in ("image", "label"):
            if not Path(item[k]).exists():
                raise DataError(f'entry {n} of "{key}": {k} file not found: {item[k]}', p)
        out.append({"image": str(item["image"]), "label": str(item["label"])})
    if not out:
        raise DataError(f'the "{key}" section is empty', p)
    return out


class _LoadCase:
    """MONAI-style transform: ``{"image", "label"}`` paths -> a :class:`Case`."""

    def __call__(self, item: Mapping[str, str]) -> Case:
        return load_case(item["image"], item["label"], item.get("name", ""))


class CaseSource:
    """Labelled volumes from files, loaded once and cached (``monai.data.CacheDataset``).

    Parameters
    ----------
    items : sequence of {"image": path, "label": path}
        All are read when the source is built, so a bad file fails before training starts.
    """

    def __init__(self, items: Sequence[Mapping[str, str]]) -> None:
        from monai.data import CacheDataset

        if not items:
            raise DataError("no training cases given")
        self.items = [dict(i) for i in items]
        self._ds = CacheDataset(
            self.items, transform=_LoadCase(), cache_rate=1.0, num_workers=0, progress=False
        )
        for i in range(len(self.items)):  # read everything now: bad input fails before training
            self.case(i)

    def __len__(self) -> int:
        return len(self._ds)

    def case(self, index: int) -> Case:
        try:
            return self._ds[index]
        except RuntimeError as err:  # MONAI wraps a transform's error: give ours back
            cause: BaseException | None = err
            while cause is not None and not isinstance(cause, Sam2MedError):
                cause = cause.__cause__ or cause.__context__
            if cause is None:
                raise
            raise cause from None

    def sample(self, rng: np.random.Generator) -> Case:
        return self.case(int(rng.integers(len(self))))

    def digest(self) -> str:
        """SHA-256 over every file's bytes, in order (the training record's data digest)."""
        h = hashlib.sha256()
        for item in self.items:
            for key in ("image", "label"):
                _hash_path(h, Path(item[key]))
        return h.hexdigest()

    def describe(self) -> dict[str, Any]:
        return {"kind": "files", "cases": len(self.items), "items": self.items}


def _hash_path(h: Any, p: Path) -> None:
    files = sorted(q for q in p.rglob("*") if q.is_file()) if p.is_dir() else [p]
    for q in files:
        h.update(str(q.name).encode())
        with open(q, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)


class PhantomSource:
    """An unlimited stream of random phantoms from the training seed range.

    Keeps a pool of ``pool`` generated volumes and replaces one with the next seed every
    ``refresh`` draws, so every volume serves a few clips and generation (about 0.3-2 s per
    volume) stays a small part of a training step.

    Parameters
    ----------
    first_seed : int
        First seed; seeds run ``first_seed, first_seed + 1, ...`` inside
        :data:`sam2_med.phantom.TRAIN_SEEDS`.
    pool, refresh : int
    """

    def __init__(self, first_seed: int = 0, *, pool: int = 24, refresh: int = 8) -> None:
        from ..phantom import TRAIN_SEEDS

        if first_seed not in TRAIN_SEEDS:
            raise DataError(
                f"phantom seed {first_seed} is outside the training seeds "
                f"{TRAIN_SEEDS.start}..{TRAIN_SEEDS.stop - 1} (evaluation seeds are never trained on)"
            )
        self.first_seed = int(first_seed)
        self.next_seed = self.first_seed
        self.refresh = max(1, int(refresh))
        self._draws = 0
        self._pool: list[Case] = [self._make() for _ in range(max(1, int(pool)))]

    def _make(self) -> Case:
        from ..phantom import TRAIN_SEEDS, make_random_phantom

        seed = self.next_seed
        if seed not in TRAIN_SEEDS:
            raise DataError("the training seed range is exhausted")
        self.next_seed += 1
        vol, lab = make_random_phantom(seed)
        return Case(f"phantom_{seed}", vol, np.asarray(lab.array), dict(lab.names), f"seed {seed}")

    def sample(self, rng: np.random.Generator) -> Case:
        self._draws += 1
        if self._draws % self.refresh == 0:
            self._pool[int(rng.integers(len(self._pool)))] = self._make()
        return self._pool[int(rng.integers(len(self._pool)))]

    def state(self) -> dict[str, int]:
        return {"next_seed": self.next_seed, "draws": self._draws}

    def digest(self) -> str:
        from .. import phantom

        h = hashlib.sha256()
        h.update(Path(phantom.__file__).read_bytes())
        h.update(f"first_seed={self.first_seed}".encode())
        return h.hexdigest()

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "random phantoms (sam2_med.phantom.make_random_phantom)",
            "first_seed": self.first_seed,
            "seeds_used_so_far": [self.first_seed, self.next_seed - 1],
        }


# -------------------------------------------------------------------------------------- clips
@dataclass
class Clip:
    """``T`` consecutive slices of one case with one object's masks, as the model sees them.

    Attributes
    ----------
    frames : (T, 3, S, S) float32 tensor
        Model input (ImageNet-normalised), frame 0 first; the clip may run towards lower or
        higher slice indices.
    masks : (T, S, S) float32 tensor
        0/1 object mask per frame in model-input pixels (:meth:`SliceStream.mask_to_frame`).
    n_frames : int
        Slices of the whole volume along the axis.
    case, label, slices, axis
        Where the clip came from.
    """

    frames: torch.Tensor
    masks: torch.Tensor
    n_frames: int
    case: str
    label: int
    slices: list[int]
    axis: str


class ClipSampler:
    """Draw clips from a case source.

    Parameters
    ----------
    image_size : int
        Model input side ``S``.
    length : int
        Frames per clip ``T`` (1 trains the single-frame path only).
    axes : sequence of str
        Anatomical axes to draw from (default axial only, as the model is used).
    window : str or (center, width)
        Intensity transform (see :func:`sam2_med.intensity.resolve_intensity`); ``"auto"``:
        soft-tissue CT window, MR percentiles, as inference does.
    component_prob : float
        Probability of taking one connected component of a label (e.g. one kidney of a
        "kidneys" label) instead of the whole label.
    min_area : int
        Smallest object area in frame pixels on the first frame.
    past_end : float
        Probability that a clip starts on one of the object's last ``T - 1`` slices in its
        direction, so that it runs past the object's end and the later frames hold nothing
        (what teaches the object score that an object ends). 0 (default): the first frame is
        any slice holding the object.
    augment : bool
        MONAI random affine (rotation up to 15 degrees, scale 0.85-1.15, shifts up to 8 % of
        the side) applied identically to every frame and mask of a clip, then random gamma
        contrast and Gaussian noise on the frames.
    """

    def __init__(
        self,
        image_size: int,
        length: int,
        *,
        axes: Sequence[str] = ("axial",),
        window: Any = "auto",
        component_prob: float = 0.0,
        min_area: int = 4,
        past_end: float = 0.0,
        augment: bool = True,
    ) -> None:
        self.image_size = int(image_size)
        self.length = int(length)
        self.axes = tuple(axes)
        self.window = window
        self.component_prob = float(component_prob)
        self.min_area = int(min_area)
        self.past_end = float(past_end)
        self.augment = bool(augment)
        self._streams: dict[tuple[int, str], SliceStream] = {}
        self._aug = _augmenter(self.image_size) if augment else None
        self._mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self._std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def _stream(self, case: Case, axis: str) -> SliceStream:
        key = (id(case.volume), axis)
        st = self._streams.get(key)
        if st is None:
            if len(self._streams) > 256:
                self._streams.clear()
            st = SliceStream(
                case.volume, axis=axis, intensity=self.window, image_size=self.image_size
            )
            self._streams[key] = st
        return st

    def sample(self, case: Case, rng: np.random.Generator, tries: int = 20) -> Clip | None:
        """One clip from ``case``, or None when no object fits (too few slices, too small)."""
        group = self.sample_group(case, rng, 1, tries=tries)
        return group[0] if group else None

    def sample_group(
        self, case: Case, rng: np.random.Generator, objects: int, tries: int = 20
    ) -> list[Clip]:
        """Up to ``objects`` clips on the same slices of ``case``, one per object.

        The first object is drawn at random and its clip placed as :meth:`sample` places it;
        the others are further label values (or components) present on the clip's first frame.
        They share one frames tensor (encoded once) and one augmentation, so a batch learns
        that different prompts on the same image mean different objects.

        Returns
        -------
        list of Clip
            Empty when nothing fits.
        """
        from scipy.ndimage import label as cc_label

        for _ in range(tries):
            axis = self.axes[int(rng.integers(len(self.axes)))]
            st = self._stream(case, axis)
            if st.n_slices < self.length:
                continue
            present = case.present
            if not present:
                return []
            order = [present[i] for i in rng.permutation(len(present))]
            value = order[0]
            obj = case.labels == value
            if self.component_prob and rng.random() < self.component_prob:
                comp, n = cc_label(obj)
                if n > 1:
                    obj = comp == int(rng.integers(1, n + 1))
            other = tuple(a for a in range(3) if a != st.axis_index)
            area = obj.sum(axis=other)
            ks = np.flatnonzero(area >= max(1, self.min_area // 2))
            if ks.size == 0:
                continue
            if self.length > 1 and self.past_end and rng.random() < self.past_end:
                # start within T - 1 slices of the object's end in this direction
                step = 1 if rng.random() < 0.5 else -1
                end = ks.max() if step > 0 else ks.min()
                near = ks[np.abs(ks - end) < self.length - 1]
                k0 = int(near[int(rng.integers(near.size))])
            else:  # (the draws in this order keep past_end=0 runs reproducible)
                k0 = int(ks[int(rng.integers(ks.size))])
                step = 1 if rng.random() < 0.5 else -1
            if not 0 <= k0 + step * (self.length - 1) < st.n_slices:
                step = -step
            slices = [k0 + step * t for t in range(self.length)]
            if not 0 <= slices[-1] < st.n_slices:
                continue
            objs = [(value, obj)]
            for v in order[1:]:
                if len(objs) >= objects:
                    break
                m = case.labels == v
                if np.take(m, k0, axis=st.axis_index).sum() >= max(1, self.min_area // 2):
                    objs.append((v, m))
            masks = torch.stack(
                [
                    torch.stack(
                        [st.mask_to_frame(np.take(m, k, axis=st.axis_index)) for k in slices]
                    )
                    for _, m in objs
                ]
            )  # (K, T, S, S)
            frames = st.frames(slices)
            if self._aug is not None:
                frames, masks = self._augment(frames, masks, rng)
            keep = [i for i in range(len(objs)) if float(masks[i, 0].sum()) >= self.min_area]
            if not keep:
                continue
            return [
                Clip(frames, masks[i], st.n_slices, case.name, objs[i][0], slices, axis)
                for i in keep
            ]
        return []

    def _augment(
        self, frames: torch.Tensor, masks: torch.Tensor, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One random transform for the frames (T, 3, S, S) and every mask (K, T, S, S)."""
        grey = frames[:, :1] * self._std[:, :1] + self._mean[:, :1]  # back to [0, 1]
        t = frames.shape[0]
        k = masks.shape[0]
        data = {"image": grey[:, 0].clone(), "mask": masks.reshape(k * t, *masks.shape[2:]).clone()}
        self._aug.set_random_state(seed=int(rng.integers(2**31)))
        out = self._aug(data)
        img = _plain(out["image"]).float().clamp(0, 1)[:, None]
        msk = (_plain(out["mask"]).float() > 0.5).float().reshape(masks.shape)
        img = img.expand(t, 3, -1, -1)
        return ((img - self._mean) / self._std).contiguous(), msk


def _plain(x: Any) -> torch.Tensor:
    """A plain tensor (MONAI returns MetaTensors, whose torch-function hooks must not reach
    the model)."""
    return x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)


def _augmenter(size: int) -> Any:
    from monai.transforms import (
        Compose,
        RandAdjustContrastd,
        RandAffined,
        RandGaussianNoised,
    )

    return Compose(
        [
            RandAffined(
                keys=("image", "mask"),
                prob=0.5,
                rotate_range=(np.pi / 12,),
                scale_range=(0.15, 0.15),
                translate_range=(0.08 * size, 0.08 * size),
                mode=("bilinear", "nearest"),
                padding_mode="border",
                lazy=False,
            ),
            RandAdjustContrastd(keys=("image",), prob=0.3, gamma=(0.7, 1.5)),
            RandGaussianNoised(keys=("image",), prob=0.3, std=0.03),
        ]
    )
