"""A throwaway local PostgreSQL server for tests, the demo and benchmarks.

:class:`LocalPostgres` finds the server binaries (``$FLEETAL_PG_BIN``, ``pg_config --bindir``,
the newest ``/usr/lib/postgresql/<major>/bin``, or ``PATH``), ``initdb``s a cluster in a
private temporary directory (on ``/dev/shm`` when there is room: see
:func:`_default_base_dir`), runs ``postgres`` as a child process on a free loopback port
(its unix socket in the same temporary directory, so it never collides with a system
server), waits until it accepts connections, creates a database, and on :meth:`stop` shuts it
down (fast shutdown, then kill after a deadline) and removes the directory.

The server is a direct child rather than a ``pg_ctl start`` daemon: we hold its pid, see at
once when it dies during start-up (its log is then quoted in the error), and an interrupted
test session cannot leave a detached server behind while this process lives (an ``atexit``
hook stops it).

Root: ``initdb`` and ``postgres`` refuse to run as root. When this process is root, both run
as the ``postgres`` OS user (the Debian package creates it; override with ``os_user``)
through :mod:`subprocess`'s ``user=`` / ``group=`` / ``extra_groups=[]`` (a setuid in the
child, no ``su`` or ``runuser`` needed), and the temporary directory is chowned to that user.

Durability is off (``fsync=off``, ``synchronous_commit=off``, ``full_page_writes=off``): the
data is thrown away anyway. ``durable=True`` keeps PostgreSQL's defaults and the disk (for
benchmarks that compare against a durable SQLite). Authentication is ``trust`` on the
loopback interface only.

Command line::

    python -m deploy.postgres.pg_local run    # start, print the DSN, run until Ctrl-C / SIGTERM
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import logging
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import types
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import psycopg

from deploy.lifetime import die_with_parent, owned_tempdir

__all__ = ["LocalPostgres", "PostgresError", "PostgresNotInstalledError", "find_bindir"]

log = logging.getLogger(__name__)

BIN_ENV = "FLEETAL_PG_BIN"
DEBIAN_ROOT = Path("/usr/lib/postgresql")  # the Debian package's <major>/bin directories
INSTALL_HINT = "apt-get install postgresql  (or run `make setup`)"
DEFAULT_DBNAME = "fleetal"
SUPERUSER = "postgres"
_REQUIRED = ("initdb", "postgres")
_MIN_SHM_FREE = 1 << 30  # bytes free on /dev/shm before a cluster goes there


class PostgresError(RuntimeError):
    """The local server could not be set up, started or stopped."""


class PostgresNotInstalledError(PostgresError):
    """No PostgreSQL server binaries on this machine."""


def _has_binaries(bindir: Path) -> bool:
    return all(os.access(bindir / name, os.X_OK) for name in _REQUIRED)


def find_bindir() -> Path:
    """The directory holding ``initdb`` and ``postgres``.

    Raises :class:`PostgresNotInstalledError`, naming the package to install, when there is none.
    """
    candidates: list[Path] = []
    env = os.environ.get(BIN_ENV)
    if env:
        if not _has_binaries(Path(env)):
            raise PostgresNotInstalledError(
                f"${BIN_ENV}={env} holds no initdb and postgres; unset it, or install the "
                f"server: {INSTALL_HINT}"
            )
        return Path(env)
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, check=True, timeout=10
            )
            candidates.append(Path(out.stdout.strip()))

    def major(p: Path) -> int:
        m = re.fullmatch(r"\d+", p.parent.name)
        return int(m.group()) if m else -1

    candidates += sorted(DEBIAN_ROOT.glob("*/bin"), key=major, reverse=True)
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for c in candidates:
        if _has_binaries(c):
            return c
    raise PostgresNotInstalledError(
        f"no PostgreSQL server binaries (initdb, postgres) found in {BIN_ENV}, pg_config, "
        f"/usr/lib/postgresql/*/bin or PATH; install them: {INSTALL_HINT}"
    )


def _default_base_dir() -> str | None:
    """``/dev/shm`` when it is a writable tmpfs with room, else the system temporary directory.

    The cluster is thrown away, so memory is the right place for it: initdb takes ~1.5 s on
    tmpfs against ~4-6 s on this project's CI disk, and tests run faster too.
    """
    shm = "/dev/shm"
    with contextlib.suppress(OSError):
        st = os.statvfs(shm)
        if os.access(shm, os.W_OK) and st.f_bavail * st.f_frsize >= _MIN_SHM_FREE:
            return shm
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, slots=True)
class _RunAs:
    user: str
    uid: int
    gid: int


class LocalPostgres:
    """A private PostgreSQL server; use as a context manager or call :meth:`start` / :meth:`stop`.

    ``dbname`` is created at start; :meth:`create_database` makes more (one per test).
    """

    def __init__(
        self,
        *,
        dbname: str = DEFAULT_DBNAME,
        port: int | None = None,
        bindir: str | os.PathLike[str] | None = None,
        os_user: str = "postgres",
        base_dir: str | os.PathLike[str] | None = None,
        durable: bool = False,
    ) -> None:
        _check_identifier(dbname)
        self.dbname = dbname
        self._want_port = port
        self._bindir = Path(bindir) if bindir is not None else None
        self._os_user = os_user
        self._base_dir = base_dir
        self.durable = durable
        self._tmp: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._lock = threading.Lock()
        self.start_seconds: float | None = None

    def __repr__(self) -> str:
        state = f"port {self._port}" if self.running else "stopped"
        return f"LocalPostgres({self.dbname!r}, {state})"

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        self.stop()

    # --- public -------------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def port(self) -> int:
        if self._port is None:
            raise PostgresError("the server is not started")
        return self._port

    @property
    def data_dir(self) -> Path:
        if self._tmp is None:
            raise PostgresError("the server is not started")
        return self._tmp / "data"

    @property
    def pid(self) -> int | None:
        """The postmaster's pid while it runs."""
        return self._proc.pid if self._proc is not None else None

    @property
    def dsn(self) -> str:
        """``postgresql://postgres@127.0.0.1:<port>/<dbname>`` (trust auth: no password)."""
        return self.dsn_for(self.dbname)

    def dsn_for(self, dbname: str) -> str:
        """The DSN of another database on this server."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def start(self, timeout: float = 60.0) -> None:
        """initdb, start the server, wait until it answers, create ``dbname``."""
        with self._lock:
            if self._proc is not None:
                raise PostgresError("already started")
            began = time.monotonic()
            deadline = began + timeout
            bindir = self._bindir or find_bindir()
            run_as = self._run_as()
            base = self._base_dir
            if base is None and not self.durable:
                base = _default_base_dir()
            self._tmp = owned_tempdir("fleetal-pg-", base)
            atexit.register(self.stop)
            try:
                self._initdb(bindir, run_as, deadline)
                self._launch(bindir, run_as, deadline)
                self._create(self.dbname)
            except BaseException:
                self._stop_locked()
                raise
            self.start_seconds = time.monotonic() - began
            log.info(
                "PostgreSQL started in %.2f s on 127.0.0.1:%d (%s)",
                self.start_seconds,
                self.port,
                self._tmp,
            )

    def stop(self, timeout: float = 30.0) -> None:
        """Shut the server down (fast shutdown, kill after ``timeout``) and remove its files."""
        with self._lock:
            self._stop_locked(timeout)

    def create_database(self, dbname: str) -> str:
        """Create ``dbname`` on this server; return its DSN."""
        self._create(dbname)
        return self.dsn_for(dbname)

    def drop_database(self, dbname: str) -> None:
        """Drop ``dbname``, disconnecting its sessions."""
        _check_identifier(dbname)
        with psycopg.connect(self.dsn_for("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of the server log (for error messages)."""
        if self._tmp is None:
            return ""
        with contextlib.suppress(OSError):
            text = (self._tmp / "postgres.log").read_text(errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        return ""

    # --- internals ----------------------------------------------------------------------------

    def _run_as(self) -> _RunAs | None:
        if os.geteuid() != 0:
            return None
        try:
            pw = pwd.getpwnam(self._os_user)
        except KeyError:
            raise PostgresError(
                f"running as root, and initdb refuses root; no OS user {self._os_user!r} to run "
                f"it as: {INSTALL_HINT} creates 'postgres', or pass os_user=<an unprivileged user>"
            ) from None
        return _RunAs(self._os_user, pw.pw_uid, pw.pw_gid)

    def _child_env(self, run_as: _RunAs | None) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        if run_as is not None:
            env["HOME"] = str(self._tmp)
            env["USER"] = env["LOGNAME"] = run_as.user
        return env

    def _initdb(self, bindir: Path, run_as: _RunAs | None, deadline: float) -> None:
        assert self._tmp is not None
        if run_as is not None:
            os.chown(self._tmp, run_as.uid, run_as.gid)
        cmd = [
            str(bindir / "initdb"),
            "--pgdata",
            str(self._tmp / "data"),
            "--username",
            SUPERUSER,
            "--auth",
            "trust",
            "--encoding",
            "UTF8",
            "--locale",
            "C",
            "--no-sync",
            "--no-instructions",
        ]
        try:
            out = subprocess.run(
                cmd,
                capture_output=True,
                text=True,
                timeout=max(1.0, deadline - time.monotonic()),
                check=False,
                cwd=self._tmp,
                env=self._child_env(run_as),
                user=None if run_as is None else run_as.uid,
                group=None if run_as is None else run_as.gid,
                extra_groups=None if run_as is None else [],
            )
        except subprocess.TimeoutExpired as exc:
            raise PostgresError(f"initdb did not finish in time in {self._tmp}") from exc
        if out.returncode != 0:
            raise PostgresError(
                f"initdb failed (exit {out.returncode}) in {self._tmp}:\n"
                f"{(out.stderr or out.stdout).strip()}"
            )

    def _launch(self, bindir: Path, run_as: _RunAs | None, deadline: float) -> None:
        assert self._tmp is not None
        sock_dir = self._tmp / "sock"
        sock_dir.mkdir()
        if run_as is not None:
            os.chown(sock_dir, run_as.uid, run_as.gid)
        attempts = 1 if self._want_port else 3
        for attempt in range(attempts):
            port = self._want_port or _free_port()
            log_path = self._tmp / "postgres.log"
            settings = {
                "listen_addresses": "127.0.0.1",
                "port": str(port),
                "unix_socket_directories": str(sock_dir),
                "max_connections": "60",
                "shared_buffers": "64MB",
                "logging_collector": "off",
            }
            if not self.durable:
                settings |= {"fsync": "off", "synchronous_commit": "off", "full_page_writes": "off"}
            cmd = [str(bindir / "postgres"), "-D", str(self._tmp / "data")]
            for key, value in settings.items():
                cmd += ["-c", f"{key}={value}"]
            log_file = open(log_path, "ab")  # noqa: SIM115 - handed to the child, closed below
            try:
                self._proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=subprocess.STDOUT,
                    cwd=self._tmp,
                    start_new_session=True,  # Ctrl-C in a terminal does not reach it directly
                    env=self._child_env(run_as),
                    user=None if run_as is None else run_as.uid,
                    group=None if run_as is None else run_as.gid,
                    extra_groups=None if run_as is None else [],
                    preexec_fn=die_with_parent,  # dies with us, even on SIGKILL
                )
            finally:
                log_file.close()
            self._port = port
            if self._wait_ready(deadline):
                return
            tail = self.log_tail()
            self._terminate(5.0)
            if "could not bind" in tail and attempt + 1 < attempts:
                log.info("port %d was taken, retrying on another", port)
                continue
            raise PostgresError(
                f"PostgreSQL did not come up on 127.0.0.1:{port} ({self._tmp}); log:\n{tail}"
            )

    def _wait_ready(self, deadline: float) -> bool:
        assert self._proc is not None
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            try:
                with psycopg.connect(self.dsn_for("postgres"), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return True
            except psycopg.OperationalError:
                time.sleep(0.02)
        return False

    def _create(self, dbname: str) -> None:
        _check_identifier(dbname)
        with psycopg.connect(self.dsn_for("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')

    def _terminate(self, timeout: float) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        # SIGINT is PostgreSQL's "fast" shutdown: sessions are disconnected, no waiting.
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("PostgreSQL (pid %d) ignored fast shutdown; killing it", proc.pid)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def _stop_locked(self, timeout: float = 30.0) -> None:
        self._terminate(timeout)
        tmp, self._tmp = self._tmp, None
        self._port = None
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        atexit.unregister(self.stop)


def _check_identifier(name: str) -> None:
    if not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
        raise ValueError(f"database name must match [a-z_][a-z0-9_]{{0,62}}, got {name!r}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m deploy.postgres.pg_local",
        description="A throwaway local PostgreSQL server (data deleted on exit).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="start a server, print its DSN, run until Ctrl-C / SIGTERM")
    run.add_argument("--port", type=int, default=None, help="port (default: a free one)")
    run.add_argument("--dbname", default=DEFAULT_DBNAME, help="database to create")
    run.add_argument("--timeout", type=float, default=60.0, help="start-up timeout in seconds")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")

    stop = threading.Event()

    def on_signal(signum: int, frame: types.FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = LocalPostgres(dbname=args.dbname, port=args.port)
    try:
        server.start(timeout=args.timeout)
    except PostgresNotInstalledError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except PostgresError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    try:
        print(server.dsn, flush=True)
        log.info("started in %.2f s; Ctrl-C or SIGTERM stops it", server.start_seconds or 0.0)
        while not stop.wait(0.5):
            if not server.running:
                print(f"error: PostgreSQL exited:\n{server.log_tail()}", file=sys.stderr)
                return 1
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
