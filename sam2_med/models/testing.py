"""Small random SAM 2 models for tests and benchmarks.

Nothing here is a trained model: the weights are random, so masks mean nothing. They exist so
that sessions, propagation, memory handling and geometry can be tested on a CPU in seconds, with
no weights to download.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import Sam2VideoConfig, Sam2VideoModel

from .arch import arch_to_config

__all__ = ["TINY_ARCH", "perturb_parameters", "random_model", "tiny_config"]

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
    config: Sam2VideoConfig,
    *,
    seed: int = 0,
    object_score_bias: float = 10.0,
    blank_masks: bool = False,
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
    blank_masks
        Zero the mask decoder's hypernetwork outputs: every mask logit is exactly 0, so every
        mask is empty whatever the object score says (a model that keeps "seeing" an object it
        does not draw).

    Returns
    -------
    transformers.Sam2VideoModel
        In eval mode, on the CPU, float32, with every parameter perturbed (no exact zeros, so a
        wrong key mapping cannot hide behind zero-initialised tensors), and the two copies of the
        prompt Fourier matrix equal, as in every model converted from Meta's format (so
        :func:`sam2_med.models.save_meta_checkpoint` can write it).
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
        if blank_masks:
            for mlp in model.mask_decoder.output_hypernetworks_mlps:
                mlp.proj_out.weight.zero_()
                mlp.proj_out.bias.zero_()
        # Meta's checkpoints hold one random Fourier matrix for prompts and image positions;
        # transformers keeps two copies, which every converted model has equal.
        model.prompt_encoder.shared_embedding.positional_embedding.copy_(
            model.shared_image_embedding.positional_embedding
        )
    return model.eval()
