"""The batch on Dask: a real LocalCluster (2 worker processes) against the serial batch.

One cluster serves the module (its workers load the random-weight model once); the command
line reaches it with ``--scheduler``, the API with ``sam2_med.batch.run(jobs, client=...)``.
``--cluster local:N`` starts its own. Bad input (unreachable scheduler, no workers, a worker
without the weights) runs the real ``sam2-med`` in a subprocess, so what a user sees on stderr
is what the test reads.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

pytest.importorskip("distributed", reason='Dask is an optional extra: pip install "sam2-med[dask]"')

from tests.conftest import ROOT

pytestmark = pytest.mark.slow  # worker processes import torch and load a model: ~20 s each

NAMES = ["c0", "c1", "c2", "c3"]  # c2 is corrupt


def _make_jobs(root: Path, names=NAMES) -> Path:
    """Four small volumes with a bright block, one point prompt each; ``c2`` is random bytes."""
    (root / "in").mkdir(parents=True)
    rows = ["name,image,prompts,output"]
    for n, name in enumerate(names):
        img = root / "in" / f"{name}.nii.gz"
        if name == "c2":
            img.write_bytes(np.random.default_rng(99).bytes(400))
        else:
            rng = np.random.default_rng(n)
            a = rng.normal(40, 10, (40, 36, 8))
            a[10:25, 12:26, 2:6] += 200
            nib.Nifti1Image(a.astype(np.int16), np.diag([-1.5, -1.5, 3.0, 1])).to_filename(img)
        prompt = {"space": "voxel", "objects": [{"name": "blob", "label": 1}]}
        prompt["objects"][0]["points"] = [[17, 19, 4, 1]]
        (root / "in" / f"{name}.json").write_text(json.dumps(prompt))
        rows.append(f"{name},in/{name}.nii.gz,in/{name}.json,out/{name}.nii.gz")
    (root / "jobs.csv").write_text("\n".join(rows) + "\n")
    return root / "jobs.csv"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A real ``distributed.LocalCluster`` of 2 worker processes, from sam2-med's
    ``local_cluster`` (one thread each, a crashed job re-run once). Its workers never touch the
    network or the user's weights cache (their environment is set before they start)."""
    from sam2_med.dask_batch import close_cluster, local_cluster

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("SAM2_MED_OFFLINE", "1")
        mp.setenv("SAM2_MED_CACHE", str(tmp_path_factory.mktemp("worker-cache")))
        c = local_cluster(2)
    assert len(c.workers) == 2
    yield c
    close_cluster(c)


@pytest.fixture
def client(cluster):
    from distributed import Client

    with Client(cluster, set_as_default=False) as c:
        yield c


def _normalised_sidecar(path: Path, root: Path) -> dict:
    meta = json.loads(path.read_text().replace(str(root), "<ROOT>"))
    meta.pop("created_utc")
    meta["extra"]["sam2_med_run"].pop("seconds")
    return meta


def _job_lines(out: str) -> dict[str, str]:
    lines = re.findall(r"^\[(\d)/4\] (c\d): (.*)$", out, flags=re.M)
    assert sorted(n for n, _, _ in lines) == ["1", "2", "3", "4"], out
    return {name: rest for _, name, rest in lines}


