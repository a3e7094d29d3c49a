"""Security against a real Redis and a real Kafka broker: passwords, a read-only ACL user
for serving, a SASL login to Kafka, and secrets that never show up in answers, errors
or logs."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr
from pyspark.sql import SparkSession

from producer.broker import client_options, describe_cluster
from producer.errors import BrokerAuthenticationError, BrokerUnavailableError
from producer.login import login_refusal
from producer.settings import KafkaSettings
from recstream_infra.kafka_local import LocalKafka
from recstream_infra.local_service import ServiceStartError, free_tcp_port
from recstream_infra.redis_local import LocalRedis
from recstream_infra.settings import LocalServicesSettings
from recstream_infra.tls import ensure_ca
from serving.api import create_app
from serving.connection import open_redis, ping
from serving.errors import RedisUnavailableError
from serving.layout import RedisLayout
from serving.settings import RedisSettings
from streaming.ingest.store import RatingStore
from streaming.ingest.topics import spark_source_options
from tests.conftest import Services, job_settings, subprocess_env
from tests.serving_data import publish

pytestmark = pytest.mark.integration

ADMIN_SECRET = "admin-Secret-4711"
READER_SECRET = "reader-Secret-0815"
WRONG_SECRET = "wrong-Secret-1234"
# A quote, a backslash and a letter outside ASCII: they must survive the JAAS line and
# the broker's properties file. The grep looks for the plain part, which any leak keeps.
KAFKA_MARK = "kafka-Secret-2207"
KAFKA_SECRET = KAFKA_MARK + '"\\ü'
SASL_EVENTS = 3_000


def _cli(settings: RedisSettings, *arguments: str) -> subprocess.CompletedProcess[str]:
    env = subprocess_env()
    env.update(RECSTREAM_REDIS_URL=settings.url, RECSTREAM_REDIS_KEY_PREFIX=settings.key_prefix)
    if settings.username:
        env["RECSTREAM_REDIS_USERNAME"] = settings.username
    if settings.password is not None:
        env["RECSTREAM_REDIS_PASSWORD"] = settings.password.get_secret_value()
    if settings.tls_ca_file is not None:
        env["RECSTREAM_REDIS_TLS_CA_FILE"] = str(settings.tls_ca_file)
    return subprocess.run(
        [sys.executable, "-m", "serving", *arguments],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_serving_reads_as_a_read_only_user_that_cannot_write(
    state_dir: Path, free_port: int, caplog: pytest.LogCaptureFixture
) -> None:
    admin = RedisSettings(
        url=f"redis://127.0.0.1:{free_port}/0", password=ADMIN_SECRET, key_prefix="sec"
    )
    local = LocalServicesSettings(
        state_dir=state_dir,
        redis_reader_username="serving",
        redis_reader_password=SecretStr(READER_SECRET),
    )
    server = LocalRedis(local, admin)
    assert server.start() == "started"
    reader = admin.model_copy(update={"username": "serving", "password": SecretStr(READER_SECRET)})
    wrong = reader.model_copy(update={"password": SecretStr(WRONG_SECRET)})
    layout = RedisLayout("sec")
    try:
        writer = open_redis(admin)
        try:
            publish(writer, layout)
            writer.set("elsewhere:key", b"not for serving")
        finally:
            writer.close()

        with TestClient(create_app(reader), raise_server_exceptions=False) as http:
            for path in ("/users/1/recommendations", "/model", "/healthz"):
                assert http.get(path).status_code == 200, path
        found = _cli(reader, "recs", "1", "--json")
        assert found.returncode == 0, found.stderr
        assert '"movie_id": 10' in found.stdout

        client = open_redis(reader)
        try:
            assert client.get(layout.current) == b"3"
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.set(layout.current, b"99")
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.get("elsewhere:key")  # reads only under its key prefix
            with pytest.raises(redis.exceptions.NoPermissionError):
                client.flushall()
            with pytest.raises(redis.exceptions.ResponseError, match="permission"):
                client.eval("return redis.call('SET', KEYS[1], 'x')", 1, layout.current)
            assert client.get(layout.current) == b"3"
        finally:
            client.close()

        # A wrong password is refused with a message that says what to check ...
        with pytest.raises(RedisUnavailableError, match="refused the credentials") as caught:
            ping(wrong)
        with TestClient(create_app(wrong), raise_server_exceptions=False) as http:
            refused = http.get("/users/1/recommendations")
        assert refused.status_code == 503
        failed = _cli(wrong, "recs", "1")
        assert failed.returncode != 0
        assert "refused the credentials" in failed.stderr
        assert "RECSTREAM_REDIS_PASSWORD" in failed.stderr
    finally:
        server.stop()

    # ... and no secret appears in any answer, error, output or log of this test.
    seen = "\n".join(
        [str(caught.value), refused.text, found.stdout, found.stderr, failed.stdout,
         failed.stderr, caplog.text, (state_dir / "redis" / "redis.log").read_text()]
    )  # fmt: skip
    for secret in (ADMIN_SECRET, READER_SECRET, WRONG_SECRET):
        assert secret not in seen


def test_half_configured_reader_or_one_without_an_admin_password_is_refused(
    state_dir: Path, free_port: int
) -> None:
    settings = RedisSettings(url=f"redis://127.0.0.1:{free_port}/0")
    only_name = LocalServicesSettings(state_dir=state_dir, redis_reader_username="serving")
    with pytest.raises(ServiceStartError, match="or neither"):
        LocalRedis(only_name, settings).start()
    no_admin = only_name.model_copy(update={"redis_reader_password": SecretStr(READER_SECRET)})
    with pytest.raises(ServiceStartError, match="needs RECSTREAM_REDIS_PASSWORD") as caught:
        LocalRedis(no_admin, settings).start()
    assert READER_SECRET not in str(caught.value)


def _kafka_env(kafka: KafkaSettings, password: str | None, **settings: str) -> dict[str, str]:
    env = subprocess_env(
        RECSTREAM_KAFKA_BOOTSTRAP_SERVERS=kafka.bootstrap_servers,
        RECSTREAM_KAFKA_TOPIC=kafka.topic,
        RECSTREAM_KAFKA_PARTITIONS=str(kafka.partitions),
        **settings,
    )
    if password is not None:
        env.update(
            RECSTREAM_KAFKA_SECURITY_PROTOCOL=kafka.security_protocol,
            RECSTREAM_KAFKA_SASL_USERNAME=kafka.sasl_username or "",
            RECSTREAM_KAFKA_SASL_PASSWORD=password,
        )
    return env


def _run(command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *command], env=env, capture_output=True, text=True,
        timeout=600, check=False,
    )  # fmt: skip


@pytest.mark.slow
def test_kafka_sasl_login_end_to_end_and_a_wrong_password_is_refused(
    spark: SparkSession, redis_settings: RedisSettings, state_dir: Path, tmp_path: Path
) -> None:
    port, controller = free_tcp_port(), free_tcp_port()
    kafka = KafkaSettings(
        bootstrap_servers=f"127.0.0.1:{port}",
        topic="ratings",
        partitions=2,
        security_protocol="SASL_PLAINTEXT",
        sasl_username="recstream",
        sasl_password=SecretStr(KAFKA_SECRET),
    )
    local = LocalServicesSettings(state_dir=state_dir, kafka_controller_port=controller)
    broker = LocalKafka(local, kafka)
    assert broker.start() == "started"
    run = tmp_path / "run"  # the job's state and checkpoints; state_dir holds the broker's
    job_env = {
        **job_settings(run),
        "RECSTREAM_REDIS_URL": redis_settings.url,
        "RECSTREAM_REDIS_KEY_PREFIX": redis_settings.key_prefix,
        "RECSTREAM_SPARK_LOG_LEVEL": "INFO",  # Spark and the Kafka clients say all they say
        "RECSTREAM_MODEL_MIN_RATINGS": "100",
        "RECSTREAM_MODEL_MAX_ITER": "3",
    }
    try:
        # The properties file holds the password: its owner alone may read it.
        assert stat.S_IMODE(broker.config_file.stat().st_mode) == 0o600
        replay = _run(
            ["producer", "replay", "--source", "synthetic", "--no-progress"],
            _kafka_env(kafka, KAFKA_SECRET, RECSTREAM_PRODUCER_SYNTHETIC_EVENTS=str(SASL_EVENTS)),
        )
        assert replay.returncode == 0, replay.stderr
        assert f"sent {SASL_EVENTS:,}" in replay.stdout + replay.stderr
        job = _run(
            ["streaming", "run", "--available-now"], _kafka_env(kafka, KAFKA_SECRET, **job_env)
        )
        assert job.returncode == 0, job.stderr[-3000:]
        assert "lag 0" in job.stderr  # kafka-python's lag reader logged in as well
        batches = [line for line in job.stderr.splitlines() if " batch " in line]
        assert any("retrain started" in line for line in batches), batches

        # A wrong password or a client without SASL: refused, and told what to check.
        wrong_replay = _run(
            ["producer", "replay", "--source", "synthetic", "--no-progress"],
            _kafka_env(kafka, WRONG_SECRET, RECSTREAM_PRODUCER_SYNTHETIC_EVENTS="10"),
        )
        wrong_job = _run(
            ["streaming", "run", "--available-now"], _kafka_env(kafka, WRONG_SECRET, **job_env)
        )
        for refused in (wrong_replay, wrong_job):
            assert refused.returncode == 1, refused.stderr[-3000:]
            assert "refused the SASL_PLAINTEXT PLAIN login of user 'recstream'" in refused.stderr
            assert "Invalid username or password" in refused.stderr  # the broker's own words
            assert "RECSTREAM_KAFKA_SASL_PASSWORD" in refused.stderr
        anonymous = _run(["producer", "replay", "--source", "synthetic"], _kafka_env(kafka, None))
        assert anonymous.returncode == 1
        assert "set RECSTREAM_KAFKA_SECURITY_PROTOCOL=SASL_PLAINTEXT" in anonymous.stderr
        assert login_refusal(kafka, client_options(kafka)) is None  # the right login passes
        scram = kafka.model_copy(update={"sasl_mechanism": "SCRAM-SHA-256"})
        # SCRAM is offered, but this broker's user has PLAIN credentials only
        with pytest.raises(BrokerAuthenticationError, match="SASL_PLAINTEXT SCRAM-SHA-256 login"):
            describe_cluster(scram, connect_timeout_s=2)
        impostor = kafka.model_copy(update={"sasl_password": SecretStr(WRONG_SECRET)})
        with pytest.raises(ServiceStartError, match="refused the SASL_PLAINTEXT") as caught:
            LocalKafka(local, impostor).start()
    finally:
        broker.stop()

    store = RatingStore(spark, run / "state" / "store")
    assert store.stored_rows().count() == SASL_EVENTS
    assert store.dead_letters().count() == 0
    client = open_redis(redis_settings)
    try:
        assert client.hlen(RedisLayout(redis_settings.key_prefix).catalog) > 0  # read over SASL
    finally:
        client.close()
    # Spark shows the JAAS option redacted in a query plan.
    reader = spark.readStream.format("kafka").options(**spark_source_options(kafka))
    plan = reader.option("subscribe", "ratings").load()._jdf.queryExecution().toString()
    assert "kafka.sasl.jaas.config=*********(redacted)" in plan

    logs = [broker.process.log_file, state_dir / "kafka" / "format.log"]
    seen = "\n".join(
        [replay.stdout, replay.stderr, job.stdout, job.stderr, wrong_replay.stdout,
         wrong_replay.stderr, wrong_job.stdout, wrong_job.stderr, anonymous.stderr,
         str(caught.value), plan, *(log.read_text() for log in logs)]
    )  # fmt: skip
    assert "sasl.jaas.config" in seen  # the Kafka clients did print their settings ...
    for secret in (KAFKA_MARK, WRONG_SECRET):
        assert secret not in seen  # ... but never the password
    # Nor does the job write it anywhere: store, models, Spark's checkpoints.
    written = list(run.rglob("*"))
    assert len(written) > 20
    assert not [
        path for path in written if path.is_file() and KAFKA_MARK.encode() in path.read_bytes()
    ]


def _tls_env(kafka: KafkaSettings, redis_settings: RedisSettings) -> dict[str, str]:
    """Every TLS and SASL setting of ``kafka`` and ``redis_settings`` as variables."""
    env = _kafka_env(
        kafka, KAFKA_SECRET,
        RECSTREAM_KAFKA_SASL_MECHANISM=kafka.sasl_mechanism,
        RECSTREAM_KAFKA_SSL_CAFILE=str(kafka.ssl_cafile),
        RECSTREAM_REDIS_URL=redis_settings.url,
        RECSTREAM_REDIS_TLS_CA_FILE=str(redis_settings.tls_ca_file),
        RECSTREAM_REDIS_KEY_PREFIX=redis_settings.key_prefix,
        RECSTREAM_REDIS_PASSWORD=ADMIN_SECRET,
    )  # fmt: skip
    return env


@pytest.mark.slow
def test_tls_everywhere_with_scram_end_to_end_and_wrong_ca_or_plain_clients_refused(
    spark: SparkSession,
    services: Services,
    state_dir: Path,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Kafka over SASL_SSL with SCRAM-SHA-512 and Redis over rediss://, both with
    certificates of the project's CA: the replay, the job (Spark's Kafka source
    included), the API and the CLI work; a wrong CA or a plain client is refused with
    the setting to fix; SCRAM-SHA-256 and plain SSL log in too; no secret leaks."""
    ca = ensure_ca(state_dir / "tls" / "ca.pem")
    other_ca = ensure_ca(tmp_path / "other-ca" / "ca.pem")
    kafka = KafkaSettings(
        bootstrap_servers=f"127.0.0.1:{free_tcp_port()}", topic="ratings", partitions=2,
        security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", sasl_username="recstream",
        sasl_password=SecretStr(KAFKA_SECRET), ssl_cafile=ca,
    )  # fmt: skip
    redis_tls = RedisSettings(
        url=f"rediss://127.0.0.1:{free_tcp_port()}/0", tls_ca_file=ca, password=ADMIN_SECRET,
        key_prefix="tls",
    )  # fmt: skip
    local = LocalServicesSettings(state_dir=state_dir, kafka_controller_port=free_tcp_port())
    broker, server = LocalKafka(local, kafka), LocalRedis(local, redis_tls)
    assert broker.start() == "started" and server.start() == "started"
    run = tmp_path / "run"
    job_env = {
        **_tls_env(kafka, redis_tls), **job_settings(run),
        "RECSTREAM_MODEL_MIN_RATINGS": "100", "RECSTREAM_MODEL_MAX_ITER": "3",
    }  # fmt: skip
    plain_ssl = kafka.model_copy(
        update={"bootstrap_servers": f"127.0.0.1:{free_tcp_port()}", "security_protocol": "SSL",
                "sasl_username": None, "sasl_password": None}
    )  # fmt: skip
    ssl_broker = LocalKafka(
        local.model_copy(update={"state_dir": state_dir / "ssl",
                                 "kafka_controller_port": free_tcp_port()}), plain_ssl
    )  # fmt: skip
    try:
        replay = _run(
            ["producer", "replay", "--source", "synthetic", "--no-progress"],
            {**_tls_env(kafka, redis_tls), "RECSTREAM_PRODUCER_SYNTHETIC_EVENTS": str(SASL_EVENTS)},
        )
        assert replay.returncode == 0, replay.stderr
        assert f"sent {SASL_EVENTS:,}" in replay.stdout + replay.stderr
        job = _run(["streaming", "run", "--available-now"], job_env)
        assert job.returncode == 0, job.stderr[-3000:]
        assert "lag 0" in job.stderr  # kafka-python's lag reader spoke TLS and SCRAM too
        with TestClient(create_app(redis_tls), raise_server_exceptions=False) as http:
            answer = http.get("/users/1/recommendations")
            assert answer.status_code == 200, answer.text
            assert answer.json()["movies"]
        found = _cli(redis_tls, "recs", "1", "--json")
        assert found.returncode == 0, found.stderr

        # SCRAM-SHA-256 is offered as well, and a broker with TLS alone (no SASL) works.
        scram256 = kafka.model_copy(update={"sasl_mechanism": "SCRAM-SHA-256"})
        assert describe_cluster(scram256).broker_count == 1
        assert login_refusal(scram256, client_options(scram256)) is None
        assert ssl_broker.start() == "started"
        assert describe_cluster(plain_ssl).broker_count == 1

        # Refused, each with the setting to fix.
        wrong_ca = _run(
            ["producer", "replay", "--source", "synthetic", "--no-progress"],
            {**_tls_env(kafka, redis_tls), "RECSTREAM_KAFKA_SSL_CAFILE": str(other_ca),
             "RECSTREAM_PRODUCER_SYNTHETIC_EVENTS": "10"},
        )  # fmt: skip
        assert wrong_ca.returncode == 1
        assert "is not trusted by the CA in RECSTREAM_KAFKA_SSL_CAFILE" in wrong_ca.stderr
        plain = kafka.model_copy(update={"security_protocol": "SASL_PLAINTEXT", "ssl_cafile": None})
        with pytest.raises(BrokerUnavailableError, match=r"speaks TLS.*RECSTREAM_KAFKA_SSL_CAFILE"):
            describe_cluster(plain, connect_timeout_s=3)
        tls_to_plain = plain_ssl.model_copy(  # the session's broker listens without TLS
            update={"bootstrap_servers": services.kafka.bootstrap_servers}
        )
        with pytest.raises(BrokerUnavailableError, match="does not speak TLS"):
            describe_cluster(tls_to_plain, connect_timeout_s=3)
        with pytest.raises(RedisUnavailableError, match="RECSTREAM_REDIS_TLS_CA_FILE") as redis_ca:
            ping(redis_tls.model_copy(update={"tls_ca_file": other_ca}))
        cli_ca = _cli(redis_tls.model_copy(update={"tls_ca_file": other_ca}), "recs", "1")
        assert cli_ca.returncode != 0
        assert "is not trusted by the CA in RECSTREAM_REDIS_TLS_CA_FILE" in cli_ca.stderr
        plain_redis = redis_tls.model_copy(
            update={"url": redis_tls.url.replace("rediss://", "redis://"), "tls_ca_file": None}
        )
        with pytest.raises(RedisUnavailableError, match=r"speaks TLS.*rediss://"):
            ping(plain_redis)
        with TestClient(create_app(plain_redis), raise_server_exceptions=False) as http:
            assert http.get("/users/1/recommendations").status_code == 503
    finally:
        ssl_broker.stop()
        broker.stop()
        server.stop()

    store = RatingStore(spark, run / "state" / "store")
    assert store.stored_rows().count() == SASL_EVENTS
    logs = [broker.process.log_file, server.process.log_file, ssl_broker.process.log_file]
    seen = "\n".join(
        [replay.stdout, replay.stderr, job.stdout, job.stderr, wrong_ca.stdout, wrong_ca.stderr,
         found.stdout, found.stderr, cli_ca.stderr, str(redis_ca.value), caplog.text,
         *(log.read_text() for log in logs)]
    )  # fmt: skip
    for secret in (KAFKA_MARK, ADMIN_SECRET):
        assert secret not in seen
    written = [path for path in run.rglob("*") if path.is_file()]
    assert not [path for path in written if KAFKA_MARK.encode() in path.read_bytes()]
