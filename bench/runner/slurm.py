"""``bench run --executor slurm``: the grid's cells as one Slurm job array, through submitit.

The run plan is a local run's (:mod:`bench.runner.plan`): every cell is resolved before anything is submitted. The
shared builds (suite data, features, units, LMs) run once: as one Slurm job of their own (``stage_job``, the
default: on a cluster they want a compute node's GPU and memory) or in the client. Then every cell still without a
record of the same configuration is one task of one job array (``map_array``), ``array_parallelism`` at a time.
Workers write their records into the shared results directory atomically (:func:`bench.results.records.write_record`), so
a killed job leaves no record, and re-running the command submits exactly the cells still missing.

Job states come from ``squeue --array`` and submitit's result files, never from ``sacct``: a cluster without an
accounting database (as ``.ci/slurm-up`` configures one) still reports finished, failed and killed jobs. Every
submission is written down in the run file (:mod:`bench.runner.runfile`) that ``bench status`` reads.

Settings use the names of fairseq's Hydra launcher (``hydra/launcher/submitit_slurm``): ``partition``,
``gpus_per_node``, ``cpus_per_task``, ``mem_gb``, ``timeout_min``, ``array_parallelism``,
``additional_parameters``, ``submitit_folder``, ``setup``, ...; from the user config's ``slurm:`` section, then
``--slurm KEY=VALUE``.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from bench.core.errors import BenchError

# states after which a job writes nothing more (squeue's long names)
TERMINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED",
                   "BOOT_FAIL", "DEADLINE", "REVOKED", "SPECIAL_EXIT"}
QUEUED_STATES = {"PENDING", "REQUEUED", "REQUEUE_HOLD", "REQUEUE_FED", "RESV_DEL_HOLD", "SUSPENDED", "CONFIGURING"}
# a job gone from squeue (or terminal) without a result file is failed once it stays so this long: submitit writes
# the result file just before the job ends, and a shared file system may show it late
RESULT_GRACE_S = 10.0


class SlurmSettings(BaseModel):
    """What every job of a run asks Slurm for. Unknown keys are an error."""

    model_config = ConfigDict(extra="forbid")

    partition: str | None = None
    gpus_per_node: int = Field(0, ge=0)
    cpus_per_task: int = Field(1, ge=1)
    mem_gb: float | None = Field(None, gt=0)
    timeout_min: int = Field(120, ge=1)
    array_parallelism: int = Field(256, ge=1)  # tasks of the array running at once (sbatch --array=...%N)
    # cells run one after another by one array task; None: as few per task as keeps array_parallelism tasks busy
    # (ceil(cells / array_parallelism)), so a job's start (Python, imports) is paid once per task, not per cell
    cells_per_job: int | None = Field(None, ge=1)
    qos: str | None = None
    account: str | None = None
    constraint: str | None = None
    exclude: str | None = None
    additional_parameters: dict[str, Any] = Field(default_factory=dict)  # any other sbatch option: {"reservation": "x"}
    setup: list[str] = Field(default_factory=list)  # shell lines run before each job (module load ..., source ...)
    submitit_folder: str | None = None  # job scripts and logs; default <results>/.slurm
    stage_job: bool = True  # the shared builds as one job of their own (False: in the client)
    poll_s: float = Field(2.0, gt=0)  # how often the client looks at the queue


def settings_from(items: list[str], user_section: dict | None = None, where: str = "the user config") -> SlurmSettings:
    """The user config's ``slurm:`` mapping, overridden by ``--slurm KEY=VALUE`` items (``additional_parameters.K=V``
    sets one extra sbatch option). Values are YAML scalars, converted to each setting's type; an error names the
    setting and what it expects, in one line."""
    import yaml

    data: dict[str, Any] = {}
    if user_section is not None:
        if not isinstance(user_section, dict):
            raise BenchError(f"{where}: 'slurm:' must be a mapping of settings, got {type(user_section).__name__}")
        data.update(user_section)
    for item in items:
        if "=" not in item:
            raise BenchError(f"--slurm '{item}' must look like KEY=VALUE, e.g. partition=gpu or mem_gb=32")
        key, raw = (s.strip() for s in item.split("=", 1))
        value = yaml.safe_load(raw) if raw else None
        if key.startswith("additional_parameters."):
            data.setdefault("additional_parameters", {})
            data["additional_parameters"] = {**data["additional_parameters"], key.split(".", 1)[1]: value}
        elif key == "setup":
            data["setup"] = [*data.get("setup", []), raw]
        else:
            data[key] = value
    try:
        return SlurmSettings(**data)
    except ValidationError as err:
        first = err.errors()[0]
        name = ".".join(str(p) for p in first["loc"]) or "?"
        known = ", ".join(SlurmSettings.model_fields)
        if first["type"] == "extra_forbidden":
            raise BenchError(f"slurm setting '{name}' is unknown ({where} or --slurm); known: {known}") from None
        raise BenchError(f"slurm setting '{name}': {first['msg']} (got {first.get('input')!r})") from None


def user_settings(items: list[str]) -> SlurmSettings:
    from bench.core.model_paths import read_user_config

    data, path = read_user_config()
    return settings_from(items, data.get("slurm"), where=str(path) if path else "the user config")


def check_available() -> None:
    """A BenchError naming what is missing when this machine cannot submit Slurm jobs."""
    missing = [c for c in ("sbatch", "squeue", "scancel") if shutil.which(c) is None]
    if missing:
        raise BenchError(f"--executor slurm: {', '.join(missing)} not found on PATH; run bench on a Slurm login "
                         "node (or `.ci/slurm-up` as root for a single-node cluster on this machine)")
    try:
        import submitit  # noqa: F401
    except ImportError:
        raise BenchError("--executor slurm needs submitit: pip install submitit==1.5.4") from None


def make_executor(settings: SlurmSettings, folder: Path, name: str):
    """A submitit Slurm executor whose jobs ask for ``settings``; logs and pickles under ``folder``."""
    import submitit

    executor = submitit.AutoExecutor(folder=str(folder), cluster="slurm")
    params: dict[str, Any] = {"name": name, "timeout_min": settings.timeout_min,
                              "cpus_per_task": settings.cpus_per_task, "gpus_per_node": settings.gpus_per_node,
                              "slurm_array_parallelism": settings.array_parallelism}
    if settings.mem_gb is not None:
        params["mem_gb"] = settings.mem_gb
    for key in ("partition", "qos", "account", "constraint", "exclude"):
        if getattr(settings, key) is not None:
            params[f"slurm_{key}"] = getattr(settings, key)
    if settings.additional_parameters:
        params["slurm_additional_parameters"] = dict(settings.additional_parameters)
    from bench.core.numerics import current, exports

    setup = [*exports(current()), *settings.setup]  # --numerics pinned: set before the job's Python starts
    if setup:
        params["slurm_setup"] = setup
    executor.update_parameters(**params)
    return executor


def queue_states(job_ids: list[str]) -> dict[str, str] | None:
    """``{job id: state}`` from one ``squeue --array`` call (array tasks one per line: ``123_4``); None when squeue
    does not answer (the controller is down), so callers wait instead of failing jobs."""
    if not job_ids:
        return {}
    roots = sorted({j.split("_")[0] for j in job_ids})
    try:
        out = subprocess.run(["squeue", "--array", "--noheader", "--states=all", "--format=%i %T", "--jobs",
                              ",".join(roots)], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0:
        # squeue says "Invalid job id specified" once every job of the list has left the queue
        return {} if "Invalid job id" in out.stderr else None
    states = {}
    for line in out.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2:
            states[parts[0]] = parts[1]
    return states


def read_result(path: Path) -> tuple[str, Any] | None:
    """submitit's result pickle: ("success", value) or ("error", traceback text); None while it does not exist."""
    if not path.exists():
        return None
    from submitit.core.utils import pickle_load

    try:
        return pickle_load(path)
    except Exception as err:  # noqa: BLE001 - a half-visible file on a network file system: read it next time
        return ("unreadable", str(err))


