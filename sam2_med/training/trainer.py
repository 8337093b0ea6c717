"""The training loop: SAM 2's video model on clips of labelled volumes.

Typical use (the command line's ``sam2-med finetune`` does the same)::

    from sam2_med.training import TrainConfig, finetune
    result = finetune("runs/liver", data="datalist.json", model="sam2.1_hiera_tiny",
                      config=TrainConfig(steps=2000, lr=1e-5, freeze=("image_encoder",)))

What a run writes into its output folder (every file atomically: a temporary file renamed into
place, so an interrupted write leaves the previous file intact):

``last.pt``
    The latest weights in **Meta's checkpoint format** (``{"model": state_dict}`` with Meta's
    key names): ``sam2-med segment --checkpoint last.pt --arch arch.json`` runs it, and so does
    Meta's own ``build_sam2_video_predictor`` with the matching YAML.
``last.json``
    The training record: step, seed, architecture, base model and its licence (inherited by the
    fine-tune), data digest, configuration, loss weights, prompt policy, metrics, wall time and
    the SHA-256 of ``last.pt``.
``last.state.pt``
    Optimizer, schedule and random-generator state for ``resume=True`` (weights-only pickle).
``best.pt`` / ``best.json``
    The weights with the highest validation Dice so far (when there is validation data).
``arch.json``
    The architecture (``--arch`` for loading the checkpoints).

Schedule: AdamW; the learning rate rises linearly over ``warmup`` steps, then follows a cosine to
``min_lr_ratio`` of its peak at ``steps``; gradients are clipped to ``grad_clip`` (global norm).
bfloat16 autocast is used only where the hardware has native bfloat16 (a CUDA GPU that reports
it, or a CPU with AMX or AVX-512 BF16); elsewhere it would be slower than float32 and training
runs in float32. A loss that is not finite stops the run before the optimizer step: the last
good checkpoint stays as it was. Ctrl-C (KeyboardInterrupt) saves the current step, then stops.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import Sam2MedError
from .data import Case, CaseSource, ClipSampler, PhantomSource
from .losses import LossWeights
from .step import PromptPolicy, batch_loss

__all__ = [
    "FREEZABLE",
    "TrainConfig",
    "TrainResult",
    "Trainer",
    "TrainingError",
    "bf16_native",
    "finetune",
    "validation_dice",
]

#: Module groups ``freeze`` accepts -> attribute of ``Sam2VideoModel``.
FREEZABLE = {
    "image_encoder": "vision_encoder",
    "prompt_encoder": "prompt_encoder",
    "mask_decoder": "mask_decoder",
    "memory_attention": "memory_attention",
    "memory_encoder": "memory_encoder",
}

RECORD_FORMAT = "sam2-med training record 1"


class TrainingError(Sam2MedError, RuntimeError):
    """A training run that cannot start or had to stop (the message says which and why)."""


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of a run (all recorded in the training record).

    Attributes
    ----------
    steps : int
        Optimizer steps.
    batch : int
        Clips per step.
    clip_length : int
        Consecutive slices per clip (frame 0 prompted, the others tracked).
    objects_per_clip : int
        Up to this many objects share each clip's slices (each its own prompt and target, the
        frames encoded once): cheaper per object, and it teaches that the prompt, not the
        image, says which object is meant.
    single_frame_steps : int
        A warm-up curriculum: the first steps train the prompted frame alone (clips of one
        slice, ``batch * clip_length`` of them per step: the same frames per step, no memory),
        which teaches prompt -> mask faster per CPU second; the memory path follows.
    lr, weight_decay, warmup, min_lr_ratio, grad_clip : float
        AdamW learning rate (peak), weight decay, linear warm-up steps, final fraction of the
        peak after the cosine decay, global gradient-norm clip (0 disables).
    seed : int
        Seeds clip sampling, prompts, augmentation, dropout and (from scratch) the weights.
    freeze : tuple of str
        Module groups not trained (keys of :data:`FREEZABLE`).
    precision : {"auto", "float32", "bfloat16"}
        ``"auto"``: bfloat16 autocast where native (:func:`bf16_native`), else float32.
    val_every, checkpoint_every, log_every : int
        Steps between validations (0: only at the end), checkpoints and log lines.
    axes : tuple of str
        Anatomical axes clips are cut along.
    window : str
        Intensity transform, as for inference (``"auto"``).
    augment : bool
        MONAI spatial and intensity augmentation of clips.
    component_prob : float
        Probability of training on one connected component of a label.
    past_end : float
        Probability that a clip runs past its object's end (see
        :class:`~sam2_med.training.data.ClipSampler`); 0 keeps the demo recipe's sampling.
    val_prompt : {"point", "box", "mask"}
        Prompt of the validation protocol (:func:`sam2_med.evaluate.evaluate_case`, on the
        slice where the structure is largest).
    policy : PromptPolicy
    weights : LossWeights
    """

    steps: int = 1000
    batch: int = 4
    clip_length: int = 4
    objects_per_clip: int = 1
    single_frame_steps: int = 0
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup: int = 100
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0
    seed: int = 0
    freeze: tuple[str, ...] = ()
    precision: str = "auto"
    val_every: int = 0
    checkpoint_every: int = 100
    log_every: int = 20
    axes: tuple[str, ...] = ("axial",)
    window: str = "auto"
    augment: bool = True
    component_prob: float = 0.0
    past_end: float = 0.0
    val_prompt: str = "point"
    policy: PromptPolicy = field(default_factory=PromptPolicy)
    weights: LossWeights = field(default_factory=LossWeights)

    def __post_init__(self) -> None:
        bad = sorted(set(self.freeze) - set(FREEZABLE))
        if bad:
            raise TrainingError(f"cannot freeze {bad}; known module groups: {sorted(FREEZABLE)}")
        if self.precision not in ("auto", "float32", "bfloat16"):
            raise TrainingError(
                f"precision must be auto, float32 or bfloat16, got {self.precision!r}"
            )
        for name in ("steps", "batch", "clip_length"):
            if int(getattr(self, name)) < 1:
                raise TrainingError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise TrainingError(f"lr must be > 0, got {self.lr}")
        if not 0.0 <= self.past_end <= 1.0:
            raise TrainingError(f"past_end must be between 0 and 1, got {self.past_end}")
        w = self.weights
        terms = {k: float(getattr(w, k)) for k in ("focal", "dice", "iou", "object_score")}
        for name, value in {**terms, "focal_gamma": float(w.focal_gamma)}.items():
            if not (math.isfinite(value) and value >= 0.0):
                raise TrainingError(f"loss weight {name} must be a number >= 0, got {value}")
        if not sum(terms.values()) > 0:
            raise TrainingError("every loss weight is 0: nothing would be trained")
        if not float(w.focal_alpha) <= 1.0:  # negative: no class balancing, as Meta's -1
            raise TrainingError(
                f"focal_alpha must be at most 1 (negative: off), got {w.focal_alpha}"
            )

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["freeze"] = list(self.freeze)
        d["axes"] = list(self.axes)
        return d


