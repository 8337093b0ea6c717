"""The MONAI Label app: its engine here, then MONAI Label's real server and client.

The engine (:mod:`sam2_med.monailabel_app._interactive`) needs no MONAI Label and is tested
in this environment against the Session API it must reproduce. The server test starts
``monailabel start_server`` from the separate server environment (``scripts/monailabel_env.sh``
builds it; CI does) on localhost, talks to it with MONAI Label's own ``MONAILabelClient`` (run
in that environment by ``monailabel_client.py``), and stops it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from tests._geometry import rotation as _rot
from tests.conftest import ROOT

SERVER_VENV = Path(os.environ.get("SAM2_MED_MONAILABEL_VENV", ROOT / ".venv-monailabel"))
CLIENT = Path(__file__).with_name("monailabel_client.py")
CLICK = (17, 19, 4)  # foreground click on the block
CORRECTION = (30, 8, 6)  # a background click on another slice


def _study(path: Path) -> Path:
    """A small oblique LPS study (tilted 20 degrees about S, 12 about R) with a bright block."""
    rng = np.random.default_rng(0)
    a = rng.normal(40, 10, (40, 36, 8))
    a[10:25, 12:26, 2:6] += 200
    aff = np.eye(4)
    aff[:3, :3] = _rot(0, 12) @ _rot(2, 20) @ np.diag([-1.5, -1.5, 3.0])
    aff[:3, 3] = (10.0, -20.0, 30.0)
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.Nifti1Image(a.astype(np.int16), aff).to_filename(path)
    return path


@pytest.fixture(scope="module")
def tiny_model(tiny_checkpoint):
    from sam2_med.api import read_arch
    from sam2_med.models import load_model

    ckpt, arch = tiny_checkpoint
    return load_model(checkpoint=ckpt, arch=read_arch(arch))


def _reference(model, study: Path, calls):
    """The masks the Session API gives for the same clicks: one (I, J, K) mask per call."""
    from sam2_med.io import load_volume
    from sam2_med.session import Session

    session = Session(model, load_volume(study), axis="axial", window="auto")
    label = session.add_object("liver")
    masks = []
    for points, labels in calls:
        session.add_points(label, np.array(points), np.array(labels))
        for _ in session.propagate():
            pass
        masks.append(session.object_volume(label))
    return masks


# ------------------------------------------------------------------ the engine, no MONAI Label
def test_clicks_follow_the_session_api(tmp_path, tiny_model):
    from sam2_med.monailabel_app._interactive import InteractiveSegmenter, write_answer

    study = _study(tmp_path / "studies" / "vol.nii.gz")
    seg = InteractiveSegmenter(tiny_model)
    first = seg.segment(study, foreground=[list(CLICK)], name="liver")
    # clients resend every click; only the new one is added, on its own slice
    second = seg.segment(
        study, foreground=[list(CLICK)], background=[list(CORRECTION)], name="liver"
    )
    ref = _reference(tiny_model, study, [([CLICK], [1]), ([CORRECTION], [0])])
    np.testing.assert_array_equal(first.mask, ref[0])
    np.testing.assert_array_equal(second.mask, ref[1])
    assert first.mask[:, :, CLICK[2]].any()
    assert second.anchors == (CLICK[2], CORRECTION[2])

    # a deleted click restarts the segment from the clicks it still has
    again = seg.segment(study, foreground=[list(CLICK)], name="liver")
    np.testing.assert_array_equal(again.mask, ref[0])
    assert again.anchors == (CLICK[2],)
    # reset_state does the same; another name is another object of the same session
    assert seg.segment(study, foreground=[list(CLICK)], name="liver", reset="true").anchors == (
        CLICK[2],
    )
    other = seg.segment(study, foreground=[[30, 8, 2]], name="spleen")
    assert other.anchors == (2,)
    assert len(seg._studies) == 1

    # the answer file lies on the study's grid, 1 on the segment, no sidecar beside it
    out = write_answer(second, tmp_path)
    img, lab = nib.load(study), nib.load(out)
    assert lab.shape == img.shape
    np.testing.assert_array_equal(lab.affine, img.affine)
    np.testing.assert_array_equal(np.asanyarray(lab.dataobj), second.mask.astype(np.uint8))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["studies", out.name])


def test_answers_carry_the_run_record_and_it_replays(tmp_path, tiny_model, cli, model_args):
    """Each answer carries the study session's run record; saved as JSON, ``sam2-med segment
    --prompts`` replays it: each segment is its label there, the one added first winning
    overlaps (a correction click included, decoded with memory in both)."""
    from sam2_med.monailabel_app._interactive import InteractiveSegmenter

    study = _study(tmp_path / "studies" / "vol.nii.gz")
    seg = InteractiveSegmenter(tiny_model)
    seg.segment(study, foreground=[list(CLICK)], name="liver")
    liver = seg.segment(
        study, foreground=[list(CLICK)], background=[list(CORRECTION)], name="liver"
    )
    spleen = seg.segment(study, foreground=[[30, 8, 2]], name="spleen")
    assert (liver.label, spleen.label) == (1, 2) and liver.mask.any() and spleen.mask.any()
    events = spleen.record["interactions"]["events"]
    assert [e["op"] for e in events] == [
        "add_object", "prompt", "propagate", "prompt", "propagate", "add_object", "prompt",
        "propagate",
    ]  # fmt: skip
    run = tmp_path / "run.json"
    run.write_text(json.dumps(spleen.record, allow_nan=False))  # what the client receives
    code, _, err = cli("segment", study, "--prompts", run, "--out", tmp_path / "r.nii.gz",
                       *model_args)  # fmt: skip
    assert code == 0, err
    replayed = np.asanyarray(nib.load(tmp_path / "r.nii.gz").dataobj)
    np.testing.assert_array_equal(replayed == liver.label, liver.mask)
    np.testing.assert_array_equal(replayed == spleen.label, spleen.mask & ~liver.mask)


def test_roi_is_a_box_on_its_middle_slice(tmp_path, tiny_model):
    from sam2_med.io import load_volume
    from sam2_med.monailabel_app._interactive import InteractiveSegmenter
    from sam2_med.session import Session

    study = _study(tmp_path / "vol.nii.gz")
    answer = InteractiveSegmenter(tiny_model).segment(study, roi=[9, 26, 25, 11, 2, 6], name="b")
    session = Session(tiny_model, load_volume(study))
    label = session.add_object("b")
    session.add_box(label, (9, 11, 4), (26, 25, 4))
    for _ in session.propagate():
        pass
    np.testing.assert_array_equal(answer.mask, session.object_volume(label))
    assert answer.anchors == (4,)


def test_bad_requests_are_one_line(tmp_path, tiny_model):
    from sam2_med.errors import Sam2MedError
    from sam2_med.monailabel_app._interactive import InteractiveSegmenter, app_settings

    study = _study(tmp_path / "vol.nii.gz")
    broken = tmp_path / "broken.nii.gz"
    broken.write_bytes(b"\x00not a nifti" * 30)
    seg = InteractiveSegmenter(tiny_model)
    cases = [
        ({"image": broken, "foreground": [[1, 1, 1]]}, f"{broken}: not a readable NIfTI"),
        ({"image": tmp_path / "gone.nii.gz", "foreground": [[1, 1, 1]]}, "study not found"),
        ({"image": study}, "no clicks"),
        ({"image": study, "foreground": [[1, 2]]}, "must be [i, j, k] voxel indices"),
        ({"image": study, "foreground": [[1, 1, 99]]}, "outside the volume"),
        ({"image": study, "roi": [1, 2, 3]}, "roi must be [i0, i1, j0, j1, k0, k1]"),
    ]
    for request, expected in cases:
        image = request.pop("image")
        with pytest.raises(Sam2MedError) as info:
            seg.segment(image, **request)
        assert expected in str(info.value) and "\n" not in str(info.value)
    assert "x" not in {n for s in seg._studies.values() for n in s.segments}

    assert app_settings({})["device"] == "cpu"
    assert app_settings({"window": "40,400", "sessions": "3"})["window"] == (40.0, 400.0)
    for conf, expected in [
        ({"dtype": "float16"}, "--conf dtype must be auto, float32 or bfloat16"),
        ({"axis": "oblique"}, "--conf axis must be axial, coronal or sagittal"),
        ({"sessions": "0"}, "--conf sessions must be a whole number >= 1"),
    ]:
        with pytest.raises(Sam2MedError, match=expected):
            app_settings(conf)


def test_app_folder_is_written_and_protected(tmp_path):
    code = subprocess.run(
        [sys.executable, "-m", "sam2_med.monailabel_app", str(tmp_path / "app")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert code.returncode == 0, code.stderr
    main_py = tmp_path / "app" / "main.py"
    assert "from sam2_med.monailabel_app.app import Sam2MedApp" in main_py.read_text()
    assert f"monailabel start_server --app {main_py.parent}" in code.stdout

    other = tmp_path / "other" / "main.py"
    other.parent.mkdir()
    other.write_text("# someone's app\n")
    code = subprocess.run(
        [sys.executable, "-m", "sam2_med.monailabel_app", str(other.parent)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert code.returncode == 2 and code.stderr.count("\n") == 1
    assert "exists and is not sam2-med's app; pass --overwrite" in code.stderr
    assert other.read_text() == "# someone's app\n"


# ------------------------------------------------- MONAI Label's server and client, for real
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MONAI_LABEL_", "VIRTUAL"))}
    env.update(
        {
            "PATH": f"{SERVER_VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}",
            "PYTHONPATH": str(ROOT),
            "OMP_NUM_THREADS": "1",  # one torch thread, as in this test process
            "SAM2_MED_OFFLINE": "1",
            "SAM2_MED_CACHE": str(tmp_path / "cache"),
            "MONAI_LABEL_TASKS_TRAIN": "false",
            "MONAI_LABEL_TASKS_SCORING": "false",
            "MONAI_LABEL_TASKS_BATCH_INFER": "false",
            "MONAI_LABEL_AUTO_UPDATE_SCORING": "false",
            "MONAI_LABEL_DATASTORE_AUTO_RELOAD": "false",
            "HOME": str(tmp_path / "home"),  # MONAI Label writes caches under ~/.cache
        }
    )
    return env


def _wait_for_info(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"the server exited ({proc.returncode}):\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/info/", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(1.0)
    pytest.fail(
        f"the server did not answer /info/ within {timeout:g} s:\n{log.read_text()[-3000:]}"
    )


@pytest.mark.slow
def test_monailabel_server_and_client(tmp_path, tiny_checkpoint, tiny_model):
    if not (SERVER_VENV / "bin" / "monailabel").exists():
        pytest.skip(
            f"no MONAI Label server environment at {SERVER_VENV}: run bash "
            "scripts/monailabel_env.sh (CI does)"
        )
    ckpt, arch = tiny_checkpoint
    study = _study(tmp_path / "studies" / "vol.nii.gz")
    (tmp_path / "studies" / "broken.nii.gz").write_bytes(b"\x00not a nifti" * 30)
    env = _server_env(tmp_path)
    py = str(SERVER_VENV / "bin" / "python")
    subprocess.run(
        [py, "-m", "sam2_med.monailabel_app", str(tmp_path / "app")],
        env=env,
        check=True,
        timeout=120,
        capture_output=True,
    )
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "server.log"
    with open(log, "wb") as fh:
        server = subprocess.Popen(
            [
                "monailabel",
                "start_server",
                "--app",
                str(tmp_path / "app"),
                "--studies",
                str(tmp_path / "studies"),
                "--conf",
                "checkpoint",
                str(ckpt),
                "--conf",
                "arch",
                str(arch),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--uvicorn_app",
                "sam2_med.monailabel_app.server:app",
            ],
            env=env,
            cwd=tmp_path,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        _wait_for_info(url, server, log, timeout=240)
        plan = {
            "url": url,
            "tmpdir": str(tmp_path / "client"),
            "requests": [
                {"image": "vol", "params": {"foreground": [list(CLICK)], "label": "liver"}},
                {
                    "image": "vol",
                    "params": {
                        "foreground": [list(CLICK)],
                        "background": [list(CORRECTION)],
                        "label": "liver",
                    },
                },
                {"image": "broken", "params": {"foreground": [[1, 1, 1]], "label": "liver"}},
            ],
        }
        done = subprocess.run(
            [py, str(CLIENT), json.dumps(plan)],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        answers = json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=30)
    assert server.returncode is not None

    # /info/: the one interactive 3D model, with the model and its licence in the description
    model = answers["info"]["models"]["sam2_med"]
    assert model["type"] == "deepgrow" and model["dimension"] == 3
    assert (
        "Model custom (128 px) on cpu, float32 (precision auto); licence: " in model["description"]
    )

    # the answers lie on the study's grid and hold what the Session API gives for the clicks
    ref = _reference(tiny_model, study, [([CLICK], [1]), ([CORRECTION], [0])])
    img = nib.load(study)
    for answer, expected in zip(answers["infer"][:2], ref, strict=True):
        lab = nib.load(answer["file"])
        assert lab.shape == img.shape
        np.testing.assert_array_equal(lab.affine, img.affine)
        assert lab.header.get_sform(coded=True)[1] == img.header.get_sform(coded=True)[1]
        got = np.asanyarray(lab.dataobj)
        assert set(np.unique(got)) <= {0, 1}
        k = CLICK[2]
        assert expected[:, :, k].any()  # the clicked slice's result is not empty...
        np.testing.assert_array_equal(got[:, :, k], expected[:, :, k])  # ...and is returned
        np.testing.assert_array_equal(got, expected.astype(np.uint8))
        assert answer["params"]["label_names"] == {"liver": 1}
    assert answers["infer"][1]["params"]["sam2_med"]["anchors"] == [CLICK[2], CORRECTION[2]]
    # ...and the session's run record, whose interaction log replays the answer
    run = answers["infer"][1]["params"]["sam2_med"]["run"]
    assert answers["infer"][1]["params"]["sam2_med"]["label"] == 1
    assert [e["op"] for e in run["interactions"]["events"]] == [
        "add_object", "prompt", "propagate", "prompt", "propagate"
    ]  # fmt: skip

    # a study the app cannot read: HTTP 422 with one line naming the file
    error = answers["infer"][2]["error"]
    assert "Status: 422" in error and "\n" not in error
    broken = tmp_path / "studies" / "broken.nii.gz"
    assert f"sam2-med: {broken}: not a readable NIfTI file" in error
