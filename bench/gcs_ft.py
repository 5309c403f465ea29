"""A private two-node Ray cluster whose GCS is fault tolerant on a private Redis, and the GCS kill.

What cluster/*-cluster.yaml and cluster/kuberay/rayservice.yaml set up, on one machine:

- ``redis_server``: a ``redis-server`` on a free port with a password, its own folder, no
  snapshots (``--save ''``), ended by its pid;
- ``ft_cluster``: a head (``num-cpus 0``: GCS, Serve controller, a proxy) started with
  ``RAY_REDIS_ADDRESS`` + ``--redis-password`` as Ray's "GCS fault tolerance" page says, and one
  worker node (the replicas, and a Serve proxy on its own port: ``RAY_SERVE_WORKER_PROXY_HTTP_PORT``,
  since both proxies share this machine) with ``RAY_gcs_rpc_server_reconnect_timeout_s`` = 600,
  the value KubeRay gives worker pods so that they outlive a head restart. Every port is free,
  each node has its own temp folder and process group (never a machine-wide ``ray stop``).

Both nodes run ``ray start --block``: when the GCS process dies, the head's ``ray start`` kills the
rest of the head and exits 1, as a head pod fails as a whole. ``FtCluster.supervisor`` is then
what kubelet (KubeRay) or systemd on a VM does: the same command again, after a delay. The GCS
reloads the cluster's tables from Redis, the worker's raylet reconnects, the detached Serve
controller is restarted on the new head and finds its replicas.

tests/cluster/test_gcs_ft.py and bench/chaos.py (``fault=gcs-kill``) use these pieces.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.ray_head import free_port, ray_env, start_ray, stop_node, token_auth

__all__ = ["FtCluster", "RedisServer", "ft_cluster", "redis_server"]

# Ports a node binds, chosen free because their defaults are fixed numbers another Ray on the machine
# may hold. Only the GCS port stays the same across a head restart (workers reconnect to it); the
# others are new at every start: the restarted head is a new node, and a raylet on the dead head's
# node-manager port was shut down when the GCS declared that node dead (seen here, and a new head
# pod has a new address anyway).
NODE_PORTS = ("node-manager-port", "object-manager-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port",
              "runtime-env-agent-port", "metrics-export-port")
HEAD_ONLY_PORTS = ("ray-client-server-port", "dashboard-port")  # a minimal dashboard runs even without --include-dashboard
# KubeRay injects 600 s into worker pods of a GCS-FT cluster (the head keeps Ray's default, 60 s),
# so that workers outlive the head's restart; Ray's default would end them after 60 s without a GCS.
WORKER_RECONNECT_TIMEOUT_S = 600


@dataclass(frozen=True)
class RedisServer:
    host: str
    port: int
    password: str
    pid: int

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"


def _redis_answers(port: int, password: str) -> bool:
    """AUTH + PING in Redis's wire protocol (no client library needed)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as s:
            s.sendall(f"*2\r\n$4\r\nAUTH\r\n${len(password)}\r\n{password}\r\n*1\r\n$4\r\nPING\r\n".encode())
            reply = b""
            while reply.count(b"\r\n") < 2:
                chunk = s.recv(256)
                if not chunk:
                    break
                reply += chunk
            return reply == b"+OK\r\n+PONG\r\n"
    except OSError:
        return False


