"""Architecture dictionaries: the one place a SAM 2 variant's shape is written down.

An *arch* is a plain JSON-able dict (see :func:`arch_to_config` for its keys). The registry stores
one per model, the parity fixture stores one in ``config.json``, and
``load_model(..., arch=...)`` takes one for custom or reduced checkpoints.
"""

from __future__ import annotations

import copy
from typing import Any

from transformers import Sam2VideoConfig, Sam2VideoMaskDecoderConfig, Sam2VideoPromptEncoderConfig

__all__ = ["DEFAULT_ARCH", "arch_to_config", "complete_arch"]

# Architecture of SAM 2.1 hiera-tiny at 1024 px (Meta's sam2.1_hiera_t.yaml); the defaults every
# ``arch`` dict is completed from.
DEFAULT_ARCH: dict[str, Any] = {
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
    "multimask_output_in_sam": True,
    "dynamic_multimask_via_stability": True,
}


def complete_arch(arch: dict[str, Any]) -> dict[str, Any]:
    """Fill an architecture dict with SAM 2.1 hiera-tiny defaults.

    Parameters
    ----------
    arch
        Partial architecture.

    Returns
    -------
    dict
        A new dict with every key of :data:`DEFAULT_ARCH`.

    Raises
    ------
    ValueError
        An unknown key.
    """
    unknown = sorted(set(arch) - set(DEFAULT_ARCH))
    if unknown:
        raise ValueError(f"unknown architecture keys {unknown}; known: {sorted(DEFAULT_ARCH)}")
    return {**copy.deepcopy(DEFAULT_ARCH), **copy.deepcopy(dict(arch))}


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
        ``proj_tpos_enc_in_obj_ptrs`` (Meta's ``add_tpos_enc_to_obj_ptrs`` and
        ``proj_tpos_enc_in_obj_ptrs``: both true in SAM 2.1, both false in SAM 2.0; transformers has
        one switch for the pair), ``multimask_output_for_tracking``, ``multimask_output_in_sam``
        (three masks for a single click; Meta's YAML key of the same name) and
        ``dynamic_multimask_via_stability`` (a single-mask output falls back to the best of the
        three when unstable; Meta's ``sam_mask_decoder_extra_args``).

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
    a = complete_arch(arch)
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
    # sub-configs as objects, not dicts: transformers 5.10-5.19 build a dict mask_decoder_config
    # as a prompt-encoder config and the model then fails to build
    return Sam2VideoConfig(
        vision_config=vision,
        prompt_encoder_config=Sam2VideoPromptEncoderConfig(
            hidden_size=d, image_size=size, patch_size=16
        ),
        mask_decoder_config=Sam2VideoMaskDecoderConfig(
            hidden_size=d,
            mlp_dim=a["mask_decoder_mlp_dim"],
            num_attention_heads=a["mask_decoder_heads"],
            attention_downsample_rate=a["mask_decoder_attention_downsample_rate"],
            iou_head_hidden_dim=a["iou_head_hidden_dim"],
            dynamic_multimask_via_stability=bool(a["dynamic_multimask_via_stability"]),
        ),
        image_size=size,
        num_maskmem=a["num_maskmem"],
        enable_occlusion_spatial_embedding=bool(a["no_obj_embed_spatial"]),
        enable_temporal_pos_encoding_for_object_pointers=bool(a["proj_tpos_enc_in_obj_ptrs"]),
        multimask_output_for_tracking=bool(a["multimask_output_for_tracking"]),
        multimask_output_in_sam=bool(a["multimask_output_in_sam"]),
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
