"""Generate the parity fixture in tests/fixtures/parity/ with Meta's own SAM 2 code.

The fixture lets the test suite check, with no network and no real weights, that sam2-med's
conversion of Meta checkpoints and its transformers-based propagation reproduce Meta's
predictor. Everything here is deterministic (fixed seeds, CPU, float32).

What it writes (see tests/fixtures/parity/README.md for the full description):

* ``meta_reduced.pt``  a reduced SAM 2.1 model with random weights, in Meta's checkpoint format
  (``{"model": state_dict}``), float16 tensors whose values are the exact float32 weights used.
* ``clip.npy``         the synthetic clip, uint8 (T, S, S).
* ``reference.npz``    Meta's low-resolution mask logits and object scores for every scenario
  below, keys ``<scenario>__frames`` / ``__logits`` / ``__scores`` in the order Meta computed
  them (the scenario's prompted frames first).
* ``reference_sam2.0.npz``  the same scenarios with SAM 2.0 behaviour (same weights minus the
  three SAM 2.1-only tensors, Meta's ``sam2_hiera_t.yaml`` switches).
* ``frames_small.npy`` / ``frames_small_meta.npy``  three 96x80 uint8 frames and what Meta's
  frame loader (``sam2.utils.misc._load_img_as_tensor``: PIL, bicubic) makes of them at the
  model size, for the frame-resizing check.
* ``config.json``      the reduced architecture in sam2-med's ``arch=`` format, the prompts of
  every scenario, and the pixel recipe.

The scenarios (:data:`SCENARIOS`; what each proves is in tests/test_parity_session.py):

``one_anchor``           box + click on frame 9, forward then reverse; no hole filling.
``one_anchor_filled``    the same with Meta's hole filling (``fill_hole_area=8``).
``two_anchors``          a click on frame 4 and a box on frame 15.
``mask``                 a mask prompt on frame 9 (an ellipse with a one-pixel tail).
``correction_forward``   ``one_anchor_filled``, then (``add_all_frames_to_correct_as_cond``) a
                         negative click on frame 14, reached forward, and a positive click
                         added to it, then propagation.
``correction_reverse``   the same with one negative click on frame 5, reached in reverse.
``reset_directions``     box + click on frame 9, forward, ``reset_state``, the prompt again,
                         reverse (MedSAM2's CT inference script).

Where sam2-med departs from Meta's predictor on purpose (nearest-anchor stretches, a fresh
memory bank per run), Meta's predictor is driven here with the same policy: each anchor's run
happens in a fresh inference state holding the anchors, propagating from that anchor with
``max_frame_num_to_track`` set to the anchor's stretch; a correction's output (with the memory
Meta encodes for it) is carried into the fresh state of the run that follows it.

Meta's hole filling calls a CUDA connected-components kernel (``sam2._C``); on this CPU-only
build it is replaced by scipy's 8-connected labelling (the kernel labels 8-connected
components, as its docstring and block union-find say), everything else is Meta's code.
* ``meta_keys.json``   Meta's key -> shape lists of every registry architecture (no weights),
  for the strict key-mapping tests.

How to rerun it (takes about a minute; needs only the package registry, never model weights)::

    python3.11 -m venv /tmp/metavenv
    . /tmp/metavenv/bin/activate
    pip install torch==2.13.0          # the CPU wheel; never torchvision
    pip install numpy wheel "setuptools>=61"
    cd /tmp && pip download sam2==1.1.0 --no-deps --no-binary :all: --no-build-isolation
    SAM2_BUILD_CUDA=0 pip install --no-build-isolation --no-deps ./sam2-1.1.0.tar.gz
    pip install hydra-core iopath pillow tqdm numpy scipy
    cd /path/to/sam2-med && TQDM_DISABLE=1 python scripts/make_parity_fixture.py

``sam2`` 1.1.0 on PyPI is an sdist of Meta's December 2024 code; its video-predictor path does
not import torchvision. Run this script only in that side environment: sam2-med never imports
Meta's package.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")

import numpy as np
import torch
from hydra import compose, initialize_config_module
from hydra.core.global_hydra import GlobalHydra
from hydra.utils import instantiate
from omegaconf import OmegaConf

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "parity"
SEED = 0
NUM_FRAMES = 20  # >= 16 so streaming and whole-video modes use the same 16 object pointers
PROMPT_FRAME = 9
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)
OBJECT_SCORE_BIAS = 10.0

# Must equal sam2_med.models.testing.TINY_ARCH (a test checks config.json against it).
ARCH = {
    "image_size": 128,
    "embed_dim": 4,
    "num_heads": 1,
    "stages": [1, 1, 2, 1],
    "global_att_blocks": [3],
    "window_spec": [8, 4, 14, 7],
    "window_pos_embed_bkg_spatial_size": [7, 7],
    "d_model": 128,
    "mem_dim": 64,
    "mask_decoder_mlp_dim": 16,
    "mask_decoder_heads": 4,
    "mask_decoder_attention_downsample_rate": 4,
    "iou_head_hidden_dim": 8,
    "memory_attention_layers": 1,
    "memory_attention_downsample_rate": 2,
    "memory_attention_ffn_dim": 16,
    "mask_downsampler_stride": 4,
    "memory_fuser_layers": 1,
    "memory_fuser_intermediate_dim": 16,
    "num_maskmem": 7,
    "no_obj_embed_spatial": True,
    "proj_tpos_enc_in_obj_ptrs": True,
    "multimask_output_for_tracking": True,
}

SAM20_SWITCHES = {"no_obj_embed_spatial": False, "proj_tpos_enc_in_obj_ptrs": False}
SAM21_ONLY_KEYS = ("no_obj_embed_spatial", "obj_ptr_tpos_proj.weight", "obj_ptr_tpos_proj.bias")

# (registry name, Meta config) for the key lists
FULL_CONFIGS = {
    "sam2.1_hiera_tiny": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_hiera_small": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_base_plus": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_large": "configs/sam2.1/sam2.1_hiera_l.yaml",
    "sam2_hiera_tiny": "configs/sam2/sam2_hiera_t.yaml",
    "sam2_hiera_small": "configs/sam2/sam2_hiera_s.yaml",
    "sam2_hiera_base_plus": "configs/sam2/sam2_hiera_b+.yaml",
    "sam2_hiera_large": "configs/sam2/sam2_hiera_l.yaml",
}

# What build_sam2_video_predictor(apply_postprocessing=True) sets, with hole filling off (it
# needs Meta's CUDA extension, and the transformers port has none).
PREDICTOR_OVERRIDES = [
    "++model._target_=sam2.sam2_video_predictor.SAM2VideoPredictor",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
    "++model.binarize_mask_from_pts_for_mem_enc=true",
    "++model.fill_hole_area=0",
]


def arch_overrides(a: dict) -> list[str]:
    """Hydra overrides that turn Meta's sam2.1_hiera_t.yaml into the reduced architecture."""
    d, s = a["d_model"], a["image_size"]
    dims = [a["embed_dim"] * 2**i for i in range(4)]
    rope = [s // 16, s // 16]

    def lst(v):
        return "[" + ",".join(str(x) for x in v) + "]"

    m = "++model."
    out = [
        f"{m}image_size={s}",
        f"{m}num_maskmem={a['num_maskmem']}",
        f"{m}multimask_output_for_tracking={str(a['multimask_output_for_tracking']).lower()}",
        f"{m}image_encoder.trunk.embed_dim={a['embed_dim']}",
        f"{m}image_encoder.trunk.num_heads={a['num_heads']}",
        f"{m}image_encoder.trunk.stages={lst(a['stages'])}",
        f"{m}image_encoder.trunk.global_att_blocks={lst(a['global_att_blocks'])}",
        f"{m}image_encoder.trunk.window_spec={lst(a['window_spec'])}",
        f"{m}image_encoder.trunk.window_pos_embed_bkg_spatial_size={lst(a['window_pos_embed_bkg_spatial_size'])}",
        f"{m}image_encoder.neck.d_model={d}",
        f"{m}image_encoder.neck.backbone_channel_list={lst(dims[::-1])}",
        f"{m}image_encoder.neck.position_encoding.num_pos_feats={d}",
        f"{m}memory_attention.d_model={d}",
        f"{m}memory_attention.num_layers={a['memory_attention_layers']}",
        f"{m}memory_attention.layer.d_model={d}",
        f"{m}memory_attention.layer.dim_feedforward={a['memory_attention_ffn_dim']}",
        f"{m}memory_encoder.out_dim={a['mem_dim']}",
        f"{m}memory_encoder.in_dim={d}",
        f"{m}memory_encoder.position_encoding.num_pos_feats={a['mem_dim']}",
        f"{m}memory_encoder.mask_downsampler.stride={a['mask_downsampler_stride']}",
        f"{m}memory_encoder.mask_downsampler.embed_dim={d}",
        f"{m}memory_encoder.fuser.layer.dim={d}",
        f"{m}memory_encoder.fuser.num_layers={a['memory_fuser_layers']}",
    ]
    for att in ("self_attention", "cross_attention"):
        p = f"{m}memory_attention.layer.{att}."
        out += [
            f"{p}embedding_dim={d}",
            f"{p}downsample_rate={a['memory_attention_downsample_rate']}",
            f"{p}feat_sizes={lst(rope)}",
        ]
    out.append(f"{m}memory_attention.layer.cross_attention.kv_in_dim={a['mem_dim']}")
    return out


def build_reduced(
    a: dict, config_name: str = "configs/sam2.1/sam2.1_hiera_t.yaml"
) -> torch.nn.Module:
    """Meta's SAM2VideoPredictor with the reduced architecture, random init (seeded)."""
    from sam2.modeling.sam.mask_decoder import MaskDecoder
    from sam2.modeling.sam.transformer import TwoWayTransformer

    cfg = compose(config_name=config_name, overrides=PREDICTOR_OVERRIDES + arch_overrides(a))
    OmegaConf.resolve(cfg)
    torch.manual_seed(SEED)
    model = instantiate(cfg.model, _recursive_=True)
    # Meta hard-codes the mask decoder's MLP width, heads, attention down-sampling and IoU-head
    # width in SAM2Base._build_sam_heads, and the fuser's 4x expansion in CXBlock; rebuild those
    # parts with Meta's own classes at the reduced sizes.
    d = a["d_model"]
    model.sam_mask_decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(
            depth=2,
            embedding_dim=d,
            mlp_dim=a["mask_decoder_mlp_dim"],
            num_heads=a["mask_decoder_heads"],
            attention_downsample_rate=a["mask_decoder_attention_downsample_rate"],
        ),
        transformer_dim=d,
        iou_head_depth=3,
        iou_head_hidden_dim=a["iou_head_hidden_dim"],
        use_high_res_features=model.use_high_res_features_in_sam,
        iou_prediction_use_sigmoid=model.iou_prediction_use_sigmoid,
        pred_obj_scores=model.pred_obj_scores,
        pred_obj_scores_mlp=model.pred_obj_scores_mlp,
        use_multimask_token_for_obj_ptr=model.use_multimask_token_for_obj_ptr,
        **(model.sam_mask_decoder_extra_args or {}),
    )
    for layer in model.memory_encoder.fuser.layers:
        layer.pwconv1 = torch.nn.Linear(d, a["memory_fuser_intermediate_dim"])
        layer.pwconv2 = torch.nn.Linear(a["memory_fuser_intermediate_dim"], d)
    return model.eval()