@contextlib.contextmanager
def redis_server(timeout_s: float = 20.0) -> Iterator[RedisServer]:
    """A password-protected ``redis-server`` on a free localhost port, killed (by pid) on exit."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise FileNotFoundError("redis-server is not on PATH: install it (Debian/Ubuntu: apt-get install redis-server)")
    tmp = tempfile.mkdtemp(prefix="redis-")
    port, password = free_port(), secrets.token_hex(16)
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--requirepass", password, "--save", "",
         "--appendonly", "no", "--dir", tmp, "--logfile", str(Path(tmp) / "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + timeout_s
        while not _redis_answers(port, password):
            if proc.poll() is not None or time.time() > deadline:
                log = Path(tmp) / "redis.log"
                raise RuntimeError(f"redis-server did not answer on port {port}: "
                                   f"{log.read_text()[-2000:] if log.exists() else 'no log'}")
            time.sleep(0.1)
        yield RedisServer("127.0.0.1", port, password, proc.pid)
    finally:
        proc.kill()
        proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


@dataclass
class FtCluster:
    """The running nodes of :func:`ft_cluster`; ``head_http`` / ``worker_http``: each node's Serve proxy port."""

    redis: RedisServer
    head_tmp: str
    worker_tmp: str
    gcs_port: int
    head_http: int
    worker_http: int
    head_proc: subprocess.Popen | None = None
    worker_proc: subprocess.Popen | None = None
    head_starts: int = field(default=0)

    @property
    def gcs_address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    def start_head(self) -> None:
        """``RAY_REDIS_ADDRESS=... ray start --head --redis-password ...``: the same command at every (re)start."""
        args = ["--head", "--num-cpus=0", "--include-dashboard=false", "--node-ip-address=127.0.0.1",
                "--redis-username=default", f"--redis-password={self.redis.password}",
                f"--port={self.gcs_port}", *[f"--{k}={free_port()}" for k in NODE_PORTS + HEAD_ONLY_PORTS]]
        if self.head_starts:
            # `ray start --head` refuses a port that the folder's last cluster used while any local
            # process still names that GCS address, and here the worker node's processes do (on a
            # real cluster they are on other hosts, and a new head pod starts with an empty Ray temp folder).
            (Path(self.head_tmp) / "ray_current_cluster").unlink(missing_ok=True)
        self.head_starts += 1
        self.head_proc = start_ray(args, ray_env({"RAY_REDIS_ADDRESS": self.redis.address}), self.head_tmp,
                                   Path(self.head_tmp) / "head.log")

    def start_worker(self) -> None:
        ports = {k: free_port() for k in NODE_PORTS}
        env = ray_env({"RAY_gcs_rpc_server_reconnect_timeout_s": str(WORKER_RECONNECT_TIMEOUT_S),
                       "RAY_SERVE_WORKER_PROXY_HTTP_PORT": str(self.worker_http)})
        self.worker_proc = start_ray([f"--address={self.gcs_address}", "--num-cpus=2", "--node-ip-address=127.0.0.1",
                                      *[f"--{k}={v}" for k, v in ports.items()]], env, self.worker_tmp,
                                     Path(self.worker_tmp) / "worker.log")

    def gcs_pid(self) -> int:
        """The pid of the head's ``gcs_server`` (the one process that names this head's temp folder)."""
        import psutil

        for p in psutil.process_iter(["name", "cmdline"]):
            cmd = " ".join(p.info["cmdline"] or [])
            if "gcs_server" in (p.info["name"] or "") and self.head_tmp in cmd:
                return p.pid
        raise RuntimeError(f"no gcs_server of the head in {self.head_tmp} is running")

    def kill_gcs(self) -> int:
        """SIGKILL the GCS; returns its pid. The head's ``ray start --block`` then ends the rest of the head."""
        pid = self.gcs_pid()
        os.kill(pid, signal.SIGKILL)
        return pid

    @contextlib.contextmanager
    def supervisor(self, restart_delay_s: float) -> Iterator[list[tuple[str, float, int | None]]]:
        """Restart the head ``restart_delay_s`` after its ``ray start --block`` exits, again and again,
        as kubelet does for a head pod or systemd (``Restart=always``) on a VM; yields the events
        (``("exit", time, code)`` / ``("start", time, None)``). A restarted head can also fail: on a
        loaded machine its raylet may miss Ray's fixed 30 s start-up wait, and then it is restarted again.
        """
        events: list[tuple[str, float, int | None]] = []
        stop = threading.Event()

        def loop() -> None:
            while not stop.is_set():
                rc = self.head_proc.poll() if self.head_proc is not None else None
                if rc is not None:
                    events.append(("exit", time.time(), rc))
                    stop_node(self.head_proc, self.head_tmp)  # anything of the old head still alive
                    if stop.wait(restart_delay_s):
                        return
                    self.start_head()
                    events.append(("start", time.time(), None))
                stop.wait(0.2)

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        try:
            yield events
        finally:
            stop.set()
            thread.join()

    def wait_gcs_port(self, timeout_s: float = 60.0, supervised: bool = False) -> None:
        """Until the GCS accepts connections; unless ``supervised``, a head that exited meanwhile is an error."""
        deadline = time.time() + timeout_s
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.gcs_port), 1.0):
                return
            if not supervised and self.head_proc is not None and self.head_proc.poll() is not None:
                log = (Path(self.head_tmp) / "head.log").read_text()[-3000:]
                raise RuntimeError(f"the head exited {self.head_proc.returncode}:\n{log}")
            if time.time() > deadline:
                raise TimeoutError(f"the GCS at {self.gcs_address} did not open in {timeout_s:g} s")
            time.sleep(0.2)

    def logs(self) -> str:
        """The tails of both nodes' ``ray start`` output, for failure messages."""
        out = []
        for name, tmp in (("head", self.head_tmp), ("worker", self.worker_tmp)):
            for log in (Path(tmp) / f"{name}.log", Path(tmp) / "session_latest" / "logs" / "ray_process_exit.log"):
                out.append(f"--- {name}: {log.name} ---\n{log.read_text()[-2000:] if log.exists() else '(none)'}")
        return "\n".join(out)


def wait_for_nodes(n: int, timeout_s: float = 120.0) -> None:
    """Wait until the connected Ray reports ``n`` alive nodes."""
    import ray

    deadline = time.time() + timeout_s
    while sum(1 for node in ray.nodes() if node["Alive"]) < n:
        if time.time() > deadline:
            raise TimeoutError(f"fewer than {n} alive Ray nodes after {timeout_s:g} s: {ray.nodes()}")
        time.sleep(0.5)


@contextlib.contextmanager
def ft_cluster(redis: RedisServer, timeout_s: float = 120.0) -> Iterator[FtCluster]:
    """A GCS-FT head on ``redis`` and one 2-CPU worker node; this process is NOT connected to it (``ray.init`` it)."""
    cluster = FtCluster(redis, tempfile.mkdtemp(prefix="rf"), tempfile.mkdtemp(prefix="rw"),
                        free_port(), free_port(), free_port())
    with token_auth():
        try:
            cluster.start_head()
            cluster.wait_gcs_port(timeout_s)
            cluster.start_worker()
            yield cluster
        finally:
            for proc, tmp in ((cluster.worker_proc, cluster.worker_tmp), (cluster.head_proc, cluster.head_tmp)):
                if proc is not None:
                    stop_node(proc, tmp)
            shutil.rmtree(cluster.head_tmp, ignore_errors=True)
            shutil.rmtree(cluster.worker_tmp, ignore_errors=True)
