"""The local Spark cluster's commands and readiness checks, without starting a JVM."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from recstream_infra.settings import LocalServicesSettings
from recstream_infra.spark_cluster import LocalSparkCluster, main


def _cluster(tmp_path: Path, **values: Any) -> LocalSparkCluster:
    settings = LocalServicesSettings(state_dir=tmp_path, spark_master_port=7100,
                                     spark_master_ui_port=8100, **values)  # fmt: skip
    return LocalSparkCluster(settings)


def test_a_master_and_its_workers_on_consecutive_ports(tmp_path: Path) -> None:
    cluster = _cluster(tmp_path, spark_workers=3, spark_worker_cores=2, spark_worker_memory="2g")
    assert cluster.master.url == "spark://127.0.0.1:7100"
    assert [w.name for w in cluster.workers] == [f"spark-worker-{n}" for n in (1, 2, 3)]
    assert [(w.port, w.ui_port) for w in cluster.workers] == [(7101, 8101), (7102, 8102),
                                                              (7103, 8103)]  # fmt: skip
    command = cluster.workers[0]._prepare()
    assert command[1] == "org.apache.spark.deploy.worker.Worker"
    assert command[-1] == "spark://127.0.0.1:7100"  # registers with our master
    assert command[command.index("--cores") + 1] == "2"
    assert command[command.index("--memory") + 1] == "2g"
    master = cluster.master._prepare()
    assert master[1:6] == ["org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                           "--port", "7100"]  # fmt: skip
    assert "spark.worker.cleanup.enabled true" in cluster.master.config_file.read_text()
    assert cluster.master._environment()["SPARK_LOCAL_IP"] == "127.0.0.1"


def test_a_worker_is_ready_once_the_master_lists_it_alive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cluster = _cluster(tmp_path)
    first, second = cluster.workers
    monkeypatch.setattr(cluster.master, "state", lambda: None)  # master down
    assert not cluster.master.answers() and not first.answers()
    state = {"status": "ALIVE", "workers": [{"port": 7101, "state": "ALIVE"},
                                            {"port": 7102, "state": "DEAD"}]}  # fmt: skip
    monkeypatch.setattr(cluster.master, "state", lambda: state)
    assert cluster.master.answers() and first.answers() and not second.answers()


def test_status_and_down_with_nothing_started(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("RECSTREAM_LOCAL_STATE_DIR", str(tmp_path))
    monkeypatch.setenv("RECSTREAM_LOCAL_SPARK_MASTER_UI_PORT", "1")  # nothing answers there
    assert main(["down"]) == 0
    assert "spark-master   was not running (nothing to stop)" in capsys.readouterr().out
    assert main(["status"]) == 0
    assert "spark-worker-2" in capsys.readouterr().out