def log_tail(path: str | Path | None, lines: int = 15) -> str:
    if not path:
        return ""
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join(text[-lines:])


def follow(jobs: list, on_result: Callable[[int, Any], None], poll_s: float, log: Callable[[str], None]) -> None:
    """Wait for every job; ``on_result(i, value)`` once per job ``i``, with what the job returned, or a
    ``RuntimeError`` naming the job id, how it ended and the tail of its log when it ended without a result
    (killed, scancel, timeout, out of memory)."""
    open_jobs = dict(enumerate(jobs))
    gone_since: dict[int, float] = {}
    said_down = False
    while open_jobs:
        states = queue_states([j.job_id for j in open_jobs.values()])
        if states is None and not said_down:
            log("[yellow]squeue does not answer[/]: waiting for the Slurm controller")
            said_down = True
        for i, job in list(open_jobs.items()):
            result = read_result(Path(job.paths.result_pickle))
            if result is not None and result[0] != "unreadable":
                status, value = result
                if status != "success":
                    value = RuntimeError(f"job {job.job_id} raised: {str(value).strip().splitlines()[-1]}")
                on_result(i, value)
                del open_jobs[i]
                continue
            if states is None:
                continue
            state = states.get(job.job_id)
            if state is not None and state not in TERMINAL_STATES:
                gone_since.pop(i, None)
                continue
            first = gone_since.setdefault(i, time.monotonic())
            if time.monotonic() - first >= RESULT_GRACE_S:
                tail = log_tail(job.paths.stderr)
                how = state or "left the queue"
                on_result(i, RuntimeError(f"job {job.job_id} ended ({how}) without a result; log "
                                          f"{job.paths.stderr}" + (f":\n{tail}" if tail else "")))
                del open_jobs[i]
        if open_jobs:
            time.sleep(poll_s)