def test_scheduler_batch_equals_serial_then_resumes(cli, tmp_path, model_args, cluster, client):
    from sam2_med import dask_batch

    serial, dask = tmp_path / "serial", tmp_path / "dask"
    serial_jobs, dask_jobs = _make_jobs(serial), _make_jobs(dask)
    code_s, out_s, _ = cli(
        "batch", serial_jobs, "--datalist", serial / "out" / "datalist.json", *model_args
    )
    args = ["--scheduler", cluster.scheduler_address, "--worker-threads", "1"]
    code_d, out_d, _ = cli(
        "batch", dask_jobs, "--datalist", dask / "out" / "datalist.json", *args, *model_args
    )
    assert code_s == code_d == 1, out_d

    # progress: the dashboard link, each worker's model load, one line per job
    assert re.search(r"^dask: scheduler tcp://127\.0\.0\.1:\d+, dashboard http://", out_d, re.M)
    assert len(re.findall(r"^dask: worker tcp://\S+ loaded the model on cpu", out_d, re.M)) == 2
    lines = _job_lines(out_d)
    assert all(
        lines[n].startswith(f"done -> {dask / 'out' / n}.nii.gz") for n in ["c0", "c1", "c3"]
    )
    assert re.search(r"\[tcp://127\.0\.0\.1:\d+\]$", lines["c0"])
    # the corrupt job failed with the serial batch's error; the others are unaffected
    failed_s = next(line for line in out_s.splitlines() if "c2: FAILED" in line)
    assert lines["c2"].startswith("FAILED: ")
    assert lines["c2"].split(" [tcp://")[0].replace(str(dask), "<R>") == failed_s.split("c2: ")[
        1
    ].replace(str(serial), "<R>")
    assert f"{dask / 'in' / 'c2.nii.gz'}: " in lines["c2"]
    assert "4 jobs: 3 done, 0 skipped (already finished), 1 failed" in out_d

    # outputs identical to the serial batch's (but for the paths and times in the sidecar)
    assert sorted(p.name for p in (dask / "out").iterdir()) == sorted(
        p.name for p in (serial / "out").iterdir()
    )
    assert not (dask / "out" / "c2.nii.gz").exists()
    for name in ["c0", "c1", "c3"]:
        a, b = (
            nib.load(serial / "out" / f"{name}.nii.gz"),
            nib.load(dask / "out" / f"{name}.nii.gz"),
        )
        assert a.header.binaryblock == b.header.binaryblock
        np.testing.assert_array_equal(np.asanyarray(a.dataobj), np.asanyarray(b.dataobj))
        assert np.asanyarray(b.dataobj).any()
        assert _normalised_sidecar(serial / "out" / f"{name}.json", serial) == (
            _normalised_sidecar(dask / "out" / f"{name}.json", dask)
        )
    datalist = (dask / "out" / "datalist.json").read_bytes()
    assert datalist == (serial / "out" / "datalist.json").read_bytes()

    # one model per worker process, loaded once and reused by every job it ran
    assert client.run(lambda: dask_batch.MODEL_LOADS) == dict.fromkeys(
        cluster.scheduler_info["workers"], 1
    )

    # a second run resumes: every finished job skipped, nothing rewritten; the corrupt one
    # is tried again and fails again, as in the serial batch
    mtimes = {p: p.stat().st_mtime_ns for p in (dask / "out").iterdir()}
    code, out, _ = cli(
        "batch", dask_jobs, "--datalist", dask / "out" / "datalist.json", *args, *model_args
    )
    assert code == 1
    assert len(re.findall(r"c[013]: skipped \(finished", out)) == 3
    assert "4 jobs: 0 done, 3 skipped (already finished), 1 failed" in out
    assert {p: p.stat().st_mtime_ns for p in mtimes if p.name != "datalist.json"} == {
        p: t for p, t in mtimes.items() if p.name != "datalist.json"
    }
    assert (dask / "out" / "datalist.json").read_bytes() == datalist
    assert client.run(lambda: dask_batch.MODEL_LOADS) == dict.fromkeys(
        cluster.scheduler_info["workers"], 1
    )


def test_api_run_with_client(tmp_path, tiny_checkpoint, client):
    """``sam2_med.batch.run(jobs, client=...)``: outcomes in job order, datalist at the end,
    and nothing sent to the cluster once every job is finished."""
    from sam2_med.batch import run

    ckpt, arch = tiny_checkpoint
    names = ["c0", "c1", "c3"]
    jobs = _make_jobs(tmp_path, names)
    logged: list[str] = []
    kw = {"checkpoint": ckpt, "arch": arch, "log": logged.append, "worker_threads": 1}
    outcomes = run(jobs, client=client, datalist=tmp_path / "dl.json", **kw)
    assert [(o.job.name, o.status) for o in outcomes] == [(n, "done") for n in names]
    assert [o.job.output for o in outcomes] == [tmp_path / "out" / f"{n}.nii.gz" for n in names]
    items = json.loads((tmp_path / "dl.json").read_text())["training"]
    assert [i["label"] for i in items] == [f"out/{n}.nii.gz" for n in names]
    assert any(line.startswith("dask: scheduler") for line in logged)

    logged.clear()
    again = run(jobs, client=client, **kw)
    assert [o.status for o in again] == ["skipped"] * 3
    assert not any(line.startswith("dask:") for line in logged), logged  # nothing was sent


def _run_with(segment_job, jobs, client, ckpt, arch, logged):
    """``run_on_dask`` with a test's job function on the workers, logging into ``logged``."""
    from sam2_med._batch_job import ModelChoice
    from sam2_med.dask_batch import run_on_dask

    return run_on_dask(
        jobs,
        client,
        ModelChoice.of(checkpoint=ckpt, arch=arch),
        log=logged.append,
        torch_threads=1,
        segment_job=segment_job,
    )


