"""A real single-node Apache Kafka (KRaft, broker + controller in one JVM) for the demo and the
tests, run from Apache Kafka's own jars. Maven resolves the jars from ``deploy/kafka/pom.xml``
into a cache folder once; the storage is formatted on first start; ``up`` waits until the
broker answers. ``up`` is idempotent and ``down`` stops only the process this launcher started
(its pid is recorded and checked against the command line)."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from string import Template
from typing import IO

from streams.errors import LocalKafkaError

Step = Callable[[str], None]


def _default_deploy_dir() -> Path:
    return Path(__file__).resolve().parents[1] / "deploy" / "kafka"


def _default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "copyloop" / "kafka"


def _quiet(_: str) -> None:
    return None


@dataclass(frozen=True)
class KafkaStatus:
    running: bool
    bootstrap: str
    pid: int | None
    home: Path


@dataclass(frozen=True)
class LocalKafka:
    home: Path
    port: int = 19092
    controller_port: int | None = None
    host: str = "127.0.0.1"
    heap: str = "768m"
    deploy_dir: Path = field(default_factory=_default_deploy_dir)
    cache_dir: Path = field(default_factory=_default_cache_dir)

    @classmethod
    def from_bootstrap(cls, bootstrap: str, home: Path) -> LocalKafka:
        host, _, port = bootstrap.split(",")[0].rpartition(":")
        if host not in ("127.0.0.1", "localhost") or not port.isdigit():
            raise LocalKafkaError(
                f"the local broker listens on loopback only; `COPYLOOP_KAFKA_BOOTSTRAP` is "
                f"{bootstrap!r}, expected 127.0.0.1:PORT"
            )
        return cls(home=home, port=int(port))

    # -- paths ----------------------------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def _controller_port(self) -> int:
        return self.controller_port or self.port + 1

    @property
    def _pid_file(self) -> Path:
        return self.home / "kafka.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "kafka.log"

    @property
    def _props(self) -> Path:
        return self.home / "server.properties"

    @property
    def _log_dirs(self) -> Path:
        return self.home / "data"

    # -- jars -----------------------------------------------------------------------------
    def _lib_dir(self) -> Path:
        pom = self.deploy_dir / "pom.xml"
        digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:12]
        return self.cache_dir / digest / "lib"

    def resolve_jars(self, step: Step = _quiet) -> Path:
        """Resolve Apache Kafka's jars with Maven into the cache (once per pom)."""
        lib = self._lib_dir()
        stamp = lib / ".complete"
        if stamp.exists():
            return lib
        mvn = shutil.which("mvn")
        if mvn is None:
            raise LocalKafkaError("Maven (`mvn`) is not on PATH; it resolves Kafka's jars")
        step(f"resolving Apache Kafka jars with Maven into {lib}")
        tmp = lib.with_name("lib.partial")
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [
            mvn,
            "-q",
            "-B",
            "-f",
            str(self.deploy_dir / "pom.xml"),
            "dependency:copy-dependencies",
            "-DincludeScope=runtime",
            f"-DoutputDirectory={tmp}",
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
        if proc.returncode != 0:
            tail = (proc.stdout + proc.stderr)[-2000:]
            raise LocalKafkaError(f"Maven could not resolve Kafka's jars:\n{tail}")
        shutil.rmtree(lib, ignore_errors=True)
        tmp.rename(lib)
        stamp.write_text("ok\n")
        return lib

    def _java(self) -> str:
        home = os.environ.get("JAVA_HOME")
        java = str(Path(home) / "bin" / "java") if home else shutil.which("java")
        if not java or not Path(java).exists():
            raise LocalKafkaError("Java (`java`, 17 or later) is not on PATH; Kafka needs it")
        return java

    def _classpath(self, lib: Path) -> str:
        return os.pathsep.join(str(p) for p in sorted(lib.glob("*.jar")))

    # -- state ----------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _recorded_pid(self) -> int | None:
        try:
            pid = int(self._pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        return pid if self._is_ours(pid) else None

    def _is_ours(self, pid: int) -> bool:
        """True when ``pid`` is alive and is the broker started with this home's config."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return b"kafka.Kafka" in cmdline and str(self._props).encode() in cmdline

    def reachable(self) -> bool:
        """True when something accepts connections on the broker's port (ours or not)."""
        return self._answers()

    def _answers(self, timeout_s: float = 1.0) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=timeout_s):
                return True
        except OSError:
            return False

    def status(self) -> KafkaStatus:
        pid = self._recorded_pid()
        return KafkaStatus(pid is not None and self._answers(), self.bootstrap, pid, self.home)

    # -- lifecycle ------------------------------------------------------------------------
    def _write_config(self) -> None:
        from streams.producer import MAX_MESSAGE_BYTES

        template = Template((self.deploy_dir / "server.properties").read_text())
        self._props.write_text(
            template.substitute(
                port=self.port,
                controller_port=self._controller_port,
                log_dirs=str(self._log_dirs),
                max_message_bytes=MAX_MESSAGE_BYTES,
            )
        )

    def _format(self, java: str, cp: str, step: Step) -> None:
        if (self._log_dirs / "meta.properties").exists():
            return
        step(f"formatting KRaft storage in {self._log_dirs}")
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        # one argument with '=': an id may start with '-', which would read as an option
        cmd = [java, "-cp", cp, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}"]
        cmd += ["-c", str(self._props), "--ignore-formatted"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)  # noqa: S603
        if proc.returncode != 0:
            raise LocalKafkaError(f"formatting Kafka storage failed:\n{proc.stdout}{proc.stderr}")

    def up(self, *, timeout_s: float = 120.0, step: Step = _quiet) -> str:
        """Start the broker unless it already runs; return the bootstrap address."""
        with self._locked():
            return self._up(timeout_s, step)

    def _up(self, timeout_s: float, step: Step) -> str:
        if self._recorded_pid() is not None:
            if self._wait_ready(timeout_s):
                return self.bootstrap
            raise LocalKafkaError(f"the broker is running but does not answer; see {self.log_file}")
        if self._answers():
            raise LocalKafkaError(
                f"port {self.port} is taken by a process this launcher did not start; "
                "set COPYLOOP_KAFKA_BOOTSTRAP to another 127.0.0.1 port"
            )
        java = self._java()
        lib = self.resolve_jars(step)
        cp = self._classpath(lib)
        self._write_config()
        self._format(java, cp, step)
        step(f"starting Kafka on {self.bootstrap}")
        cmd = [
            java,
            f"-Xmx{self.heap}",
            "-Xms256m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.deploy_dir / 'log4j2.yaml'}",
            f"-Dkafka.logs.dir={self.home}",
            "-cp",
            cp,
            "kafka.Kafka",
            str(self._props),
        ]
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(  # noqa: S603
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.home,
                start_new_session=True,  # outlives the command that started it
            )
        self._pid_file.write_text(f"{proc.pid}\n")
        if not self._wait_ready(timeout_s, proc):
            self._stop_pid(proc.pid, 15.0)
            raise LocalKafkaError(
                f"Kafka did not answer within {timeout_s:.0f} s; last log lines:\n"
                + self._log_tail()
            )
        return self.bootstrap

    def _wait_ready(self, timeout_s: float, proc: subprocess.Popen[bytes] | None = None) -> bool:
        from kafka.admin import KafkaAdminClient
        from kafka.errors import KafkaError

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if proc is not None and proc.poll() is not None:
                raise LocalKafkaError(
                    f"Kafka exited with status {proc.returncode}; last log lines:\n"
                    + self._log_tail()
                )
            if self._answers():
                try:
                    admin = KafkaAdminClient(
                        bootstrap_servers=self.bootstrap, request_timeout_ms=5000
                    )
                    try:
                        admin.list_topics()
                        return True
                    finally:
                        admin.close()
                except KafkaError:
                    pass
            time.sleep(0.3)
        return False

    def _log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def down(self, *, timeout_s: float = 60.0) -> bool:
        """Stop the broker this launcher started; False when none was running."""
        with self._locked():
            return self._down(timeout_s)

    def _down(self, timeout_s: float) -> bool:
        pid = self._recorded_pid()
        self._pid_file.unlink(missing_ok=True)
        if pid is None:
            return False
        self._stop_pid(pid, timeout_s)
        return True

    @contextlib.contextmanager
    def shared(self, *, timeout_s: float = 180.0) -> Iterator[str]:
        """Use this home's broker for the block (yields its bootstrap address), as several
        test sessions in one checkout do at once.

        A broker already running is used as it is; when none runs, a fresh one is started
        (its old data deleted). At the end the broker is stopped only when this block started
        it and no other block holds it; each holder keeps a shared lock on ``users.lock``
        while inside, so a broker is never stopped (or wiped) under another session."""
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / "users.lock", "w") as users:
            fcntl.flock(users, fcntl.LOCK_SH)
            with self._locked():
                started = self._recorded_pid() is None
                if started:
                    shutil.rmtree(self._log_dirs, ignore_errors=True)  # a fresh cluster
                bootstrap = self._up(timeout_s, _quiet)
            try:
                yield bootstrap
            finally:
                with self._locked():
                    if started and self._sole_user(users):
                        self._down(60.0)
                fcntl.flock(users, fcntl.LOCK_UN)

    @staticmethod
    def _sole_user(users: IO[str]) -> bool:
        """True when no other holder has ``users`` locked (this one's shared lock becomes an
        exclusive one; a holder waiting to start is never kept waiting)."""
        try:
            fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def _stop_pid(self, pid: int, timeout_s: float) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)  # Kafka shuts down cleanly on SIGTERM
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self._alive(pid):
                return
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        while self._alive(pid):
            time.sleep(0.1)

    @staticmethod
    def _alive(pid: int) -> bool:
        with contextlib.suppress(ChildProcessError):
            done, _ = os.waitpid(pid, os.WNOHANG)  # reap when it is our child
            if done == pid:
                return False
        try:
            state = Path(f"/proc/{pid}/stat").read_text().split()[2]
        except (OSError, IndexError):
            return False
        return state != "Z"
