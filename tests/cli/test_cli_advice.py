"""A command-line user gets command-line advice: every message names flags, never Python keyword
arguments (issue 11, item 12).

Two checks: the errors a user meets (existing outputs, several DICOM series, a 4D image, an
unavailable device, a checkpoint that is not the published file, missing weights) print no
Python advice; and, statically, every error or warning the package raises with Python advice in
its message also carries a command-line wording (``cli=``), so a new message cannot forget it.
"""

from __future__ import annotations

import ast
import builtins
import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import ROOT, shared_path

#: What Python advice looks like in a message; none of it may reach a command-line user.
PYTHON_ADVICE = re.compile(
    r"=True|=False|\bname=|series_uid=|\bindex=|device='|device=\"|\barch=|checkpoint=|"
    r"overwrite=|load_model\(|import_weights\(|get_spec\(|in Python"
)


def assert_cli_advice(err: str) -> None:
    assert err.strip(), "expected a message"
    bad = PYTHON_ADVICE.findall(err)
    assert not bad, f"Python advice {bad} in a command-line message:\n{err}"


@pytest.fixture
def mr():
    return shared_path("volumes", "mr_abdomen_small", "image.nii.gz")


def test_existing_sidecar_names_the_flag(cli, tmp_path, mr, model_args):
    out = tmp_path / "o.nii.gz"
    (tmp_path / "o.json").write_text("{}")  # the mask is free, its sidecar is not
    code, _, err = cli("segment", mr, "--point", "50,50,10", "--out", out, *model_args)
    assert code == 2
    assert "o.json" in err
    assert_cli_advice(err)


def test_several_dicom_series_ask_for_series_uid(cli, tmp_path, model_args):
    folder = shared_path("dicom", "multivendor_dicom2nifti")
    code, _, err = cli("segment", folder, "--point", "1,1,1", "--out", tmp_path / "o.nii.gz")
    assert code == 2
    assert "--series-uid" in err.splitlines()[0]
    assert len(err.splitlines()) > 2  # the series, one per line
    assert_cli_advice(err)


def test_4d_dicom_series_names_the_index_flag(cli, tmp_path, model_args):
    folder = shared_path("dicom", "mr_philips_classic_vs_enhanced")
    code, _, err = cli("info", folder)
    assert code == 2 and "--index N (0..1)" in err
    assert_cli_advice(err)


def _four_d(tmp_path: Path) -> Path:
    path = tmp_path / "fmri.nii.gz"
    data = np.random.default_rng(0).normal(size=(8, 9, 7, 3)).astype(np.float32)
    nib.Nifti1Image(data, np.diag([2.0, 2.0, 3.0, 1.0])).to_filename(path)
    return path


def test_4d_image_needs_the_index_flag_which_exists(cli, tmp_path, model_args):
    image = _four_d(tmp_path)
    code, _, err = cli("segment", image, "--point", "4,4,3", "--out", tmp_path / "o.nii.gz")
    assert code == 2 and "--index" in err
    assert_cli_advice(err)
    code, _, err = cli("info", image)
    assert code == 2 and "--index" in err
    assert_cli_advice(err)
    code, out, err = cli("info", image, "--index", "2")
    assert code == 0, err
    assert "volume 2 of a 4D image" in out
    code, _, err = cli("info", image, "--index", "7")
    assert code == 2 and "--index 7" in err and "0..2" in err
    assert_cli_advice(err)
    out_mask = tmp_path / "o.nii.gz"
    code, _, err = cli(
        "segment", image, "--index", "1", "--point", "4,4,3", "--out", out_mask, *model_args
    )
    assert code == 0, err
    side = json.loads((tmp_path / "o.json").read_text())
    assert side["extra"]["sam2_med_run"]["inputs"]["index"] == 1


def test_unavailable_device_names_the_flag(cli, tmp_path, mr, model_args):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    code, _, err = cli(
        "segment",
        mr,
        "--point",
        "50,50,10",
        "--out",
        tmp_path / "o.nii.gz",
        "--device",
        "cuda",
        *model_args,
    )
    assert code == 2 and "--device cpu" in err
    assert_cli_advice(err)


