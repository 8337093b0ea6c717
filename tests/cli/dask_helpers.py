"""Job functions the Dask tests send to workers (pickled by value, so workers need not import
the tests package)."""

from __future__ import annotations

import os


def crash_or_segment(job, overwrite, model, *, axis, window):
    """Kill the worker process on job ``crash`` every time, on ``crash-once`` the first time
    (a marker file beside the output remembers it); segment every other job as usual."""
    if job.name == "crash":
        os._exit(17)
    if job.name == "crash-once":
        marker = job.output.parent / "crash-once.crashed"
        if not marker.exists():
            job.output.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text("the first try killed its worker\n")
            os._exit(17)
    from sam2_med._batch_job import segment_file_job

    segment_file_job(job, overwrite, model(), axis=axis, window=window)


def segment_then_crash_once(job, overwrite, model, *, axis, window):
    """Segment the job, then kill the worker before it reports, the first time only: the job's
    output is complete when Dask re-runs it."""
    from sam2_med._batch_job import segment_file_job

    segment_file_job(job, overwrite, model(), axis=axis, window=window)
    marker = job.output.parent / f"{job.name}.crashed"
    if not marker.exists():
        marker.write_text("killed its worker after writing\n")
        os._exit(17)
