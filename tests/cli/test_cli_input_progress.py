"""Negative coordinates as printed in the help, and progress in a log file (issue 11, items 10
and 13)."""

from __future__ import annotations

import json
import re

import nibabel as nib
import numpy as np
import pytest

from tests.conftest import shared_path


@pytest.fixture
def mr():
    return shared_path("volumes", "mr_abdomen_small", "image.nii.gz")


def test_negative_world_coordinates_work_as_printed(cli, tmp_path, mr, model_args):
    """The help's own example ``--space world_ras --point -31.5,12,40.2``: argparse must not read
    the value as an option. The point is taken to a voxel near the image centre first."""
    from sam2_med.cli import build_parser

    epilog = build_parser()._subparsers._group_actions[0].choices["segment"].description
    assert "--point -31.5,12,40.2" in epilog
    affine = nib.load(mr).affine
    centre = affine @ np.array([58, 45, 10, 1.0])
    world = ",".join(f"{v:.1f}" for v in centre[:3])
    # make the first coordinate negative by moving along i if needed
    if not world.startswith("-"):
        i = next(i for i in range(117) if (affine @ np.array([i, 45, 10, 1.0]))[0] < -1)
        world = ",".join(f"{v:.1f}" for v in (affine @ np.array([i, 45, 10, 1.0]))[:3])
    assert world.startswith("-")
    out = tmp_path / "m.nii.gz"
    code, _, err = cli(
        "segment", mr, "--space", "world_ras", "--point", world, "--out", out, *model_args
    )
    assert code == 0, err
    side = json.loads((tmp_path / "m.json").read_text())
    assert side["extra"]["sam2_med_run"]["inputs"]["command_line_prompts"]["point"] == [world]
    box = f"{world},{world}"  # a degenerate box is refused for its size, not as an option
    code, _, err = cli("segment", mr, "--space", "world_ras", "--box", box, "--out", out, "-q")
    assert code == 2 and "expected one argument" not in err


def test_negative_window_centre(cli, tmp_path, model_args):
    ct = shared_path("volumes", "ct_abdomen_small", "image.nii.gz")
    code, _, err = cli(
        "segment",
        ct,
        "--point",
        "60,50,15",
        "--window",
        "-600,1500",
        "--out",
        tmp_path / "m.nii.gz",
        *model_args,
    )
    assert code == 0, err


def test_plain_progress_lines_when_stderr_is_not_a_terminal(
    cli, tmp_path, mr, model_args, monkeypatch
):
    """capsys's stderr is not a terminal: a log file gets periodic plain lines saying what the
    count counts (here every update: the period is set to 0)."""
    import sam2_med.cli as cli_module

    monkeypatch.setattr(cli_module, "PLAIN_PROGRESS_SECONDS", 0.0)
    prompts = tmp_path / "p.json"
    prompts.write_text(
        json.dumps(
            {
                "space": "voxel",
                "objects": [
                    {"name": "a", "points": [[50, 50, 10, 1]]},
                    {"name": "b", "points": [[60, 40, 10, 1]]},
                ],
            }
        )
    )
    code, _, err = cli(
        "segment", mr, "--prompts", prompts, "--out", tmp_path / "m.nii.gz", *model_args
    )
    assert code == 0, err
    lines = [ln for ln in err.splitlines() if ln.startswith("sam2-med: propagating")]
    assert len(lines) >= 3, err
    assert "\r" not in err and "\x1b" not in err  # no bar drawing in a log file
    m = re.search(r"(\d+)/(\d+) object-slices \(2 objects x 20 slices\)", lines[-1])
    assert m, lines[-1]
    assert m.group(1) == m.group(2)
    assert "elapsed" in lines[1]
    code, _, err = cli(
        "segment", mr, "--prompts", prompts, "--out", tmp_path / "q.nii.gz", "-q", *model_args
    )
    assert code == 0 and err == ""


def test_no_plain_progress_before_the_period(cli, tmp_path, mr, model_args):
    code, _, err = cli(
        "segment", mr, "--point", "50,50,10", "--out", tmp_path / "m.nii.gz", *model_args
    )
    assert code == 0, err
    # a short run: at most the final line
    assert len([ln for ln in err.splitlines() if "propagating" in ln]) <= 1
