"""A real, local, single-node Apache Kafka broker (KRaft mode) for tests, the demo and benchmarks.

Two parts:

* :func:`ensure_jars` fetches the broker's jars from Maven Central with ``mvn`` into a cache
  outside the repository (``$FLEETAL_KAFKA_CACHE/<version>/libs``, by default
  ``~/.cache/fleetal/kafka/<version>/libs``). A marker file written last, after an atomic
  rename, makes the second call a no-op that never starts ``mvn``.
* :class:`LocalKafka` runs that broker with the machine's Java (17 or newer) as a child
  process: free loopback ports, storage formatted in a private temporary directory, a small
  heap, and a readiness check that asks the broker for cluster metadata over the Kafka
  protocol. It can be stopped cleanly, killed (crash tests) and restarted on the same ports
  with the same data. The first clean exit records a class data sharing archive next to the
  jars; later brokers map it and start about 40 % sooner.

Kafka's default 1 MB message limit is kept on purpose, so that payload chunking is exercised
exactly as it will be against a production cluster.

Command line (``python -m deploy.kafka.broker --help``)::

    python -m deploy.kafka.broker fetch     # make sure the jars are cached
    python -m deploy.kafka.broker run       # start a broker, print its bootstrap, run until
                                            # Ctrl-C / SIGTERM, then stop it cleanly
"""

from __future__ import annotations

import argparse
import atexit
import base64
import contextlib
import fcntl
import hashlib
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Self

from deploy.lifetime import die_with_parent, owned_tempdir

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
# log4j-slf4j2-impl 2.24.3 is built against slf4j-api 2.0.16; without slf4j-api 2.x on the
# classpath Maven resolves 1.7.36 (through Kafka) and slf4j falls back to its NOP logger.
SLF4J_VERSION = "2.0.16"
LOG4J_VERSION = "2.24.3"
MIN_JAVA_MAJOR = 17

CACHE_ENV = "FLEETAL_KAFKA_CACHE"
MARKER_NAME = ".fleetal-complete"
MVN_TIMEOUT_S = 900.0
FORMAT_TIMEOUT_S = 120.0
INSTALL_HINT = "apt-get install openjdk-17-jre-headless maven  (or run `make setup`)"

_POM = f"""<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.fleetal</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency>
      <groupId>org.apache.kafka</groupId>
      <artifactId>kafka_2.13</artifactId>
      <version>{KAFKA_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.slf4j</groupId>
      <artifactId>slf4j-api</artifactId>
      <version>{SLF4J_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-slf4j2-impl</artifactId>
      <version>{LOG4J_VERSION}</version>
    </dependency>
    <dependency>
      <groupId>org.apache.logging.log4j</groupId>
      <artifactId>log4j-core</artifactId>
      <version>{LOG4J_VERSION}</version>
    </dependency>
  </dependencies>
</project>
"""

# The broker's own log goes to <workdir>/logs/server.log; the JVM's stdout/stderr (startup
# failures, GC or JVM errors) to <workdir>/logs/broker.out.
_LOG4J2_XML = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN" shutdownHook="disable">
  <Appenders>
    <File name="server" fileName="${sys:kafka.logs.dir}/server.log" append="true">
      <PatternLayout pattern="[%d] %p %m (%c)%n"/>
    </File>
  </Appenders>
  <Loggers>
    <Logger name="kafka" level="INFO"/>
    <Logger name="org.apache.kafka" level="INFO"/>
    <Logger name="kafka.request.logger" level="WARN"/>
    <Logger name="state.change.logger" level="WARN"/>
    <Logger name="kafka.log.LogCleaner" level="WARN"/>
    <Logger name="org.apache.kafka.common.config.AbstractConfig" level="WARN"/>
    <Logger name="org.apache.kafka.storage.internals.log" level="WARN"/>
    <Root level="WARN">
      <AppenderRef ref="server"/>
    </Root>
  </Loggers>
