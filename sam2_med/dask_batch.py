"""Batch segmentation on a Dask cluster: a local one, or any scheduler (SLURM via dask-jobqueue).

Dask is an optional extra (``pip install "sam2-med[dask]"``); the rest of sam2-med never
imports it. Use it through :func:`sam2_med.batch.run` (``client=``) or the command line's
``sam2-med batch JOBS --cluster local[:N]`` / ``--scheduler tcp://host:port``.

What a job is
-------------
Exactly the unit of the serial batch (:func:`sam2_med.batch.run_batch`): one jobs-file row,
resumable and failure-isolated. Finished outputs are skipped here, in the calling process,
before anything is sent to the cluster; every other job becomes one Dask task that runs
``run_batch([job], ...)`` on a worker, so its checks (an existing output that is not a finished
run fails, it is not replaced), its one-line messages and its atomic writes (temporary file,
then rename, by the worker into the output folder) are the serial batch's own. The outcomes
come back to the caller, which writes the Decathlon datalist at the end, as the serial batch
does.

Models on workers
-----------------
One model per worker process, loaded once and reused by every job that process runs (a
module-level cache; a different model replaces it). Before the first job, every connected
worker loads the model in a task pinned to it: a worker that cannot (no weights at that path,
not in its cache, no GPU) stops the batch with one line naming the worker and the problem,
instead of failing every job it would take. Workers that join later load on their first job.
The checkpoint path must be valid *on the workers* (a shared file system on a cluster).

``device="cuda"`` binds each worker process to one GPU: worker ``n`` of a
:func:`local_cluster` uses ``cuda:(n mod #GPUs)``; a worker with another name (dask-jobqueue,
``dask worker``) uses the first GPU it sees, so give each worker process its own GPU there
(SLURM ``--gres=gpu:1`` per job, one process per job). Each worker sets torch's CPU threads to
the CPUs it may use divided by the Dask threads on its host.

Crashed workers
---------------
A job whose worker process dies (segfault, killed for memory) is re-run by Dask on another
worker as often as the scheduler's ``distributed.scheduler.allowed-failures`` allows, then
recorded as failed with Dask's ``KilledWorker`` error; the other jobs carry on.
:func:`local_cluster` sets it to :data:`RETRIES_AFTER_CRASH` (1: retried once); for a scheduler
you start yourself, set it there (``DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES=1``, Dask's
default is 3). The batch prints the value in force.

Time-outs
---------
Connecting to a scheduler: :data:`CONNECT_TIMEOUT_S`. Waiting for a first worker, and for each
worker to load the model: :data:`WORKER_TIMEOUT_S` by default (``worker_timeout=``; a SLURM
queue may need longer). Jobs themselves have no time limit.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from ._batch_job import ModelChoice, segment_file_job
from .errors import Sam2MedError

if TYPE_CHECKING:
    from distributed import Client, LocalCluster

    from .batch import Job, JobOutcome
    from .models import LoadedModel

__all__ = [
    "CONNECT_TIMEOUT_S",
    "RETRIES_AFTER_CRASH",
    "WORKER_TIMEOUT_S",
    "ClusterError",
    "close_cluster",
    "connect",
    "local_cluster",
    "run_on_dask",
    "worker_device",
]

#: Seconds to reach a scheduler before giving up.
CONNECT_TIMEOUT_S = 20.0
#: Default seconds to wait for a first worker, and for each worker to load the model.
WORKER_TIMEOUT_S = 600.0
#: Re-runs of a job whose worker died, on the clusters :func:`local_cluster` starts.
RETRIES_AFTER_CRASH = 1

_DASK_HINT = 'Dask is not installed: pip install "sam2-med[dask]"'


class ClusterError(Sam2MedError, RuntimeError):
    """The cluster cannot run the batch: unreachable scheduler, no workers, a worker that
    cannot load the model. One line, naming the address or worker."""


def _require_dask() -> None:
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise ClusterError(_DASK_HINT) from None


# ------------------------------------------------------------------------------ clusters
def local_cluster(
    n_workers: int | None = None,
    *,
    device: str = "cpu",
    dashboard_address: str = "127.0.0.1:0",
) -> LocalCluster:
    """Start a :class:`distributed.LocalCluster` for segmentation on this machine.

    Parameters
    ----------
    n_workers : int, optional
        Worker processes (one model each, one job at a time each). Default: one per GPU for
        ``device="cuda"``, else one per 4 CPUs (at least 1).
    device : str
        Only used for the default ``n_workers``.
    dashboard_address : str
        Where Dask's dashboard listens (default: a free port on localhost).

    Returns
    -------
    distributed.LocalCluster
        Listening on localhost only. Close it (``with local_cluster() as c:``) when done.

    Notes
    -----
    One thread per worker (a job is one propagation; torch threads do the parallel work),
    jobs handed to workers one at a time (``worker-saturation`` 1.0, so a crash takes down
    only the job that was running), and :data:`RETRIES_AFTER_CRASH` re-runs after a crash.
    """
    _require_dask()
    import dask
    from distributed import LocalCluster

    if n_workers is None:
        if str(device).startswith("cuda"):
            import torch

            n_workers = max(1, torch.cuda.device_count())
        else:
            n_workers = max(1, _cpus() // 4)
    n_workers = int(n_workers)
    if n_workers < 1:
        raise ClusterError(f"a local cluster needs at least 1 worker, not {n_workers}")
    with dask.config.set(
        {
            "distributed.scheduler.allowed-failures": RETRIES_AFTER_CRASH,
            "distributed.scheduler.worker-saturation": 1.0,
        }
    ):
        return LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address=dashboard_address,
        )


def close_cluster(cluster: Any) -> None:
    """Close a cluster from :func:`local_cluster` without the nanny's warnings about worker
    processes it kills after 4 s (torch and transformers make interpreter exit slow; all jobs
    are finished or cancelled by then)."""
    import logging

    nanny = logging.getLogger("distributed.nanny")
    level = nanny.level
    nanny.setLevel(logging.ERROR)
    try:
        cluster.close()
    finally:
        nanny.setLevel(level)


def connect(address: str, *, timeout: float | None = None) -> Client:
    """A :class:`distributed.Client` of the scheduler at ``address`` (``tcp://host:port``),
    waiting at most ``timeout`` seconds (default :data:`CONNECT_TIMEOUT_S`).

    Raises
    ------
    ClusterError
        Not a valid address, or nothing answers as a Dask scheduler within ``timeout``
        seconds. One line with the address.
    """
    _require_dask()
    import asyncio

    from distributed import Client
    from distributed.comm import connect as comm_connect

    timeout = CONNECT_TIMEOUT_S if timeout is None else float(timeout)

    async def probe() -> None:  # a failed Client lingers and warns at exit; a probe does not
        comm = await comm_connect(address, timeout=timeout)
        await comm.close()

    try:
        asyncio.run(probe())
    except ValueError as err:
        raise ClusterError(f"not a Dask scheduler address: {err}", address) from None
    except (OSError, asyncio.TimeoutError) as err:
        raise ClusterError(
            f"cannot reach the Dask scheduler (waited {timeout:g} s): {_one_line(err)}; is it "
            "running, and is the address as printed by `dask scheduler` (tcp://host:port)?",
            address,
        ) from None
    try:
        return Client(address, timeout=timeout, set_as_default=False)
    except (OSError, asyncio.TimeoutError) as err:
        raise ClusterError(
            f"cannot connect to the Dask scheduler: {_one_line(err)}", address
        ) from None


# -------------------------------------------------------------------------- worker side
_MODEL: dict[tuple[ModelChoice, str], LoadedModel] = {}
_MODEL_LOCK = threading.Lock()
#: Models this process loaded so far (tests check one load per worker).
MODEL_LOADS = 0
_THREADS_SET = False  # torch threads chosen for this worker process


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def worker_device(device: str, worker_name: Any = None, n_gpus: int | None = None) -> str:
    """The device one worker uses: a bare ``"cuda"`` becomes ``cuda:(n mod n_gpus)`` for a
    worker named ``n`` (as :func:`local_cluster` names them); anything else is kept.

    >>> worker_device("cuda", 3, 2), worker_device("cuda", "SLURMCluster-3", 2)
    ('cuda:1', 'cuda')
    >>> worker_device("cpu", 1, 2), worker_device("cuda:1", 0, 2)
    ('cpu', 'cuda:1')
    """
    if device != "cuda":
        return device
    try:
        n = int(worker_name)
    except (TypeError, ValueError):
        return device
    if n_gpus is None:
        import torch

        n_gpus = torch.cuda.device_count()
    return f"cuda:{n % n_gpus}" if n_gpus else device


def _this_worker() -> tuple[str, Any]:
    try:
        from distributed import get_worker

        w = get_worker()
        return str(w.address), w.name
    except (ImportError, ValueError):
        return f"pid {os.getpid()}", None


def _worker_model(choice: ModelChoice) -> LoadedModel:
    """This process's model for ``choice``: loaded on first use, then reused."""
    global MODEL_LOADS
    device = worker_device(choice.device, _this_worker()[1])
    key = (choice, device)
    with _MODEL_LOCK:
        lm = _MODEL.get(key)
        if lm is None:
            if device.startswith("cuda:"):
                import torch

                torch.cuda.set_device(device)
            lm = choice.load(device=device)
            _MODEL.clear()  # one model per worker process (kept if the new one fails to load)
            _MODEL[key] = lm
            MODEL_LOADS += 1
    return lm


def _prepare_worker(
    choice: ModelChoice, dask_threads_on_host: int, torch_threads: int | None
) -> dict[str, Any]:
    """Pinned to one worker before the jobs: set torch's threads and load the model. Returns
    what happened instead of raising (an exception's pickling may not survive the trip)."""
    import torch

    global _THREADS_SET
    threads = torch_threads or max(1, _cpus() // max(1, int(dask_threads_on_host)))
    torch.set_num_threads(threads)
    _THREADS_SET = True
    start = time.perf_counter()
    try:
        lm = _worker_model(choice)
    except Exception as err:
        return {"ok": False, "error": _one_line(err), "type": type(err).__name__}
    return {
        "ok": True,
        "device": str(lm.device),
        "threads": threads,
        "seconds": time.perf_counter() - start,
        "pid": os.getpid(),
    }


SegmentJobOnWorker = Callable[..., None]


def _prepare_threads(torch_threads: int | None) -> None:
    global _THREADS_SET
    import torch

    try:
        from distributed import get_worker

        nthreads = get_worker().state.nthreads
    except (ImportError, ValueError, AttributeError):
        nthreads = 1
    torch.set_num_threads(torch_threads or max(1, _cpus() // max(1, int(nthreads))))
    _THREADS_SET = True


def _run_job(
    job: Job,
    overwrite: bool,
    choice: ModelChoice,
    axis: str | None,
    window: Any,
    debug: bool,
    torch_threads: int | None,
    segment_job: SegmentJobOnWorker | None,
) -> tuple[JobOutcome, str, list[str]]:
    """One job on a worker, through the serial batch's own runner. Returns the outcome, the
    worker's address and the runner's extra log lines (tracebacks with ``debug``)."""
    from .batch import run_batch

    if not _THREADS_SET:  # a worker that joined after the batch started
        _prepare_threads(torch_threads)

    def seg(j: Job, ow: bool) -> None:
        if segment_job is None:
            segment_file_job(
                j, ow, _worker_model(choice), axis=axis, window=window, protocol=choice.protocol
            )
        else:
            segment_job(j, ow, lambda: _worker_model(choice), axis=axis, window=window)

    lines: list[str] = []
    (outcome,) = run_batch([job], seg, overwrite=overwrite, log=lines.append, debug=debug)
    return outcome, _this_worker()[0], lines[:-1]  # the last line is run_batch's "[1/1] ..."


# -------------------------------------------------------------------------- client side
def _never_called(job: Job, overwrite: bool) -> None:
    """The segment function of finished jobs, which run_batch skips (or fails) without it."""
    raise AssertionError(f"a finished job was recomputed: {job.output}")


def _absolute(job: Job) -> Job:
    return dataclasses.replace(
        job,
        image=job.image.absolute(),
        prompts=job.prompts.absolute(),
        output=job.output.absolute(),
    )


def _one_line(err: BaseException) -> str:
    text = str(err).strip() or type(err).__name__
    return " ".join(text.split())


def _wait_for_workers(client: Client, timeout: float) -> dict[str, dict[str, Any]]:
    try:
        client.wait_for_workers(1, timeout=timeout)
    except (TimeoutError, OSError) as err:
        raise ClusterError(
            f"no Dask worker joined within {timeout:g} s ({_one_line(err)}); start workers "
            "(`dask worker ADDRESS`, or cluster.scale(N) with dask-jobqueue) or raise the "
            "time-out",
            client.scheduler.address,
        ) from None
    return dict(client.scheduler_info(n_workers=-1)["workers"])


def _prepare_workers(
    client: Client,
    choice: ModelChoice,
    workers: dict[str, dict[str, Any]],
    timeout: float,
    torch_threads: int | None,
    log: Callable[[str], None],
) -> None:
    per_host: dict[str, int] = {}
    for info in workers.values():
        per_host[info["host"]] = per_host.get(info["host"], 0) + int(info.get("nthreads", 1))
    futures = {
        addr: client.submit(
            _prepare_worker,
            choice,
            per_host[info["host"]],
            torch_threads,
            workers=[addr],
            allow_other_workers=False,
            pure=False,
            key=f"sam2-med-load-model-{addr}-{time.time_ns()}",
        )
        for addr, info in workers.items()
    }
    deadline = time.monotonic() + timeout
    for addr, fut in futures.items():
        try:
            report = fut.result(timeout=max(0.001, deadline - time.monotonic()))
        except TimeoutError:
            client.cancel(list(futures.values()))
            raise ClusterError(
                f"worker {addr} did not load the model within {timeout:g} s (busy, or a slow "
                "file system?)"
            ) from None
        except Exception as err:  # KilledWorker and the like
            raise ClusterError(
                f"worker {addr} failed while loading the model: {type(err).__name__}: "
                f"{_one_line(err)}"
            ) from None
        if not report["ok"]:
            raise ClusterError(f"worker {addr} cannot load the model: {report['error']}")
        log(
            f"dask: worker {addr} loaded the model on {report['device']} in "
            f"{report['seconds']:.1f} s ({report['threads']} torch thread(s))"
        )


def run_on_dask(
    jobs: Sequence[Job],
    client: Client,
    model: ModelChoice,
    *,
    axis: str | None = None,
    window: Any = None,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
    debug: bool = False,
    worker_timeout: float = WORKER_TIMEOUT_S,
    torch_threads: int | None = None,
    segment_job: SegmentJobOnWorker | None = None,
) -> list[JobOutcome]:
    """Run a batch on the cluster of ``client``; see the module docstring.

    Parameters
    ----------
    jobs : sequence of Job
    client : distributed.Client
    model : ModelChoice
        Loaded by each worker (paths as the workers see them).
    axis, window, overwrite, debug
        As in :func:`sam2_med.batch.run`.
    log : callable(str)
        The dashboard link, the model loads, then one line per job as it finishes
        (``[n/N] name: done -> ... (s) on tcp://worker``), in completion order.
    worker_timeout : float
        Seconds to wait for a first worker and for each worker's model load.
    torch_threads : int, optional
        torch's CPU threads on each worker. Default: the CPUs the worker may use divided by
        the Dask threads on its host.
    segment_job : callable(job, overwrite, model, *, axis, window), optional
        What a worker does with one job instead of
        :func:`sam2_med._batch_job.segment_file_job`, with ``model()`` returning the worker's
        LoadedModel (loaded on the first call); it must be importable on the workers.

    Returns
    -------
    list of JobOutcome
        In job order.

    Raises
    ------
    ClusterError
        No worker within ``worker_timeout``, or a worker that cannot load the model.
    """
    _require_dask()
    from distributed import as_completed
    from distributed.client import FutureCancelledError

    from .batch import JobOutcome, finished_state, run_batch

    total = len(jobs)
    outcomes: list[JobOutcome | None] = [None] * total
    todo: list[int] = []
    for n, job in enumerate(jobs):
        if not overwrite and finished_state(job.output)[0] == "finished":
            (outcomes[n],) = run_batch([job], _never_called, log=lambda _: None)
            log(f"[{n + 1}/{total}] {job.name}: {outcomes[n].message}")
        else:
            todo.append(n)
    if not todo:
        return outcomes  # type: ignore[return-value]

    log(f"dask: scheduler {client.scheduler.address}, dashboard {client.dashboard_link}")
    workers = _wait_for_workers(client, worker_timeout)
    try:
        retries = client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.allowed_failures)
    except Exception:  # a scheduler that refuses to run code: say nothing about retries
        retries = None
    if retries is not None:
        log(
            f"dask: {len(workers)} worker(s); a job whose worker dies is re-run {retries} "
            "time(s) (distributed.scheduler.allowed-failures), then recorded as failed"
        )
    _prepare_workers(client, model, workers, worker_timeout, torch_threads, log)

    token = time.time_ns()
    futures = {
        client.submit(
            _run_job,
            _absolute(jobs[n]),  # workers may run in another folder
            overwrite,
            model,
            axis,
            window,
            debug,
            torch_threads,
            segment_job,
            key=f"sam2-med-job-{n}-{jobs[n].name}-{token}",
            pure=False,
        ): n
        for n in todo
    }
    try:
        for fut in as_completed(futures, loop=client.loop):
            n = futures[fut]
            job = jobs[n]
            where = ""
            try:
                outcome, where, lines = fut.result()
                outcome = dataclasses.replace(outcome, job=job)
                if outcome.status == "skipped":
                    # unfinished when the batch started, finished when a worker ran it: an
                    # attempt of this batch wrote it and its worker died before reporting
                    # (Dask re-ran the job), or another run wrote it meanwhile
                    outcome = dataclasses.replace(
                        outcome,
                        status="done",
                        message=f"{job.output} (written by an earlier attempt whose worker died "
                        "before reporting, or by another run; the re-run found it finished)",
                    )
                for line in lines:
                    log(line)
            except FutureCancelledError:
                outcome = JobOutcome(job, "failed", "FAILED: cancelled on the cluster")
            except Exception as err:
                what = type(err).__name__
                if what == "KilledWorker":
                    tries = "" if retries is None else f" {retries + 1} time(s)"
                    msg = (
                        f"FAILED: the worker running it died{tries} (crashed or killed, e.g. "
                        f"out of memory): {what}: {_one_line(err)}"
                    )
                else:
                    msg = f"FAILED: internal error: {what}: {_one_line(err)}"
                outcome = JobOutcome(job, "failed", msg)
            outcomes[n] = outcome
            timing = f" ({outcome.seconds:.1f} s)" if outcome.status == "done" else ""
            on = f" [{where}]" if where else ""
            log(f"[{n + 1}/{total}] {job.name}: {outcome.message}{timing}{on}")
    except BaseException:
        client.cancel(list(futures))
        raise
    return outcomes  # type: ignore[return-value]
