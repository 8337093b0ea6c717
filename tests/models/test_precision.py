"""The precision policy: auto picks bfloat16 only where the device computes it natively."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from sam2_med import Volume
from sam2_med.api import RUN_RECORD_KEY, segment
from sam2_med.models import (
    TINY_ARCH,
    DeviceUnavailableError,
    LoadedModel,
    load_model,
    random_model,
    save_meta_checkpoint,
    tiny_config,
)
from sam2_med.models import precision as P

CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
flags\t\t: fpu vme sse sse2 avx avx2 {extra}
bugs\t\t: spectre_v1
"""


@pytest.fixture
def flags(monkeypatch):
    """Set the CPU flags the policy sees."""

    def set_flags(*extra: str) -> None:
        monkeypatch.setattr(P, "_cpu_flags", lambda: frozenset({"avx2", "fma", *extra}))

    return set_flags


@pytest.mark.parametrize(
    ("extra", "applied"),
    [
        ((), "float32"),  # AVX2 only (an AMD Zen 1/2/3, an older Intel): emulated bf16
        (("avx512f", "avx512_bf16"), "bfloat16"),  # Zen 4, Cooper Lake
        (("amx_tile", "amx_bf16"), "bfloat16"),  # Sapphire Rapids and newer
        (("avx512f", "avx512_vnni"), "float32"),  # AVX-512 without BF16
    ],
)
def test_auto_on_cpu_follows_the_flags(flags, extra, applied) -> None:
    flags(*extra)
    prec = P.resolve_precision("auto", "cpu")
    assert (prec.requested, prec.applied) == ("auto", applied)
    assert prec.dtype == {"float32": torch.float32, "bfloat16": torch.bfloat16}[applied]
    if applied == "bfloat16":
        assert any(f in prec.reason for f in P.BF16_CPU_FLAGS)
    else:
        assert "emulated" in prec.reason


def test_forced_precisions_ignore_the_flags(flags) -> None:
    flags()
    assert P.resolve_precision("bfloat16", "cpu").applied == "bfloat16"
    flags("amx_bf16")
    assert P.resolve_precision("float32", "cpu").applied == "float32"
    assert P.resolve_precision(torch.bfloat16, "cpu").record() == {
        "requested": "bfloat16",
        "applied": "bfloat16",
        "reason": "forced",
    }
    for bad in ("float16", "fp32", torch.float16):
        with pytest.raises(DeviceUnavailableError, match="precision"):
            P.resolve_precision(bad, "cpu")


def test_auto_on_cuda_asks_torch(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert P.resolve_precision("auto", "cuda").applied == "bfloat16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert P.resolve_precision("auto", "cuda").applied == "float32"
    assert P.resolve_precision("auto", "mps").applied == "float32"


def test_cpuinfo_flags_are_read(tmp_path) -> None:
    f = tmp_path / "cpuinfo"
    f.write_text(CPUINFO.format(extra="amx_bf16 amx_tile"))
    got = P._read_cpuinfo_flags(str(f))
    assert {"avx2", "amx_bf16", "amx_tile"} <= got and "spectre_v1" not in got
    assert P._read_cpuinfo_flags(str(tmp_path / "missing")) == frozenset()


def test_this_machine_gets_what_its_flags_say() -> None:
    """No monkeypatching: the real flags of the machine running the tests."""
    native = bool(P.cpu_bf16_flags())
    assert P.resolve_precision("auto", "cpu").applied == ("bfloat16" if native else "float32")


@pytest.fixture(scope="module")
def tiny_file(tmp_path_factory):
    model = random_model(tiny_config(), seed=3)
    return save_meta_checkpoint(model, tmp_path_factory.mktemp("p") / "tiny.pt")


def test_load_model_and_the_sidecar_record_both(tiny_file, flags, tmp_path) -> None:
    flags("avx512_bf16")
    lm = load_model(checkpoint=tiny_file, arch=TINY_ARCH)  # default: auto
    assert lm.dtype == torch.bfloat16 and lm.precision.requested == "auto"
    assert next(lm.model.parameters()).dtype == torch.float32  # autocast, not a cast
    flags()
    lm = load_model(checkpoint=tiny_file, arch=TINY_ARCH, precision="auto")
    assert lm.dtype == torch.float32 and lm.precision.applied == "float32"
    assert load_model(checkpoint=tiny_file, arch=TINY_ARCH, dtype="bfloat16").dtype == (
        torch.bfloat16
    )
    vol = Volume(np.zeros((24, 20, 6), np.int16), np.eye(4), modality="CT")
    prompts = {"space": "voxel", "objects": [{"label": 1, "points": [[10, 10, 3, 1]]}]}
    res = segment(vol, prompts, checkpoint=tiny_file, arch=TINY_ARCH, precision="auto")
    rec = res.record["precision"]
    assert (rec["requested"], rec["applied"]) == ("auto", "float32") and "emulated" in rec["reason"]
    res.save(tmp_path / "m.nii.gz")
    side = json.loads((tmp_path / "m.json").read_text())
    assert side["extra"][RUN_RECORD_KEY]["precision"] == rec


def test_from_module_records_a_given_dtype() -> None:
    from sam2_med.api import precision_record

    lm = LoadedModel.from_module(random_model(tiny_config()), dtype=torch.bfloat16)
    assert lm.precision is None
    assert precision_record(lm) == {
        "requested": "bfloat16",
        "applied": "bfloat16",
        "reason": "given as a dtype",
    }
    lm = LoadedModel.from_module(random_model(tiny_config()), precision="float32")
    assert lm.precision.record()["reason"] == "forced" and lm.dtype == torch.float32
    assert precision_record(SimpleNamespace()) == {
        "requested": "float32",
        "applied": "float32",
        "reason": "given as a dtype",
    }


def test_cli_precision_flag(tiny_file, tmp_path, flags) -> None:
    from sam2_med.cli import main

    flags()
    vol = tmp_path / "ct.nii.gz"
    import nibabel as nib

    nib.save(nib.Nifti1Image(np.zeros((24, 20, 6), np.int16), np.eye(4)), vol)
    prompts = tmp_path / "p.json"
    prompts.write_text(
        json.dumps({"space": "voxel", "objects": [{"label": 1, "points": [[10, 10, 3, 1]]}]})
    )
    for given, applied in (("auto", "float32"), ("bfloat16", "bfloat16")):
        out = tmp_path / f"{given}.nii.gz"
        rc = main(
            [
                "segment",
                str(vol),
                "--prompts",
                str(prompts),
                "--checkpoint",
                str(tiny_file),
                "--arch",
                str(_arch_json(tmp_path)),
                "--precision",
                given,
                "-o",
                str(out),
            ]
        )
        assert rc == 0
        rec = json.loads(out.with_name(f"{given}.json").read_text())["extra"][RUN_RECORD_KEY]
        assert (rec["precision"]["requested"], rec["precision"]["applied"]) == (given, applied)


def _arch_json(tmp_path):
    p = tmp_path / "arch.json"
    p.write_text(json.dumps(TINY_ARCH))
    return p
