"""`ray up cluster/local-cluster.yaml` on three hosts made of network namespaces on this machine.

Each "host" is a network namespace with its own address on a private bridge (10.251.N.0/24, no
route out: IP forwarding stays as it is and nothing is NATed) running its own sshd with a key made
for the test. The test fills the file's placeholders (head_ip, worker_ips, ssh user and key), runs
`ray up` from the root namespace, waits for the autoscaler on the head to bring up both workers
over SSH, then submits a real `rec pretrain` job whose three DDP ranks must land on three hosts
(STRICT_SPREAD, one CPU per host) and talk gloo across the namespaces.

What the test changes in the config, and why (the rest, including the start commands'
environment, runs as written):
- `ray stop` is dropped from the start commands, and teardown is by process id: the namespaces
  share one process table with the rest of the machine, where `ray stop` (and `ray down`, which
  runs it) would stop every Ray of every user.
- setup commands and file mounts are dropped: the hosts share this machine's file system, so the
  project's venv is used in place of `~/fewshot-rec-env` (the setup commands need the internet).
- each host gets its own Ray temp folder (`--temp-dir`): on one shared /tmp, one node unpacking a
  job's working dir would replace the directory another node's driver runs in.
- GLOO_SOCKET_IFNAME=eth0: the namespaces share one hostname, which resolves to a loopback address.
- `--num-cpus=1` per host, to keep the shared machine usable.

Skipped with the reason when not root, or `ip netns`, sshd (Debian: openssh-server), ssh or rsync
is missing. Cleanup always runs: every process inside the namespaces is killed by pid, then the
namespaces, veths and the bridge are deleted, and the files `ray up` leaves are removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
import pytest
import yaml

from rec.io.artifacts import read_manifest
from tests.conftest import REPO

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BIN = Path(sys.executable).parent
SSHD = "/usr/sbin/sshd"
N_HOSTS = 3
TAG = f"fsr{os.getpid() % 10000}"  # names of our namespaces/links; unique per test process
SUBNET = f"10.251.{100 + os.getpid() % 100}"
NODES_TIMEOUT_S = 300
JOB_TIMEOUT_S = 540
HOME = Path.home()
BOOTSTRAP_FILES = [HOME / "ray_bootstrap_config.yaml", HOME / "ray_bootstrap_key.pem"]


def _run(*cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True, check=check, **kw)


def _why_skip() -> str | None:
    if os.geteuid() != 0:
        return "needs root (ip netns, veth, sshd)"
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

    def pids(self) -> list[int]:
        out: list[int] = []
        for ns in self.names:
            r = _run("ip", "netns", "pids", ns, check=False)
            out += [int(p) for p in r.stdout.split()]
        return out

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


@pytest.fixture(scope="module")
def hosts():
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


def _submit(address: str, env: dict, *entrypoint: str, timeout: float = JOB_TIMEOUT_S) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(BIN / "ray"), "job", "submit", "--address", address, "--working-dir", ".", "--", *entrypoint],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )


NODES_SCRIPT = (
    "import json, ray; ray.init(); "
    "print('NODES=' + json.dumps({n['NodeID']: n['NodeManagerAddress'] for n in ray.nodes() if n['Alive']}))"
)


def _nodes(address: str, env: dict) -> dict[str, str]:
    r = _submit(address, env, str(BIN / "python"), "-c", NODES_SCRIPT, timeout=120)
    line = next((x for x in r.stdout.splitlines() if x.startswith("NODES=")), None)
    return json.loads(line.removeprefix("NODES=")) if line else {}


@pytest.fixture(scope="module")
def cluster(hosts):
    token = hosts.base / "token"
    token.write_text(secrets.token_hex(32))
    cfg_path = hosts.base / "cluster.yaml"
    cfg_path.write_text(yaml.safe_dump(cluster_config(hosts, token), sort_keys=False))
    env = _client_env(hosts, token)
    up = subprocess.run([str(BIN / "ray"), "up", str(cfg_path), "-y", "--no-config-cache"], cwd=hosts.base,
                        env=env, capture_output=True, text=True, timeout=NODES_TIMEOUT_S)
    assert up.returncode == 0, f"ray up failed:\n{(up.stdout + up.stderr)[-4000:]}"
    address = f"http://{hosts.ips[0]}:8265"
    deadline, nodes = time.time() + NODES_TIMEOUT_S, {}
    while time.time() < deadline:
        nodes = _nodes(address, env)
        if sorted(nodes.values()) == hosts.ips:
            break
        time.sleep(5)
    yield {"address": address, "env": env, "nodes": nodes, "base": hosts.base}


def test_ray_up_brings_every_host_into_the_cluster(cluster, hosts):
    assert sorted(cluster["nodes"].values()) == hosts.ips, (
        f"alive Ray nodes {cluster['nodes']} after {NODES_TIMEOUT_S} s; expected one per host {hosts.ips}"
    )


def test_pretrain_job_runs_one_rank_per_host(cluster, hosts):
    if sorted(cluster["nodes"].values()) != hosts.ips:
        pytest.skip("the cluster did not come up (see the test above)")
    out = cluster["base"] / "pretrain"
    overrides = {
        "data.synthetic.tenants": 2, "data.synthetic.users_per_tenant": 120, "data.synthetic.items_per_tenant": 80,
        "data.max_seq_len": 20, "model.max_len": 20, "model.d_model": 32, "train.epochs": 2, "train.batch_size": 64,
        "train.num_workers": N_HOSTS, "train.cpus_per_worker": 1, "train.placement_strategy": "STRICT_SPREAD",
        "train.output_dir": out, "ray.storage_path": out / "ray", "text.cache_dir": out / "text-cache",
        "train.resume": "false",
    }
    r = _submit(cluster["address"], cluster["env"], "rec", "pretrain", "--address", "auto",
                *[f"{k}={v}" for k, v in overrides.items()])
    log = r.stdout + r.stderr
    assert r.returncode == 0, f"job failed:\n{log[-5000:]}"
    manifest = read_manifest(out / "checkpoint", kind="backbone")
    assert manifest["epochs_run"] == 2
    states = sorted((out / "ray" / "pretrain").glob("checkpoint_*/state"))
    assert states, "no Ray Train checkpoint on the shared storage"
    history = read_manifest(states[-1], kind="train-state")["state"]["history"]
    for h in history:
        ranks = h["worker_nodes"].split(",")
        assert len(ranks) == N_HOSTS
        assert sorted(cluster["nodes"][n] for n in ranks) == hosts.ips, f"epoch {h['epoch']}: ranks on {ranks}"
