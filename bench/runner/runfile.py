"""The run file: what one ``bench run`` planned and where each cell went.

Written under ``<results>/.runs/<run id>.json`` (atomically) once the plan is resolved, and again when cells are
submitted or finish, so ``bench status RESULTS`` can say for a run that detached (``--no-wait``), is still going
or was killed, which cells are queued, running, done or failed. A cell is *done* only when its record exists with
the configuration hash the plan resolved: the results directory, not the run file, is the truth.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.core.errors import BenchError

RUNS_DIR = ".runs"


@dataclass
class CellEntry:
    label: str
    record: str  # path relative to the results directory
    config_hash: str
    job_id: str | None = None  # Slurm array task, e.g. "1234_5"
    index: int | None = None  # its place among the cells that array task runs
    result: str | None = None  # submitit's result pickle of that job
    log: str | None = None  # the job's stderr
    error: str | None = None  # why it failed, once the client saw it fail
    started: str | None = None  # local executor: when a worker took it (UTC)
    ended: str | None = None  # local executor: when its worker returned (record written or error)
    interrupted: bool = False  # it was running when its run was stopped (signal, kill -9, machine down)
    resumes: str | None = None  # the run id of an earlier run this cell was interrupted in


@dataclass
class RunFile:
    run_id: str
    executor: str
    created: str
    results_dir: str
    cells: list[CellEntry] = field(default_factory=list)  # cells this run ran or submitted
    reused: list[str] = field(default_factory=list)  # records of the same configuration found, not rerun
    waited: bool = True  # False: the client detached after submitting (--no-wait)
    finished: bool = False  # the client saw every cell end
    pid: int | None = None  # the `bench run` process, and its host: a run file of a dead process is interrupted
    host: str | None = None
    interrupted: bool = False  # the run was stopped before its cells ended (written by it, or by a later run)

    def path(self) -> Path:
        return Path(self.results_dir) / RUNS_DIR / f"{self.run_id}.json"

    def save(self, log=print) -> bool:
        """:meth:`write`, where failing to write (disk full) must not end the run: the first failure is logged in
        one line and kept in ``write_failed`` (the run then exits 1); False when it was not written."""
        try:
            self.write()
            return True
        except BenchError as err:
            if not getattr(self, "write_failed", None):
                from rich.markup import escape

                log(f"[red]run file not written[/]: {escape(err.message)}")
            self.write_failed = err.message
            return False

    def owner_alive(self) -> bool | None:
        """Whether the process that wrote this run file still runs; None when that cannot be told from here (another
        host, or a run file older than the ``pid`` field)."""
        from bench.core.locks import pid_alive, this_host

        if self.pid is None or self.host != this_host():
            return None
        if not pid_alive(self.pid):
            return False
        try:  # a pid reused by a later process is not this run
            import calendar

            import psutil

            created = calendar.timegm(time.strptime(self.created, "%Y-%m-%dT%H:%M:%SZ"))
            return psutil.Process(self.pid).create_time() <= created + 1
        except Exception:  # noqa: BLE001 - no psutil, no access, an odd timestamp: the pid alone decides
            return True

    def write(self) -> Path:
        from bench.data.manifest import write_text_atomic

        path = self.path()
        write_text_atomic(path, json.dumps(asdict(self), indent=1) + "\n", what="run file")
        return path


def new_run(results_dir: Path, executor: str) -> RunFile:
    from bench.core.locks import this_host

    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return RunFile(run_id=f"{stamp}-{os.getpid()}", executor=executor,
                   created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), results_dir=str(Path(results_dir)),
                   pid=os.getpid(), host=this_host())


def mark_interrupted_runs(results_dir: Path, log=print) -> dict[tuple[str, str], str]:
    """Seal the run files of earlier local runs on this host whose process died before they finished (kill -9,
    out of memory, machine reset): the run and each cell it had started without ending are marked interrupted.
    Returns ``{(record, config hash): run id}`` of every cell an earlier run left interrupted, so the run
    that re-runs them can say it resumes them."""
    out: dict[tuple[str, str], str] = {}
    for p in runs(results_dir):
        try:
            run = read_run(p)
        except BenchError:
            continue
        if run.executor == "local" and not run.finished and not run.interrupted and run.owner_alive() is False:
            run.results_dir = str(results_dir)
            run.interrupted = True
            n = 0
            for c in run.cells:
                if c.started and not c.ended:
                    c.interrupted, n = True, n + 1
            if run.save(log):
                log(f"[yellow]run {run.run_id} was stopped[/] (process {run.pid} is gone) with {n} cell(s) running: "
                    "they are marked interrupted and run again")
        for c in run.cells:
            if c.interrupted:
                out[(c.record, c.config_hash)] = run.run_id
    return out


def read_run(path: Path) -> RunFile:
    try:
        data = json.loads(Path(path).read_text())
        cells = [CellEntry(**c) for c in data.pop("cells", [])]
        return RunFile(**data, cells=cells)
    except (OSError, json.JSONDecodeError, TypeError) as err:
        raise BenchError(f"{path}: not a bench run file ({err})") from None


def runs(results_dir: Path) -> list[Path]:
    """Run files under ``results_dir``, oldest first."""
    d = Path(results_dir) / RUNS_DIR
    return sorted(d.glob("*.json")) if d.is_dir() else []


def latest_run(results_dir: Path, run_id: str | None = None) -> RunFile:
    results_dir = Path(results_dir)
    if not results_dir.is_dir():
        raise BenchError(f"results directory not found: {results_dir}")
    found = runs(results_dir)
    if run_id is not None:
        found = [p for p in found if p.stem == run_id]
        if not found:
            raise BenchError(f"no run '{run_id}' in {results_dir / RUNS_DIR}; `bench status {results_dir}` lists the "
                             "latest")
    if not found:
        raise BenchError(f"{results_dir} has no run file ({RUNS_DIR}/): it was not written by `bench run`, or by a "
                         "bench older than the run file")
    run = read_run(found[-1])
    run.results_dir = str(results_dir)  # the directory may have moved since
    return run


@dataclass
class CellState:
    label: str
    state: str  # done, queued, running, failed, pending, reused; local runs: interrupted, not started, missing
    job_id: str | None
    detail: str = ""


def cell_states(run: RunFile) -> list[CellState]:
    """The state of every cell of ``run``, from its records, submitit's result files and one ``squeue`` call."""
    from bench.results.records import existing_record

    root = Path(run.results_dir)
    done = {id(c) for c in run.cells if existing_record(root / c.record, c.config_hash) is not None}  # read once
    job_ids = [c.job_id for c in run.cells if c.job_id and id(c) not in done]
    queue = None
    if job_ids:
        from bench.runner.slurm import queue_states

        queue = queue_states(job_ids)
    out = [CellState(_label_of(p), "reused", None) for p in run.reused]
    for c in run.cells:
        out.append(CellState(c.label, "done", c.job_id) if id(c) in done else _state_of(c, queue, run))
    return out


