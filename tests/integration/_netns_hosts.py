"""The machinery of test_multihost_netns.py: hosts made of network namespaces, the filled-in
cluster config, and job submission to that cluster (see that module's docstring for the design)."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import requests
import yaml

from tests.conftest import REPO

BIN = Path(sys.executable).parent
SSHD = "/usr/sbin/sshd"
N_HOSTS = 3
TAG = f"fsr{os.getpid() % 10000}"  # names of our namespaces/links; unique per test process
SUBNET = f"10.251.{100 + os.getpid() % 100}"
NODES_TIMEOUT_S = 300
JOB_TIMEOUT_S = 540
HOME = Path.home()
BOOTSTRAP_FILES = [HOME / "ray_bootstrap_config.yaml", HOME / "ray_bootstrap_key.pem"]
LOCK_FILE = Path(tempfile.gettempdir()) / "fewshot-rec-netns-test.lock"
LOCK_WAIT_S = 900  # a whole run of this module takes ~7 min on 2 busy cores


def _run(*cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=check, **kw)


def _install_missing() -> str | None:
    """Install openssh-server/client and rsync with apt when root and missing (the issue asks the
    harness to install what it needs). Returns why it could not, or None."""
    if os.path.exists(SSHD) and all(shutil.which(t) for t in ("ssh", "ssh-keygen", "rsync")):
        return None
    if shutil.which("apt-get") is None:
        return "openssh-server/rsync missing and no apt-get to install them"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    cmd = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "openssh-server", "openssh-client", "rsync"]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
        if r.returncode != 0:  # a fresh image may have no package lists yet
            subprocess.run(["apt-get", "update", "-q"], capture_output=True, text=True, env=env, timeout=300)
            r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    except subprocess.TimeoutExpired:
        return "apt-get install openssh-server rsync timed out after 300 s"
    if r.returncode != 0:
        return f"apt-get install openssh-server rsync failed: {r.stderr.strip()[-300:]}"
    return None


def _why_skip() -> str | None:
    if os.geteuid() != 0:
        return "needs root (ip netns, veth, sshd)"
    if shutil.which("ip") is None:
        return "`ip` (iproute2) not installed"
    why = _install_missing()
    if why:
        return why
    for tool in ("ip", "ssh", "ssh-keygen", "rsync"):
        if shutil.which(tool) is None:
            return f"`{tool}` not installed"
    if not os.path.exists(SSHD):
        return f"{SSHD} not installed (Debian: apt-get install openssh-server)"
    if any(p.exists() for p in BOOTSTRAP_FILES):
        return f"{BOOTSTRAP_FILES[0]} exists: `ray up` would overwrite another cluster's bootstrap files"
    probe = f"{TAG}-probe"
    r = _run("ip", "netns", "add", probe, check=False)
    if r.returncode != 0:
        return f"`ip netns add` failed: {r.stderr.strip()}"
    _run("ip", "netns", "del", probe, check=False)
    return None


class Hosts:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.names = [f"{TAG}-h{i}" for i in range(N_HOSTS)]
        self.ips = [f"{SUBNET}.{10 + i}" for i in range(N_HOSTS)]
        self.bridge = f"{TAG}br"
        self.key = base / "id"
        self.sshd: list[subprocess.Popen] = []

    def up(self) -> None:
        b = self.base
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key))
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(b / "hostkey"))
        shutil.copy(f"{self.key}.pub", b / "authorized_keys")
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{SUBNET}.1/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
        for i, (ns, ip) in enumerate(zip(self.names, self.ips, strict=True)):
            veth = f"{TAG}v{i}"
            _run("ip", "netns", "add", ns)
            _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _run("ip", "link", "set", veth, "master", self.bridge, "up")
            _run("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", "eth0")
            _run("ip", "-n", ns, "link", "set", "eth0", "up")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            # A default route on the private link: Ray finds its node address by routing towards
            # a public address (no packet is sent); without one it falls back to 127.0.0.1.
            _run("ip", "-n", ns, "route", "add", "default", "dev", "eth0")
            conf = b / f"sshd{i}.conf"
            conf.write_text(
                f"ListenAddress {ip}\nPort 22\nHostKey {b / 'hostkey'}\nAuthorizedKeysFile {b / 'authorized_keys'}\n"
                "PermitRootLogin prohibit-password\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n"
                f"StrictModes no\nUsePAM no\nPidFile {b / f'sshd{i}.pid'}\n"
            )
            self.sshd.append(subprocess.Popen(
                ["ip", "netns", "exec", ns, SSHD, "-D", "-f", str(conf), "-E", str(b / f"sshd{i}.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            ))
        deadline = time.time() + 30
        for ip in self.ips:
            while self.ssh(ip, "true").returncode != 0:
                if time.time() > deadline:
                    raise RuntimeError(f"sshd on {ip} not reachable: {(b / 'sshd0.log').read_text()[-2000:]}")
                time.sleep(0.5)

    def ssh(self, ip: str, cmd: str) -> subprocess.CompletedProcess:
        return _run("ssh", "-i", str(self.key), "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null",
                    "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", f"root@{ip}", cmd, check=False)

    @staticmethod
    def ns_pids(ns: str) -> list[int]:
        return [int(p) for p in _run("ip", "netns", "pids", ns, check=False).stdout.split()]

    def pids(self) -> list[int]:
        return [p for ns in self.names for p in self.ns_pids(ns)]

    def down(self) -> list[int]:
        """Kill every process in our namespaces (by pid), then delete namespaces and links.

        Returns the pids that survived SIGKILL (should be none)."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in self.pids():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.time() + 15
            while self.pids() and time.time() < deadline:
                time.sleep(0.5)
        left = self.pids()
        for p in self.sshd:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=5)
        for ns in self.names:
            _run("ip", "netns", "del", ns, check=False)
        _run("ip", "link", "del", self.bridge, check=False)
        return left