@dataclass
class TrainResult:
    """What :meth:`Trainer.run` returns.

    Attributes
    ----------
    status : {"complete", "interrupted"}
    step : int
        Optimizer steps done in total (a resumed run counts the earlier ones).
    checkpoint : Path
        ``last.pt``.
    record : dict
        The training record written beside it.
    val_dice : float or None
        Mean validation Dice at the last validation.
    """

    status: str
    step: int
    checkpoint: Path
    record: dict[str, Any]
    val_dice: float | None = None


# -------------------------------------------------------------------------------- precision
def bf16_native(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 natively (so autocast speeds training up).

    The inference precision policy's test (:mod:`sam2_med.models.precision`): CUDA with
    ``torch.cuda.is_bf16_supported()``, or a CPU whose flags show ``amx_bf16`` or
    ``avx512_bf16``. Elsewhere bfloat16 is emulated and slower than float32.
    """
    from ..models.precision import resolve_precision

    return resolve_precision("auto", device).applied == "bfloat16"


# ------------------------------------------------------------------------------- validation
def validation_dice(
    loaded: Any, cases: Sequence[Case], *, prompt: str = "point", window: str = "auto"
) -> tuple[float, list[dict[str, Any]]]:
    """Mean Dice of the evaluation protocol over every structure of every case.

    Each structure gets one ``prompt`` on the slice where it is largest, derived from the
    ground truth, and is propagated through the volume by a :class:`sam2_med.session.Session`
    (:func:`sam2_med.evaluate.evaluate_case`, exactly what ``sam2-med evaluate --prompt-mode
    point`` does).

    Parameters
    ----------
    loaded : LoadedModel
    cases : sequence of Case

    Returns
    -------
    mean_dice : float
    rows : list of dict
        One per structure: case, label, name, dice, nsd, hd95.
    """
    from ..api import segment_volume
    from ..evaluate import evaluate_case

    rows: list[dict[str, Any]] = []
    for case in cases:
        structures = {v: case.names.get(v, f"label_{v}") for v in case.present}

        def run(volume: Any, prompt_set: Any) -> Any:
            return segment_volume(volume, prompt_set, loaded, window=window, keep_object_masks=True)

        for r in evaluate_case(
            case.volume, case.labels, structures, run, case=case.name, mode=prompt
        ):
            rows.append(
                {
                    "case": r.case,
                    "label": r.label,
                    "name": r.name,
                    "dice": r.dice,
                    "nsd": r.nsd,
                    "hd95": r.hd95,
                }
            )
    mean = float(np.mean([r["dice"] for r in rows])) if rows else math.nan
    return mean, rows


# ---------------------------------------------------------------------------------- writing
def _atomic_bytes(path: Path, write: Callable[[Path], None]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _write_json(path: Path, data: Any) -> None:
    _atomic_bytes(path, lambda p: p.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8"))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def check_output_dir(out: Path, *, resume: bool, overwrite: bool, create: bool = True) -> None:
    """Refuse an output folder that cannot be written, or holds a run that is not resumed.

    With ``create=False`` nothing is created: the folder, or the nearest existing folder above
    it, must be writable (checked before any input is read, so bad input leaves no trace).

    Raises
    ------
    TrainingError
        One line naming the folder.
    """
    if out.exists() and not out.is_dir():
        raise TrainingError("the output is a file, not a folder", out)
    has_run = (out / "last.pt").exists()
    if resume and not has_run:
        raise TrainingError("nothing to resume: no last.pt in the output folder", out)
    if has_run and not resume and not overwrite:
        raise TrainingError(
            "the output folder holds a training run; resume it (--resume) or replace it "
            "(--overwrite)",
            out,
        )
    if not create:
        parent = out
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise TrainingError(f"the output folder cannot be created in {parent}", out)
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=out)
        os.close(fd)
        os.unlink(probe)
    except OSError as err:
        raise TrainingError(
            f"the output folder is not writable ({err.strerror or err})", out
        ) from None


# ---------------------------------------------------------------------------------- trainer
class Trainer:
    """Train a SAM 2 video model on clips from a data source.

    Parameters
    ----------
    model : transformers.Sam2VideoModel
        Trained in place (on ``device``).
    source : CaseSource or PhantomSource
        Where training cases come from.
    out_dir : path
        Output folder (see the module docstring); checked with :func:`check_output_dir`.
    config : TrainConfig
    arch : dict
        The model's architecture (written to ``arch.json`` and the record).
    base : dict
        ``{"name", "source", "licence", "licence_text"}`` of the starting weights; the
        checkpoints inherit the licence.
    val_cases : sequence of Case, optional
        Validation cases (never trained on).
    device : str or torch.device
    resume, overwrite : bool
    log : callable(str), optional
        Where log lines go (default: stderr). A progress bar is shown instead on a terminal.
    """

    def __init__(
        self,
        model: Any,
        source: CaseSource | PhantomSource,
        out_dir: str | os.PathLike[str],
        config: TrainConfig,
        *,
        arch: Mapping[str, Any],
        base: Mapping[str, Any],
        val_cases: Sequence[Case] = (),
        device: str | torch.device = "cpu",
        resume: bool = False,
        overwrite: bool = False,
        log: Callable[[str], None] | None = None,
    ) -> None:
        from ..models.engine import Sam2TrainingEngine

        self.out = Path(out_dir)
        check_output_dir(self.out, resume=resume, overwrite=overwrite)
        self.config = config
        self.device = torch.device(device)
        self.model = model.to(self.device)
        self.engine = Sam2TrainingEngine(self.model)
        self.source = source
        self.val_cases = list(val_cases)
        self.arch = dict(arch)
        self.base = dict(base)
        self.log = log or (lambda s: print(s, file=sys.stderr, flush=True))
        self.sampler = ClipSampler(
            self.engine.image_size,
            config.clip_length,
            axes=config.axes,
            window=config.window,
            component_prob=config.component_prob,
            past_end=config.past_end,
            augment=config.augment,
        )
        self.single_sampler = ClipSampler(
            self.engine.image_size,
            1,
            axes=config.axes,
            window=config.window,
            component_prob=config.component_prob,
            augment=config.augment,
        )
        for group in config.freeze:
            for p in getattr(self.model, FREEZABLE[group]).parameters():
                p.requires_grad_(False)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise TrainingError("every module is frozen: nothing to train")
        # the fused kernel is 5x faster than the default on a CPU (measured: 0.05 s against
        # 0.27 s per step for 1.5 M parameters)
        fused = self.device.type in ("cpu", "cuda")
        self.optimizer = torch.optim.AdamW(
            params, lr=config.lr, weight_decay=config.weight_decay, fused=fused or None
        )
        if config.precision == "bfloat16" or (
            config.precision == "auto" and bf16_native(self.device)
        ):
            self.precision = "bfloat16"
        else:
            self.precision = "float32"
        self.step = 0
        self.wall = 0.0
        self.rng = np.random.default_rng([config.seed, 7])
        self.history: list[dict[str, Any]] = []
        self.val_history: list[dict[str, Any]] = []
        self.best_val: float | None = None
        self.train_loss: float | None = None
        if resume:
            self._load_state()
        else:
            torch.manual_seed(config.seed)
            _write_json(self.out / "arch.json", self.arch)

    # -- schedule ------------------------------------------------------------------------------
    def lr_at(self, step: int) -> float:
        """Learning rate of optimizer step ``step`` (0-based): linear warm-up, then cosine."""
        c = self.config
        if step < c.warmup:
            return c.lr * (step + 1) / c.warmup
        span = max(1, c.steps - c.warmup)
        frac = min(1.0, (step - c.warmup) / span)
        return c.lr * (c.min_lr_ratio + (1 - c.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * frac)))

    # -- one step ------------------------------------------------------------------------------
    def _clips(self) -> list[Any]:
        clips: list[Any] = []
        misses = 0
        single = self.step < self.config.single_frame_steps
        sampler = self.single_sampler if single else self.sampler
        batch = self.config.batch * (self.config.clip_length if single else 1)
        while len(clips) < batch:
            case = self.source.sample(self.rng)
            want = min(self.config.objects_per_clip, batch - len(clips))
            group = sampler.sample_group(case, self.rng, want)
            if not group:
                misses += 1
                if misses > 50 * batch:
                    raise TrainingError(
                        f"no clip of {self.config.clip_length} slices with a labelled object "
                        "could be cut from the training cases (volumes too short, or structures "
                        "too small); lower clip_length"
                    )
                continue
            clips.extend(group)
        return clips

    def train_step(self) -> dict[str, float]:
        """One optimizer step; returns the loss terms. Raises TrainingError on a non-finite loss
        (the weights are left untouched)."""
        self.model.train()
        for g in self.optimizer.param_groups:
            g["lr"] = self.lr_at(self.step)
        clips = self._clips()
        ctx = (
            torch.autocast(self.device.type, dtype=torch.bfloat16)
            if self.precision == "bfloat16"
            else contextlib.nullcontext()
        )
        with ctx:
            loss, parts = batch_loss(
                self.engine, clips, self.rng, self.config.policy, self.config.weights
            )
        if not torch.isfinite(loss):
            raise TrainingError(
                f"the loss became {float(loss)} at step {self.step + 1}; stopped before updating "
                f"the weights. The last good checkpoint is kept: {self.out / 'last.pt'}"
            )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in self.model.parameters() if p.requires_grad]
        if self.config.grad_clip > 0:
            norm = torch.nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        else:
            norm = torch.linalg.vector_norm(
                torch.stack([p.grad.norm() for p in params if p.grad is not None])
            )
        if not torch.isfinite(norm):
            raise TrainingError(
                f"the gradients became non-finite at step {self.step + 1}; stopped before "
                f"updating the weights. The last good checkpoint is kept: {self.out / 'last.pt'}"
            )
        self.optimizer.step()
        self.step += 1
        parts["lr"] = self.optimizer.param_groups[0]["lr"]
        self.history.append(parts)
        del self.history[:-200]
        self.train_loss = float(np.mean([h["total"] for h in self.history[-50:]]))
        return parts

    # -- validation ---------------------------------------------------------------------------
    def validate(self) -> float | None:
        """Validation Dice through the evaluation protocol (None without validation cases)."""
        if not self.val_cases:
            return None
        from ..models import LoadedModel

        loaded = LoadedModel.from_module(self.model, name="training", licence=self.licence())
        try:
            with torch.inference_mode():
                mean, rows = validation_dice(
                    loaded, self.val_cases, prompt=self.config.val_prompt, window=self.config.window
                )
        finally:
            self.model.train()
        self.val_history.append({"step": self.step, "dice": mean, "structures": rows})
        return mean

    # -- records and checkpoints --------------------------------------------------------------------
    def licence(self) -> str:
        return str(self.base.get("licence_text") or self.base.get("licence") or "unknown")

    def record(self, status: str, checkpoint: Path) -> dict[str, Any]:
        import transformers

        last_val = self.val_history[-1] if self.val_history else None
        return {
            "format": RECORD_FORMAT,
            "status": status,
            "checkpoint": checkpoint.name,
            "checkpoint_format": "Meta SAM 2 ({'model': state_dict}, Meta key names)",
            "sha256": _sha256(checkpoint),
            "step": self.step,
            "seed": self.config.seed,
            "arch": self.arch,
            "base_model": {k: self.base.get(k) for k in ("name", "source", "licence")},
            "licence": self.licence(),
            "data": {"digest": self.source.digest(), **self.source.describe()},
            "validation": {
                "cases": [c.name for c in self.val_cases],
                "protocol": f"sam2_med.evaluate, one {self.config.val_prompt} on the largest slice",
            },
            "config": self.config.as_dict(),
            "precision": self.precision,
            "metrics": {
                "train_loss": self.train_loss,
                "val_dice": None if last_val is None else last_val["dice"],
                "val_step": None if last_val is None else last_val["step"],
                "val_structures": None if last_val is None else last_val["structures"],
                "best_val_dice": self.best_val,
                "val_history": [{"step": v["step"], "dice": v["dice"]} for v in self.val_history],
            },
            "wall_seconds": round(self.wall, 1),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
            "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }

    def save(self, status: str = "running") -> Path:
        """Write ``last.pt``, ``last.state.pt`` and ``last.json`` (each atomically)."""
        from ..models import save_meta_checkpoint

        ckpt = self.out / "last.pt"
        _atomic_bytes(ckpt, lambda p: save_meta_checkpoint(self.model, p))
        state = {
            "step": self.step,
            "wall": self.wall,
            "optimizer": self.optimizer.state_dict(),
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": json.dumps(self.rng.bit_generator.state),
            "source": json.dumps(getattr(self.source, "state", dict)()),
            "val_history": json.dumps(self.val_history),
            "best_val": -1.0 if self.best_val is None else self.best_val,
            "history": json.dumps(self.history[-50:]),
        }
        _atomic_bytes(self.out / "last.state.pt", lambda p: torch.save(state, p))
        rec = self.record(status, ckpt)
        _write_json(self.out / "last.json", rec)
        return ckpt

    def _save_best(self) -> None:
        import shutil

        best = self.out / "best.pt"
        _atomic_bytes(best, lambda p: shutil.copyfile(self.out / "last.pt", p))
        rec = self.record("best", best)
        _write_json(self.out / "best.json", rec)

    def _load_state(self) -> None:
        from ..models.convert import load_meta_state_dict
        from ..models.loader import _read_meta_checkpoint

        path = self.out / "last.state.pt"
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            rec = json.loads((self.out / "last.json").read_text(encoding="utf-8"))
        except (OSError, ValueError, RuntimeError) as err:
            raise TrainingError(f"cannot resume: {err}", path) from None
        if int(rec.get("step", -1)) != int(state["step"]):
            raise TrainingError(
                "cannot resume: last.json and last.state.pt are from different steps", self.out
            )
        saved_arch = json.loads((self.out / "arch.json").read_text(encoding="utf-8"))
        from ..models.arch import complete_arch

        if complete_arch(saved_arch) != complete_arch(self.arch):
            raise TrainingError(
                "cannot resume: the model's architecture differs from arch.json", self.out
            )
        load_meta_state_dict(self.model, _read_meta_checkpoint(self.out / "last.pt"))
        self.model.to(self.device)
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.wall = float(state["wall"])
        torch.set_rng_state(state["torch_rng"])
        self.rng.bit_generator.state = json.loads(state["numpy_rng"])
        src_state = json.loads(state["source"])
        if isinstance(self.source, PhantomSource) and src_state:
            self.source.next_seed = max(self.source.next_seed, int(src_state["next_seed"]))
        self.val_history = json.loads(state["val_history"])
        self.best_val = None if float(state["best_val"]) < 0 else float(state["best_val"])
        self.history = json.loads(state["history"])
        # the run's origin, not what this call was started from: the licence is inherited
        self.base = {**rec.get("base_model", {}), "licence_text": rec.get("licence")}
        self.log(f"resumed {self.out} at step {self.step}")

    # -- the loop -------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        """Train until ``config.steps``; validate and checkpoint on the way.

        Returns
        -------
        TrainResult
            ``status`` "interrupted" when Ctrl-C stopped it (the current step is saved).

        Raises
        ------
        TrainingError
            A non-finite loss or gradient (the last good checkpoint stays).
        """
        c = self.config
        bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            bar = tqdm(
                total=c.steps, initial=self.step, unit="step", desc="training", file=sys.stderr
            )
        status = "complete"
        val = None
        start = time.perf_counter() - self.wall
        try:
            while self.step < c.steps:
                parts = self.train_step()
                self.wall = time.perf_counter() - start
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{self.train_loss:.3f}", refresh=False)
                elif self.step % c.log_every == 0 or self.step == c.steps:
                    recent = self.history[-c.log_every :]
                    d0 = np.mean(
                        [h["dice_frame0"] for h in recent if "dice_frame0" in h] or [np.nan]
                    )
                    dl = np.mean([h["dice_last"] for h in recent if "dice_last" in h] or [np.nan])
                    self.log(
                        f"step {self.step}/{c.steps} loss {self.train_loss:.4f} "
                        f"(last {parts['total']:.4f}) training Dice: prompted frame {d0:.3f}, "
                        f"last frame {dl:.3f}; lr {parts['lr']:.2e} {self.wall:.0f}s"
                    )
                done = self.step == c.steps
                if self.val_cases and (done or (c.val_every and self.step % c.val_every == 0)):
                    val = self.validate()
                    self.log(f"step {self.step}: validation Dice {val:.4f}")
                if (
                    done
                    or self.step % c.checkpoint_every == 0
                    or (c.val_every and self.step % c.val_every == 0)
                ):
                    self.save("complete" if done else "running")
                    if (
                        val is not None
                        and self.val_history
                        and self.val_history[-1]["step"] == self.step
                    ):
                        if self.best_val is None or val > self.best_val:
                            self.best_val = val
                            self.save("complete" if done else "running")
                            self._save_best()
        except KeyboardInterrupt:
            status = "interrupted"
            self.wall = time.perf_counter() - start
            if self.step > 0:
                self.save("interrupted")
                self.log(f"interrupted at step {self.step}: saved {self.out / 'last.pt'}")
        finally:
            if bar is not None:
                bar.close()
        rec = (
            json.loads((self.out / "last.json").read_text(encoding="utf-8"))
            if (self.out / "last.json").exists()
            else {}
        )
        return TrainResult(status, self.step, self.out / "last.pt", rec, val)


# ------------------------------------------------------------------------------- finetune
def _base_model(
    model: str | None,
    checkpoint: str | os.PathLike[str] | None,
    arch: Mapping[str, Any] | None,
    seed: int,
) -> tuple[Any, dict[str, Any], dict[str, Any]]:
    """(Sam2VideoModel, arch, base description) from a registry model, a checkpoint or scratch."""
    from transformers import Sam2VideoModel

    from ..models import load_model
    from ..models.arch import arch_to_config, complete_arch
    from ..models.registry import get_spec

    if model is None and checkpoint is None:
        if arch is None:
            raise TrainingError(
                "give a model name, a checkpoint, or an architecture to train from scratch"
            )
        full = complete_arch(dict(arch))
        state = torch.random.get_rng_state()
        try:
            torch.manual_seed(seed)
            net = Sam2VideoModel(arch_to_config(full))
        finally:
            torch.random.set_rng_state(state)
        with torch.no_grad():
            # Meta's format holds one random Fourier matrix for prompts and image positions;
            # transformers builds two (buffers, never trained): make them one
            net.prompt_encoder.shared_embedding.positional_embedding.copy_(
                net.shared_image_embedding.positional_embedding
            )
        base = {
            "name": "random initialisation",
            "source": f"transformers Sam2VideoModel init, seed {seed}",
            "licence": "Apache-2.0",
            "licence_text": "Apache-2.0 (weights trained from scratch by sam2-med; no third-party weights)",
        }
        return net, full, base
    lm = load_model(model, checkpoint=checkpoint, arch=arch)
    full = get_spec(lm.name).arch_dict() if lm.name != "custom" else complete_arch(dict(arch or {}))
    if lm.name == "custom" and arch is None:
        from ..models.convert import infer_arch

        full = complete_arch(infer_arch(lm.model.state_dict()))
    base = {
        "name": lm.name,
        "source": lm.source,
        "licence": lm.licence,
        "licence_text": lm.licence,
    }
    return lm.model, full, base


def finetune(
    out_dir: str | os.PathLike[str],
    *,
    data: str | os.PathLike[str] | Sequence[Mapping[str, str]] | PhantomSource,
    model: str | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    arch: Mapping[str, Any] | None = None,
    config: TrainConfig | None = None,
    val_data: str | os.PathLike[str] | Sequence[Mapping[str, str]] | Sequence[Case] | None = None,
    device: str = "cpu",
    resume: bool = False,
    overwrite: bool = False,
    log: Callable[[str], None] | None = None,
) -> TrainResult:
    """Fine-tune (or train from scratch) SAM 2's video model on labelled volumes.

    Parameters
    ----------
    out_dir : path
        Output folder (see the module docstring).
    data : path, list of {"image", "label"}, or PhantomSource
        A MONAI Decathlon datalist (its ``"training"`` section; a ``"validation"`` section is
        used for validation when ``val_data`` is None), image/label pairs, or random phantoms.
    model, checkpoint, arch
        Starting weights: a registry model, a Meta-format checkpoint (with ``arch`` when it is
        not a registered architecture), or neither and ``arch`` alone to start from random
        weights.
    config : TrainConfig
    val_data : path, pairs or cases, optional
    device : str
    resume, overwrite : bool
        Continue the run in ``out_dir``; or replace it.
    log : callable(str), optional

    Returns
    -------
    TrainResult

    Raises
    ------
    DataError, TrainingError, sam2_med.models.CheckpointError
        Bad input, one line naming the file; nothing is written before every input is read.
    """
    from .data import load_datalist

    config = config or TrainConfig()
    out = Path(out_dir)
    check_output_dir(out, resume=resume, overwrite=overwrite, create=False)
    val_items: Any = val_data
    if isinstance(data, PhantomSource):
        source: Any = data
    elif isinstance(data, (str, os.PathLike)):
        items = load_datalist(data, "training")
        if val_items is None:
            raw = json.loads(Path(data).read_text(encoding="utf-8"))
            if raw.get("validation"):
                val_items = load_datalist(data, "validation")
        source = CaseSource(items)
    else:
        source = CaseSource(list(data))
    val_cases: list[Case] = []
    if isinstance(val_items, (str, os.PathLike)):
        val_items = load_datalist(val_items, "validation")
    if val_items:
        if all(isinstance(v, Case) for v in val_items):
            val_cases = list(val_items)
        else:
            val_cases = [CaseSource(list(val_items)).case(i) for i in range(len(val_items))]
    net, full_arch, base = _base_model(model, checkpoint, arch, config.seed)
    trainer = Trainer(
        net,
        source,
        out,
        config,
        arch=full_arch,
        base=base,
        val_cases=val_cases,
        device=device,
        resume=resume,
        overwrite=overwrite,
        log=log,
    )
    return trainer.run()
