"""Acceptance: an interactive session's label map equals, voxel for voxel, the one the command
line writes from that session's sidecar (``sam2-med segment IMAGE --prompts MASK.json``).

Each sequence is one of issue 9's reproducers (or the undo / two-object cases it asks for),
run interactively on a :class:`Session` of a NIfTI image with a random tiny checkpoint in Meta's
format; the session's label map is saved with :func:`sam2_med.io.save_mask` (its sidecar carries
the interaction log), then the command line replays that sidecar with the same checkpoint.
"""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from sam2_med.io import load_volume, save_mask
from sam2_med.session import Session


@pytest.fixture(scope="module")
def ct(tmp_path_factory):
    """A 36 x 44 x 24 CT-like NIfTI (an ellipsoid in noise), LPS-stored."""
    rng = np.random.default_rng(0)
    shape = (36, 44, 24)
    arr = rng.normal(0.0, 30.0, shape).astype(np.float32)
    ii, jj, kk = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    arr[(ii / 0.6) ** 2 + (jj / 0.5) ** 2 + (kk / 0.8) ** 2 < 1] += 250.0
    path = tmp_path_factory.mktemp("ct") / "ct.nii.gz"
    nib.Nifti1Image(arr, np.diag([-0.9, -0.9, 2.0, 1.0])).to_filename(path)
    return path


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint):
    from sam2_med.models import load_model

    ckpt, arch = tiny_checkpoint
    return load_model(checkpoint=ckpt, arch=json.loads(arch.read_text()))


def _reproducer_1(s: Session) -> None:
    """A negative click on a slice propagation filled: a correction decoded with memory."""
    a = s.add_object("liver")
    s.add_prompts(a, points=[[18, 22, 12]], point_labels=[1])
    list(s.propagate())
    s.add_prompts(a, points=[[20, 22, 16]], point_labels=[0])
    list(s.propagate())
    assert s.stats.correction_memory[-1][:2] == (a, 16)


def _reproducer_2(s: Session) -> None:
    """Anchors 4 and 20, propagate, click 12, propagate."""
    a = s.add_object("liver")
    s.add_prompts(a, points=[[18, 22, 4]], point_labels=[1])
    s.add_prompts(a, box=([10, 12, 20], [26, 30, 20]))
    list(s.propagate())
    s.add_prompts(a, points=[[18, 22, 12], [30, 30, 12]], point_labels=[1, 0])
    list(s.propagate())


def _box_and_clicks_mask_cancel(s: Session) -> None:
    """A box with clicks in one call, a mask, a propagation cancelled part-way, then resumed
    after another click; inside a slice_range."""
    a = s.add_object("liver")
    s.add_prompts(a, points=[[18, 22, 10]], point_labels=[1], box=([10, 12, 10], [26, 30, 10]))
    m = np.zeros(s.stream.slice_shape, bool)
    m[12:24, 14:30] = True
    s.add_prompts(a, mask=m, slice_index=17)
    seen: list[int] = []
    for r in s.propagate(cancel=lambda: len(seen) >= 5):
        seen.append(r.slice_index)
    assert s.pending() > 0
    s.add_prompts(a, points=[[19, 21, 10]], point_labels=[1])  # accumulates on slice 10
    list(s.propagate())


def _with_an_undo(s: Session) -> None:
    a = s.add_object("liver")
    s.add_prompts(a, points=[[18, 22, 12]], point_labels=[1])
    list(s.propagate())
    s.add_prompts(a, points=[[18, 22, 18]], point_labels=[0])
    list(s.propagate())
    assert s.undo()
    s.add_prompts(a, points=[[17, 20, 6]], point_labels=[1])
    list(s.propagate())


