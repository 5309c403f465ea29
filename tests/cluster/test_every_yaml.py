"""Every YAML file of the repository loads and validates with the loader of its kind.

The kinds and their validators live in ``cluster/validate.py`` (``KINDS``); a YAML file of no
kind fails here, so a new one has to be classified. Each validator is also shown to reject a
broken copy of a real file, so none of them passes everything.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from cluster.validate import KINDS, YamlError, kind_of, repo_yaml_files, validate_file
from tests.conftest import REPO

FILES = repo_yaml_files()


def _rel(p: Path) -> str:
    return p.relative_to(REPO).as_posix()


def test_the_walk_finds_the_yaml_files_and_skips_ignored_folders():
    rels = {_rel(p) for p in FILES}
    # One known file of each kind: the listing cannot silently come back empty.
    for known in ("configs/quickstart.yaml", "tuning/configs/quick.yaml", "bench/fewshot.yaml",
                  "cluster/ray-cluster.yaml", "cluster/local-cluster.yaml", "cluster/kuberay/raycluster.yaml"):
        assert known in rels, f"{known} not found by repo_yaml_files"
    ignored = {".venv", ".git", "runs", ".cache", "__pycache__"}
    assert not [r for r in rels if ignored & set(r.split("/"))], "files from ignored folders were listed"


@pytest.mark.parametrize("path", FILES, ids=_rel)
def test_yaml_file_is_valid_for_its_kind(path: Path):
    validate_file(path)


def test_a_yaml_file_of_no_kind_is_an_error(tmp_path: Path):
    stray = tmp_path / "docs" / "example.yaml"
    stray.parent.mkdir()
    stray.write_text("a: 1\n")
    assert kind_of(stray, root=tmp_path) is None
    with pytest.raises(YamlError, match="no validator for this YAML file"):
        validate_file(stray, root=tmp_path)


def test_kind_patterns_do_not_reach_into_subfolders(tmp_path: Path):
    nested = tmp_path / "configs" / "old" / "x.yaml"
    nested.parent.mkdir(parents=True)
    nested.write_text("{}\n")
    assert kind_of(nested, root=tmp_path) is None


# --- each validator rejects a broken copy of a real file ----------------------------------------
def _typo_rec(t: dict) -> None:
    t["train"]["epochz"] = 3


def _bad_sweep(t: dict) -> None:
    t["search_space"]["model.d_model"] = {"choice": [32, 64]}  # only adapt.* keys are tunable


def _bad_bench(t: dict) -> None:
    t["quick"]["targets"] = ["no-such-target"]


def _typo_launcher(t: dict) -> None:
    t["available_node_types"]["gpu_worker"]["min_worker"] = 1


def _launcher_min_over_max(t: dict) -> None:
    t["available_node_types"]["cpu_worker"]["min_workers"] = t["max_workers"] + 1


def _local_without_workers(t: dict) -> None:
    del t["provider"]["worker_ips"]


def _head_redis_without_password(t: dict) -> None:
    cmds = t["head_start_ray_commands"]
    cmds[-1] = cmds[-1].replace("--redis-password", "--no-such-flag")


def _workers_give_up_before_the_head(t: dict) -> None:
    cmds = t["worker_start_ray_commands"]
    cmds[-1] = cmds[-1].replace("RAY_gcs_rpc_server_reconnect_timeout_s=600", "RAY_gcs_rpc_server_reconnect_timeout_s=30")


def _ft_annotation_and_options(t: dict) -> None:
    t["metadata"]["annotations"] = {"ray.io/ft-enabled": "true"}


def _redis_password_in_start_params(t: dict) -> None:
    t["spec"]["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]["redis-password"] = "secret"


def _typo_kuberay(t: dict) -> None:
    t["spec"]["workerGroupSpec"] = t["spec"].pop("workerGroupSpecs")


def _numeric_start_param(t: dict) -> None:
    t["spec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] = 0


def _bad_cron_schedule(t: dict) -> None:
    t["spec"]["schedule"] = "every 5 minutes"


def _cron_job_without_cluster(t: dict) -> None:
    del t["spec"]["jobTemplate"]["clusterSelector"]


def _typo_serve_args(t: dict) -> None:
    t["applications"][0]["args"]["artifact_rot"] = t["applications"][0]["args"].pop("artifact_root")


def _bad_serve_schema(t: dict) -> None:
    t["applications"][0]["import_path"] = "not an import path"


BROKEN = [
    ("configs/quickstart.yaml", _typo_rec, "epochz"),
    ("tuning/configs/quick.yaml", _bad_sweep, "model.d_model"),
    ("bench/fewshot.yaml", _bad_bench, "no-such-target"),
    ("cluster/ray-cluster.yaml", _typo_launcher, "min_worker"),
    ("cluster/ray-cluster.yaml", _launcher_min_over_max, "min_workers"),
    ("cluster/local-cluster.yaml", _local_without_workers, "worker_ips"),
    ("cluster/ray-cluster.yaml", _head_redis_without_password, "redis-password"),
    ("cluster/ray-cluster.yaml", _workers_give_up_before_the_head, "reconnect_timeout"),
    ("cluster/kuberay/rayservice.yaml", _ft_annotation_and_options, "ft-enabled"),
    ("cluster/kuberay/rayservice.yaml", _redis_password_in_start_params, "redisPassword"),
    ("cluster/kuberay/raycluster.yaml", _typo_kuberay, "workerGroupSpec"),
    ("cluster/kuberay/raycluster.yaml", _numeric_start_param, "must be strings"),
    ("cluster/kuberay/raycronjob-readapt.yaml", _bad_cron_schedule, "cron expression"),
    ("cluster/kuberay/raycronjob-readapt.yaml", _cron_job_without_cluster, "clusterSelector"),
    ("serve_apps/config.yaml", _typo_serve_args, "artifact_rot"),
    ("serve_apps/config.yaml", _bad_serve_schema, "import"),
]


@pytest.mark.parametrize(("rel", "mutate", "expect"), BROKEN, ids=[f"{r}:{m.__name__}" for r, m, _ in BROKEN])
def test_validator_rejects_a_broken_copy(tmp_path: Path, rel: str, mutate: Any, expect: str):
    src = REPO / rel
    if not src.is_file():
        pytest.skip(f"{rel} not in the repository yet")
    tree = copy.deepcopy(yaml.safe_load(src.read_text()))
    mutate(tree)
    dst = tmp_path / rel
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(yaml.safe_dump(tree, sort_keys=False))
    with pytest.raises(YamlError, match=expect):
        validate_file(dst, root=tmp_path)
    # ... and the unbroken file passes the same validator from the same place.
    shutil.copy(src, dst)
    validate_file(dst, root=tmp_path)


def test_every_kind_has_a_broken_copy_case():
    covered = {kind_of(REPO / rel) for rel, _, _ in BROKEN}
    assert covered == {k for k, _, _ in KINDS}