def _ssh_control_dirs() -> set[Path]:
    return set(Path("/tmp").glob("ray_ssh_*/*"))


@contextlib.contextmanager
def _one_run_per_machine():
    """Hold an exclusive lock for the module: `ray up` writes ~/ray_bootstrap_config.yaml, one per
    machine, and the head's autoscaler re-reads it on every update. Two runs at once (two pytest
    sessions) overwrite each other's, and one head then tries to bring up the other's hosts."""
    with open(LOCK_FILE, "w") as f:
        deadline = time.time() + LOCK_WAIT_S
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.time() > deadline:
                    pytest.skip(f"another run of this test held {LOCK_FILE} for {LOCK_WAIT_S} s")
                time.sleep(2)
        yield


def _hosts():
    why = _why_skip()
    if why:
        pytest.skip(why)
    base = Path(tempfile.mkdtemp(prefix="fsr", dir="/tmp"))  # short: Ray's socket paths
    h = Hosts(base)
    control_before = _ssh_control_dirs()
    left: list[int] = []
    try:
        h.up()
        yield h
    finally:
        left = h.down()
        # ssh ControlMaster processes of `ray up` (root namespace) and their socket folders.
        new_control = _ssh_control_dirs() - control_before
        for p in psutil.process_iter(["cmdline"]):
            cmd = " ".join(p.info["cmdline"] or [])
            if str(base) in cmd or any(str(d) in cmd for d in new_control):
                with contextlib.suppress(psutil.NoSuchProcess):
                    p.kill()
        for d in new_control:
            shutil.rmtree(d, ignore_errors=True)
            with contextlib.suppress(OSError):
                d.parent.rmdir()
        for f in BOOTSTRAP_FILES:
            f.unlink(missing_ok=True)
        shutil.rmtree(base, ignore_errors=True)
    assert not left, f"processes {left} survived SIGKILL in the test's namespaces"
    assert not [ns for ns in _run("ip", "netns", "list").stdout.split() if ns.startswith(TAG)]


