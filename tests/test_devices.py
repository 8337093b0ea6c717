"""The same session on a CUDA device: loading, masks, the geometry oracle and bfloat16 (the
parity test also runs on CUDA: tests/test_parity_session.py).

CI has no GPU, so these skip there with the reason; they run wherever ``torch.cuda`` works
(``--device cuda`` is a documented option, so it is checked where a GPU is at hand).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from sam2_med.models import TINY_ARCH, load_model, random_model, save_meta_checkpoint, tiny_config
from sam2_med.session import Session
from sam2_med.volume import Volume
from tests.test_session import _volume  # the CPU tests' blob volume (LPS storage)

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device here (CI has none)"
)


@pytest.fixture(autouse=True)
def _exact_cuda_math():
    """Full float32 on the GPU: TF32 convolutions would move logits by about 1e-3."""
    conv, matmul = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, matmul


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "tiny.pt"
    return save_meta_checkpoint(random_model(tiny_config(), seed=0), path)


def _run(lm, vol: Volume) -> tuple[Session, int, dict[int, np.ndarray]]:
    s = Session(lm, vol, window="soft_tissue")
    lab = s.add_object("organ")
    s.add_points(lab, [[18, 22, 12]], [1])
    logits = {r.slice_index: np.asarray(r.logits[lab], np.float32) for r in s.propagate()}
    return s, lab, logits


def test_session_on_cuda_matches_cpu(checkpoint) -> None:
    vol = _volume()
    cpu = load_model(checkpoint=checkpoint, arch=TINY_ARCH, device="cpu")
    gpu = load_model(checkpoint=checkpoint, arch=TINY_ARCH, device="cuda")
    assert gpu.device.type == "cuda" and next(gpu.model.parameters()).is_cuda
    s_cpu, lab, l_cpu = _run(cpu, vol)
    s_gpu, _, l_gpu = _run(gpu, vol)
    assert sorted(l_gpu) == [k for k in range(vol.shape[2]) if k != 12]  # 12: the prompt
    worst = max(float(np.abs(l_cpu[k] - l_gpu[k]).max()) for k in l_cpu)
    assert worst < 1e-3, worst
    a, b = s_cpu.object_volume(lab), s_gpu.object_volume(lab)
    assert a.any() and (a != b).sum() <= 0.001 * a.size
    # a correction on the GPU re-uses cached features as on the CPU
    s_gpu.stats.reset()
    s_gpu.add_points(lab, [[18, 22, 18]], [1])
    list(s_gpu.propagate())
    assert s_gpu.stats.encoder_calls == 0 and s_gpu.stats.decoded_slices


def test_mask_prompt_comes_back_exactly_on_cuda(checkpoint) -> None:
    vol = _volume()
    lm = load_model(checkpoint=checkpoint, arch=TINY_ARCH, device="cuda")
    s = Session(lm, vol)
    lab = s.add_object("organ")
    mask = np.zeros(s.stream.slice_shape, bool)
    mask[5:20, 8:30] = True
    mask[20:28, 8:14] = True
    res = s.add_mask(lab, 12, mask)
    np.testing.assert_array_equal(res.masks[lab], mask)
    lm_arr = s.label_map().array
    np.testing.assert_array_equal(lm_arr[:, :, 12] == lab, s.object_volume(lab)[:, :, 12])
    assert (lm_arr[:, :, 12] == lab).sum() == mask.sum()


def test_bfloat16_on_cuda_keeps_masks_close(checkpoint) -> None:
    vol = _volume()
    f32 = load_model(checkpoint=checkpoint, arch=TINY_ARCH, device="cuda")
    bf16 = load_model(checkpoint=checkpoint, arch=TINY_ARCH, device="cuda", dtype="bfloat16")
    s_a, lab, _ = _run(f32, vol)
    s_b, _, _ = _run(bf16, vol)
    a, b = s_a.object_volume(lab), s_b.object_volume(lab)
    assert (a & b).sum() / max(1, (a | b).sum()) > 0.9
