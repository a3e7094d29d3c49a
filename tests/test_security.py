"""Security against a real Redis: a password, a read-only ACL user for serving, and
secrets that never show up in answers, errors or logs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient
from pydantic import SecretStr

from recstream_infra.local_service import ServiceStartError
from recstream_infra.redis_local import LocalRedis
from recstream_infra.settings import LocalServicesSettings
from serving.api import create_app
from serving.connection import open_redis, ping
from serving.errors import RedisUnavailableError
from serving.layout import RedisLayout
from serving.settings import RedisSettings
from tests.conftest import subprocess_env
from tests.serving_data import publish

pytestmark = pytest.mark.integration

ADMIN_SECRET = "admin-Secret-4711"
READER_SECRET = "reader-Secret-0815"
WRONG_SECRET = "wrong-Secret-1234"


def _cli(settings: RedisSettings, *arguments: str) -> subprocess.CompletedProcess[str]:
    env = subprocess_env()
    env.update(RECSTREAM_REDIS_URL=settings.url, RECSTREAM_REDIS_KEY_PREFIX=settings.key_prefix)
    if settings.username:
        env["RECSTREAM_REDIS_USERNAME"] = settings.username
    if settings.password is not None:
        env["RECSTREAM_REDIS_PASSWORD"] = settings.password.get_secret_value()
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