def cluster_config(h: Hosts, token: Path) -> dict:
    """cluster/local-cluster.yaml with its placeholders filled (see the module docstring)."""
    cfg = yaml.safe_load((REPO / "cluster" / "local-cluster.yaml").read_text())
    cfg["cluster_name"] = f"{TAG}-netns"
    cfg["provider"].update(head_ip=h.ips[0], worker_ips=h.ips[1:])
    cfg["auth"] = {"ssh_user": "root", "ssh_private_key": str(h.key)}
    cfg["file_mounts"] = {}
    cfg["setup_commands"] = []
    node_tmp = f"{h.base}/$(hostname -I | cut -d' ' -f1)"
    extra_env = (f"RAY_AUTH_TOKEN_PATH={token} RAY_TMPDIR={node_tmp} GLOO_SOCKET_IFNAME=eth0 "
                 "RAY_USAGE_STATS_ENABLED=0")

    def adapt(cmd: str) -> str:
        assert "RAY_AUTH_MODE=token" in cmd or "ray start" not in cmd, cmd
        cmd = cmd.replace("$HOME/fewshot-rec-env/bin", str(BIN)).replace("~/fewshot-rec-env/bin", str(BIN))
        cmd = cmd.replace("RAY_AUTH_MODE=token", f"RAY_AUTH_MODE=token {extra_env}")
        return cmd.replace("ray start ", "ray start --temp-dir=$RAY_TMPDIR --num-cpus=1 ")

    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        cfg[key] = [adapt(c) for c in cfg[key] if "ray stop" not in c]
        assert any("ray start" in c for c in cfg[key]), key
    return cfg


def _client_env(h: Hosts, token: Path) -> dict:
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
           "RAY_TMPDIR": str(h.base / "client"), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    return env


class Dashboard:
    """The head's dashboard REST API (jobs, state), with the cluster's token as a bearer token.

    Used for polling: one HTTP call instead of a `ray job status` process (~3 s of CPU each)."""

    def __init__(self, address: str, token: Path) -> None:
        self.address = address
        self.session = requests.Session()
        self.session.trust_env = False  # never through a proxy: the bridge is private
        self.session.headers["Authorization"] = f"Bearer {token.read_text().strip()}"

    def get(self, path: str) -> dict:
        r = self.session.get(f"{self.address}{path}", timeout=30)
        r.raise_for_status()
        return r.json()

    def job_status(self, job_id: str) -> str:
        return self.get(f"/api/jobs/{job_id}")["status"]

    def job_logs(self, job_id: str) -> str:
        return self.get(f"/api/jobs/{job_id}/logs")["logs"]

    def alive_nodes(self) -> dict[str, str]:
        """node id -> node IP of every alive node (state API)."""
        rows = self.get("/api/v0/nodes?limit=100")["data"]["result"]["result"]
        return {n["node_id"]: n["node_ip"] for n in rows if n["state"] == "ALIVE"}

    def wait_job(self, job_id: str, timeout: float = JOB_TIMEOUT_S) -> tuple[str, str]:
        deadline, status = time.time() + timeout, "PENDING"
        while time.time() < deadline:
            status = self.job_status(job_id)
            if status in ("SUCCEEDED", "FAILED", "STOPPED"):
                break
            time.sleep(2)
        return status, self.job_logs(job_id)


def _submit(address: str, env: dict, *entrypoint: str, timeout: float = JOB_TIMEOUT_S,
            wait: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", ".",
         *([] if wait else ["--no-wait"]), "--", *entrypoint],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )


def _submit_no_wait(cluster: dict, *entrypoint: str) -> str:
    r = _submit(cluster["address"], cluster["env"], *entrypoint, timeout=180, wait=False)
    m = re.search(r"raysubmit_\w+", r.stdout + r.stderr)
    assert r.returncode == 0 and m, f"submission failed:\n{(r.stdout + r.stderr)[-3000:]}"
    return m.group(0)


def _run_job(cluster: dict, *entrypoint: str, timeout: float = JOB_TIMEOUT_S) -> str:
    """Submit, wait, assert SUCCEEDED; returns the job's logs."""
    job = _submit_no_wait(cluster, *entrypoint)
    status, logs = cluster["dashboard"].wait_job(job, timeout)
    assert status == "SUCCEEDED", f"job {job} {status} after {timeout} s:\n{logs[-5000:]}"
    return logs


NODES_SCRIPT = (
    "import json, ray; ray.init(); "
    "print('NODES=' + json.dumps({n['NodeID']: n['NodeManagerAddress'] for n in ray.nodes() if n['Alive']}))"
)


def _nodes(address: str, env: dict) -> dict[str, str]:
    r = _submit(address, env, str(BIN / "python"), "-c", NODES_SCRIPT, timeout=120)
    line = next((x for x in r.stdout.splitlines() if x.startswith("NODES=")), None)
    return json.loads(line.removeprefix("NODES=")) if line else {}