@torch.no_grad()
def perturb(model: torch.nn.Module) -> None:
    """Add seeded noise to every parameter, bias the object-score head, round to float16."""
    gen = torch.Generator().manual_seed(SEED)
    scale = 0.02
    for _, p in sorted(model.named_parameters()):
        noise = torch.randn(p.shape, generator=gen) * scale
        noise = noise + torch.sign(noise) * scale * 0.1 + (noise == 0) * scale
        p.add_(noise)
    model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.fill_(OBJECT_SCORE_BIAS)
    for _, p in [*model.named_parameters(), *model.named_buffers()]:
        p.copy_(p.half().float())  # the checkpoint stores float16; use exactly those values
        assert bool((p != 0).all()), "a tensor is exactly zero"


def make_clip(n: int, size: int) -> np.ndarray:
    """A bright ellipse drifting and growing over a noisy darker background, uint8 (T, S, S)."""
    rng = np.random.RandomState(SEED)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    frames = []
    for t in range(n):
        cy = size * (0.35 + 0.3 * t / (n - 1))
        cx = size * (0.55 - 0.15 * math.sin(math.pi * t / (n - 1)))
        ry, rx = size * (0.12 + 0.04 * t / (n - 1)), size * 0.18
        inside = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0
        img = 40 + 25 * rng.rand(size, size) + 150 * inside
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(frames)