# ---------------------------------------------------------------------------------------------------------------
# the run plan on Slurm: one stage job, then one array of cells
# ---------------------------------------------------------------------------------------------------------------
class JobRef:
    """What the client follows of one job: its id, result pickle and log (from submitit, or from a run file)."""

    def __init__(self, job_id: str, result_pickle: str | Path, stderr: str | Path | None):
        self.job_id = str(job_id)
        self.paths = type("Paths", (), {"result_pickle": Path(result_pickle), "stderr": stderr})()

    @classmethod
    def of(cls, job) -> "JobRef":
        return cls(job.job_id, job.paths.result_pickle, job.paths.stderr)


def _folder(opts, results_dir: Path) -> Path:
    return Path(opts.slurm.submitit_folder or Path(results_dir).resolve() / ".slurm")


def run_stage_job(tasks, methods, opts, results_dir: Path, log: Callable[[str], None]) -> list[tuple[str, str]]:
    """The shared builds (data, LMs, features, units) as one Slurm job, waited for; returns its failures as
    (what, why). The client then plans again and finds everything built."""
    executor = make_executor(opts.slurm, _folder(opts, results_dir), name="bench-stage")
    job = executor.submit(_stage_worker, tasks, methods, opts, Path(results_dir).resolve())
    log(f"[dim]stage job {job.job_id}[/]: data, features, units and LMs of {len(tasks)} task(s), log "
        f"{job.paths.stderr}")
    out: list = []
    follow([JobRef.of(job)], lambda i, value: out.append(value), opts.slurm.poll_s, log)
    value = out[0]
    if isinstance(value, BaseException):
        return [("stage job", str(value))]
    return list(value)


def _stage_worker(tasks, methods, opts, results_dir: Path) -> list[tuple[str, str]]:
    from bench.core.numerics import check_process
    from bench.runner.plan import stage_shared_builds

    check_process(opts.numerics)
    return stage_shared_builds(tasks, methods, opts, results_dir, print)