def test_crashed_worker_job_retried_once_then_failed(tmp_path, tiny_checkpoint, client):
    """A job that kills its worker every time is re-run once, then recorded as failed with its
    error; one that kills it only the first time succeeds on the re-run; the others finish."""
    import cloudpickle

    from sam2_med.batch import load_jobs
    from tests.cli import dask_helpers

    cloudpickle.register_pickle_by_value(dask_helpers)
    ckpt, arch = tiny_checkpoint
    jobs = load_jobs(_make_jobs(tmp_path, ["crash", "crash-once", "c0"]))
    logged: list[str] = []
    outcomes = _run_with(dask_helpers.crash_or_segment, jobs, client, ckpt, arch, logged)
    by_name = {o.job.name: o for o in outcomes}
    assert by_name["crash"].status == "failed"
    assert by_name["crash"].message.startswith("FAILED: the worker running it died 2 time(s)")
    assert "KilledWorker" in by_name["crash"].message
    assert (by_name["crash-once"].status, by_name["c0"].status) == ("done", "done"), logged
    assert (tmp_path / "out" / "crash-once.crashed").exists()
    assert not (tmp_path / "out" / "crash.nii.gz").exists()
    assert any("re-run 1 time(s)" in line for line in logged)


def test_job_whose_worker_died_after_writing_is_done(tmp_path, tiny_checkpoint, client):
    """A job whose worker dies after it wrote its output is re-run by Dask, finds the output
    finished, and is reported done (it was not finished when the batch started), not skipped."""
    import cloudpickle

    from sam2_med.batch import load_jobs
    from tests.cli import dask_helpers

    cloudpickle.register_pickle_by_value(dask_helpers)
    ckpt, arch = tiny_checkpoint
    jobs = load_jobs(_make_jobs(tmp_path, ["c0"]))
    logged: list[str] = []
    (outcome,) = _run_with(dask_helpers.segment_then_crash_once, jobs, client, ckpt, arch, logged)
    assert (tmp_path / "out" / "c0.crashed").exists()  # the first attempt died after writing
    assert outcome.status == "done", logged
    assert "earlier attempt whose worker died" in outcome.message
    assert (tmp_path / "out" / "c0.nii.gz").exists()


def _sam2_med(*args: str, env: dict | None = None, timeout: float = 120):
    """The real command in a subprocess: (exit code, stdout, stderr, seconds)."""
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "sam2_med", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )
    return proc.returncode, proc.stdout, proc.stderr, time.monotonic() - start


def test_worker_without_weights_is_one_line(tmp_path, cluster):
    """The cluster's workers are offline with an empty weights cache: a registered model name
    stops the batch before any job, with one line naming the worker and the problem."""
    jobs = _make_jobs(tmp_path, ["c0"])
    code, out, err, _ = _sam2_med(
        "batch", jobs, "--scheduler", cluster.scheduler_address, "--model", "sam2.1_hiera_tiny"
    )
    assert code == 2, out + err
    assert err.count("\n") == 1, err
    assert re.match(r"sam2-med: error: worker tcp://127\.0\.0\.1:\d+ cannot load the model: ", err)
    assert "sam2.1_hiera_tiny" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_unreachable_scheduler_is_one_line(cli, tmp_path, monkeypatch):
    import socket

    from sam2_med import dask_batch

    monkeypatch.setattr(dask_batch, "CONNECT_TIMEOUT_S", 2.0)  # 20 s for users
    jobs = _make_jobs(tmp_path, ["c0"])
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    code, out, err = cli("batch", jobs, "--scheduler", f"tcp://127.0.0.1:{port}")
    assert code == 2, out + err
    assert err.count("\n") == 1, err
    assert err.startswith(
        f"sam2-med: error: tcp://127.0.0.1:{port}: cannot reach the Dask scheduler"
    )
    assert "(waited 2 s)" in err
    assert time.monotonic() - start < 15  # the connect time-out, not a hang

    code, _, err = cli("batch", jobs, "--scheduler", "nonsense::")
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("sam2-med: error: nonsense::: not a Dask scheduler address")


def test_scheduler_without_workers_times_out(tmp_path):
    from distributed import LocalCluster

    jobs = _make_jobs(tmp_path, ["c0"])
    with LocalCluster(
        n_workers=0,
        processes=False,
        protocol="tcp://",
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
    ) as empty:
        code, out, err, seconds = _sam2_med(
            "batch", jobs, "--scheduler", empty.scheduler_address, "--worker-timeout", "3"
        )
    assert code == 2, out + err
    assert err.count("\n") == 1, err
    assert "no Dask worker joined within 3 s" in err
    assert seconds < 60