def _two_objects(s: Session) -> None:
    a = s.add_object("liver")
    b = s.add_object("spleen")
    c = s.add_object("gone")
    s.add_prompts(a, points=[[18, 22, 12]], point_labels=[1])
    s.add_prompts(b, box=([14, 16, 14], [30, 34, 14]))
    s.add_prompts(c, points=[[5, 5, 5]], point_labels=[1])
    list(s.propagate())
    s.remove_object(c)
    s.add_prompts(b, points=[[22, 25, 9]], point_labels=[0])  # a correction of object b
    list(s.propagate())
    s.add_object("renamed liver", label=a)


SEQUENCES = {
    "correction_after_propagation": (_reproducer_1, {}),
    "anchors_propagate_click_propagate": (_reproducer_2, {}),
    "box_clicks_mask_cancel_resume": (_box_and_clicks_mask_cancel, {"slice_range": (3, 20)}),
    "undo": (_with_an_undo, {}),
    "two_objects": (_two_objects, {}),
}


@pytest.mark.parametrize("name", sorted(SEQUENCES))
def test_cli_replays_an_interactive_session_voxel_for_voxel(
    name, cli, ct, tiny, model_args, tmp_path
):
    sequence, kwargs = SEQUENCES[name]
    volume = load_volume(ct)
    s = Session(tiny, volume, **kwargs)
    sequence(s)
    interactive = s.label_map()
    assert interactive.array.any()
    saved = save_mask(interactive, tmp_path / "interactive.nii.gz", reference=volume)
    sidecar = tmp_path / "interactive.json"
    record = json.loads(sidecar.read_text())["extra"]["sam2_med_run"]
    log = record["interactions"]
    # the session's own record has the fields sam2_med.segment writes
    assert record["status"] == "complete" and record["axis_index"] == 2
    assert record["window"]["requested"] == "auto" and record["window"]["applied"]
    assert record["model_sha256"] == tiny.sha256
    assert log["schema"] == "sam2-med/interactions" and log["version"] == 1
    assert [e["op"] for e in log["events"]].count("propagate") >= 2

    code, _, err = cli(
        "segment", ct, "--prompts", sidecar, "--out", tmp_path / "cli.nii.gz", *model_args
    )
    assert code == 0, err
    replayed = np.asanyarray(nib.load(tmp_path / "cli.nii.gz").dataobj)
    np.testing.assert_array_equal(replayed, interactive.array)
    np.testing.assert_array_equal(replayed, np.asanyarray(nib.load(saved).dataobj))
    # the replay's own sidecar records the same interactions: a replay of a replay is the same
    again = json.loads((tmp_path / "cli.json").read_text())["extra"]["sam2_med_run"]
    assert again["interactions"]["events"] == log["events"]
    assert again["interactions"]["session"] == log["session"]
    assert again["window"]["applied"] == record["window"]["applied"]


def test_order_matters_and_a_plain_prompt_file_is_one_step(cli, ct, tiny, model_args, tmp_path):
    """Reproducer 2 given as a plain prompt file is "prompt everything, then propagate": the
    click on 12 is then a first prompt, not a correction, and the map differs from the
    interactive one; the sidecar of the plain run replays that plain run exactly."""
    volume = load_volume(ct)
    s = Session(tiny, volume)
    _reproducer_2(s)
    interactive = s.label_map().array
    prompts = {
        "space": "voxel",
        "objects": [
            {
                "name": "liver",
                "label": 1,
                "points": [[18, 22, 4, 1], [18, 22, 12, 1], [30, 30, 12, 0]],
                "boxes": [[10, 12, 20, 26, 30, 20]],
            }
        ],
    }
    pf = tmp_path / "prompts.json"
    pf.write_text(json.dumps(prompts))
    code, _, err = cli(
        "segment", ct, "--prompts", pf, "--out", tmp_path / "plain.nii.gz", *model_args
    )
    assert code == 0, err
    plain = np.asanyarray(nib.load(tmp_path / "plain.nii.gz").dataobj)
    assert not np.array_equal(plain, interactive)
    code, _, err = cli(
        "segment",
        ct,
        "--prompts",
        tmp_path / "plain.json",
        "--out",
        tmp_path / "again.nii.gz",
        *model_args,
    )
    assert code == 0, err
    np.testing.assert_array_equal(np.asanyarray(nib.load(tmp_path / "again.nii.gz").dataobj), plain)


