"""``sam2-med batch --cluster local[:N]`` and ``--scheduler ADDRESS``: the batch on Dask.

Kept apart from :mod:`sam2_med.cli`, which only adds these options and hands the jobs over;
the work is :func:`sam2_med.batch.run` with a Dask client (:mod:`sam2_med.dask_batch`). Errors
are :class:`~sam2_med.errors.Sam2MedError` subclasses, printed by the command line as one line.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

DASK_HELP = """\
on a Dask cluster (pip install "sam2-med[dask]"):
  --cluster local:4 starts 4 worker processes here (default: one per GPU with --device cuda,
  else one per 4 CPUs); --scheduler tcp://host:8786 uses a running cluster, e.g. one that
  dask-jobqueue started on SLURM (see the README). Each worker loads the model once; paths in
  the jobs file and --checkpoint must be valid on the workers. Jobs are reported as they finish,
  after the dashboard link; a job whose worker dies is re-run once on a local cluster (on your
  scheduler: distributed.scheduler.allowed-failures), then recorded as failed. Time-outs: 20 s
  to reach the scheduler, --worker-timeout for a first worker and each model load.
"""


def _cluster_arg(text: str) -> int | None:
    """``local`` -> None (default size), ``local:N`` -> N."""
    head, _, count = text.partition(":")
    if head != "local":
        raise argparse.ArgumentTypeError(f"expected local or local:N, got {text!r}")
    if not count:
        return None
    try:
        n = int(count)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"N in local:N must be a whole number >= 1, got {count!r}")
    return n


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number of seconds > 0, got {text!r}")
    return value


def add_dask_options(p: argparse.ArgumentParser) -> None:
    """``--cluster``, ``--scheduler`` and ``--worker-timeout`` on ``sam2-med batch``."""
    from .dask_batch import WORKER_TIMEOUT_S

    g = p.add_argument_group("distributed (Dask)")
    where = g.add_mutually_exclusive_group()
    where.add_argument(
        "--cluster",
        metavar="local[:N]",
        type=_cluster_arg,
        default=argparse.SUPPRESS,
        help="run on a local Dask cluster of N worker processes",
    )
    where.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="run on the Dask cluster whose scheduler is at ADDRESS (tcp://host:port)",
    )
    g.add_argument(
        "--worker-timeout",
        metavar="SECONDS",
        type=_seconds,
        default=WORKER_TIMEOUT_S,
        help=f"wait this long for a first worker and for each model load (default "
        f"{WORKER_TIMEOUT_S:g})",
    )
    g.add_argument(
        "--worker-threads",
        metavar="N",
        type=_count,
        help="torch CPU threads per worker (default: its CPUs / the Dask threads on its host)",
    )


def wants_dask(args: argparse.Namespace) -> bool:
    return hasattr(args, "cluster") or bool(getattr(args, "scheduler", None))


def run_on_dask(args: argparse.Namespace, jobs: Sequence[Any], window: Any, out: Any) -> list[Any]:
    """Run the batch's jobs on the cluster the options name; the outcomes in job order.

    A local cluster is started only when some job is not finished yet, and is closed at the
    end (also on Ctrl-C)."""
    from .batch import finished_state, run

    options: dict[str, Any] = {
        "model": args.model,
        "checkpoint": args.checkpoint,
        "arch": args.arch,
        "device": args.device,
        "dtype": args.dtype,
        "axis": args.axis if getattr(args, "axis_given", True) else None,
        "window": window,
        "overwrite": args.overwrite,
        "log": out.info,
        "debug": bool(getattr(args, "debug", False)),
        "worker_timeout": args.worker_timeout,
        "worker_threads": args.worker_threads,
    }
    if not any(args.overwrite or finished_state(j.output)[0] != "finished" for j in jobs):
        return run(jobs, **options)  # all finished: nothing to send anywhere
    from .dask_batch import close_cluster, connect, local_cluster

    if getattr(args, "scheduler", None):
        with connect(args.scheduler) as client:
            return run(jobs, client=client, **options)
    from distributed import Client

    cluster = local_cluster(args.cluster, device=args.device)
    try:
        with Client(cluster, set_as_default=False) as client:
            n = len(cluster.workers)
            out.info(f"dask: local cluster of {n} worker process(es) on this machine")
            return run(jobs, client=client, **options)
    finally:
        close_cluster(cluster)