def _state_of(c: CellEntry, queue: dict[str, str] | None, run: RunFile) -> CellState:
    """The state of a cell whose record is not (yet) there."""
    if c.job_id is None:  # a local run: no queue to ask
        if c.error:
            return CellState(c.label, "failed", None, c.error)
        if run.finished:
            return CellState(c.label, "missing", None, "the run ended without its record")
        if run.interrupted or c.interrupted or run.owner_alive() is False:
            if c.started:
                return CellState(c.label, "interrupted", None, f"running when the run was stopped (process "
                                 f"{run.pid}); re-run the same command to resume it")
            return CellState(c.label, "not started", None, "the run was stopped before this cell started")
        return CellState(c.label, "running" if c.started else "pending", None,
                         f"since {c.started}" if c.started else "")
    from bench.runner.slurm import QUEUED_STATES, TERMINAL_STATES, read_result

    result = read_result(Path(c.result)) if c.result else None
    if result is not None and result[0] != "unreadable":
        status, value = result
        if status != "success":
            return CellState(c.label, "failed", c.job_id, str(value).strip().splitlines()[-1])
        if isinstance(value, list) and c.index is not None and c.index < len(value):
            value = value[c.index]
        if isinstance(value, BaseException):
            return CellState(c.label, "failed", c.job_id, str(value).splitlines()[0])
        return CellState(c.label, "failed", c.job_id, "the job ended but its record is missing or of another config")
    state = None if queue is None else queue.get(c.job_id)
    if queue is None:
        return CellState(c.label, "unknown", c.job_id, "squeue does not answer")
    if state in QUEUED_STATES:
        return CellState(c.label, "queued", c.job_id, state.lower())
    if state is not None and state not in TERMINAL_STATES:
        return CellState(c.label, "running", c.job_id, state.lower())
    return CellState(c.label, "failed", c.job_id,
                     f"job ended ({state or 'left the queue'}) without a result; log {c.log}")


def _label_of(record: str) -> str:
    """``task × method × upstream × seed N`` from a record path ``task/method/upstream/group/seed-N.json``."""
    parts = Path(record).parts
    if len(parts) >= 4:
        seed = Path(record).stem.removeprefix("seed-")
        return f"{parts[0]} × {parts[1]} × {parts[2]} × seed {seed}"
    return record


def entry_for(cell, results_dir: Path, upstream: str) -> CellEntry:
    """The run-file entry of a planned cell (``cell.resolved`` set by the run plan)."""
    from bench.results.records import RecordKey, config_hash, group_hash

    key = RecordKey(cell.task.name, cell.method, upstream, cell.seed, group=group_hash(cell.resolved))
    return CellEntry(label=cell.label(upstream), record=str(key.path(Path("."))),
                     config_hash=config_hash(cell.resolved))


def active_jobs(results_dir: Path) -> dict[tuple[str, str], CellEntry]:
    """``{(record, config hash): entry}`` of cells earlier runs submitted to Slurm whose job is still queued or
    running: a re-run attaches to them instead of submitting them again."""
    entries = [c for p in runs(results_dir) for c in read_run(p).cells if c.job_id]
    if not entries:
        return {}
    from bench.runner.slurm import TERMINAL_STATES, queue_states

    queue = queue_states([c.job_id for c in entries]) or {}
    return {(c.record, c.config_hash): c for c in entries
            if c.job_id in queue and queue[c.job_id] not in TERMINAL_STATES}


__all__ = ["RunFile", "CellEntry", "CellState", "new_run", "read_run", "latest_run", "cell_states", "entry_for",
           "active_jobs", "mark_interrupted_runs", "RUNS_DIR"]
