"""What every local service shares: start once, wait until it answers, stop what we started."""

from __future__ import annotations

import argparse
import random
import socket
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

from recstream_base.errors import RecstreamError
from recstream_base.net import port_open
from recstream_infra.processes import ManagedProcess

__all__ = [
    "LOOPBACK_HOSTS",
    "LocalService",
    "ServiceGroup",
    "ServiceStartError",
    "ServiceStatus",
    "StartOutcome",
    "free_port_block",
    "free_tcp_port",
    "group_main",
]

# The services bind 127.0.0.1 (IPv4), so only names that reach it are accepted.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost"})

StartOutcome = Literal["started", "already running", "external"]


class ServiceStartError(RecstreamError):
    """A local service could not be started or did not answer in time."""


@dataclass(frozen=True)
class ServiceStatus:
    """One line of ``make services-status``."""

    name: str
    address: str
    state: Literal["running", "stopped", "external"]
    pid: int | None
    log_file: Path

    def describe(self) -> str:
        """A human-readable line."""
        if self.state == "running":
            return (
                f"{self.name:<6} running  pid {self.pid:<7} {self.address:<22} log {self.log_file}"
            )
        if self.state == "external":
            return f"{self.name:<6} answering at {self.address}, but not started by recstream"
        return f"{self.name:<6} stopped  {'':11} {self.address}"


class LocalService(ABC):
    """A server process on loopback that we start, probe and stop."""

    name: str

    def __init__(self, host: str, port: int, folder: Path, start_timeout_s: float) -> None:
        if host not in LOOPBACK_HOSTS:
            msg = (
                f"the local {self.name} only runs on 127.0.0.1, but the settings point at "
                f"{host}:{port}; use `make services` only for a local setup"
            )
            raise ServiceStartError(msg)
        self.host = "127.0.0.1"
        self.port = port
        self.folder = folder.resolve()
        self.start_timeout_s = start_timeout_s
        self.process = ManagedProcess(
            name=self.name,
            pid_file=self.folder / f"{self.name}.pid",
            log_file=self.folder / f"{self.name}.log",
        )

    @property
    def address(self) -> str:
        """host:port the service listens on."""
        return f"{self.host}:{self.port}"

    @property
    @abstractmethod
    def config_file(self) -> Path:
        """The configuration file the process is started with."""

    @abstractmethod
    def answers(self) -> bool:
        """True when the service answers a real request (not merely an open port)."""

    @abstractmethod
    def _prepare(self) -> list[str]:
        """Write configuration, initialise storage; return the command that starts the service."""

    def _environment(self) -> dict[str, str] | None:
        """The process's environment; None (the default) inherits ours."""
        return None

    def start(self) -> StartOutcome:
        """Start the service unless it already runs; return once it answers.

        Raises:
            ServiceStartError: the port belongs to another program, the process died,
                or it did not answer before the deadline; the message names the log file.
        """
        outcome = self.launch()
        if outcome != "external":
            self.wait_until_answering()
        return outcome

    def launch(self) -> StartOutcome:
        """Start the process unless it already runs, without waiting for it to answer.

        Nodes of a cluster are launched together and then waited for: none of them
        answers before a quorum of them runs.

        Raises:
            ServiceStartError: the port belongs to another program, or preparing failed.
        """
        if self.process.pid() is not None:
            return "already running"
        if self.answers():
            return "external"
        if port_open(self.host, self.port):
            msg = (
                f"port {self.port} on {self.host} is taken by a program that does not answer as "
                f"{self.name}; stop it, or choose another port in the settings"
            )
            raise ServiceStartError(msg)
        self.folder.mkdir(parents=True, exist_ok=True)
        command = self._prepare()
        self.process.start(command, self._environment())
        return "started"

    def kill(self) -> bool:
        """SIGKILL our process and its children, as a crash ends them (fault tests).

        False if none of ours was running.
        """
        return self.process.kill()

    def stop(self) -> bool:
        """Stop the process we started; False when none of ours was running."""
        return self.process.stop()

    def status(self) -> ServiceStatus:
        """Whether our process runs, or someone else's answers at the address."""
        pid = self.process.pid()
        if pid is not None:
            state: Literal["running", "stopped", "external"] = "running"
        elif self._answers_or_refuses():
            state = "external"
        else:
            state = "stopped"
        return ServiceStatus(self.name, self.address, state, pid, self.process.log_file)

    def _answers_or_refuses(self) -> bool:
        """Something of our kind is there: it answers, or it refuses our credentials."""
        try:
            return self.answers()
        except ServiceStartError:
            return True

    def wait_until_answering(self) -> None:
        """Return once the service answers.

        Raises:
            ServiceStartError: the process exited, or the deadline passed (it is stopped).
        """
        deadline = time.monotonic() + self.start_timeout_s
        while not self.answers():
            if self.process.pid() is None:
                msg = (
                    f"{self.name} exited during start; see {self.process.log_file}, "
                    f"which ends with:\n{self.process.log_tail()}"
                )
                raise ServiceStartError(msg)
            if time.monotonic() > deadline:
                self.process.stop()
                msg = (
                    f"{self.name} did not answer at {self.address} within "
                    f"{self.start_timeout_s:g} s and was stopped; see {self.process.log_file}"
                )
                raise ServiceStartError(msg)
            time.sleep(0.25)