class SlurmExecutor:
    """The :class:`bench.runner.cells.Executor` of ``--executor slurm``: the cells as one job array."""

    def run(self, cells: list, opts, results_dir: Path, finish: Callable, run, log: Callable[[str], None]) -> None:
        run_cells(cells, opts, results_dir, finish, run, log)


def run_cells(cells: list, opts, results_dir: Path, finish: Callable, run, log: Callable[[str], None]) -> None:
    """Submit ``cells`` as one job array (attaching instead to any still queued or running from an earlier run of
    the same results directory), record the job ids in ``run``, and follow them unless ``opts.wait`` is off."""
    from functools import partial

    from bench.runner.runfile import active_jobs, entry_for

    results_dir = Path(results_dir).resolve()
    entries = [entry_for(c, results_dir, opts.upstream) for c in cells]
    running = active_jobs(results_dir)
    attach = [i for i, e in enumerate(entries) if (e.record, e.config_hash) in running]
    submit = [i for i in range(len(cells)) if i not in set(attach)]
    refs: dict[int, JobRef] = {}
    for i in attach:
        old = running[(entries[i].record, entries[i].config_hash)]
        refs[i] = JobRef(old.job_id, old.result, old.log)
        entries[i].index = old.index  # its place in that task's list of results
    if attach:
        log(f"[dim]{len(attach)} cell(s) already queued or running from an earlier run: following those jobs[/]")
    if submit:
        per_job = opts.slurm.cells_per_job or -(-len(submit) // opts.slurm.array_parallelism)
        chunks = [submit[k: k + per_job] for k in range(0, len(submit), per_job)]
        executor = make_executor(opts.slurm, _folder(opts, results_dir), name="bench-cells")
        jobs = executor.map_array(partial(_cells_job, opts=opts, results_dir=results_dir),
                                  [[cells[i] for i in chunk] for chunk in chunks])
        for chunk, job in zip(chunks, jobs):
            for position, i in enumerate(chunk):
                refs[i] = JobRef.of(job)
                entries[i].index = position
        log(f"submitted {len(submit)} cell(s) as Slurm array {jobs[0].job_id.split('_')[0]} of {len(jobs)} "
            f"task(s), {per_job} cell(s) each, {opts.slurm.array_parallelism} at a time; logs in "
            f"{_folder(opts, results_dir)}")
    for i, e in enumerate(entries):
        e.job_id, e.result, e.log = refs[i].job_id, str(refs[i].paths.result_pickle), str(refs[i].paths.stderr)
    run.cells, run.waited = entries, opts.wait
    run.save(log)
    if not opts.wait:
        return
    by_job: dict[str, list[int]] = {}
    for i in sorted(refs):
        by_job.setdefault(refs[i].job_id, []).append(i)
    job_ids = list(by_job)

    def on_result(k: int, value) -> None:
        for i in by_job[job_ids[k]]:
            one = value[entries[i].index] if isinstance(value, list) else value
            if isinstance(one, BaseException):
                entries[i].error = str(one)
                msg = getattr(one, "message", None) or str(one)
                one = BenchError(f"{msg} (Slurm job {refs[i].job_id}, log {refs[i].paths.stderr})")
            finish(cells[i], one)

    follow([refs[by_job[j][0]] for j in job_ids], on_result, opts.slurm.poll_s, log)
    run.finished = True
    run.save(log)


def _cells_job(cells: list, opts, results_dir: Path) -> list:
    """One array task: its cells one after another with the local worker's code, on ``opts.cell_threads`` torch
    threads; each record is written as its cell ends, so a killed task loses only the cells it had not finished."""
    from bench.runner.cells import init_worker, run_cell

    init_worker(opts.cell_threads)
    return [run_cell(cell, opts, results_dir) for cell in cells]


__all__ = ["run_stage_job", "run_cells", "SlurmExecutor", "JobRef", "SlurmSettings", "settings_from", "user_settings", "check_available", "make_executor", "queue_states",
           "read_result", "follow", "log_tail", "TERMINAL_STATES", "QUEUED_STATES"]
