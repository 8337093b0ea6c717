"""The README's cluster and server recipes, as printed: the SLURM script builds the cluster it
describes, and every command names options and files that exist."""

from __future__ import annotations

import re
import shlex

import pytest

from tests.conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def _subsection(title: str) -> str:
    start = README.index(f"\n### {title}\n")
    end = min(
        i for i in (README.find("\n### ", start + 1), README.find("\n## ", start + 1)) if i > 0
    )
    return README[start:end]


def _blocks(text: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S)


def _commands(block: str) -> list[list[str]]:
    out = []
    for line in block.strip().splitlines():
        for part in line.split("#")[0].split("&&"):
            if part.strip():
                out.append(shlex.split(part))
    return out


SLURM = "A 1,000-volume batch on a SLURM cluster"
SERVER = "Serving 3D Slicer and OHIF from one GPU machine"


def test_slurm_script_builds_the_cluster_it_describes(monkeypatch):
    """Run the script up to its keep-alive loop (on a free local port, without submitting):
    one Dask thread and 8 CPUs per worker, one GPU per SLURM job, a crashed job re-run once."""
    pytest.importorskip("dask_jobqueue", reason='in the dask extra: pip install "sam2-med[dask]"')
    import dask
    from dask_jobqueue import SLURMCluster

    (script,) = _blocks(_subsection(SLURM), "python")
    code = script.split("while True:")[0]
    assert '"port": 8786' in code
    code = code.replace('"port": 8786', '"port": 0, "host": "127.0.0.1", "dashboard_address": ":0"')
    scaled = []
    monkeypatch.setattr(SLURMCluster, "scale", lambda self, n=None, **kw: scaled.append((n, kw)))
    namespace: dict = {"print": lambda *a, **k: None}
    key = "distributed.scheduler.allowed-failures"
    before = dask.config.get(key)
    try:
        exec(compile(code, "README.md", "exec"), namespace)
        cluster = namespace["cluster"]
        try:
            job = cluster.job_script()
            assert cluster.scheduler.allowed_failures == 1
        finally:
            cluster.close()
    finally:
        dask.config.set({key: before})  # the script's setting stays inside this test
    assert scaled[0] == (None, {"jobs": 16})
    assert "#SBATCH --gres=gpu:1" in job and "#SBATCH --cpus-per-task=8" in job
    assert "--nthreads 1" in job and "distributed.cli.dask_worker" in job


def test_readme_commands_exist():
    from sam2_med.cli import build_parser
    from sam2_med.monailabel_app._interactive import CONF_DEFAULTS

    (slurm,) = _blocks(_subsection(SLURM), "bash")
    batch = [c for c in _commands(slurm) if c[:2] == ["sam2-med", "batch"]]
    assert len(batch) == 1
    args = build_parser().parse_args(batch[0][1:])
    assert args.scheduler == "tcp://login01:8786" and args.worker_timeout == 3600

    (server,) = _blocks(_subsection(SERVER), "bash")
    cmds = _commands(server)
    assert cmds[0][:2] == ["bash", "scripts/monailabel_env.sh"]
    assert (ROOT / cmds[0][1]).is_file()
    assert ["python", "-m", "sam2_med.monailabel_app", "/opt/sam2-med-app"] in cmds
    (start,) = [c for c in cmds if c[:2] == ["monailabel", "start_server"]]
    assert start[start.index("--uvicorn_app") + 1] == "sam2_med.monailabel_app.server:app"
    confs = [start[i + 1] for i, a in enumerate(start) if a == "--conf"]
    assert confs and set(confs) <= set(CONF_DEFAULTS)