def test_fine_tune_under_a_published_name_gets_cli_advice(cli, tmp_path, mr, tiny_checkpoint):
    ckpt, _ = tiny_checkpoint
    code, _, err = cli(
        "segment",
        mr,
        "--point",
        "50,50,10",
        "--out",
        tmp_path / "o.nii.gz",
        "--model",
        "sam2.1_hiera_tiny",
        "--checkpoint",
        ckpt,
    )
    assert code == 2 and "not the published" in err
    assert "--arch sam2.1_hiera_tiny" in err
    assert_cli_advice(err)


def test_checkpoint_of_no_registered_shape_asks_for_arch_flag(cli, tmp_path, mr, tiny_checkpoint):
    ckpt, _ = tiny_checkpoint  # a reduced test model: fits no registered architecture
    code, _, err = cli(
        "segment", mr, "--point", "50,50,10", "--out", tmp_path / "o.nii.gz", "--checkpoint", ckpt
    )
    assert code == 2 and "--arch" in err
    assert_cli_advice(err)


def test_arch_that_contradicts_the_weights_names_the_flag(cli, tmp_path, mr, tiny_checkpoint):
    ckpt, arch = tiny_checkpoint
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({**json.loads(arch.read_text()), "embed_dim": 40}))
    code, _, err = cli(
        "segment",
        mr,
        "--point",
        "50,50,10",
        "--out",
        tmp_path / "o.nii.gz",
        "--checkpoint",
        ckpt,
        "--arch",
        wrong,
    )
    assert code == 2 and "--arch" in err
    assert_cli_advice(err)


def test_missing_weights_message_names_commands_only(cli, tmp_path, mr):
    code, _, err = cli("segment", mr, "--point", "50,50,10", "--out", tmp_path / "o.nii.gz")
    assert code == 2 and "sam2-med weights import" in err
    assert_cli_advice(err)


def test_evaluate_and_batch_messages(cli, tmp_path, model_args):
    folder = shared_path("dicom", "multivendor_dicom2nifti")
    labels = tmp_path / "gt.nii.gz"
    nib.Nifti1Image(np.zeros((4, 4, 4), np.uint8), np.eye(4)).to_filename(labels)
    code, _, err = cli("evaluate", folder, "--labels", labels, *model_args)
    assert code == 2 and "--series-uid" in err
    assert_cli_advice(err)
    image = shared_path("volumes", "mr_abdomen_small", "image.nii.gz")
    jobs = tmp_path / "jobs.csv"
    out = tmp_path / "m.nii.gz"
    (tmp_path / "m.json").write_text("{}")
    prompts = tmp_path / "p.json"
    prompts.write_text(json.dumps({"space": "voxel", "objects": [{"points": [[50, 50, 10, 1]]}]}))
    jobs.write_text(f"image,prompts,output\n{image},{prompts},{out}\n")
    code, stdout, err = cli("batch", jobs, *model_args)
    assert code == 1
    assert_cli_advice(stdout + err)


# ---------------------------------------------------------------- static: every raise site
_ERROR_NAMES = re.compile(r"(Error|Warning)$")


def _literal_text(node: ast.AST) -> str:
    """The literal parts of a message expression (str, f-string, concatenation)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(_literal_text(v) for v in node.values)
    if isinstance(node, ast.BinOp):
        return _literal_text(node.left) + _literal_text(node.right)
    return ""


def _raised_calls(tree: ast.AST):
    for node in ast.walk(tree):
        call = None
        if isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call):
            call = node.exc
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "warn"
        ):
            call = node
        if call is None or not call.args:
            continue
        func = call.func
        name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
        if name in vars(builtins):
            continue  # TypeError & co. are programming errors of API callers, never CLI output
        if _ERROR_NAMES.search(name) or name == "warn":
            yield node.lineno, call


def test_every_message_with_python_advice_has_a_cli_wording():
    missing = []
    for path in sorted((ROOT / "sam2_med").rglob("*.py")):
        if "napari_plugin" in path.parts:
            continue  # GUI messages name buttons, not flags
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for lineno, call in _raised_calls(tree):
            text = _literal_text(call.args[0])
            if PYTHON_ADVICE.search(text) and not any(k.arg == "cli" for k in call.keywords):
                missing.append(f"{path.relative_to(ROOT)}:{lineno}: {text[:80]!r}")
    assert not missing, "messages with Python advice and no cli= wording:\n" + "\n".join(missing)
