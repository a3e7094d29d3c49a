"""A Redis server on loopback, from Debian's ``redis-server``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from recstream_infra.local_service import LocalService, ServiceStartError
from recstream_infra.settings import LocalServicesSettings
from recstream_infra.tls import issue_server_certificate
from serving.connection import ping
from serving.errors import RedisUnavailableError
from serving.layout import RedisLayout
from serving.settings import RedisSettings

__all__ = ["LocalRedis", "config_quote"]


class LocalRedis(LocalService):
    """redis-server bound to 127.0.0.1, with the password from the settings if one is set."""

    name = "redis"

    def __init__(
        self, local: LocalServicesSettings, redis: RedisSettings, folder: Path | None = None
    ) -> None:
        super().__init__(
            redis.host, redis.port, folder or local.state_dir / "redis", local.start_timeout_s
        )
        self.settings = redis
        self.persistence = local.redis_persistence
        self.reader = (local.redis_reader_username, local.redis_reader_password)
        # One server answers PING on its own, a node of a cluster too.
        self._probe = redis.model_copy(update={"socket_timeout_s": 1.0, "cluster": False})

    @property
    def config_file(self) -> Path:
        """redis.conf of the server (it holds the password, so it is private to us)."""
        return self.folder / "redis.conf"

    def answers(self) -> bool:
        """PING succeeds with our credentials."""
        try:
            ping(self._probe)
        except RedisUnavailableError:
            return False
        return True

    def _prepare(self) -> list[str]:
        server = shutil.which("redis-server")
        if server is None:
            msg = "redis-server is not installed; run `make setup` (Debian package redis-server)"
            raise ServiceStartError(msg)
        lines = [
            f"bind {self.host}",
            *self._listening_lines(),
            "protected-mode yes",
            "daemonize no",
            'logfile ""',
            f"dir {config_quote(str(self.folder))}",
            "appendonly no",
            "save 3600 1 300 100 60 10000" if self.persistence else 'save ""',
            *self._extra_lines(),
        ]
        if self.settings.password is not None:
            secret = self.settings.password.get_secret_value()
            lines.append(f"requirepass {config_quote(secret)}")
            if self.settings.username and self.settings.username != "default":
                lines.append(
                    f"user {self.settings.username} on {config_quote('>' + secret)} ~* &* +@all"
                )
        lines += self._reader_lines()
        fd = os.open(self.config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as conf:
            conf.write("\n".join(lines) + "\n")
        return [server, str(self.config_file)]

    def _extra_lines(self) -> list[str]:
        """More configuration for a kind of server (a cluster node's)."""
        return []

    def _listening_lines(self) -> list[str]:
        """The plain port, or with a rediss:// URL the TLS port alone (the plain one off).

        The certificate is signed by the project's CA (``recstream_infra.tls``); clients
        are not asked for certificates of their own, they log in with the password.
        """
        if not self.settings.tls:
            return [f"port {self.port}"]
        if self.settings.tls_ca_file is None:
            msg = (
                "the local Redis with a rediss:// URL needs RECSTREAM_REDIS_TLS_CA_FILE: the "
                "path of the CA file the project makes and signs the server's certificate "
                "with (e.g. .state/tls/ca.pem)"
            )
            raise ServiceStartError(msg)
        issued = issue_server_certificate(self.settings.tls_ca_file, self.folder)
        return [
            "port 0",
            f"tls-port {self.port}",
            f"tls-cert-file {config_quote(str(issued.certificate))}",
            f"tls-key-file {config_quote(str(issued.key))}",
            f"tls-ca-cert-file {config_quote(str(issued.ca))}",
            "tls-auth-clients no",
        ]

    def _reader_lines(self) -> list[str]:
        """The ACL line of the read-only serving user, if one is configured.

        It may run read and connection commands and the lookup scripts (read-only,
        ``EVALSHA_RO``), on keys under the key prefix only; a script's writes are
        refused like any other write.
        """
        name, password = self.reader
        if name is None and password is None:
            return []
        if name is None or password is None:
            msg = (
                "set both RECSTREAM_LOCAL_REDIS_READER_USERNAME and "
                "RECSTREAM_LOCAL_REDIS_READER_PASSWORD, or neither"
            )
            raise ServiceStartError(msg)
        if self.settings.password is None:
            msg = (
                "a read-only Redis user needs RECSTREAM_REDIS_PASSWORD as well: without it "
                "the default user, which may write, needs no password at all"
            )
            raise ServiceStartError(msg)
        secret = config_quote(">" + password.get_secret_value())
        keys = config_quote(f"%R~{RedisLayout(self.settings.key_prefix).pattern}")
        return [
            f"user {name} on {secret} resetkeys {keys} resetchannels "
            "-@all +@read +@connection -@dangerous +evalsha_ro +script|load"
        ]


def config_quote(value: str) -> str:
    """``value`` as one double-quoted argument of a redis.conf line."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'