def test_cluster_local_option(cli, tmp_path, model_args):
    """``--cluster local:1`` starts (and closes) its own cluster; a finished batch starts none."""
    jobs = _make_jobs(tmp_path, ["c0", "c1"])
    code, out, _ = cli("batch", jobs, "--cluster", "local:1", "--worker-threads", "1", *model_args)
    assert code == 0, out
    assert "dask: local cluster of 1 worker process(es) on this machine" in out
    assert "2 jobs: 2 done, 0 skipped (already finished), 0 failed" in out
    code, out, _ = cli("batch", jobs, "--cluster", "local:1", *model_args)
    assert code == 0 and "dask:" not in out
    assert "2 jobs: 0 done, 2 skipped (already finished), 0 failed" in out
    code, _, err = cli("batch", jobs, "--cluster", "remote")
    assert code == 2 and "--cluster: expected local or local:N, got 'remote'" in err


def test_worker_device_and_options():
    """Small pieces: one GPU per local worker, the option parsers' one-line complaints."""
    import argparse

    from sam2_med._batch_job import ModelChoice
    from sam2_med._cli_dask import _cluster_arg, _count
    from sam2_med.dask_batch import worker_device

    assert [worker_device("cuda", n, 2) for n in range(4)] == ["cuda:0", "cuda:1"] * 2
    assert worker_device("cuda", "SLURMCluster-3", 2) == "cuda"  # the job's own GPU
    assert worker_device("cuda:1", 0, 2) == "cuda:1" and worker_device("cpu", 1, 2) == "cpu"
    assert _cluster_arg("local") is None and _cluster_arg("local:3") == 3
    for bad in ("local:0", "local:x", "slurm:2"):
        with pytest.raises(argparse.ArgumentTypeError):
            _cluster_arg(bad)
    with pytest.raises(argparse.ArgumentTypeError):
        _count("0")
    choice = ModelChoice.of(checkpoint="rel/tiny.pt", arch={"b": 1, "a": 2})
    assert Path(choice.checkpoint).is_absolute() and choice.arch_json == '{"a": 2, "b": 1}'
    assert hash(choice) == hash(ModelChoice.of(checkpoint="rel/tiny.pt", arch={"a": 2, "b": 1}))


def test_workers_replay_an_interactive_sessions_sidecar(tmp_path, tiny_checkpoint, client):
    """A job whose prompts are an interactive session's sidecar (a correction click after a
    propagation, then another propagation) replays on a Dask worker to that session's label
    map, voxel for voxel, and the worker's sidecar records the same interactions.

    Last in the module: a job run on the shared cluster just before
    ``test_crashed_worker_job_retried_once_then_failed`` changes how its scheduler places that
    test's jobs, and a crash can then take a queued job down with it."""
    from sam2_med.batch import run
    from sam2_med.io import load_volume, save_mask
    from sam2_med.models import load_model
    from sam2_med.session import Session

    ckpt, arch = tiny_checkpoint
    _make_jobs(tmp_path, ["c0"])
    image = tmp_path / "in" / "c0.nii.gz"
    volume = load_volume(image)
    s = Session(load_model(checkpoint=ckpt, arch=json.loads(arch.read_text())), volume)
    a = s.add_object("blob")
    s.add_prompts(a, points=[[17, 19, 4]], point_labels=[1])
    list(s.propagate())
    s.add_prompts(a, points=[[30, 8, 6]], point_labels=[0])  # a correction, read with memory
    list(s.propagate())
    assert s.stats.correction_memory and s.label_map().array.any()
    save_mask(s.label_map(), tmp_path / "session.nii.gz", reference=volume)
    out = tmp_path / "out" / "replayed.nii.gz"
    (tmp_path / "replay.csv").write_text(
        f"image,prompts,output\n{image},{tmp_path / 'session.json'},{out}\n"
    )
    kw = {"checkpoint": ckpt, "arch": arch, "log": lambda _: None, "worker_threads": 1}
    [outcome] = run(tmp_path / "replay.csv", client=client, **kw)
    assert outcome.status == "done", outcome.message
    np.testing.assert_array_equal(np.asanyarray(nib.load(out).dataobj), s.label_map().array)
    run_record = json.loads(out.with_suffix("").with_suffix(".json").read_text())["extra"]
    assert run_record["sam2_med_run"]["interactions"]["events"] == s.interactions()["events"]
