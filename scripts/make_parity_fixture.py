"""Generate the parity fixture in tests/fixtures/parity/ with Meta's own SAM 2 code.

The fixture lets the test suite check, with no network and no real weights, that sam2-med's
conversion of Meta checkpoints and its transformers-based propagation reproduce Meta's
predictor. Everything here is deterministic (fixed seeds, CPU, float32).

What it writes (see tests/fixtures/parity/README.md for the full description):

* ``meta_reduced.pt``  a reduced SAM 2.1 model with random weights, in Meta's checkpoint format
  (``{"model": state_dict}``), float16 tensors whose values are the exact float32 weights used.
* ``clip.npy``         the synthetic clip, uint8 (T, S, S).
* ``reference.npz``    Meta's low-resolution mask logits, forward then reverse from the prompt.
* ``reference_sam2.0.npz``  the same run with SAM 2.0 behaviour (same weights minus the three
  SAM 2.1-only tensors, Meta's ``sam2_hiera_t.yaml`` switches).
* ``config.json``      the reduced architecture in sam2-med's ``arch=`` format, the prompt, and
  the pixel recipe.
* ``meta_keys.json``   Meta's key -> shape lists of every registry architecture (no weights),
  for the strict key-mapping tests.

How to rerun it (takes about a minute; needs only the package registry, never model weights)::

    python3.11 -m venv /tmp/metavenv
    . /tmp/metavenv/bin/activate
    pip install torch==2.13.0          # the CPU wheel; never torchvision
    pip install numpy wheel "setuptools>=61"
    cd /tmp && pip download sam2==1.1.0 --no-deps --no-binary :all: --no-build-isolation
    SAM2_BUILD_CUDA=0 pip install --no-build-isolation --no-deps ./sam2-1.1.0.tar.gz
    pip install hydra-core iopath pillow tqdm numpy
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


def prompt_for(clip: np.ndarray) -> dict:
    """A box around the ellipse on the prompt frame plus one positive click at its centre."""
    ys, xs = np.nonzero(clip[PROMPT_FRAME] > 150)
    box = [float(xs.min()) - 2, float(ys.min()) - 2, float(xs.max()) + 2, float(ys.max()) + 2]
    point = [float(round(xs.mean())), float(round(ys.mean()))]
    return {
        "frame": PROMPT_FRAME,
        "obj_id": 1,
        "box_xyxy": box,
        "points_xy": [point],
        "labels": [1],
        "transformers_points_xy": [box[:2], box[2:], point],
        "transformers_labels": [2, 3, 1],
    }


def run_meta(model, pixels: torch.Tensor, prompt: dict) -> dict:
    """Meta's predictor on in-memory frames: prompt, propagate forward, then reverse."""
    import sam2.sam2_video_predictor as svp

    size = pixels.shape[-1]
    svp.load_video_frames = lambda **_: (pixels.clone(), size, size)
    state = model.init_state(video_path="<in-memory clip>")
    model.add_new_points_or_box(
        state,
        frame_idx=prompt["frame"],
        obj_id=prompt["obj_id"],
        points=np.array(prompt["points_xy"], dtype=np.float32),
        labels=np.array(prompt["labels"], dtype=np.int32),
        box=np.array(prompt["box_xyxy"], dtype=np.float32),
    )
    out = {}
    for name, reverse in (("forward", False), ("reverse", True)):
        frames, logits, scores = [], [], []
        for t, _ids, _masks in model.propagate_in_video(
            state, start_frame_idx=prompt["frame"], reverse=reverse
        ):
            per_obj = state["output_dict_per_obj"][0]
            o = per_obj["cond_frame_outputs"].get(t) or per_obj["non_cond_frame_outputs"][t]
            frames.append(t)
            logits.append(o["pred_masks"][0, 0].float().numpy())
            scores.append(float(o["object_score_logits"].reshape(-1)[0]))
        out[f"{name}_frames"] = np.array(frames, dtype=np.int64)
        out[f"{name}_logits"] = np.stack(logits).astype(np.float32)
        out[f"{name}_object_score_logits"] = np.array(scores, dtype=np.float32)
    return out


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
    prompt = prompt_for(clip)
    with torch.inference_mode():
        ref = run_meta(model, clip_to_pixels(clip), prompt)
    np.savez_compressed(OUT / "reference.npz", **ref)

    # SAM 2.0 behaviour (no temporal encoding of object pointers, no occlusion embedding) from
    # the same weights: Meta's SAM 2.0 key set is the SAM 2.1 one minus these two tensors.
    sam20 = build_reduced({**ARCH, **SAM20_SWITCHES}, config_name="configs/sam2/sam2_hiera_t.yaml")
    sam20.load_state_dict({k: v for k, v in state.items() if k not in SAM21_ONLY_KEYS}, strict=True)
    with torch.inference_mode():
        ref20 = run_meta(sam20, clip_to_pixels(clip), prompt)
    np.savez_compressed(OUT / "reference_sam2.0.npz", **ref20)

    config = {
        "arch": ARCH,
        "sam2.0_arch_overrides": SAM20_SWITCHES,
        "sam2.1_only_keys": list(SAM21_ONLY_KEYS),
        "prompt": prompt,
        "num_frames": NUM_FRAMES,
        "pixels": {
            "recipe": "uint8 -> float32 / 255 -> grey repeated to 3 channels -> (x - mean) / std",
            "mean": list(IMAGE_MEAN),
            "std": list(IMAGE_STD),
        },
        "seed": SEED,
        "object_score_bias": OBJECT_SCORE_BIAS,
        "meta_package": "sam2==1.1.0 (PyPI sdist of Meta's December 2024 code)",
        "meta_predictor": "SAM2VideoPredictor as build_sam2_video_predictor(apply_postprocessing=True) "
        "builds it, fill_hole_area=0",
        "torch": torch.__version__,
    }
    (OUT / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (OUT / "meta_keys.json").write_text(json.dumps(key_shapes(), separators=(",", ":")) + "\n")
    for f in sorted(OUT.iterdir()):
        print(f"{f.name:20s} {f.stat().st_size:>9d} bytes")
    for name in ("forward", "reverse"):
        lg = ref[f"{name}_logits"]
        print(
            name,
            ref[f"{name}_frames"].tolist(),
            "positive px per frame",
            (lg > 0).sum((1, 2)).tolist(),
        )


if __name__ == "__main__":
    main()
