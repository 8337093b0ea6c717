"""Small random SAM 2 models for tests and benchmarks.

Nothing here is a trained model: the weights are random, so masks mean nothing. They exist so
that sessions, propagation, memory handling and geometry can be tested on a CPU in seconds, with
no weights to download.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from transformers import Sam2VideoConfig, Sam2VideoModel

__all__ = ["TINY_ARCH", "arch_to_config", "random_model", "tiny_config"]

#: The reduced SAM 2.1-like architecture of :func:`tiny_config`, in the ``arch=`` format that
#: :func:`sam2_med.models.load_model` accepts (see :func:`arch_to_config` for the keys).
TINY_ARCH: dict[str, Any] = {
    "image_size": 128,
    # Hiera image encoder: four stages as in SAM 2, five blocks; the global-attention block must
    # not open a stage (Hiera pools queries there with a windowed size).
    "embed_dim": 4,
    "num_heads": 1,
    "stages": [1, 1, 2, 1],
    "global_att_blocks": [3],
    "window_spec": [8, 4, 14, 7],
    "window_pos_embed_bkg_spatial_size": [7, 7],
    # shared width of the FPN neck, prompt encoder, mask decoder and memory attention; 128 is the
    # smallest the transformers port runs (it must exceed the 64 memory channels)
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
    # SAM 2.1 behaviour switches
    "no_obj_embed_spatial": True,
    "proj_tpos_enc_in_obj_ptrs": True,
    "multimask_output_for_tracking": True,
}

# Architecture of SAM 2.1 hiera-tiny at 1024 px (Meta's sam2.1_hiera_t.yaml); the defaults every
# ``arch`` dict is completed from.
_DEFAULT_ARCH: dict[str, Any] = {
    "image_size": 1024,
    "embed_dim": 96,
    "num_heads": 1,
    "stages": [1, 2, 7, 2],
    "global_att_blocks": [5, 7, 9],
    "window_spec": [8, 4, 14, 7],
    "window_pos_embed_bkg_spatial_size": [7, 7],
    "d_model": 256,
    "mem_dim": 64,
    "mask_decoder_mlp_dim": 2048,
    "mask_decoder_heads": 8,
    "mask_decoder_attention_downsample_rate": 2,
    "iou_head_hidden_dim": 256,
    "memory_attention_layers": 4,
    "memory_attention_downsample_rate": 1,
    "memory_attention_ffn_dim": 2048,
    "mask_downsampler_stride": 2,
    "memory_fuser_layers": 2,
    "memory_fuser_intermediate_dim": 1024,
    "num_maskmem": 7,
    "no_obj_embed_spatial": True,
    "proj_tpos_enc_in_obj_ptrs": True,
    "multimask_output_for_tracking": True,
}


def arch_to_config(arch: dict[str, Any]) -> Sam2VideoConfig:
    """Build a transformers configuration from an architecture dictionary.

    Parameters
    ----------
    arch
        Architecture in sam2-med's ``arch`` format; missing keys take SAM 2.1 hiera-tiny values.
        Keys: ``image_size`` (input side in pixels, a multiple of 32), ``embed_dim`` and
        ``num_heads`` (first Hiera stage; both double at every stage), ``stages`` (blocks per
        stage, four stages), ``global_att_blocks`` (indices over all blocks),
        ``window_spec``, ``window_pos_embed_bkg_spatial_size``, ``d_model`` (width of neck,
        prompt encoder, mask decoder and memory attention; a multiple of ``mem_dim`` above it),
        ``mem_dim`` (memory channels; the transformers port requires 64), ``mask_decoder_mlp_dim``, ``mask_decoder_heads``,
        ``mask_decoder_attention_downsample_rate``,
        ``iou_head_hidden_dim``, ``memory_attention_layers``, ``memory_attention_downsample_rate``,
        ``memory_attention_ffn_dim``,
        ``mask_downsampler_stride`` (2 or 4; total stride is 16), ``memory_fuser_layers``,
        ``memory_fuser_intermediate_dim``, ``num_maskmem``, ``no_obj_embed_spatial``,
        ``proj_tpos_enc_in_obj_ptrs``, ``multimask_output_for_tracking``.

    Returns
    -------
    transformers.Sam2VideoConfig
        A configuration whose sizes (backbone feature sizes, RoPE feature sizes, prompt encoder
        image size) all follow ``image_size``.

    Raises
    ------
    ValueError
        An unknown key, an image size that is not a positive multiple of 32, or widths the
        transformers port cannot run.
    """
    unknown = sorted(set(arch) - set(_DEFAULT_ARCH))
    if unknown:
        raise ValueError(f"unknown architecture keys {unknown}; known: {sorted(_DEFAULT_ARCH)}")
    a = {**copy.deepcopy(_DEFAULT_ARCH), **copy.deepcopy(arch)}
    size = int(a["image_size"])
    if size <= 0 or size % 32:
        raise ValueError(f"image_size must be a positive multiple of 32, got {size}")
    if a["mem_dim"] != 64:
        raise ValueError("mem_dim must be 64: the transformers SAM 2 port hard-codes it")
    if a["d_model"] <= a["mem_dim"] or a["d_model"] % a["mem_dim"]:
        # the transformers port only handles object pointers split into d_model / mem_dim tokens
        raise ValueError(f"d_model must be a multiple of mem_dim above it, got {a['d_model']}")
    if len(a["stages"]) != 4:
        raise ValueError(f"stages must list four stages, got {a['stages']}")
    dims = [a["embed_dim"] * 2**i for i in range(4)]
    heads = [a["num_heads"] * 2**i for i in range(4)]
    d = a["d_model"]
    vision = {
        "model_type": "sam2_vision_model",
        "backbone_config": {
            "model_type": "sam2_hiera_det_model",
            "hidden_size": a["embed_dim"],
            "num_attention_heads": a["num_heads"],
            "image_size": [size, size],
            "blocks_per_stage": list(a["stages"]),
            "embed_dim_per_stage": dims,
            "num_attention_heads_per_stage": heads,
            "window_size_per_stage": list(a["window_spec"]),
            "global_attention_blocks": list(a["global_att_blocks"]),
            "window_positional_embedding_background_size": list(
                a["window_pos_embed_bkg_spatial_size"]
            ),
        },
        "backbone_channel_list": dims[::-1],
        "backbone_feature_sizes": [[size // 4] * 2, [size // 8] * 2, [size // 16] * 2],
        "fpn_hidden_size": d,
    }
    return Sam2VideoConfig(
        vision_config=vision,
        prompt_encoder_config={"hidden_size": d, "image_size": size, "patch_size": 16},
        mask_decoder_config={
            "hidden_size": d,
            "mlp_dim": a["mask_decoder_mlp_dim"],
            "num_attention_heads": a["mask_decoder_heads"],
            "attention_downsample_rate": a["mask_decoder_attention_downsample_rate"],
            "iou_head_hidden_dim": a["iou_head_hidden_dim"],
        },
        image_size=size,
        num_maskmem=a["num_maskmem"],
        enable_occlusion_spatial_embedding=bool(a["no_obj_embed_spatial"]),
        enable_temporal_pos_encoding_for_object_pointers=bool(a["proj_tpos_enc_in_obj_ptrs"]),
        multimask_output_for_tracking=bool(a["multimask_output_for_tracking"]),
        memory_attention_hidden_size=d,
        memory_attention_num_layers=a["memory_attention_layers"],
        memory_attention_downsample_rate=a["memory_attention_downsample_rate"],
        memory_attention_feed_forward_hidden_size=a["memory_attention_ffn_dim"],
        memory_attention_rope_feat_sizes=[size // 16, size // 16],
        memory_encoder_hidden_size=d,
        memory_encoder_output_channels=a["mem_dim"],
        mask_downsampler_embed_dim=d,
        mask_downsampler_stride=a["mask_downsampler_stride"],
        memory_fuser_num_layers=a["memory_fuser_layers"],
        memory_fuser_embed_dim=d,
        memory_fuser_intermediate_dim=a["memory_fuser_intermediate_dim"],
    )


def tiny_config(image_size: int = 128, **overrides: Any) -> Sam2VideoConfig:
    """A reduced SAM 2.1-like configuration that propagates fast on a CPU.

    Parameters
    ----------
    image_size
        Model input side in pixels (a multiple of 32; 128, 256 and 512 are tested). Every size
        that depends on it (backbone feature sizes, memory-attention RoPE grid ``size / 16``,
        prompt encoder image size) is set to match.
    **overrides
        Keys of :data:`TINY_ARCH` to change (for example ``memory_attention_layers=1``).

    Returns
    -------
    transformers.Sam2VideoConfig
        Four Hiera stages of 1-1-2-1 blocks (widths 4-8-16-32), ``d_model`` 128, one
        memory-attention layer, seven memory slots, SAM 2.1 switches (about 0.7 M parameters).
        The parity fixture in ``tests/fixtures/parity`` uses this architecture.
    """
    return arch_to_config({**TINY_ARCH, **overrides, "image_size": image_size})


@torch.no_grad()
def perturb_parameters(model: torch.nn.Module, *, seed: int = 0, scale: float = 0.02) -> None:
    """Add seeded noise to every parameter so that none is exactly zero or exactly its init.

    Parameters
    ----------
    model
        Module changed in place.
    seed
        Seed of the private generator (the global RNG is left alone).
    scale
        Standard deviation of the additive noise. LayerNorm-like weights (all ones at init)
        get the same additive noise, so they stay near 1.
    """
    gen = torch.Generator().manual_seed(seed)
    for _, param in sorted(model.named_parameters()):
        noise = torch.randn(param.shape, generator=gen, dtype=torch.float32) * scale
        # keep |noise| away from 0 so no element ends up exactly zero
        noise = noise + torch.sign(noise) * scale * 0.1 + (noise == 0) * scale
        param.add_(noise.to(param.dtype))


def random_model(
    config: Sam2VideoConfig, *, seed: int = 0, object_score_bias: float = 10.0
) -> Sam2VideoModel:
    """A randomly initialised ``Sam2VideoModel`` whose masks come out non-empty.

    Parameters
    ----------
    config
        Architecture, e.g. :func:`tiny_config`.
    seed
        Seed for the initialisation and the perturbation; the same seed gives the same weights.
    object_score_bias
        Value of the bias of the last layer of the object-score head. A large positive value
        makes the model say "object present" on every frame; with random weights it often says
        "no object" otherwise, and masks come out empty.

    Returns
    -------
    transformers.Sam2VideoModel
        In eval mode, on the CPU, float32, with every parameter perturbed (no exact zeros, so a
        wrong key mapping cannot hide behind zero-initialised tensors).
    """
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model = Sam2VideoModel(config)
    finally:
        torch.random.set_rng_state(state)
    perturb_parameters(model, seed=seed)
    with torch.no_grad():
        model.mask_decoder.pred_obj_score_head.proj_out.bias.fill_(object_score_bias)
    return model.eval()
