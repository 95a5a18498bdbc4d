"""A real Dask cluster for tests: ``dask scheduler`` and ``dask worker`` processes on 127.0.0.1.

``real_cluster`` (module) and ``fresh_cluster`` (function, for tests that kill workers) start one
scheduler and two workers (each under its nanny) as separate processes with the ``dask`` command, wait
until both workers are connected, and kill every process (scheduler, nannies and their worker
processes) with SIGKILL at teardown, whatever the test did. Each process's output goes to its own log
file, so tests can search what the cluster logged.

The processes run without any AWS credential in their environment or configuration files: the only
way a worker can read a private bucket is the storage options the library ships to it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from shutil import which

import pytest

from tests.servers._net import free_port

REPO = Path(__file__).resolve().parents[2]


def dask_command() -> str:
    """The ``dask`` script of this interpreter's environment (the shim on PATH as a fallback)."""
    beside = Path(sys.executable).with_name("dask")
    found = str(beside) if beside.exists() else which("dask")
    if found is None:
        pytest.fail("the `dask` command (distributed's CLI) is not installed")
    return found


def cluster_env() -> dict[str, str]:
    """This process's environment without credentials, with the repository importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GOOGLE_", "GCS_"))}
    env.update(
        AWS_SHARED_CREDENTIALS_FILE=os.devnull,
        AWS_CONFIG_FILE=os.devnull,
        AWS_EC2_METADATA_DISABLED="true",  # no instance-metadata credentials either
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p),
        PYTHONUNBUFFERED="1",
    )
    if "AWS_CA_BUNDLE" in os.environ:  # not a credential: botocore needs it for TLS on some machines
        env["AWS_CA_BUNDLE"] = os.environ["AWS_CA_BUNDLE"]
    return env


class RealCluster:
    """A scheduler and named workers, each a separate process group (nanny plus worker process).

    Attributes
    ----------
    address
        The scheduler's ``tcp://127.0.0.1:<port>``.
    directory
        Where the logs (``scheduler.log``, ``<worker name>.log``) and the workers' scratch space are.
    """

    def __init__(self, directory: Path, nthreads: int = 2):
        self.directory = directory
        self.nthreads = nthreads
        self.port = free_port()
        self.address = f"tcp://127.0.0.1:{self.port}"
        self._processes: dict[str, subprocess.Popen] = {}
        self._killed: set[str] = set()
        self._env = cluster_env()
        self._dask = dask_command()

    # -- processes ---------------------------------------------------------------------------------

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        with open(self.log_path(name), "ab") as log:
            process = subprocess.Popen(
                [self._dask, *args],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.directory,
                env=self._env,
                start_new_session=True,  # a process group of its own: one killpg takes nanny and worker
            )
        self._processes[name] = process
        return process

    def start_scheduler(self) -> None:
        self._spawn(
            "scheduler",
            # --idle-timeout: should this test process die without its teardown, the scheduler exits
            # when no client has come for a while, and the workers follow (--death-timeout).
            [
                "scheduler",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--no-dashboard",
                "--idle-timeout",
                "300s",
            ],
        )

    def start_worker(self, name: str) -> None:
        """Start worker ``name`` under its nanny (it connects by itself; see :meth:`wait_for_workers`)."""
        scratch = self.directory / f"{name}-scratch"
        scratch.mkdir(exist_ok=True)
        self._spawn(
            name,
            [
                "worker",
                self.address,
                "--name",
                name,
                "--host",
                "127.0.0.1",
                "--nthreads",
                str(self.nthreads),
                "--memory-limit",
                "2GB",
                "--no-dashboard",
                "--local-directory",
                str(scratch),
                "--death-timeout",
                "60",  # a worker whose scheduler is gone exits by itself
            ],
        )

    def wait_for_workers(self, names: list[str], timeout: float = 60.0) -> None:
        """Block until every worker in ``names`` is connected to the scheduler."""
        from distributed import Client

        deadline = time.monotonic() + timeout
        with Client(self.address, timeout=f"{timeout}s") as client:
            while set(names) - set(self.worker_addresses(client)):
                self._check_alive()
                if time.monotonic() > deadline:
                    raise RuntimeError(f"workers {names} did not connect in {timeout} s:\n{self.logs_text()}")
                time.sleep(0.1)

    def _check_alive(self) -> None:
        dead = {n: p.returncode for n, p in self._processes.items() if p.poll() is not None}
        if dead:
            raise RuntimeError(f"cluster process(es) exited early {dead}:\n{self.logs_text()}")

    @staticmethod
    def worker_addresses(client) -> dict[str, str]:
        """``{worker name: address}`` of the workers connected now."""
        workers = client.scheduler_info(n_workers=-1)["workers"]
        return {str(info["name"]): address for address, info in workers.items()}

    def kill(self, name: str) -> None:
        """SIGKILL the process group of ``name`` (a worker: its nanny and worker process, no restart)."""
        if name in self._killed:  # its group id may belong to someone else by now
            return
        process = self._processes[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        self._killed.add(name)
        process.wait(10)

    def stop(self) -> None:
        """Kill every process of the cluster (SIGKILL, whole process groups)."""
        for name in list(self._processes):
            with contextlib.suppress(Exception):
                self.kill(name)

    # -- logs --------------------------------------------------------------------------------------

    def log_path(self, name: str) -> Path:
        return self.directory / f"{name}.log"

    def logs(self) -> dict[str, bytes]:
        """``{process name: everything it wrote so far}``."""
        return {name: self.log_path(name).read_bytes() for name in self._processes}

    def logs_text(self) -> str:
        return "\n".join(
            f"--- {name}\n{data.decode(errors='replace')[-4000:]}" for name, data in self.logs().items()
        )


@contextlib.contextmanager
def running_cluster(directory: Path, workers: int = 2, nthreads: int = 2) -> Iterator[RealCluster]:
    """A started cluster of ``workers`` workers ``w0``, ``w1``, ...; every process killed on exit."""
    cluster = RealCluster(directory, nthreads=nthreads)
    try:
        cluster.start_scheduler()
        names = [f"w{i}" for i in range(workers)]
        for name in names:
            cluster.start_worker(name)
        cluster.wait_for_workers(names)
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def real_cluster(tmp_path_factory) -> Iterator[RealCluster]:
    """A scheduler and two workers of two threads, shared by the tests of a module."""
    with running_cluster(tmp_path_factory.mktemp("real-cluster")) as cluster:
        yield cluster


@pytest.fixture
def fresh_cluster(tmp_path_factory) -> Iterator[RealCluster]:
    """A cluster of its own for a test that damages it (kills workers)."""
    with running_cluster(tmp_path_factory.mktemp("fresh-cluster")) as cluster:
        yield cluster
