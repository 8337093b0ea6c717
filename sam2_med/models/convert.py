"""Key mapping between Meta's SAM 2 checkpoints and transformers' ``Sam2VideoModel``.

Meta's checkpoints (SAM 2, SAM 2.1, and fine-tunes of them such as MedSAM2) are ``torch.save``
dicts ``{"model": state_dict}`` whose keys follow Meta's module tree (``image_encoder.trunk``,
``sam_mask_decoder``, ...). transformers names the same tensors differently. The renames are
regular, so this module writes them down once as a table of template pairs that is read in both
directions, plus four structural rules:

* Meta's multi-layer perceptrons number their linear layers ``layers.0 .. layers.{n-1}``;
  transformers calls the first ``proj_in``, the last ``proj_out`` and the middle ones
  ``layers.0 .. layers.{n-3}``.
* Meta's mask down-sampler is one ``nn.Sequential`` (conv, norm, activation per stage, then a
  final conv); transformers splits it into ``layers.{k}.conv``, ``layers.{k}.layer_norm`` and
  ``final_conv``.
* Meta stores the four point embeddings as four ``(1, C)`` tensors; transformers stacks them in
  one ``(4, C)`` embedding.
* Meta's prompt encoder owns the random Fourier matrix; transformers keeps one copy at the
  model level and one in the prompt encoder.

Conversion is strict: a key no rule matches is an error, and :func:`load_meta_state_dict`
compares the converted keys and shapes with the target model before loading anything.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping

import torch

from .errors import CheckpointError

__all__ = [
    "hf_to_meta_state_dict",
    "infer_arch",
    "load_meta_state_dict",
    "meta_to_hf_state_dict",
]

# --- template pairs (Meta name, transformers name), read in both directions -----------------
# Placeholders: {n} any index, {k} a digit, {p} weight|bias, {mlp} proj_in|proj_out|layers.N
# (after the MLP renumbering), {attn} an attention module name, {qkv} q_proj|k_proj|v_proj.
_P = "{p}"
_RULES: list[tuple[str, str]] = [
    # Hiera trunk
    ("image_encoder.trunk.pos_embed", "vision_encoder.backbone.pos_embed"),
    ("image_encoder.trunk.pos_embed_window", "vision_encoder.backbone.pos_embed_window"),
    (
        "image_encoder.trunk.patch_embed.proj.{p}",
        "vision_encoder.backbone.patch_embed.projection.{p}",
    ),
    (
        "image_encoder.trunk.blocks.{n}.norm{k}.{p}",
        "vision_encoder.backbone.blocks.{n}.layer_norm{k}.{p}",
    ),
    (
        "image_encoder.trunk.blocks.{n}.attn.qkv.{p}",
        "vision_encoder.backbone.blocks.{n}.attn.qkv.{p}",
    ),
    (
        "image_encoder.trunk.blocks.{n}.attn.proj.{p}",
        "vision_encoder.backbone.blocks.{n}.attn.proj.{p}",
    ),
    ("image_encoder.trunk.blocks.{n}.proj.{p}", "vision_encoder.backbone.blocks.{n}.proj.{p}"),
    (
        "image_encoder.trunk.blocks.{n}.mlp.{mlp}.{p}",
        "vision_encoder.backbone.blocks.{n}.mlp.{mlp}.{p}",
    ),
    # FPN neck
    ("image_encoder.neck.convs.{n}.conv.{p}", "vision_encoder.neck.convs.{n}.{p}"),
    # prompt encoder (the point embeddings and the Fourier matrix are handled apart)
    ("sam_prompt_encoder.not_a_point_embed.weight", "prompt_encoder.not_a_point_embed.weight"),
    ("sam_prompt_encoder.no_mask_embed.weight", "prompt_encoder.no_mask_embed.weight"),
    ("sam_prompt_encoder.mask_downscaling.0.{p}", "prompt_encoder.mask_embed.conv1.{p}"),
    ("sam_prompt_encoder.mask_downscaling.1.{p}", "prompt_encoder.mask_embed.layer_norm1.{p}"),
    ("sam_prompt_encoder.mask_downscaling.3.{p}", "prompt_encoder.mask_embed.conv2.{p}"),
    ("sam_prompt_encoder.mask_downscaling.4.{p}", "prompt_encoder.mask_embed.layer_norm2.{p}"),
    ("sam_prompt_encoder.mask_downscaling.6.{p}", "prompt_encoder.mask_embed.conv3.{p}"),
    # mask decoder
    ("sam_mask_decoder.iou_token.weight", "mask_decoder.iou_token.weight"),
    ("sam_mask_decoder.mask_tokens.weight", "mask_decoder.mask_tokens.weight"),
    ("sam_mask_decoder.obj_score_token.weight", "mask_decoder.obj_score_token.weight"),
    ("sam_mask_decoder.conv_s{k}.{p}", "mask_decoder.conv_s{k}.{p}"),
    ("sam_mask_decoder.output_upscaling.0.{p}", "mask_decoder.upscale_conv1.{p}"),
    ("sam_mask_decoder.output_upscaling.1.{p}", "mask_decoder.upscale_layer_norm.{p}"),
    ("sam_mask_decoder.output_upscaling.3.{p}", "mask_decoder.upscale_conv2.{p}"),
    (
        "sam_mask_decoder.iou_prediction_head.{mlp}.{p}",
        "mask_decoder.iou_prediction_head.{mlp}.{p}",
    ),
    (
        "sam_mask_decoder.output_hypernetworks_mlps.{n}.{mlp}.{p}",
        "mask_decoder.output_hypernetworks_mlps.{n}.{mlp}.{p}",
    ),
    (
        "sam_mask_decoder.pred_obj_score_head.{mlp}.{p}",
        "mask_decoder.pred_obj_score_head.{mlp}.{p}",
    ),
    (
        "sam_mask_decoder.transformer.layers.{n}.{attn}.{qkv}.{p}",
        "mask_decoder.transformer.layers.{n}.{attn}.{qkv}.{p}",
    ),
    (
        "sam_mask_decoder.transformer.layers.{n}.{attn}.out_proj.{p}",
        "mask_decoder.transformer.layers.{n}.{attn}.o_proj.{p}",
    ),
    (
        "sam_mask_decoder.transformer.layers.{n}.norm{k}.{p}",
        "mask_decoder.transformer.layers.{n}.layer_norm{k}.{p}",
    ),
    (
        "sam_mask_decoder.transformer.layers.{n}.mlp.{mlp}.{p}",
        "mask_decoder.transformer.layers.{n}.mlp.{mlp}.{p}",
    ),
    (
        "sam_mask_decoder.transformer.final_attn_token_to_image.{qkv}.{p}",
        "mask_decoder.transformer.final_attn_token_to_image.{qkv}.{p}",
    ),
    (
        "sam_mask_decoder.transformer.final_attn_token_to_image.out_proj.{p}",
        "mask_decoder.transformer.final_attn_token_to_image.o_proj.{p}",
    ),
    (
        "sam_mask_decoder.transformer.norm_final_attn.{p}",
        "mask_decoder.transformer.layer_norm_final_attn.{p}",
    ),
    # memory attention
    (
        "memory_attention.layers.{n}.{attn}.{qkv}.{p}",
        "memory_attention.layers.{n}.{attn}.{qkv}.{p}",
    ),
    (
        "memory_attention.layers.{n}.{attn}.out_proj.{p}",
        "memory_attention.layers.{n}.{attn}.o_proj.{p}",
    ),
    ("memory_attention.layers.{n}.linear{k}.{p}", "memory_attention.layers.{n}.linear{k}.{p}"),
    ("memory_attention.layers.{n}.norm{k}.{p}", "memory_attention.layers.{n}.layer_norm{k}.{p}"),
    ("memory_attention.norm.{p}", "memory_attention.layer_norm.{p}"),
    # memory encoder (mask down-sampler stages renumbered beforehand)
    ("memory_encoder.mask_downsampler.{mds}.{p}", "memory_encoder.mask_downsampler.{mds}.{p}"),
    ("memory_encoder.pix_feat_proj.{p}", "memory_encoder.feature_projection.{p}"),
    (
        "memory_encoder.fuser.layers.{n}.dwconv.{p}",
        "memory_encoder.memory_fuser.layers.{n}.depthwise_conv.{p}",
    ),
    (
        "memory_encoder.fuser.layers.{n}.norm.{p}",
        "memory_encoder.memory_fuser.layers.{n}.layer_norm.{p}",
    ),
    (
        "memory_encoder.fuser.layers.{n}.pwconv{k}.{p}",
        "memory_encoder.memory_fuser.layers.{n}.pointwise_conv{k}.{p}",
    ),
    ("memory_encoder.fuser.layers.{n}.gamma", "memory_encoder.memory_fuser.layers.{n}.scale"),
    ("memory_encoder.out_proj.{p}", "memory_encoder.projection.{p}"),
    # model-level parameters
    ("maskmem_tpos_enc", "memory_temporal_positional_encoding"),
    ("no_mem_embed", "no_memory_embedding"),
    ("no_mem_pos_enc", "no_memory_positional_encoding"),
    ("no_obj_ptr", "no_object_pointer"),
    ("no_obj_embed_spatial", "occlusion_spatial_embedding_parameter"),
    ("mask_downsample.{p}", "mask_downsample.{p}"),
    ("obj_ptr_proj.{mlp}.{p}", "object_pointer_proj.{mlp}.{p}"),
    ("obj_ptr_tpos_proj.{p}", "temporal_positional_encoding_projection_layer.{p}"),
]

_PLACEHOLDERS = {
    "n": r"\d+",
    "k": r"\d",
    "p": r"weight|bias",
    "mlp": r"proj_in|proj_out|layers\.\d+",
    "mds": r"layers\.\d+\.conv|layers\.\d+\.layer_norm|final_conv",
    "attn": r"self_attn|cross_attn_token_to_image|cross_attn_image_to_token|cross_attn_image",
    "qkv": r"q_proj|k_proj|v_proj",
}


def _compile(template: str) -> re.Pattern[str]:
    out, pos = [], 0
    for m in re.finditer(r"\{(\w+)\}", template):
        out.append(re.escape(template[pos : m.start()]))
        out.append(f"(?P<{m.group(1)}>{_PLACEHOLDERS[m.group(1)]})")
        pos = m.end()
    out.append(re.escape(template[pos:]))
    return re.compile("".join(out) + r"\Z")


_FORWARD = [(_compile(meta), hf) for meta, hf in _RULES]
_BACKWARD = [(_compile(hf), meta) for meta, hf in _RULES]

# Meta modules that are MLPs (their linear layers are numbered layers.0 .. layers.{n-1})
_META_MLP = re.compile(
    r"(?P<pre>image_encoder\.trunk\.blocks\.\d+\.mlp|sam_mask_decoder\.transformer\.layers\.\d+\.mlp"
    r"|sam_mask_decoder\.iou_prediction_head|sam_mask_decoder\.output_hypernetworks_mlps\.\d+"
    r"|sam_mask_decoder\.pred_obj_score_head|obj_ptr_proj)\.layers\.(?P<i>\d+)\.(?P<p>weight|bias)\Z"
)
_HF_MLP = re.compile(
    r"(?P<pre>.+?)\.(?P<part>proj_in|proj_out|layers\.(?P<i>\d+))\.(?P<p>weight|bias)\Z"
)
_META_MDS = re.compile(
    r"memory_encoder\.mask_downsampler\.encoder\.(?P<e>\d+)\.(?P<p>weight|bias)\Z"
)
_HF_MDS = re.compile(
    r"memory_encoder\.mask_downsampler\.(?:layers\.(?P<k>\d+)\.(?P<part>conv|layer_norm)|final_conv)"
    r"\.(?P<p>weight|bias)\Z"
)
_META_POINT = re.compile(r"sam_prompt_encoder\.point_embeddings\.(?P<i>\d+)\.weight\Z")
_META_FOURIER = "sam_prompt_encoder.pe_layer.positional_encoding_gaussian_matrix"
_HF_FOURIER = (
    "shared_image_embedding.positional_embedding",
    "prompt_encoder.shared_embedding.positional_embedding",
)
_HF_POINT = "prompt_encoder.point_embed.weight"
_HF_MLP_OWNERS = re.compile(
    r"(vision_encoder\.backbone\.blocks\.\d+\.mlp|mask_decoder\.transformer\.layers\.\d+\.mlp"
    r"|mask_decoder\.iou_prediction_head|mask_decoder\.output_hypernetworks_mlps\.\d+"
    r"|mask_decoder\.pred_obj_score_head|object_pointer_proj)\Z"
)


def _fill(template: str, groups: Mapping[str, str]) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: groups[m.group(1)], template)


def _renumber_meta(keys: Iterable[str]) -> tuple[dict[str, str], list[str]]:
    """Meta key -> intermediate key with transformers-style MLP and down-sampler numbering."""
    keys = list(keys)
    mlp_sizes: dict[str, int] = defaultdict(int)
    mds_max = -1
    for key in keys:
        if m := _META_MLP.match(key):
            mlp_sizes[m["pre"]] = max(mlp_sizes[m["pre"]], int(m["i"]) + 1)
        elif m := _META_MDS.match(key):
            mds_max = max(mds_max, int(m["e"]))
    out: dict[str, str] = {}
    bad: list[str] = []
    for key in keys:
        if m := _META_MLP.match(key):
            n, i = mlp_sizes[m["pre"]], int(m["i"])
            if n < 2:
                bad.append(key)
                continue
            part = "proj_in" if i == 0 else "proj_out" if i == n - 1 else f"layers.{i - 1}"
            out[key] = f"{m['pre']}.{part}.{m['p']}"
        elif m := _META_MDS.match(key):
            e = int(m["e"])
            n_stages = mds_max // 3
            if mds_max % 3 or e % 3 == 2:
                bad.append(key)
                continue
            part = (
                "final_conv"
                if e == 3 * n_stages
                else f"layers.{e // 3}.{'conv' if e % 3 == 0 else 'layer_norm'}"
            )
            out[key] = f"memory_encoder.mask_downsampler.{part}.{m['p']}"
        else:
            out[key] = key
    return out, bad


def meta_to_hf_state_dict(meta: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a Meta SAM 2 state dict to transformers ``Sam2VideoModel`` names.

    Parameters
    ----------
    meta
        Meta's ``checkpoint["model"]``: key -> tensor.

    Returns
    -------
    dict
        transformers key -> tensor (the same tensor objects, except the stacked point
        embeddings).

    Raises
    ------
    CheckpointError
        Keys that no rule maps, or point embeddings with gaps; the message names them.
    """
    renamed, unmatched = _renumber_meta(meta)
    out: dict[str, torch.Tensor] = {}
    points: dict[int, torch.Tensor] = {}
    for key, mid in renamed.items():
        value = meta[key]
        if m := _META_POINT.match(key):
            points[int(m["i"])] = value
            continue
        if key == _META_FOURIER:
            for hf_key in _HF_FOURIER:
                out[hf_key] = value
            continue
        for pattern, template in _FORWARD:
            if m := pattern.match(mid):
                out[_fill(template, m.groupdict())] = value
                break
        else:
            unmatched.append(key)
    if points:
        if sorted(points) != list(range(len(points))):
            raise CheckpointError(f"point embeddings are not numbered 0..n-1: {sorted(points)}")
        out[_HF_POINT] = torch.cat([points[i].reshape(1, -1) for i in range(len(points))], 0)
    if unmatched:
        raise CheckpointError(_name_keys("keys no rule maps to a transformers name", unmatched))
    return out


