"""Resumable batch segmentation: a jobs table in, masks and a MONAI datalist out.

Jobs file
---------
CSV with a header row, or YAML (a list of mappings, or ``{"jobs": [...]}``), one job per row:

``image``
    Image path (NIfTI, NRRD, MHA, DICOM folder or file).
``prompts``
    Prompt JSON (schema in :mod:`sam2_med.prompts`) or a label-map image on the image grid
    whose nonzero values become mask prompts.
``output``
    Mask to write (``.nii.gz`` or ``.nii``); its sidecar ``<stem>.json`` is written beside it.
``name`` (optional)
    Case name for logs and the datalist; default: the output's stem.

Relative paths are resolved against the jobs file's folder.

Resuming
--------
A job is **finished** when its output mask exists and its sidecar records a complete run
(``extra.sam2_med_run.status == "complete"``) made from the same prompts (the SHA-256 of the
prompts in voxel indices). Finished jobs are skipped, so re-running a batch after a crash or a
failure only computes what is missing. An output that exists but is not a finished sam2-med run
of these prompts is never replaced without ``overwrite=True``: the job fails and says why.

Here or on a cluster
--------------------
:func:`run` segments a whole batch in this process, or with ``client=`` (a Dask
``distributed.Client``: a local cluster, or any scheduler such as one dask-jobqueue starts on
SLURM) on that cluster's workers, with the same jobs, outputs and datalist
(:mod:`sam2_med.dask_batch`).
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import time
import traceback
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import Sam2MedError
from .labels import RUN_RECORD_KEY

__all__ = [
    "BatchError",
    "Job",
    "JobOutcome",
    "file_digest",
    "finished_state",
    "label_names_of",
    "load_jobs",
    "read_table",
    "run",
    "run_batch",
    "write_datalist",
]


class BatchError(Sam2MedError, ValueError):
    """A jobs or cases file that cannot be used (missing columns, duplicate outputs...)."""


@dataclass(frozen=True)
class Job:
    """One row of a jobs file, with paths resolved.

    Attributes
    ----------
    name : str
    image, prompts, output : Path
    row : int
        1-based data row in the jobs file (for messages).
    """

    name: str
    image: Path
    prompts: Path
    output: Path
    row: int = 0


@dataclass(frozen=True)
class JobOutcome:
    """What happened to one job.

    Attributes
    ----------
    job : Job
    status : {"done", "skipped", "failed"}
    message : str
        One line: the output written, why it was skipped, or the error.
    seconds : float
    """

    job: Job
    status: str
    message: str
    seconds: float = 0.0


# ----------------------------------------------------------------------------- reading
def read_table(
    path: str | os.PathLike[str],
    *,
    required: Sequence[str],
    optional: Sequence[str] = (),
    list_key: str = "jobs",
) -> list[dict[str, str]]:
    """Rows of a CSV (header row) or YAML (list of mappings, or ``{list_key: [...]}``) file.

    Raises
    ------
    BatchError
        Missing file, unreadable or malformed table, missing required columns, unknown columns,
        empty cells in required columns. The message names the file (and the row).
    """
    p = Path(path)
    if not p.is_file():
        raise BatchError("file not found" if not p.exists() else "not a file", p)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise BatchError(f"cannot read: {err}", p) from None
    suffix = p.suffix.lower()
    rows: list[Any]
    if suffix in (".yaml", ".yml"):
        import yaml

        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise BatchError(f"invalid YAML{where}: {getattr(err, 'problem', err)}", p) from None
        except RecursionError:
            raise BatchError("YAML nested too deeply to read; not a jobs table", p) from None
        if isinstance(data, dict) and list_key in data:
            data = data[list_key]
        if not isinstance(data, list):
            raise BatchError(f"YAML must be a list of rows or {{{list_key}: [...]}}", p)
        rows = data
    elif suffix in (".csv", ".tsv", ".txt"):
        delimiter = "\t" if suffix == ".tsv" else ","
        try:
            reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
            rows = list(reader)
            header = reader.fieldnames or []
        except csv.Error as err:
            raise BatchError(f"invalid CSV: {err}", p) from None
        if not header:
            raise BatchError(f"empty CSV: expected a header row {','.join(required)}", p)
        missing = [c for c in required if c not in header]
        if missing:
            raise BatchError(
                f"CSV header lacks column(s) {missing}; found {header}, expected "
                f"{', '.join(required)}[, {', '.join(optional)}]",
                p,
            )
    else:
        raise BatchError("use a .csv, .tsv or .yaml file", p)
    allowed = set(required) | set(optional)
    out = []
    for n, row in enumerate(rows, start=1):
        if not isinstance(row, Mapping):
            raise BatchError(f"row {n} is not a mapping of column -> value", p)
        extra = sorted(str(k) for k in row if k not in allowed and k is not None)
        if extra or None in row:
            raise BatchError(f"row {n}: unknown column(s) {extra or ['(extra cell)']}", p)
        clean = {k: ("" if v is None else str(v).strip()) for k, v in row.items()}
        empty = [c for c in required if not clean.get(c)]
        if empty:
            raise BatchError(f"row {n}: empty {', '.join(empty)}", p)
        out.append(clean)
    if not out:
        raise BatchError("no rows", p)
    return out


def _resolve(base_file: Path, value: str) -> Path:
    q = Path(os.path.expanduser(value))
    return q if q.is_absolute() else base_file.parent / q


def _mask_stem(path: Path) -> str:
    name = path.name
    for suffix in (".nii.gz", ".nii"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def load_jobs(path: str | os.PathLike[str]) -> list[Job]:
    """Read a jobs file (see the module docstring).

    Raises
    ------
    BatchError
        Bad table, an output without a NIfTI suffix, or two jobs writing the same output.
    """
    p = Path(path)
    rows = read_table(p, required=("image", "prompts", "output"), optional=("name",))
    jobs: list[Job] = []
    seen: dict[Path, int] = {}
    for n, row in enumerate(rows, start=1):
        out = _resolve(p, row["output"])
        if not out.name.lower().endswith((".nii.gz", ".nii")):
            raise BatchError(f"row {n}: output {row['output']!r} must end in .nii.gz or .nii", p)
        key = Path(os.path.abspath(out))
        if key in seen:
            raise BatchError(f"rows {seen[key]} and {n} write the same output {row['output']}", p)
        seen[key] = n
        jobs.append(
            Job(
                name=row.get("name") or _mask_stem(out),
                image=_resolve(p, row["image"]),
                prompts=_resolve(p, row["prompts"]),
                output=out,
                row=n,
            )
        )
    return jobs


# -------------------------------------------------------------------------- resuming
def _sidecar(path: Path) -> Path:
    from .io.writers import sidecar_path

    return sidecar_path(path)


def finished_state(output: Path) -> tuple[str, dict[str, Any] | None]:
    """Whether ``output`` holds a finished sam2-med run.

    Returns
    -------
    state : {"missing", "finished", "foreign"}
        ``"missing"``: no output; ``"finished"``: mask and sidecar with a complete run record;
        ``"foreign"``: something is there that is not a finished run (a partial write, another
        tool's file, a cancelled run).
    record : dict or None
        The run record of a finished output.
    """
    side = _sidecar(output)
    if not output.exists() and not side.exists():
        return "missing", None
    if not output.is_file() or not side.is_file() or output.stat().st_size == 0:
        return "foreign", None
    try:
        meta = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return "foreign", None
    record = (meta.get("extra") or {}).get(RUN_RECORD_KEY) if isinstance(meta, dict) else None
    mask_info = meta.get("mask") if isinstance(meta, dict) else None
    if (
        not isinstance(record, dict)
        or record.get("status") != "complete"
        or not isinstance(mask_info, dict)
        or mask_info.get("file") != output.name
    ):
        return "foreign", None
    return "finished", record


def file_digest(path: str | os.PathLike[str]) -> str | None:
    """SHA-256 (hex) of a file's bytes, ``None`` if it cannot be read."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    except OSError:
        return None
    return h.hexdigest()


# ---------------------------------------------------------------------------- running
SegmentJob = Callable[[Job, bool], Any]


def run_batch(
    jobs: Sequence[Job],
    segment_job: SegmentJob,
    *,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
    debug: bool = False,
) -> list[JobOutcome]:
    """Run every job, one failure not stopping the others.

    Parameters
    ----------
    jobs : sequence of Job
    segment_job : callable(job, overwrite) -> Any
        Segments one job and writes ``job.output`` with a sidecar run record whose
        ``"inputs"`` holds ``"prompts_file_sha256"`` (:func:`file_digest` of ``job.prompts``).
        Any exception fails that job only; ``KeyboardInterrupt`` stops the batch.
    overwrite : bool
        Recompute every job and replace its output, finished or not.
    log : callable(str)
        Receives one line per job (``[n/N] name: done|skipped|FAILED ...``).
    debug : bool
        Log the traceback of unexpected errors.

    Returns
    -------
    list of JobOutcome
        In job order.
    """
    outcomes: list[JobOutcome] = []
    total = len(jobs)
    for n, job in enumerate(jobs, start=1):
        prefix = f"[{n}/{total}] {job.name}"
        start = time.perf_counter()
        try:
            state, record = finished_state(job.output)
            if state == "finished" and not overwrite:
                recorded = (record.get("inputs") or {}).get("prompts_file_sha256")
                if recorded is not None and recorded != file_digest(job.prompts):
                    raise BatchError(
                        "output is a finished run of different prompts; rerun with "
                        "--overwrite to recompute it",
                        job.output,
                    )
                outcome = JobOutcome(job, "skipped", f"skipped (finished: {job.output})")
            elif state == "foreign" and not overwrite:
                raise BatchError(
                    "output exists but is not a finished sam2-med run (no complete run record "
                    "in its sidecar); rerun with --overwrite to replace it",
                    job.output,
                )
            else:
                segment_job(job, overwrite)
                outcome = JobOutcome(
                    job, "done", f"done -> {job.output}", time.perf_counter() - start
                )
        except KeyboardInterrupt:
            raise
        except Sam2MedError as err:
            outcome = JobOutcome(
                job, "failed", f"FAILED: {err.cli_one_line()}", time.perf_counter() - start
            )
        except Exception as err:  # one broken case must not stop the batch
            detail = f"{type(err).__name__}: {err}".splitlines()[0]
            outcome = JobOutcome(
                job, "failed", f"FAILED: internal error: {detail}", time.perf_counter() - start
            )
            if debug:
                log(traceback.format_exc().rstrip())
        timing = f" ({outcome.seconds:.1f} s)" if outcome.status == "done" else ""
        log(f"{prefix}: {outcome.message}{timing}")
        outcomes.append(outcome)
    return outcomes


def summary_line(outcomes: Iterable[JobOutcome]) -> str:
    """``"5 jobs: 3 done, 1 skipped (already finished), 1 failed"``."""
    items = list(outcomes)
    count = {s: sum(o.status == s for o in items) for s in ("done", "skipped", "failed")}
    return (
        f"{len(items)} jobs: {count['done']} done, {count['skipped']} skipped (already "
        f"finished), {count['failed']} failed"
    )


def write_datalist(
    outcomes: Iterable[JobOutcome],
    path: str | os.PathLike[str],
    *,
    label_names: Mapping[int, str] | None = None,
    key: str = "training",
    description: str = "sam2-med masks",
) -> Path:
    """Write a MONAI / Medical Segmentation Decathlon datalist of the finished image/mask pairs.

    Parameters
    ----------
    outcomes : iterable of JobOutcome
        Jobs with status ``"done"`` or ``"skipped"`` (finished) are listed; failed ones are not.
    path : path-like
        The JSON to write. Paths inside are relative to its folder, which is how
        :func:`monai.data.load_decathlon_datalist` resolves them (``base_dir`` defaults to the
        datalist's folder).
    label_names : mapping int -> str, optional
        Written as ``"labels"`` (``"0": "background"`` added), as in a Decathlon ``dataset.json``.
    key : str
        The list's key (``"training"``, what ``load_decathlon_datalist`` reads by default).

    Returns
    -------
    Path
    """
    p = Path(path)
    base = Path(os.path.abspath(p.parent))

    def rel(q: Path) -> str:
        a = os.path.abspath(q)
        try:
            return os.path.relpath(a, base)
        except ValueError:  # another drive on Windows
            return a

    entries = [
        {"image": rel(o.job.image), "label": rel(o.job.output), "name": o.job.name}
        for o in outcomes
        if o.status in ("done", "skipped")
    ]
    data: dict[str, Any] = {"name": description, "tensorImageSize": "3D"}
    if label_names:
        data["labels"] = {"0": "background", **{str(k): v for k, v in sorted(label_names.items())}}
    data["numTraining" if key == "training" else f"num_{key}"] = len(entries)
    data[key] = entries
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    except OSError as err:
        raise BatchError(f"cannot write datalist: {err.strerror or err}", p) from None
    return p


def label_names_of(outputs: Iterable[str | os.PathLike[str]]) -> dict[int, str]:
    """Label value -> name from the sidecars of written masks (the first name seen wins);
    unreadable sidecars are skipped. The datalist's ``"labels"``."""
    names: dict[int, str] = {}
    for path in outputs:
        try:
            meta = json.loads(_sidecar(Path(path)).read_text(encoding="utf-8"))
            for k, v in (meta.get("label_names") or {}).items():
                names.setdefault(int(k), str(v))
        except (OSError, ValueError, AttributeError):
            continue
    return names


# ------------------------------------------------------------------ one call, here or on Dask
def run(
    jobs: Sequence[Job] | str | os.PathLike[str],
    *,
    client: Any = None,
    model: Any = None,
    checkpoint: str | os.PathLike[str] | None = None,
    arch: Mapping[str, Any] | str | os.PathLike[str] | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    axis: str | None = None,
    window: Any = None,
    overwrite: bool = False,
    datalist: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] = print,
    debug: bool = False,
    worker_timeout: float | None = None,
    worker_threads: int | None = None,
) -> list[JobOutcome]:
    """Segment every job of a batch, in this process or on a Dask cluster.

    Parameters
    ----------
    jobs : sequence of Job, or path of a jobs file (:func:`load_jobs`)
    client : distributed.Client, optional
        None: run here, one job after the other, the model loaded once. A client: run on its
        cluster (:mod:`sam2_med.dask_batch`: one model per worker process, finished jobs
        skipped here, outputs written by the workers; paths must be valid on the workers).
        Start one with ``Client(sam2_med.dask_batch.local_cluster(2))`` or
        ``sam2_med.dask_batch.connect("tcp://host:8786")``.
    model : str or LoadedModel, optional
        Registered model name (default :data:`sam2_med.api.DEFAULT_MODEL`); a LoadedModel only
        without ``client`` (workers load their own copy).
    checkpoint, arch, device, dtype
        As in :func:`sam2_med.api.segment`. With a client, a bare ``device="cuda"`` gives each
        worker its own GPU.
    axis, window
        Propagation plane and intensity window of every job (None: ``"axial"`` and ``"auto"``;
        a job whose prompts are a sam2-med mask sidecar replays its recorded session with the
        recorded ones, and refuses others given here).
    overwrite : bool
        Recompute every job and replace its output.
    datalist : path-like, optional
        Write the Decathlon datalist of the finished pairs there at the end
        (:func:`write_datalist`, label names from the masks' sidecars), as ``sam2-med batch
        --datalist`` does.
    log : callable(str)
        Per-job lines (``[n/N] name: done -> ...``; on a cluster also the dashboard link and
        the model loads, and jobs are reported as they finish).
    debug : bool
        Log tracebacks of unexpected errors.
    worker_timeout : float, optional
        Seconds to wait for a first worker and for each worker's model load (default
        :data:`sam2_med.dask_batch.WORKER_TIMEOUT_S`).
    worker_threads : int, optional
        torch's CPU threads per worker (default: the worker's CPUs divided by the Dask threads
        on its host).

    Returns
    -------
    list of JobOutcome
        In job order.

    Raises
    ------
    Sam2MedError
        A bad jobs file, a model that cannot be loaded here (without a client), or a cluster
        that cannot run the batch (:class:`sam2_med.dask_batch.ClusterError`). Failures of
        single jobs are outcomes, not exceptions.
    """
    from ._batch_job import ModelChoice, segment_file_job

    job_list = load_jobs(jobs) if isinstance(jobs, (str, os.PathLike)) else list(jobs)
    loaded = None
    if model is not None and not isinstance(model, str):
        if client is not None:
            raise TypeError(
                "with a client, give the model by name or checkpoint path: each worker loads "
                "its own copy"
            )
        loaded, model = model, None
    choice = ModelChoice.of(model, checkpoint=checkpoint, arch=arch, device=device, dtype=dtype)
    if client is None:
        pending = [j for j in job_list if overwrite or finished_state(j.output)[0] != "finished"]
        if pending and loaded is None:
            loaded = choice.load()  # once, and failing before any job on a bad model

        def segment_job(job: Job, ow: bool) -> None:
            segment_file_job(job, ow, loaded, axis=axis, window=window)

        outcomes = run_batch(job_list, segment_job, overwrite=overwrite, log=log, debug=debug)
    else:
        from .dask_batch import WORKER_TIMEOUT_S, run_on_dask

        outcomes = run_on_dask(
            job_list,
            client,
            choice,
            axis=axis,
            window=window,
            overwrite=overwrite,
            log=log,
            debug=debug,
            worker_timeout=WORKER_TIMEOUT_S if worker_timeout is None else worker_timeout,
            torch_threads=worker_threads,
        )
    if datalist is not None:
        names = label_names_of(o.job.output for o in outcomes if o.status != "failed")
        write_datalist(outcomes, datalist, label_names=names)
    return outcomes