</Configuration>
"""

_JVM_OPTS = (
    "-Xms128m",
    "-Xmx512m",
    "-XX:+UseSerialGC",
    "-XX:-UsePerfData",
    "-Djava.awt.headless=true",
)


class KafkaSetupError(RuntimeError):
    """Java or Maven is missing or too old, or the jars could not be fetched."""


class BrokerError(RuntimeError):
    """The local broker failed to format, start, answer or stop."""


# --- jars -----------------------------------------------------------------------------------


def default_cache_dir(version: str = KAFKA_VERSION) -> Path:
    """Where the jars of ``version`` live: ``$FLEETAL_KAFKA_CACHE/<version>/libs``.

    Without ``FLEETAL_KAFKA_CACHE`` the root is ``~/.cache/fleetal/kafka``: outside the
    repository, so every clone on a machine (CI included) shares one download.
    """
    root = os.environ.get(CACHE_ENV)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "fleetal" / "kafka"
    return base / version / "libs"


def _pom_digest() -> str:
    return hashlib.sha256(_POM.encode("utf-8")).hexdigest()


def _is_complete(libs: Path) -> bool:
    marker = libs / MARKER_NAME
    try:
        return marker.read_text(encoding="utf-8").split()[0] == _pom_digest()
    except (OSError, IndexError):
        return False


def java_major_version(java: str = "java") -> int:
    """The major version of ``java`` (``17`` for ``17.0.15``, ``8`` for ``1.8.0_402``)."""
    return _java(java)[1]


def _java(java: str) -> tuple[str, int, str]:
    """Path, major version and full ``-version`` text of ``java``."""
    exe = shutil.which(java)
    if exe is None:
        raise KafkaSetupError(
            f"`{java}` is not on PATH; the local Kafka broker needs Java 17+: {INSTALL_HINT}"
        )
    try:
        out = subprocess.run(
            [exe, "-version"], capture_output=True, text=True, timeout=60, check=True
        )
    except (OSError, subprocess.SubprocessError) as exc:
        raise KafkaSetupError(f"could not run `{exe} -version`: {exc}") from exc
    text = out.stderr + out.stdout
    match = re.search(r'version "(\d+)(?:\.(\d+))?', text)
    if match is None:
        raise KafkaSetupError(f"cannot read the Java version from `{exe} -version`: {text!r}")
    major = int(match.group(1))
    if major == 1 and match.group(2) is not None:  # "1.8.0_402" style
        major = int(match.group(2))
    return exe, major, text


def check_java(java: str = "java") -> str:
    """Return the path of ``java``; raise :class:`KafkaSetupError` if missing or older than 17."""
    exe, major, _ = _java(java)
    if major < MIN_JAVA_MAJOR:
        raise KafkaSetupError(
            f"Kafka {KAFKA_VERSION} needs Java {MIN_JAVA_MAJOR} or newer, `{java}` is Java "
            f"{major}: {INSTALL_HINT}"
        )
    return exe


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock: two processes fetching at once download only once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def ensure_jars(cache_dir: Path | None = None, *, timeout_s: float = MVN_TIMEOUT_S) -> Path:
    """Make sure the broker's jars are in ``cache_dir`` and return that directory.

    A complete cache (its marker names the current dependency list) is returned as it is,
    without starting ``mvn``. Otherwise ``mvn dependency:copy-dependencies`` fills a fresh
    sibling directory, the marker is written into it, and it is renamed into place: an
    interrupted download never looks complete.
    """
    libs = (cache_dir or default_cache_dir()).expanduser().resolve()
    if _is_complete(libs):
        log.debug("kafka jars already cached in %s", libs)
        return libs
    check_java()
    mvn = shutil.which("mvn")
    if mvn is None:
        raise KafkaSetupError(f"`mvn` is not on PATH; it fetches the Kafka jars: {INSTALL_HINT}")
    with _locked(libs.parent / f".{libs.name}.lock"):
        if _is_complete(libs):  # another process finished while we waited for the lock
            return libs
        started = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f".{libs.name}-", dir=libs.parent) as tmp:
            work = Path(tmp)
            staged = work / "libs"
            (work / "pom.xml").write_text(_POM, encoding="utf-8")
            cmd = [
                mvn,
                "-q",
                "-B",
                "-f",
                str(work / "pom.xml"),
                "dependency:copy-dependencies",
                f"-DoutputDirectory={staged}",
                "-DincludeScope=runtime",
            ]
            log.info("fetching Kafka %s jars with mvn into %s", KAFKA_VERSION, libs)
            try:
                result = subprocess.run(
                    cmd, capture_output=True, text=True, timeout=timeout_s, check=False
                )
            except subprocess.TimeoutExpired as exc:
                raise KafkaSetupError(f"mvn did not finish within {timeout_s:.0f} s") from exc
            if result.returncode != 0:
                tail = (result.stdout + result.stderr)[-4000:]
                raise KafkaSetupError(f"mvn failed (exit {result.returncode}):\n{tail}")
            if not any(staged.glob("kafka_2.13-*.jar")):
                raise KafkaSetupError(f"mvn succeeded but left no kafka_2.13 jar in {staged}")
            (staged / MARKER_NAME).write_text(
                f"{_pom_digest()} kafka={KAFKA_VERSION} fetched={time.time():.0f}\n",
                encoding="utf-8",
            )
            if libs.exists():  # stale or partial from an older dependency list
                stale = work / "stale"
                libs.rename(stale)
            staged.rename(libs)
        log.info(
            "fetched %d jars in %.1f s", len(list(libs.glob("*.jar"))), time.monotonic() - started
        )
    return libs


# --- broker ---------------------------------------------------------------------------------

# Brokers started by this process and not yet stopped. At interpreter exit (an uncaught
# exception, a test session aborted with Ctrl-C) they are stopped, so no JVM outlives us.
_LIVE: set[subprocess.Popen[bytes]] = set()


@atexit.register
def _stop_leftovers() -> None:
    for proc in list(_LIVE):
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        _LIVE.discard(proc)


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (held open together while chosen)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _cds_archive_path(libs: Path, java_exe: str) -> Path:
    """Where the class data sharing archive for these jars and this JVM build lives.

    Next to the jar directory; named after the dependency list and the JVM's ``-version``
    text, since an archive is only valid for the exact classpath and JVM that recorded it.
    Temporary archives of runs that never exited cleanly are removed after an hour.
    """
    identity = f"{_pom_digest()}\n{os.path.realpath(java_exe)}\n{_java(java_exe)[2]}"
    digest = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:16]
    archive = libs.parent / f"kafka-{KAFKA_VERSION}-cds-{digest}.jsa"
    for stale in libs.parent.glob("kafka-*-cds-*.jsa.*.tmp"):
        with contextlib.suppress(OSError):
            if time.time() - stale.stat().st_mtime > 3600:
                stale.unlink()
    return archive


def _random_cluster_id() -> str:
    """What ``StorageTool random-uuid`` prints (22 base64url characters), without a JVM start.

    Kafka never hands out ids beginning with "-" (they read as command-line options).
    """
    while True:
        text = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")
        if not text.startswith("-"):
            return text


def _server_properties(port: int, controller_port: int, data_dir: Path) -> str:
    lines = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.bootstrap.servers": f"127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
        "log.dirs": str(data_dir),
        # One node: every internal topic has a single replica.
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # Small thread pools: this broker shares a laptop or a CI runner with its tests.
        "num.network.threads": "2",
        "num.io.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
        "log.cleaner.threads": "1",
        # message.max.bytes is deliberately left at Kafka's default (about 1 MB).
    }
    return "".join(f"{key}={value}\n" for key, value in lines.items())


class LocalKafka:
    """One single-node KRaft broker on loopback, run as a child process::

        with LocalKafka() as broker:
            print(broker.bootstrap)  # 127.0.0.1:40123

    ``start`` chooses ports and formats a private temporary directory the first time;
    ``restart`` keeps both, so the data written before survives. ``stop`` removes the
    directory; ``kill`` does not (it models a crash), so a ``restart`` may follow.
    """

    def __init__(
        self,
        libs: Path | None = None,
        *,
        java: str = "java",
        port: int = 0,
        jvm_opts: Sequence[str] = _JVM_OPTS,
        class_data_sharing: bool = True,
    ) -> None:
        self.libs = libs
        self.class_data_sharing = class_data_sharing
        self.java = java
        self.port = port
        self.controller_port = 0
        self.jvm_opts = tuple(jvm_opts)
        self.workdir: Path | None = None
        self.start_time_s: float | None = None
        """Seconds from launching the JVM until the broker answered metadata (last start)."""
        self.format_time_s: float | None = None
        """Seconds ``kafka.tools.StorageTool format`` took (first start only)."""
        self._proc: subprocess.Popen[bytes] | None = None
        self._java_exe: str | None = None
        self._launched_at = 0.0
        self._cds_archive: Path | None = None
        self._cds_dump: Path | None = None

    # -- properties --------------------------------------------------------------------------

    @property
    def bootstrap(self) -> str:
        """``"127.0.0.1:PORT"``, for ``bootstrap_servers``."""
        if not self.port:
            raise BrokerError("the broker has not been started")
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def cds_archive(self) -> Path | None:
        """The class data sharing archive this broker maps or will record (None: disabled)."""
        return self._cds_archive

    @property
    def log_dir(self) -> Path:
        return self._require_workdir() / "logs"

    def _require_workdir(self) -> Path:
        if self.workdir is None:
            raise BrokerError("the broker has not been started")
        return self.workdir

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self, timeout_s: float = 60.0) -> Self:
        """Choose ports, format storage and launch the broker; return once it answers."""
        if self.running:
            raise BrokerError(f"the broker is already running (pid {self.pid})")
        if self.workdir is None:
            self._prepare()
        try:
            self._launch()
            self._wait_ready(timeout_s)
        except BaseException:
            self.stop()  # the error carries the log tail; leave no JVM or directory behind
            raise
        return self

    def restart(self, timeout_s: float = 60.0) -> Self:
        """Stop the broker if it runs (cleanly), then start it on the same ports and data."""
        self._require_workdir()
        if self.running:
            self._terminate()
        self._launch()
        self._wait_ready(timeout_s)
        return self

    def stop(self, timeout_s: float = 20.0) -> None:
        """SIGTERM, wait up to ``timeout_s``, then SIGKILL; remove the temporary directory."""
        try:
            if self._proc is not None:
                self._terminate(timeout_s)
        finally:
            if self.workdir is not None:
                shutil.rmtree(self.workdir, ignore_errors=True)
                self.workdir = None

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would; its data stays for :meth:`restart`."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        self._signal(proc, signal.SIGKILL)
        proc.wait(timeout=30)
        _LIVE.discard(proc)
        self._settle_cds_dump(clean_exit=False)
        log.info("killed kafka broker pid %s", proc.pid)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.stop()

    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        *,
        configs: dict[str, str] | None = None,
        timeout_s: float = 30.0,
    ) -> None:
        """Create ``name`` and wait until every partition has a leader."""
        from kafka import KafkaAdminClient

        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, client_id="fleetal-admin")
        try:
            spec = {"num_partitions": partitions, "replication_factor": 1, "configs": configs or {}}
            admin.create_topics({name: spec}, timeout_ms=int(timeout_s * 1000))
            admin.wait_for_topics([name], timeout_ms=int(timeout_s * 1000))
        finally:
            admin.close()
        log.debug("created topic %s with %d partitions", name, partitions)

    # -- internals ---------------------------------------------------------------------------

    def _prepare(self) -> None:
        libs = self.libs or ensure_jars()
        self.libs = libs
        self._java_exe = check_java(self.java)
        if self.class_data_sharing:
            self._cds_archive = _cds_archive_path(libs, self._java_exe)
        workdir = owned_tempdir("fleetal-kafka-")
        try:
            (workdir / "logs").mkdir()
            ports = _free_ports(2)
            if self.port == 0:
                self.port = ports[0]
            self.controller_port = ports[1] if ports[1] != self.port else ports[0]
            (workdir / "server.properties").write_text(
                _server_properties(self.port, self.controller_port, workdir / "data"),
                encoding="utf-8",
            )
            (workdir / "log4j2.xml").write_text(_LOG4J2_XML, encoding="utf-8")
            started = time.monotonic()
            cluster_id = _random_cluster_id()
            self._storage_tool(
                workdir,
                [
                    "format",
                    "-t",
                    cluster_id,
                    "-c",
                    str(workdir / "server.properties"),
                    "--standalone",
                ],
            )
            self.format_time_s = time.monotonic() - started
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        self.workdir = workdir
        log.info("formatted kafka storage in %s (%.1f s)", workdir, self.format_time_s)

    def _java_cmd(
        self, workdir: Path, main: str, args: Sequence[str], extra_opts: Sequence[str] = ()
    ) -> list[str]:
        if self._java_exe is None or self.libs is None:
            raise BrokerError("java and the kafka jars are resolved by start()")
        return [
            self._java_exe,
            *self.jvm_opts,
            *extra_opts,
            f"-Dlog4j2.configurationFile={workdir / 'log4j2.xml'}",
            f"-Dkafka.logs.dir={workdir / 'logs'}",
            "-cp",
            f"{self.libs}/*",
            main,
            *args,
        ]

    def _storage_tool(self, workdir: Path, args: Sequence[str]) -> str:
        # A short-lived tool: the quick C1 compiler alone starts it sooner.
        cmd = self._java_cmd(workdir, "kafka.tools.StorageTool", args, ["-XX:TieredStopAtLevel=1"])
        try:
            result = subprocess.run(
                cmd, capture_output=True, text=True, timeout=FORMAT_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as exc:
            raise BrokerError(
                f"StorageTool {args[0]} did not finish in {FORMAT_TIMEOUT_S} s"
            ) from exc
        if result.returncode != 0:
            raise BrokerError(
                f"StorageTool {args[0]} failed (exit {result.returncode}):\n"
                f"{(result.stdout + result.stderr)[-4000:]}"
            )
        return result.stdout

    def _launch(self) -> None:
        workdir = self._require_workdir()
        if self._java_exe is None:
            self._java_exe = check_java(self.java)
        cmd = self._java_cmd(
            workdir, "kafka.Kafka", [str(workdir / "server.properties")], self._cds_opts()
        )
        out = (workdir / "logs" / "broker.out").open("ab")
        try:
            # A process group of its own: Ctrl-C in a terminal running pytest reaches pytest,
            # whose fixture teardown then stops the broker in order.
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=workdir,
                start_new_session=True,
                preexec_fn=die_with_parent,  # dies with us, even on SIGKILL
            )
        finally:
            out.close()
        _LIVE.add(self._proc)
        self._launched_at = time.monotonic()
        log.info("launched kafka broker pid %s on %s", self._proc.pid, self.bootstrap)

    def _cds_opts(self) -> list[str]:
        """Class data sharing: the broker's classes from an archive start it ~40 % sooner.

        Without an archive yet, this run records one at exit (into a private temporary name,
        promoted by :meth:`_terminate` only after a clean exit); later runs map it. A stale
        archive (other jars or JVM build) is refused by the JVM, which then starts as usual.
        """
        archive = self._cds_archive
        if archive is None:
            return []
        if archive.is_file():
            return [f"-XX:SharedArchiveFile={archive}"]
        if self._cds_dump is None:
            self._cds_dump = archive.with_name(
                f"{archive.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp"
            )
        return [f"-XX:ArchiveClassesAtExit={self._cds_dump}"]

    def _settle_cds_dump(self, clean_exit: bool) -> None:
        dump, archive, self._cds_dump = self._cds_dump, self._cds_archive, None
        if dump is None or archive is None:
            return
        try:
            if clean_exit and dump.is_file() and dump.stat().st_size > 0:
                os.replace(dump, archive)
                log.info("recorded a class data sharing archive %s", archive)
            else:
                dump.unlink(missing_ok=True)
        except OSError as exc:
            log.warning("could not keep class data sharing archive %s: %s", dump, exc)

    def _wait_ready(self, timeout_s: float) -> None:
        """Poll until the broker lists topics over the Kafka protocol."""
        from kafka import KafkaAdminClient  # imported late: `fetch` needs no client

        proc = self._proc
        assert proc is not None
        deadline = self._launched_at + timeout_s
        last_error = "no attempt yet"
        while True:
            if proc.poll() is not None:
                raise BrokerError(
                    f"kafka broker exited with code {proc.returncode} while starting\n"
                    f"{self.log_tail()}"
                )
            if time.monotonic() >= deadline:
                self._terminate()
                raise BrokerError(
                    f"kafka broker did not answer on {self.bootstrap} within {timeout_s:.0f} s "
                    f"(last error: {last_error})\n{self.log_tail()}"
                )
            if self._port_open():
                try:
                    admin = KafkaAdminClient(
                        bootstrap_servers=self.bootstrap,
                        client_id="fleetal-readiness",
                        request_timeout_ms=5000,
                        bootstrap_timeout_ms=5000,
                    )
                    try:
                        brokers = admin.describe_cluster().get("brokers", [])
                        admin.list_topics()
                    finally:
                        admin.close()
                    if brokers:
                        self.start_time_s = time.monotonic() - self._launched_at
                        log.info(
                            "kafka broker ready on %s after %.1f s",
                            self.bootstrap,
                            self.start_time_s,
                        )
                        return
                    last_error = "metadata lists no broker yet"
                except Exception as exc:  # any failure means "not ready yet"
                    last_error = f"{type(exc).__name__}: {exc}"
            time.sleep(0.25)

    def _port_open(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1.0):
                return True
        except OSError:
            return False

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)  # the JVM leads its own process group

    def _terminate(self, timeout_s: float = 20.0) -> None:
        proc = self._proc
        if proc is None:
            return
        if proc.poll() is None:
            self._signal(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                log.warning(
                    "kafka broker pid %s ignored SIGTERM for %.0f s; killing", proc.pid, timeout_s
                )
                self._signal(proc, signal.SIGKILL)
                proc.wait(timeout=30)
        _LIVE.discard(proc)
        # 143: the JVM's exit status after handling SIGTERM (128 + 15), i.e. a clean shutdown.
        self._settle_cds_dump(clean_exit=proc.returncode in (0, 143))
        log.info("kafka broker pid %s exited with %s", proc.pid, proc.returncode)

    def log_tail(self, max_lines: int = 40) -> str:
        """The last lines of the broker's own log and of the JVM's output."""
        if self.workdir is None:
            return "(no broker log)"
        parts = []
        for name in ("server.log", "broker.out"):
            path = self.workdir / "logs" / name
            try:
                lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
            except OSError:
                continue
            parts.append(f"--- {path} (last {max_lines} lines) ---")
            parts.extend(lines[-max_lines:])
        return "\n".join(parts) if parts else "(no broker log)"


# --- command line ---------------------------------------------------------------------------


def _cmd_fetch(args: argparse.Namespace) -> int:
    started = time.monotonic()
    libs = ensure_jars(args.cache_dir)
    jars = list(libs.glob("*.jar"))
    size_mb = sum(jar.stat().st_size for jar in jars) / 1e6
    print(
        f"kafka {KAFKA_VERSION}: {len(jars)} jars, {size_mb:.0f} MB in {libs} "
        f"({time.monotonic() - started:.1f} s)"
    )
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    stop = threading.Event()

    def _on_signal(signum: int, frame: types.FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    broker = LocalKafka(ensure_jars(args.cache_dir), port=args.port)
    try:
        broker.start(timeout_s=args.timeout)
        print(f"kafka {KAFKA_VERSION} ready in {broker.start_time_s:.1f} s")
        print(f"bootstrap: {broker.bootstrap}")
        print(f"logs: {broker.log_dir}   (Ctrl-C or SIGTERM stops it)", flush=True)
        while not stop.wait(1.0):
            if not broker.running:
                print(f"kafka broker exited unexpectedly\n{broker.log_tail()}", file=sys.stderr)
                return 1
    finally:
        broker.stop()
    print("kafka broker stopped", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.kafka.broker",
        description=f"A local single-node Apache Kafka {KAFKA_VERSION} broker (KRaft).",
        epilog=(
            f"environment: {CACHE_ENV} replaces the jar cache root ~/.cache/fleetal/kafka "
            "(jars go into <root>/<version>/libs). Needs Java 17+ and Maven: " + INSTALL_HINT
        ),
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--cache-dir", type=Path, default=None, help="jar directory (default: see epilog)"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="fetch the broker's jars with mvn unless already cached")
    run = sub.add_parser("run", help="run a broker until Ctrl-C / SIGTERM")
    run.add_argument("--port", type=int, default=0, help="client port (default: a free one)")
    run.add_argument("--timeout", type=float, default=60.0, help="start timeout, seconds")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:  # kafka-python narrates every connection at INFO
        logging.getLogger("kafka").setLevel(logging.WARNING)
    try:
        if args.command == "fetch":
            return _cmd_fetch(args)
        return _cmd_run(args)
    except (KafkaSetupError, BrokerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
