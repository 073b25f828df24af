"""Background jobs the API runs for ops: one refresh (score, forecast, evaluate, publish) at a
time, in a child process, so serving never waits on it and a crash in it cannot take the
server down. Status is kept in memory and each job's log under ``<data>/jobs/``."""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from serving.publication import current_version

__all__ = ["Job", "JobBusyError", "JobRunner", "publish_command"]

LOG_TAIL = 2000


def publish_command(data: Path) -> list[str]:
    """The refresh: ``dealcast publish --data DIR`` in a fresh interpreter."""
    return [sys.executable, "-m", "pipelines.cli", "publish", "--data", str(data)]


@dataclass
class Job:
    id: str
    kind: str
    log_path: Path
    status: str = "queued"
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))
    started_at: datetime | None = None
    finished_at: datetime | None = None
    returncode: int | None = None
    publication: str | None = None

    def public(self) -> dict[str, object]:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            text = ""
        return {
            "id": self.id,
            "kind": self.kind,
            "status": self.status,
            "created_at": self.created_at,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "returncode": self.returncode,
            "publication": self.publication,
            "log_tail": text[-LOG_TAIL:],
        }


class JobBusyError(RuntimeError):
    def __init__(self, job: Job) -> None:
        super().__init__(f"job {job.id} is {job.status}: one refresh at a time")
        self.job = job


class JobRunner:
    """Runs one job at a time; ``submit`` refuses a second while one is queued or running."""

    def __init__(
        self, data_dir: Path, command: Callable[[Path], list[str]] = publish_command
    ) -> None:
        self.data_dir = data_dir
        self.command = command
        self.jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._active: Job | None = None

    def submit(self, kind: str = "refresh") -> Job:
        with self._lock:
            if self._active is not None:
                raise JobBusyError(self._active)
            job_id = f"job-{datetime.now(UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
            logs = self.data_dir / "jobs"
            logs.mkdir(parents=True, exist_ok=True)
            job = Job(id=job_id, kind=kind, log_path=logs / f"{job_id}.log")
            self.jobs[job_id] = job
            self._active = job
        threading.Thread(target=self._run, args=(job,), name=job_id, daemon=True).start()
        return job

    def get(self, job_id: str) -> Job | None:
        return self.jobs.get(job_id)

    def wait(self, job_id: str, timeout: float | None = None) -> Job:
        """Block until the job finished (for tests and scripts)."""
        job = self.jobs[job_id]
        thread = next((t for t in threading.enumerate() if t.name == job_id), None)
        if thread is not None:
            thread.join(timeout)
        return job

    def _run(self, job: Job) -> None:
        job.status, job.started_at = "running", datetime.now(UTC)
        try:
            with job.log_path.open("w") as log:
                done = subprocess.run(
                    self.command(self.data_dir),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    check=False,
                )
            job.returncode = done.returncode
            job.status = "succeeded" if done.returncode == 0 else "failed"
            if done.returncode == 0:
                job.publication = current_version(self.data_dir)
        except Exception as exc:  # the job failed to start: say so in its status
            with job.log_path.open("a") as log:
                log.write(f"\nthe job could not run: {exc}\n")
            job.status = "failed"
        finally:
            job.finished_at = datetime.now(UTC)
            with self._lock:
                self._active = None