def clip_to_pixels(clip: np.ndarray) -> torch.Tensor:
    """uint8 (T, S, S) -> float32 (T, 3, S, S): /255, grey to 3 channels, ImageNet mean/std."""
    x = torch.from_numpy(clip).float().div(255.0)[:, None].expand(-1, 3, -1, -1)
    mean = torch.tensor(IMAGE_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(IMAGE_STD, dtype=torch.float32)[:, None, None]
    return ((x - mean) / std).contiguous()


def _ellipse_box_and_centre(frame: np.ndarray, margin: float = 2.0):
    ys, xs = np.nonzero(frame > 150)
    box = [float(xs.min()) - margin, float(ys.min()) - margin]
    box += [float(xs.max()) + margin, float(ys.max()) + margin]
    return box, [float(round(xs.mean())), float(round(ys.mean()))]


def prompt_for(clip: np.ndarray) -> dict:
    """A box around the ellipse on the prompt frame plus one positive click at its centre."""
    box, point = _ellipse_box_and_centre(clip[PROMPT_FRAME])
    return {
        "frame": PROMPT_FRAME,
        "obj_id": 1,
        "box_xyxy": box,
        "points_xy": [point],
        "labels": [1],
        "transformers_points_xy": [box[:2], box[2:], point],
        "transformers_labels": [2, 3, 1],
    }


def scenario_prompts(clip: np.ndarray) -> dict:
    """Every scenario's prompts, in model-input pixels (x, y) of the 128 px clip."""
    first = prompt_for(clip)
    box15, _ = _ellipse_box_and_centre(clip[15])
    _, centre4 = _ellipse_box_and_centre(clip[4])
    mask = clip[PROMPT_FRAME] > 150
    ys, xs = np.nonzero(mask)
    tail_x = int(xs.max())
    tail_y = int(np.rint(ys.mean()))
    mask = mask.copy()
    mask[tail_y, tail_x : tail_x + 20] = True  # a one-pixel tail: 1/4 resolution loses it
    _, c14 = _ellipse_box_and_centre(clip[14])
    _, c5 = _ellipse_box_and_centre(clip[5])
    return {
        "first": first,
        "two_anchors": [
            {"frame": 4, "points_xy": [centre4], "labels": [1]},
            {"frame": 15, "box_xyxy": box15},
        ],
        "mask": {"frame": PROMPT_FRAME, "mask_yx": np.argwhere(mask).tolist()},
        "correction_forward": [
            {"frame": 14, "points_xy": [[c14[0] + 12.0, c14[1]]], "labels": [0]},
            {"frame": 14, "points_xy": [[c14[0] - 6.0, c14[1] + 4.0]], "labels": [1]},
        ],
        "correction_reverse": [
            {"frame": 5, "points_xy": [[c5[0], c5[1] - 10.0]], "labels": [0]},
        ],
    }


def _mask_of(p: dict, size: int) -> np.ndarray:
    m = np.zeros((size, size), bool)
    yx = np.asarray(p["mask_yx"], dtype=np.int64)
    m[yx[:, 0], yx[:, 1]] = True
    return m


class _Recorder:
    """Meta's low-res logits and object scores per computed frame, in order."""

    def __init__(self) -> None:
        self.frames: list[int] = []
        self.logits: list[np.ndarray] = []
        self.scores: list[float] = []

    def take(self, out: dict, t: int) -> None:
        self.frames.append(int(t))
        self.logits.append(out["pred_masks"][0, 0].float().numpy().copy())
        self.scores.append(float(out["object_score_logits"].reshape(-1)[0]))

    def arrays(self, name: str) -> dict:
        return {
            f"{name}__frames": np.array(self.frames, dtype=np.int64),
            f"{name}__logits": np.stack(self.logits).astype(np.float32),
            f"{name}__scores": np.array(self.scores, dtype=np.float32),
        }


def _cc_scipy(mask: torch.Tensor):
    """CPU stand-in for ``sam2._C.get_connected_componnets``: 8-connected labels and areas of
    an (N, 1, H, W) binary mask, both (N, 1, H, W) int32 (areas 0 outside the components)."""
    from scipy import ndimage

    m = mask.to(torch.bool).cpu().numpy()
    labels = np.zeros(m.shape, np.int32)
    counts = np.zeros(m.shape, np.int32)
    for n in range(m.shape[0]):
        lab, _ = ndimage.label(m[n, 0], structure=np.ones((3, 3), bool))
        area = np.bincount(lab.ravel())
        area[0] = 0
        labels[n, 0] = lab
        counts[n, 0] = area[lab]
    return torch.from_numpy(labels), torch.from_numpy(counts)


def _state(model, pixels: torch.Tensor):
    import sam2.sam2_video_predictor as svp

    size = pixels.shape[-1]
    svp.load_video_frames = lambda **_: (pixels.clone(), size, size)
    return model.init_state(video_path="<in-memory clip>")


def _out(state, t: int) -> dict:
    per_obj = state["output_dict_per_obj"][0]
    o = per_obj["cond_frame_outputs"].get(t)
    return o if o is not None else per_obj["non_cond_frame_outputs"][t]


def _prompt(model, state, p: dict, *, clear: bool = True) -> None:
    if "mask_yx" in p:
        model.add_new_mask(state, frame_idx=p["frame"], obj_id=1, mask=_mask_of(p, 128))
        return
    model.add_new_points_or_box(
        state,
        frame_idx=p["frame"],
        obj_id=1,
        points=None if "points_xy" not in p else np.array(p["points_xy"], dtype=np.float32),
        labels=None if "labels" not in p else np.array(p["labels"], dtype=np.int32),
        box=None if "box_xyxy" not in p else np.array(p["box_xyxy"], dtype=np.float32),
        clear_old_points=clear,
    )


def _temp_out(state, t: int) -> dict:
    """The output Meta keeps for a frame that just received a prompt (before propagation)."""
    return state["temp_output_dict_per_obj"][0]["cond_frame_outputs"][t]


def _propagate(model, state, rec: _Recorder, start: int, up: int, down: int) -> None:
    """Meta's propagation from ``start``: ``up`` frames forward, then ``down`` in reverse,
    recording the frames it tracks (``start`` itself is a conditioning frame, not recorded)."""
    for reverse, n in ((False, up), (True, down)):
        if n <= 0:
            continue
        for t, _ids, _masks in model.propagate_in_video(
            state, start_frame_idx=start, max_frame_num_to_track=n, reverse=reverse
        ):
            if t != start:
                rec.take(_out(state, t), t)


def run_scenarios(model, pixels: torch.Tensor, prompts: dict) -> dict:
    """Every scenario on one model (see the module docstring)."""
    n = pixels.shape[0]
    first = prompts["first"]
    k = first["frame"]
    result: dict = {}

    def one_anchor(fill: int):
        model.fill_hole_area = fill
        model.add_all_frames_to_correct_as_cond = False
        st = _state(model, pixels)
        rec = _Recorder()
        _prompt(model, st, first)
        rec.take(_temp_out(st, k), k)
        _propagate(model, st, rec, k, n - 1 - k, k)
        return st, rec

    _, rec = one_anchor(0)
    result.update(rec.arrays("one_anchor"))
    _, rec = one_anchor(8)
    result.update(rec.arrays("one_anchor_filled"))

    # two anchors, each run in its own fresh state holding both (nearest-anchor stretches)
    model.fill_hole_area = 8
    a, b = prompts["two_anchors"]
    rec = _Recorder()
    for i, (lo, hi) in enumerate(((0, (a["frame"] + b["frame"]) // 2), (None, n - 1))):
        st = _state(model, pixels)
        _prompt(model, st, a)
        _prompt(model, st, b)
        if i == 0:
            rec.take(_temp_out(st, a["frame"]), a["frame"])
            rec.take(_temp_out(st, b["frame"]), b["frame"])
            _propagate(model, st, rec, a["frame"], hi - a["frame"], a["frame"] - lo)
        else:
            mid = (a["frame"] + b["frame"]) // 2
            _propagate(model, st, rec, b["frame"], hi - b["frame"], b["frame"] - mid - 1)
    result.update(rec.arrays("two_anchors"))

    # a mask prompt
    st = _state(model, pixels)
    rec = _Recorder()
    _prompt(model, st, prompts["mask"])
    rec.take(_temp_out(st, k), k)
    _propagate(model, st, rec, k, n - 1 - k, k)
    result.update(rec.arrays("mask"))

    # corrections after propagating, each followed by the run of the slices it takes over
    for name in ("correction_forward", "correction_reverse"):
        clicks = prompts[name]
        st, _ = one_anchor(8)
        model.add_all_frames_to_correct_as_cond = True
        rec = _Recorder()
        j = clicks[0]["frame"]
        for m, click in enumerate(clicks):
            _prompt(model, st, click, clear=m == 0)
            rec.take(_temp_out(st, j), j)
        model.propagate_in_video_preflight(st)  # encodes the corrected frame's memory
        corrected = st["output_dict_per_obj"][0]["cond_frame_outputs"][j]
        # the fresh state of the corrected anchor's run: both anchors, nothing tracked
        st2 = _state(model, pixels)
        _prompt(model, st2, first)
        model.propagate_in_video_preflight(st2)
        st2["output_dict_per_obj"][0]["cond_frame_outputs"][j] = corrected
        if j > k:
            lo, hi = (k + j) // 2 + 1, n - 1
        else:
            lo, hi = 0, (j + k) // 2
        _propagate(model, st2, rec, j, hi - j, j - lo)
        result.update(rec.arrays(name))
    model.add_all_frames_to_correct_as_cond = False

    # MedSAM2's CT script: forward, reset_state, the prompt again, reverse
    st = _state(model, pixels)
    rec = _Recorder()
    _prompt(model, st, first)
    rec.take(_temp_out(st, k), k)
    _propagate(model, st, rec, k, n - 1 - k, 0)
    model.reset_state(st)
    _prompt(model, st, first)
    _propagate(model, st, rec, k, 0, k)
    result.update(rec.arrays("reset_directions"))
    return result


def small_frames() -> tuple[np.ndarray, np.ndarray]:
    """Three non-square uint8 frames and Meta's loader's resize of them to the model size."""
    import tempfile

    from PIL import Image
    from sam2.utils.misc import _load_img_as_tensor

    rng = np.random.RandomState(SEED + 1)
    h, w = 96, 80
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    frames = []
    for t in range(3):
        inside = ((yy - h * (0.4 + 0.1 * t)) / (h * 0.2)) ** 2 + ((xx - w * 0.5) / (w * 0.3)) ** 2
        img = 40 + 25 * rng.rand(h, w) + 150 * (inside <= 1.0) + 30 * (xx / w)
        frames.append(np.clip(img, 0, 255).astype(np.uint8))
    frames = np.stack(frames)
    out = []
    with tempfile.TemporaryDirectory() as tmp:
        for t, f in enumerate(frames):
            path = Path(tmp) / f"{t}.png"  # lossless: only the resize differs from the array
            Image.fromarray(f).save(path)
            img, _, _ = _load_img_as_tensor(str(path), ARCH["image_size"])
            out.append(img[0].float().numpy())
    return frames, np.stack(out).astype(np.float32)


def key_shapes() -> dict:
    """Meta's key -> shape of each registry architecture (random init; no weights are read)."""
    out = {}
    for name, cfg_name in FULL_CONFIGS.items():
        cfg = compose(config_name=cfg_name)
        OmegaConf.resolve(cfg)
        model = instantiate(cfg.model, _recursive_=True)
        out[name] = {k: list(v.shape) for k, v in model.state_dict().items()}
        del model
    return out


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    GlobalHydra.instance().clear()
    initialize_config_module("sam2", version_base="1.2")
    torch.set_num_threads(1)  # one thread: the reference does not depend on the box's core count
    import sam2.utils.misc as misc

    misc.get_connected_components = _cc_scipy  # the CUDA kernel's CPU stand-in (docstring)

    model = build_reduced(ARCH)
    perturb(model)
    state = model.state_dict()
    # the prompt encoder's random Fourier matrix is Meta's only persistent buffer
    expected = {k for k, _ in model.named_parameters()}
    expected.add("sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix")
    assert set(state) == expected, sorted(set(state) ^ expected)
    ckpt = {"model": {k: v.detach().half().contiguous() for k, v in state.items()}}
    torch.save(ckpt, OUT / "meta_reduced.pt")

    clip = make_clip(NUM_FRAMES, ARCH["image_size"])
    np.save(OUT / "clip.npy", clip)
    prompts = scenario_prompts(clip)
    with torch.inference_mode():
        ref = run_scenarios(model, clip_to_pixels(clip), prompts)
    np.savez_compressed(OUT / "reference.npz", **ref)

    # SAM 2.0 behaviour (no temporal encoding of object pointers, no occlusion embedding) from
    # the same weights: Meta's SAM 2.0 key set is the SAM 2.1 one minus these two tensors.
    sam20 = build_reduced({**ARCH, **SAM20_SWITCHES}, config_name="configs/sam2/sam2_hiera_t.yaml")
    sam20.load_state_dict({k: v for k, v in state.items() if k not in SAM21_ONLY_KEYS}, strict=True)
    with torch.inference_mode():
        ref20 = run_scenarios(sam20, clip_to_pixels(clip), prompts)
    np.savez_compressed(OUT / "reference_sam2.0.npz", **ref20)

    small, small_meta = small_frames()
    np.save(OUT / "frames_small.npy", small)
    np.save(OUT / "frames_small_meta.npy", small_meta)

    config = {
        "arch": ARCH,
        "sam2.0_arch_overrides": SAM20_SWITCHES,
        "sam2.1_only_keys": list(SAM21_ONLY_KEYS),
        "prompt": prompts["first"],
        "scenarios": {k: v for k, v in prompts.items() if k != "first"},
        "num_frames": NUM_FRAMES,
        "pixels": {
            "recipe": "uint8 -> float32 / 255 -> grey repeated to 3 channels -> (x - mean) / std",
            "mean": list(IMAGE_MEAN),
            "std": list(IMAGE_STD),
        },
        "frames_small": "frames_small.npy uint8 (3, 96, 80) -> frames_small_meta.npy float32 "
        "(3, 128, 128): channel 0 of sam2.utils.misc._load_img_as_tensor (PIL RGB resize, "
        "bicubic, 8-bit), before mean/std normalisation",
        "seed": SEED,
        "object_score_bias": OBJECT_SCORE_BIAS,
        "meta_package": "sam2==1.1.0 (PyPI sdist of Meta's December 2024 code)",
        "meta_predictor": "SAM2VideoPredictor as build_sam2_video_predictor(apply_postprocessing=True) "
        "builds it; fill_hole_area 0 in one_anchor, 8 elsewhere (connected components by scipy, "
        "8-connected); add_all_frames_to_correct_as_cond=True for the corrections",
        "torch": torch.__version__,
    }
    (OUT / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (OUT / "meta_keys.json").write_text(json.dumps(key_shapes(), separators=(",", ":")) + "\n")
    for f in sorted(OUT.iterdir()):
        print(f"{f.name:24s} {f.stat().st_size:>9d} bytes")
    for family, r in (("sam2.1", ref), ("sam2.0", ref20)):
        for name in sorted({key.split("__")[0] for key in r}):
            lg = r[f"{name}__logits"]
            print(family, name, r[f"{name}__frames"].tolist(), (lg > 0).sum((1, 2)).tolist())


if __name__ == "__main__":
    main()