def hf_to_meta_state_dict(hf: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a transformers ``Sam2VideoModel`` state dict to Meta's SAM 2 names.

    The inverse of :func:`meta_to_hf_state_dict`; non-persistent buffers are not expected.

    Parameters
    ----------
    hf
        transformers key -> tensor, e.g. ``model.state_dict()``.

    Returns
    -------
    dict
        Meta key -> tensor, as in ``checkpoint["model"]`` of Meta's files.

    Raises
    ------
    CheckpointError
        Keys that no rule maps, or two copies of the Fourier matrix that differ.
    """
    mlp_sizes: dict[str, int] = defaultdict(lambda: 2)
    mds_stages = 0
    for key in hf:
        m = _HF_MLP.match(key)
        if m and m["i"] is not None and _HF_MLP_OWNERS.match(m["pre"]):
            mlp_sizes[m["pre"]] = max(mlp_sizes[m["pre"]], int(m["i"]) + 3)
        if (m := _HF_MDS.match(key)) and m["k"] is not None:
            mds_stages = max(mds_stages, int(m["k"]) + 1)
    out: dict[str, torch.Tensor] = {}
    unmatched: list[str] = []
    for key, value in hf.items():
        if key in _HF_FOURIER:
            other = hf.get(_HF_FOURIER[1] if key == _HF_FOURIER[0] else _HF_FOURIER[0])
            comparable = other is not None and other is not value and other.device.type != "meta"
            if comparable and not torch.equal(other, value):
                raise CheckpointError(
                    "the two copies of the prompt Fourier matrix differ "
                    f"({_HF_FOURIER[0]} vs {_HF_FOURIER[1]}); Meta's format holds one. Every "
                    "converted model has them equal; a freshly built one does not (copy one "
                    "into the other, as sam2_med.models.random_model does)"
                )
            out[_META_FOURIER] = value
            continue
        if key == _HF_POINT:
            for i in range(value.shape[0]):
                out[f"sam_prompt_encoder.point_embeddings.{i}.weight"] = value[i : i + 1].clone()
            continue
        for pattern, template in _BACKWARD:
            if m := pattern.match(key):
                meta_key = _fill(template, m.groupdict())
                break
        else:
            unmatched.append(key)
            continue
        if (mm := _HF_MLP.match(key)) and _HF_MLP_OWNERS.match(mm["pre"]):
            n = mlp_sizes[mm["pre"]]
            i = (
                0
                if mm["part"] == "proj_in"
                else n - 1
                if mm["part"] == "proj_out"
                else int(mm["i"]) + 1
            )
            meta_key = re.sub(
                r"\.(proj_in|proj_out|layers\.\d+)\.(weight|bias)\Z",
                f".layers.{i}.{mm['p']}",
                meta_key,
            )
        elif mm := _HF_MDS.match(key):
            e = (
                3 * mds_stages
                if mm["k"] is None
                else 3 * int(mm["k"]) + (mm["part"] == "layer_norm")
            )
            meta_key = f"memory_encoder.mask_downsampler.encoder.{e}.{mm['p']}"
        out[meta_key] = value
    if unmatched:
        raise CheckpointError(_name_keys("transformers keys with no Meta name", unmatched))
    return out


def _name_keys(what: str, keys: Iterable[str], limit: int = 12) -> str:
    keys = sorted(keys)
    shown = ", ".join(keys[:limit])
    more = f" and {len(keys) - limit} more" if len(keys) > limit else ""
    return f"{len(keys)} {what}: {shown}{more}"


def load_meta_state_dict(model: torch.nn.Module, meta: Mapping[str, torch.Tensor]) -> None:
    """Load a Meta state dict into a transformers model, strictly.

    Every Meta key must map, every model key must be provided, and every shape must match;
    nothing is loaded otherwise. Floating-point tensors of another precision are cast to the
    model's dtype.

    Parameters
    ----------
    model
        A ``Sam2VideoModel`` built for the checkpoint's architecture.
    meta
        Meta's ``checkpoint["model"]``.

    Raises
    ------
    CheckpointError
        Unmapped, missing or unexpected keys, shape mismatches, or non-floating tensors; the
        message names them.
    """
    converted = meta_to_hf_state_dict(meta)
    expected = model.state_dict()
    missing = set(expected) - set(converted)
    unexpected = set(converted) - set(expected)
    problems = []
    if missing:
        problems.append(_name_keys("model keys the checkpoint lacks", missing))
    if unexpected:
        problems.append(_name_keys("checkpoint keys the model lacks", unexpected))
    mismatched = [
        f"{k} {tuple(converted[k].shape)} vs {tuple(expected[k].shape)}"
        for k in sorted(set(expected) & set(converted))
        if tuple(converted[k].shape) != tuple(expected[k].shape)
    ]
    if mismatched:
        problems.append(_name_keys("shape mismatches (checkpoint vs model)", mismatched))
    not_float = [k for k, v in converted.items() if not torch.is_floating_point(v)]
    if not_float:
        problems.append(_name_keys("non-floating-point tensors", not_float))
    if problems:
        raise CheckpointError("checkpoint does not fit the architecture: " + "; ".join(problems))
    model.load_state_dict(converted, strict=True)


def infer_arch(meta: Mapping[str, torch.Tensor]) -> dict[str, object]:
    """Read what the tensors of a Meta state dict say about the architecture.

    Parameters
    ----------
    meta
        Meta's ``checkpoint["model"]``.

    Returns
    -------
    dict
        A partial ``arch`` (see :func:`sam2_med.models.arch.arch_to_config`): widths, block and
        layer counts, and the SAM 2 / SAM 2.1 switches visible as keys. Image size, attention
        heads, global-attention blocks, window sizes and ``multimask_output_for_tracking`` are
        not visible in the weights and are not returned.

    Raises
    ------
    CheckpointError
        A state dict missing the tensors every SAM 2 checkpoint has.
    """
    try:
        embed_dim = int(meta["image_encoder.trunk.patch_embed.proj.weight"].shape[0])
        d_model = int(meta["no_obj_ptr"].shape[-1])
        maskmem = meta["maskmem_tpos_enc"]
    except KeyError as exc:
        raise CheckpointError(f"not a SAM 2 checkpoint: no {exc.args[0]!r} tensor") from None
    blocks = sorted(
        {int(m[1]) for k in meta if (m := re.match(r"image_encoder\.trunk\.blocks\.(\d+)\.", k))}
    )
    starts = [0] + [b for b in blocks if f"image_encoder.trunk.blocks.{b}.proj.weight" in meta]
    bounds = [*starts, len(blocks)]
    stages = [bounds[i + 1] - bounds[i] for i in range(len(starts))]

    def count(pattern: str) -> int:
        return len({m[1] for k in meta if (m := re.match(pattern, k))})

    arch: dict[str, object] = {
        "embed_dim": embed_dim,
        "stages": stages,
        "window_pos_embed_bkg_spatial_size": list(meta["image_encoder.trunk.pos_embed"].shape[-2:]),
        "d_model": d_model,
        "mem_dim": int(maskmem.shape[-1]),
        "num_maskmem": int(maskmem.shape[0]),
        "memory_attention_layers": count(r"memory_attention\.layers\.(\d+)\."),
        "memory_fuser_layers": count(r"memory_encoder\.fuser\.layers\.(\d+)\."),
        "no_obj_embed_spatial": "no_obj_embed_spatial" in meta,
        "proj_tpos_enc_in_obj_ptrs": "obj_ptr_tpos_proj.weight" in meta,
    }
    optional = {
        "mask_decoder_mlp_dim": ("sam_mask_decoder.transformer.layers.0.mlp.layers.0.weight", 0),
        "iou_head_hidden_dim": ("sam_mask_decoder.iou_prediction_head.layers.0.weight", 0),
        "memory_attention_ffn_dim": ("memory_attention.layers.0.linear1.weight", 0),
        "memory_fuser_intermediate_dim": ("memory_encoder.fuser.layers.0.pwconv1.weight", 0),
    }
    for name, (key, dim) in optional.items():
        if key in meta:
            arch[name] = int(meta[key].shape[dim])
    q = meta.get("memory_attention.layers.0.self_attn.q_proj.weight")
    if q is not None:
        arch["memory_attention_downsample_rate"] = d_model // int(q.shape[0])
    q = meta.get("sam_mask_decoder.transformer.layers.0.cross_attn_token_to_image.q_proj.weight")
    if q is not None:
        arch["mask_decoder_attention_downsample_rate"] = d_model // int(q.shape[0])
    n_convs = count(r"memory_encoder\.mask_downsampler\.encoder\.(\d+)\.") // 2
    if n_convs >= 1:  # n stages (conv + norm) and one final conv: 2n + 1 indices
        arch["mask_downsampler_stride"] = round(16 ** (1 / n_convs))
    return arch