# Linux gives outgoing connections their local port from 32768-60999
# (net.ipv4.ip_local_port_range), and binding port 0 picks from there too: such a port
# can be taken by some client's connection between the probe and the service's own bind
# (CI once saw a Kafka controller die of "Address already in use" that way). Ports are
# picked below that range instead.
_PICK_FROM = range(20_000, 32_768)
# Ports already handed out in this process: a service may not have bound its port yet
# when the next one is asked for, and the two must differ.
_handed_out: set[int] = set()


def free_port_block(count: int, *, shifted_by: int = 0) -> int:
    """The first of `count` consecutive TCP ports on 127.0.0.1 that nothing listens on.

    All of them are held at once while probed, so they are free together; a Kafka node
    takes two (its clients' port and its controller's, the next one). With `shifted_by`,
    the ports that far above the block are free too (a Redis Cluster node's bus port is
    its port + 10000). No port is handed out twice in one process.
    """
    if count < 1 or shifted_by < 0:
        msg = f"count must be at least 1 and shifted_by at least 0, got {count} and {shifted_by}"
        raise ValueError(msg)
    highest_first = _PICK_FROM.stop - count - shifted_by
    if highest_first <= _PICK_FROM.start:
        msg = f"no block of {count} ports shifted by {shifted_by} fits in {_PICK_FROM}"
        raise ValueError(msg)
    while True:
        first = random.randrange(_PICK_FROM.start, highest_first)  # noqa: S311 (not a secret)
        block = [*range(first, first + count)]
        if shifted_by:
            block += [port + shifted_by for port in block]
        if _handed_out.intersection(block):
            continue
        probes: list[socket.socket] = []
        try:
            for port in block:
                probe = socket.socket()
                probes.append(probe)
                probe.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
        _handed_out.update(block)
        return first


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    return free_port_block(1)


class ServiceGroup(ABC):
    """Local services started together, in order, and stopped in reverse."""

    @property
    @abstractmethod
    def services(self) -> tuple[LocalService, ...]:
        """In start order (each one's ``start()``); ``stop`` runs in reverse."""

    # Launch every service first and then wait for each (the nodes of a Kafka quorum,
    # none of which answers alone), rather than one after the other.
    launch_together = False

    def start(self) -> Iterator[tuple[LocalService, StartOutcome, float]]:
        """Start the services in order; (service, outcome, seconds since the start).

        One after the other, each answering before the next is launched; with
        ``launch_together``, all launched first, then each waited for.

        Raises:
            ServiceStartError: from the first service that does not start (the later ones
                are not waited for).
        """
        began = time.monotonic()
        if not self.launch_together:
            for service in self.services:
                yield service, service.start(), time.monotonic() - began
            return
        launched = [(service, service.launch()) for service in self.services]
        for service, outcome in launched:
            if outcome != "external":
                service.wait_until_answering()
            yield service, outcome, time.monotonic() - began

    def stop(self) -> dict[str, bool]:
        """Stop what we started; True for each service that was running."""
        return {service.name: service.stop() for service in reversed(self.services)}

    def status(self) -> list[ServiceStatus]:
        """One status per service."""
        return [service.status() for service in self.services]

    def command(self, command: str, width: int) -> int:
        """Run a command line's ``up``, ``down`` or ``status``; the exit code.

        Each service gets a line, its name ``width`` wide; 1 when a service did not start.
        """
        if command == "status":
            for line in self.status():
                print(line.describe())
        elif command == "down":
            for name, was_running in self.stop().items():
                outcome = "stopped" if was_running else "was not running (nothing to stop)"
                print(f"{name:<{width}} {outcome}")
        else:
            try:
                for service, outcome, seconds in self.start():
                    print(f"{service.name:<{width}} {outcome} at {service.address} "
                          f"({seconds:.1f} s)")  # fmt: skip
            except ServiceStartError as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 1
        return 0


G = TypeVar("G", bound=ServiceGroup)


def group_main(
    argv: Sequence[str] | None,
    prog: str,
    description: str | None,
    build: Callable[[], G],
    *,
    width: int,
    after_up: Callable[[G], None],
) -> int:
    """The command line of a group of local services: ``up``, ``down`` or ``status``.

    ``build`` makes the group from the settings (2 with the message when they are
    wrong); ``after_up`` prints what to do next once ``up`` succeeded.
    """
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("command", choices=["up", "down", "status"])
    args = parser.parse_args(argv)
    try:
        group = build()
    except (ValueError, ServiceStartError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    code = group.command(args.command, width=width)
    if code == 0 and args.command == "up":
        after_up(group)
    return code
