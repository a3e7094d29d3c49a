"""A Spark standalone cluster on this machine: ``python -m recstream_infra.spark_cluster``.

``up`` starts a master and ``RECSTREAM_LOCAL_SPARK_WORKERS`` workers (2 by default, one
core each) on 127.0.0.1 from pyspark's own launch classes (``bin/spark-class`` with
``org.apache.spark.deploy.master.Master`` and ``...worker.Worker``), waits until every
worker is registered with the master, and records pid and log files under
``.state/spark-cluster/``. ``down`` stops exactly what ``up`` started; ``status`` shows
it. The job then runs on it with ``RECSTREAM_SPARK_MASTER=spark://127.0.0.1:7077`` (or
through ``spark-submit``; ``docs/operations.md``).
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pyspark

from recstream_infra.local_service import (
    LocalService,
    ServiceGroup,
    ServiceStartError,
    group_main,
)
from recstream_infra.settings import LocalServicesSettings

__all__ = ["LocalSparkCluster", "SparkMaster", "SparkWorker", "main", "spark_class"]

_MASTER_CLASS = "org.apache.spark.deploy.master.Master"
_WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"


def spark_class() -> Path:
    """The ``bin/spark-class`` launcher of pyspark (the one its ``spark-submit`` uses)."""
    launcher = Path(pyspark.__file__).parent / "bin" / "spark-class"
    if not launcher.is_file():
        msg = f"pyspark's launcher is missing at {launcher}; run `make setup`"
        raise ServiceStartError(msg)
    return launcher


def _spark_environment(folder: Path) -> dict[str, str]:
    """The daemons bind loopback and keep their files under ``folder``."""
    return {
        **os.environ,
        "SPARK_HOME": str(Path(pyspark.__file__).parent),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_LOG_DIR": str(folder),
        "SPARK_PID_DIR": str(folder),
    }


def _write_properties(path: Path) -> None:
    """Properties of the master and workers: finished applications' folders are cleaned."""
    path.write_text(
        "spark.worker.cleanup.enabled true\n"
        "spark.worker.cleanup.interval 600\n"
        "spark.worker.cleanup.appDataTtl 3600\n"
    )


class SparkMaster(LocalService):
    """The standalone master: ``spark://127.0.0.1:<port>``, its status as JSON on the UI port."""

    name = "spark-master"

    def __init__(self, local: LocalServicesSettings) -> None:
        super().__init__("127.0.0.1", local.spark_master_port,
                         local.state_dir / "spark-cluster", local.start_timeout_s)  # fmt: skip
        self.ui_port = local.spark_master_ui_port

    @property
    def url(self) -> str:
        """The master URL the job and the workers connect to."""
        return f"spark://{self.host}:{self.port}"

    @property
    def config_file(self) -> Path:
        """The daemons' Spark properties (``_write_properties``)."""
        return self.folder / "spark-daemons.conf"

    def state(self) -> dict[str, Any] | None:
        """The master's status page as JSON (workers, applications); None if it is down."""
        try:
            with urllib.request.urlopen(
                f"http://{self.host}:{self.ui_port}/json/", timeout=2
            ) as answer:
                state: dict[str, Any] = json.loads(answer.read())
                return state
        except (urllib.error.URLError, OSError, ValueError):
            return None

    def answers(self) -> bool:
        """The master reports itself ALIVE."""
        state = self.state()
        return state is not None and state.get("status") == "ALIVE"

    def _environment(self) -> dict[str, str]:
        return _spark_environment(self.folder)

    def _prepare(self) -> list[str]:
        _write_properties(self.config_file)
        return [str(spark_class()), _MASTER_CLASS, "--host", self.host, "--port", str(self.port),
                "--webui-port", str(self.ui_port),
                "--properties-file", str(self.config_file)]  # fmt: skip


class SparkWorker(LocalService):
    """One worker, registered with ``master``; it answers once the master lists it ALIVE."""

    def __init__(self, local: LocalServicesSettings, master: SparkMaster, number: int) -> None:
        self.name = f"spark-worker-{number}"
        super().__init__("127.0.0.1", master.port + number,
                         master.folder, local.start_timeout_s)  # fmt: skip
        self.master = master
        self.ui_port = master.ui_port + number
        self.cores = local.spark_worker_cores
        self.memory = local.spark_worker_memory

    @property
    def config_file(self) -> Path:
        """The daemons' Spark properties (``_write_properties``)."""
        return self.folder / "spark-daemons.conf"

    def answers(self) -> bool:
        """The master lists a worker on this port as ALIVE."""
        state = self.master.state() or {}
        return any(
            worker.get("port") == self.port and worker.get("state") == "ALIVE"
            for worker in state.get("workers", [])
        )

    def _environment(self) -> dict[str, str]:
        return _spark_environment(self.folder)

    def _prepare(self) -> list[str]:
        work = self.folder / f"{self.name}-work"
        work.mkdir(parents=True, exist_ok=True)
        _write_properties(self.config_file)
        return [str(spark_class()), _WORKER_CLASS, "--host", self.host, "--port", str(self.port),
                "--webui-port", str(self.ui_port), "--cores", str(self.cores), "--memory",
                self.memory, "--work-dir", str(work),
                "--properties-file", str(self.config_file), self.master.url]  # fmt: skip


class LocalSparkCluster(ServiceGroup):
    """A master and its workers as local processes."""

    def __init__(self, local: LocalServicesSettings | None = None) -> None:
        local = local or LocalServicesSettings()
        self.master = SparkMaster(local)
        count = local.spark_workers
        self.workers = [SparkWorker(local, self.master, n) for n in range(1, count + 1)]

    @property
    def services(self) -> tuple[LocalService, ...]:
        """The master, then the workers."""
        return (self.master, *self.workers)


def _after_up(cluster: LocalSparkCluster) -> None:
    print(f"master {cluster.master.url}, status http://127.0.0.1:{cluster.master.ui_port}/")
    print(
        f"run the job on it: RECSTREAM_SPARK_MASTER={cluster.master.url} "
        ".venv/bin/python -m streaming run"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``up``, ``down`` or ``status``."""
    return group_main(argv, "python -m recstream_infra.spark_cluster", __doc__,
                      LocalSparkCluster, width=14, after_up=_after_up)  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