def test_replay_refuses_mixing_and_other_images(cli, ct, tiny, model_args, tmp_path):
    volume = load_volume(ct)
    s = Session(tiny, volume)
    _reproducer_1(s)
    save_mask(s.label_map(), tmp_path / "m.nii.gz", reference=volume)
    side = tmp_path / "m.json"
    code, _, err = cli(
        "segment",
        ct,
        "--prompts",
        side,
        "--point",
        "1,1,1",
        "--out",
        tmp_path / "x.nii.gz",
        *model_args,
    )
    assert code == 2 and "replays on its own" in err and "--point" in err
    code, _, err = cli(
        "segment",
        ct,
        "--prompts",
        side,
        "--window",
        "lung",
        "--out",
        tmp_path / "x.nii.gz",
        *model_args,
    )
    assert code == 2 and "drop --window" in err
    other = tmp_path / "other.nii.gz"
    nib.Nifti1Image(np.zeros((36, 44, 20), np.float32), np.eye(4)).to_filename(other)
    code, _, err = cli(
        "segment", other, "--prompts", side, "--out", tmp_path / "x.nii.gz", *model_args
    )
    assert code == 2 and "shape [36, 44, 24]" in err and str(side) in err


def test_batch_replays_sidecars_here_and_as_dask_workers_do(cli, ct, tiny, model_args, tmp_path):
    """A jobs file whose prompts are session sidecars: ``sam2-med batch`` and
    :func:`sam2_med.batch.run` (which runs each job as a Dask worker does,
    ``segment_file_job``) replay them to the interactive label maps, and their outputs'
    sidecars carry the same interactions. A window given for a replayed job fails that job."""
    from sam2_med.batch import run

    volume = load_volume(ct)
    maps, sidecars = {}, {}
    for name in ("anchors_propagate_click_propagate", "two_objects"):
        sequence, kwargs = SEQUENCES[name]
        s = Session(tiny, volume, **kwargs)
        sequence(s)
        maps[name] = s.label_map().array
        save_mask(s.label_map(), tmp_path / f"{name}.nii.gz", reference=volume)
        sidecars[name] = tmp_path / f"{name}.json"

    def jobs(folder: str):
        table = tmp_path / f"{folder}.csv"
        rows = [f"{ct},{sidecars[n]},{tmp_path / folder / n}.nii.gz" for n in sorted(maps)]
        table.write_text("image,prompts,output\n" + "\n".join(rows) + "\n")
        return table

    code, _, err = cli("batch", jobs("serial"), *model_args)
    assert code == 0, err
    outcomes = run(jobs("worker"), model=tiny, log=lambda _: None)
    assert [o.status for o in outcomes] == ["done", "done"], [o.message for o in outcomes]
    for folder in ("serial", "worker"):
        for name, expected in maps.items():
            out = tmp_path / folder / f"{name}.nii.gz"
            np.testing.assert_array_equal(np.asanyarray(nib.load(out).dataobj), expected)
            run_record = json.loads(out.with_name(f"{name}.json").read_text())["extra"]
            recorded = json.loads(sidecars[name].read_text())["extra"]["sam2_med_run"]
            assert (
                run_record["sam2_med_run"]["interactions"]["events"]
                == recorded["interactions"]["events"]
            )
    code, out, err = cli("batch", jobs("windowed"), "--window", "lung", *model_args)
    assert code != 0 and "drop --axis and --window" in out + err
    failed = run(jobs("windowed2"), model=tiny, window="lung", log=lambda _: None)
    assert {o.status for o in failed} == {"failed"}
    assert all("recorded intensity transform" in o.message for o in failed)
