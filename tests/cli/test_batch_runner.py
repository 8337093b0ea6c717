"""The batch runner with an injected segment function: resuming, failures, datalist."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest

from sam2_med.api import RUN_RECORD_KEY
from sam2_med.batch import (
    BatchError,
    file_digest,
    finished_state,
    load_jobs,
    run_batch,
    summary_line,
    write_datalist,
)
from sam2_med.io import load_volume, save_mask
from sam2_med.labels import LabelVolume


def _image(path, seed):
    rng = np.random.default_rng(seed)
    aff = np.diag([-2.0, -2.0, 3.0, 1.0])
    nib.Nifti1Image(rng.integers(0, 100, (12, 10, 6)).astype(np.int16), aff).to_filename(path)


@pytest.fixture
def five_jobs(tmp_path):
    (tmp_path / "img").mkdir()
    (tmp_path / "prompts").mkdir()
    lines = ["name,image,prompts,output"]
    for n in range(5):
        img = tmp_path / "img" / f"c{n}.nii.gz"
        if n == 2:
            img.write_bytes(os.urandom(300))  # corrupt
        else:
            _image(img, n)
        (tmp_path / "prompts" / f"c{n}.json").write_text(json.dumps({"case": n}))
        lines.append(f"case{n},img/c{n}.nii.gz,prompts/c{n}.json,out/c{n}.nii.gz")
    (tmp_path / "out").mkdir()
    jobs = tmp_path / "jobs.csv"
    jobs.write_text("\n".join(lines) + "\n")
    return jobs


def make_segment(calls):
    """A stand-in for the model: thresholds the image and records a complete run."""

    def segment_job(job, overwrite):
        calls.append(job.name)
        vol = load_volume(job.image)
        record = {
            "status": "complete",
            "inputs": {"prompts_file_sha256": file_digest(job.prompts)},
        }
        labels = LabelVolume(
            (np.asarray(vol.array) > 50).astype(np.uint8),
            vol,
            {1: "bright"},
            {RUN_RECORD_KEY: record},
        )
        save_mask(labels, job.output, reference=vol, overwrite=overwrite)

    return segment_job


def test_failure_continues_resume_skips_finished(five_jobs, tmp_path):
    jobs = load_jobs(five_jobs)
    assert [j.name for j in jobs] == [f"case{n}" for n in range(5)]
    assert jobs[0].image == tmp_path / "img" / "c0.nii.gz"  # relative to the jobs file
    calls, log = [], []
    outcomes = run_batch(jobs, make_segment(calls), log=log.append)
    assert [o.status for o in outcomes] == ["done", "done", "failed", "done", "done"]
    failed = [line for line in log if "FAILED" in line]
    assert len(failed) == 1 and str(tmp_path / "img" / "c2.nii.gz") in failed[0]
    assert "\n" not in failed[0]
    assert summary_line(outcomes) == "5 jobs: 4 done, 0 skipped (already finished), 1 failed"
    mtimes = {n: (tmp_path / "out" / f"c{n}.nii.gz").stat().st_mtime_ns for n in (0, 1, 3, 4)}

    calls.clear()
    log.clear()
    again = run_batch(load_jobs(five_jobs), make_segment(calls), log=log.append)
    assert [o.status for o in again] == ["skipped", "skipped", "failed", "skipped", "skipped"]
    assert calls == ["case2"]  # only the failed one was attempted again
    assert sum("skipped (finished" in line for line in log) == 4
    assert {n: (tmp_path / "out" / f"c{n}.nii.gz").stat().st_mtime_ns for n in mtimes} == mtimes


def test_datalist_loads_with_monai(five_jobs, tmp_path):
    from monai.data import load_decathlon_datalist

    outcomes = run_batch(load_jobs(five_jobs), make_segment([]), log=lambda s: None)
    dl = write_datalist(outcomes, tmp_path / "lists" / "datalist.json", label_names={1: "bright"})
    data = json.loads(dl.read_text())
    assert data["labels"] == {"0": "background", "1": "bright"} and data["numTraining"] == 4
    items = load_decathlon_datalist(str(dl), is_segmentation=True, data_list_key="training")
    assert len(items) == 4
    for item in items:
        assert os.path.exists(item["image"]) and os.path.exists(item["label"])
        stem = os.path.basename(item["label"])
        assert os.path.basename(item["image"]) == stem  # cN.nii.gz pairs with cN.nii.gz
    assert "c2.nii.gz" not in json.dumps(data["training"])


def test_stale_and_foreign_outputs_are_not_replaced(five_jobs, tmp_path):
    jobs = load_jobs(five_jobs)
    run_batch(jobs, make_segment([]), log=lambda s: None)
    (tmp_path / "prompts" / "c0.json").write_text(json.dumps({"case": "changed"}))
    (tmp_path / "out" / "c2.nii.gz").write_bytes(b"someone else's file")
    calls, log = [], []
    outcomes = run_batch(jobs, make_segment(calls), log=log.append)
    by = {o.job.name: o for o in outcomes}
    assert by["case0"].status == "failed" and "different prompts" in by["case0"].message
    assert by["case2"].status == "failed" and "not a finished sam2-med run" in by["case2"].message
    assert calls == []
    assert finished_state(tmp_path / "out" / "c2.nii.gz")[0] == "foreign"
    # --overwrite recomputes everything
    calls.clear()
    outcomes = run_batch(jobs, make_segment(calls), overwrite=True, log=lambda s: None)
    assert calls == [f"case{n}" for n in range(5)]
    assert [o.status for o in outcomes].count("done") == 4


def test_unexpected_exception_fails_one_job_only(five_jobs):
    jobs = load_jobs(five_jobs)

    def flaky(job, overwrite):
        if job.name == "case1":
            raise ZeroDivisionError("division by zero")
        make_segment([])(job, overwrite)

    log = []
    outcomes = run_batch(jobs, flaky, log=log.append)
    assert outcomes[1].message == "FAILED: internal error: ZeroDivisionError: division by zero"
    assert [o.status for o in outcomes].count("done") == 3


def test_yaml_jobs_and_table_errors(tmp_path):
    (tmp_path / "jobs.yaml").write_text(
        "jobs:\n  - {image: a.nii.gz, prompts: a.json, output: out/a.nii.gz}\n"
        "  - {image: /abs/b.nii.gz, prompts: b.json, output: out/b.nii.gz, name: bee}\n"
    )
    a, b = load_jobs(tmp_path / "jobs.yaml")
    assert a.name == "a" and a.output == tmp_path / "out" / "a.nii.gz"
    assert b.name == "bee" and str(b.image) == "/abs/b.nii.gz"
    cases = {
        "dup.csv": ("image,prompts,output\na,p,o.nii.gz\nb,p,o.nii.gz\n", "write the same output"),
        "suffix.csv": ("image,prompts,output\na,p,o.nrrd\n", "must end in .nii.gz"),
        "extra.csv": ("image,prompts,output,colour\na,p,o.nii.gz,red\n", "unknown column"),
        "empty.csv": ("image,prompts,output\na,,o.nii.gz\n", "row 1: empty prompts"),
        "bad.yaml": ("jobs: [1, 2\n", "invalid YAML"),
        "jobs.txt.json": ("{}", "use a .csv"),
    }
    for name, (text, pattern) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(BatchError, match=pattern) as err:
            load_jobs(tmp_path / name)
        assert str(err.value).startswith(str(tmp_path / name))
