"""The cluster launcher configs: what `ray up` would build, checked offline with Ray's own code.

``validate_launcher`` runs ray's JSON schema, ``prepare_config`` and ``validate_config`` (and the
local provider's bootstrap); the tests below then check the prepared config's meaning: node types,
install order, token auth, Ray version. What needs AWS itself (boto3 bootstrap: AMI, IAM, subnets,
quotas) is not run here: see docs/cluster.md.
"""

from __future__ import annotations

import re

import pytest
import ray
import yaml

from cluster.validate import validate_launcher
from tests.conftest import REPO

AWS = REPO / "cluster" / "ray-cluster.yaml"
LOCAL = REPO / "cluster" / "local-cluster.yaml"


@pytest.fixture(scope="module")
def aws() -> dict:
    return validate_launcher(yaml.safe_load(AWS.read_text()), str(AWS))


@pytest.fixture(scope="module")
def local() -> dict:
    return validate_launcher(yaml.safe_load(LOCAL.read_text()), str(LOCAL))


def _node_setup(cfg: dict, node_type: str) -> list[str]:
    """The setup commands the launcher runs on a node of this type (as NodeUpdater picks them)."""
    if node_type == cfg["head_node_type"]:
        return cfg["head_setup_commands"]
    return cfg["available_node_types"][node_type].get("worker_setup_commands", cfg["worker_setup_commands"])


def _torch_then_project(cmds: list[str]) -> tuple[str, str]:
    torch_i = next(i for i, c in enumerate(cmds) if re.search(r"pip install .*torch==", c))
    proj_i = next(i for i, c in enumerate(cmds) if re.search(r"pip install .*fewshot-rec", c))
    assert torch_i < proj_i, f"torch must be installed before the project: {cmds}"
    return cmds[torch_i], cmds[proj_i]


def test_aws_node_types(aws):
    types = aws["available_node_types"]
    assert set(types) == {"head", "cpu_worker", "gpu_worker"} and aws["head_node_type"] == "head"
    assert types["head"]["resources"] == {"CPU": 0}, "training/serving must not land on the head"
    assert types["head"]["max_workers"] == 0
    for name in ("cpu_worker", "gpu_worker"):
        t = types[name]
        assert t["min_workers"] < t["max_workers"] <= aws["max_workers"], f"{name} must autoscale"
        assert 0 < t["idle_timeout_s"], f"{name} needs an idle timeout"
    assert types["gpu_worker"]["min_workers"] == 0, "GPU nodes only on demand"
    assert aws["idle_timeout_minutes"] > 0


def test_aws_cpu_nodes_install_cpu_torch_then_the_project(aws):
    for node_type in ("head", "cpu_worker"):
        torch_cmd, _ = _torch_then_project(_node_setup(aws, node_type))
        assert "--index-url https://download.pytorch.org/whl/cpu" in torch_cmd, node_type


def test_aws_gpu_nodes_install_cuda_torch_and_run_the_gpu_image(aws):
    gpu = aws["available_node_types"]["gpu_worker"]
    torch_cmd, _ = _torch_then_project(_node_setup(aws, "gpu_worker"))
    assert "whl/cpu" not in torch_cmd, "GPU workers need the CUDA build of torch"
    assert gpu["docker"]["worker_image"].endswith("-gpu")
    assert not aws["docker"]["image"].endswith("-gpu")


def test_aws_ray_image_matches_installed_ray(aws):
    images = [aws["docker"]["image"], aws["available_node_types"]["gpu_worker"]["docker"]["worker_image"]]
    for image in images:
        assert image.startswith(f"rayproject/ray:{ray.__version__}-py311-"), (
            f"{image}: the cluster must run the Ray of this project ({ray.__version__}) so `ray up`, "
            "`ray job submit` and `serve deploy` from this venv talk to a matching cluster"
        )


@pytest.mark.parametrize("which", ["aws", "local"])
def test_token_auth_on_every_node(which, request):
    cfg = request.getfixturevalue(which)
    assert cfg["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token", "the token must reach every node"
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in cfg[key] if "ray start" in c]
        assert len(start) == 1 and "RAY_AUTH_MODE=token" in start[0], f"{key}: {start}"
    assert "--head" in next(c for c in cfg["head_start_ray_commands"] if "ray start" in c)
    assert "$RAY_HEAD_IP:6379" in next(c for c in cfg["worker_start_ray_commands"] if "ray start" in c)


@pytest.mark.parametrize("which", ["aws", "local"])
def test_repo_is_synced_without_ignored_files(which, request):
    cfg = request.getfixturevalue(which)
    assert cfg["file_mounts"]["~/fewshot-rec"] == "."
    assert ".gitignore" in cfg["rsync_filter"]


def test_local_cluster_uses_every_listed_host(local):
    ips = local["provider"]["worker_ips"]
    (node_type,) = local["available_node_types"].values()
    assert node_type["min_workers"] == node_type["max_workers"] == len(ips) == local["max_workers"]
    torch_cmd, project_cmd = _torch_then_project(local["worker_setup_commands"])
    assert torch_cmd.startswith("~/fewshot-rec-env/bin/pip") and project_cmd.startswith("~/fewshot-rec-env/bin/pip")
    for c in local["head_start_ray_commands"] + local["worker_start_ray_commands"]:
        assert "fewshot-rec-env/bin" in c, f"ray must come from the project's venv: {c}"
    head_start = next(c for c in local["head_start_ray_commands"] if "ray start" in c)
    assert "RAY_enable_autoscaler_v2=0" in head_start, "Ray 2.60's v2 autoscaler left a worker_ips host out"


# Only the cloud launcher turns GCS FT on: the on-prem one is what the multi-host test brings up with
# `ray up`, and a head told to use a Redis that is not there never starts (docs/cluster.md says how to add it).
@pytest.mark.parametrize("which", ["aws"])
def test_head_keeps_the_gcs_in_an_external_redis(which, request):
    """GCS fault tolerance as Ray's page sets it for `ray up` (tests/cluster/test_gcs_ft.py runs it for real)."""
    cfg = request.getfixturevalue(which)
    (head,) = [c for c in cfg["head_start_ray_commands"] if "ray start" in c]
    (worker,) = [c for c in cfg["worker_start_ray_commands"] if "ray start" in c]
    assert re.search(r"\bRAY_REDIS_ADDRESS=[^\s:;]+:\d+", head), "the head must start with RAY_REDIS_ADDRESS=host:port"
    assert '--redis-password="$(cat ~/.ray/redis_password)"' in head, "the password comes from a file, not the YAML"
    assert "--redis-username=default" in head
    assert cfg["file_mounts"].get("~/.ray/redis_password") == "~/.ray/redis_password"
    assert "RAY_REDIS_ADDRESS" not in worker, "workers find the GCS through the head, not Redis"
    timeout = re.search(r"\bRAY_gcs_rpc_server_reconnect_timeout_s=(\d+)", worker)
    assert timeout and int(timeout.group(1)) >= 600, "workers must wait out a head restart (KubeRay: 600 s)"
    assert "RAY_gcs_rpc_server_reconnect_timeout_s" not in head, "the head keeps Ray's 60 s"
