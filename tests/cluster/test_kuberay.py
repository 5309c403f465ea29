"""The KubeRay manifests agree with each other, with the image, with `rec` and with the Serve config.

Structure (required fields, known keys, containers, volumes) is checked per file by
tests/cluster/test_every_yaml.py; this file checks what ties the manifests together. Not checked
offline: the CRDs themselves (``kubectl apply --dry-run=server`` against a cluster with KubeRay).
"""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

import pytest
import ray
import yaml

from cluster.kuberay import render
from cluster.validate import ray_clusters, ray_containers
from tests.conftest import REPO

KUBERAY = REPO / "cluster" / "kuberay"
IMAGE_ROOT = "/home/ray/fewshot-rec"  # WORKDIR of cluster/Dockerfile
SHARED = "/mnt/shared"
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def _docs() -> list[tuple[str, dict]]:
    return [(p.name, d) for p in sorted(KUBERAY.glob("*.yaml")) for d in yaml.safe_load_all(p.read_text()) if d]


DOCS = _docs()


def _of_kind(kind: str) -> list[dict]:
    return [d for _, d in DOCS if d["kind"] == kind]


def _clusters() -> list[tuple[str, dict]]:
    return [(f"{d['kind']}/{d['metadata']['name']}", c) for _, d in DOCS for c in ray_clusters(d)]


def test_expected_manifests():
    by_file = {f: d["kind"] for f, d in DOCS}
    assert by_file == {
        "pvc.yaml": "PersistentVolumeClaim",
        "raycluster.yaml": "RayCluster",
        "raycronjob-readapt.yaml": "RayCronJob",
        "rayjob-pretrain.yaml": "RayJob",
        "rayjob-tune.yaml": "RayJob",
        "rayservice.yaml": "RayService",
    }
    assert all(d["apiVersion"] == "ray.io/v1" for _, d in DOCS if d["kind"].startswith("Ray"))


def test_one_ray_version_everywhere():
    dockerfile = (REPO / "cluster" / "Dockerfile").read_text()
    base = re.search(r"^ARG BASE=rayproject/ray:([0-9.]+)-py311-cpu$", dockerfile, re.M)
    assert base, "cluster/Dockerfile must build FROM rayproject/ray:<version>-py311-cpu"
    versions = {name: c["rayVersion"] for name, c in _clusters()}
    assert set(versions.values()) == {base.group(1)} == {ray.__version__}, (
        f"rayVersion {versions}, Dockerfile {base.group(1)}, installed ray {ray.__version__} must agree"
    )


def test_images_and_gpu_requests_agree():
    for name, cluster in _clusters():
        for group, _, c in ray_containers(cluster):
            wants_gpu = "nvidia.com/gpu" in c["resources"]["limits"]
            assert c["image"] == f"fewshot-rec:{VERSION}-{'gpu' if wants_gpu else 'cpu'}", f"{name} {group}"
            assert c["resources"]["requests"] == c["resources"]["limits"], (
                f"{name} {group}: requests == limits, so Ray's view of the pod matches what it gets"
            )


def test_heads_take_no_work_and_clusters_autoscale():
    for name, cluster in _clusters():
        assert cluster["headGroupSpec"]["rayStartParams"].get("num-cpus") == "0", name
        assert cluster["enableInTreeAutoscaling"] is True, name
        groups = cluster["workerGroupSpecs"]
        assert all(g["maxReplicas"] > g["minReplicas"] for g in groups), f"{name}: worker groups must autoscale"


def test_batch_cluster_has_cpu_and_gpu_groups():
    (rc,) = _of_kind("RayCluster")
    gpu = {g["groupName"]: any("nvidia.com/gpu" in c["resources"]["limits"] for c in g["template"]["spec"]["containers"])
           for g in rc["spec"]["workerGroupSpecs"]}
    assert sorted(gpu.values()) == [False, True], gpu
    assert all(g["minReplicas"] == 0 for g in rc["spec"]["workerGroupSpecs"] if gpu[g["groupName"]])


def test_token_auth_everywhere():
    for name, cluster in _clusters():
        assert cluster.get("authOptions", {}).get("mode") == "token", f"{name}: enable Ray token auth"


def test_every_ray_container_mounts_the_shared_claim():
    (pvc,) = _of_kind("PersistentVolumeClaim")
    assert "ReadWriteMany" in pvc["spec"]["accessModes"], "every node writes/reads it"
    for name, cluster in _clusters():
        for group, g, c in ray_containers(cluster):
            vols = {v["name"]: v for v in g["template"]["spec"]["volumes"]}
            mounts = [m for m in c["volumeMounts"] if m["mountPath"] == SHARED]
            assert len(mounts) == 1, f"{name} {group}: mount the shared volume at {SHARED}"
            assert vols[mounts[0]["name"]]["persistentVolumeClaim"]["claimName"] == pvc["metadata"]["name"]


def _job_specs() -> list[tuple[str, dict]]:
    """(name, RayJob spec) of every RayJob and every RayCronJob's job template."""
    return ([(j["metadata"]["name"], j["spec"]) for j in _of_kind("RayJob")]
            + [(j["metadata"]["name"], j["spec"]["jobTemplate"]) for j in _of_kind("RayCronJob")])


def test_rayjobs_run_on_the_raycluster():
    (rc,) = _of_kind("RayCluster")
    for name, spec in _job_specs():
        assert spec["clusterSelector"] == {"ray.io/cluster": rc["metadata"]["name"]}, name


def _entrypoint_args(job: dict):
    from rec.cli import build_parser

    spec = job["spec"]["jobTemplate"] if job["kind"] == "RayCronJob" else job["spec"]
    argv = shlex.split(spec["entrypoint"])
    assert argv[0] == "rec", "entrypoints are `rec` subcommands, as on any cluster"
    args = build_parser().parse_args(argv[1:])
    return args


def _local(path: str) -> Path:
    assert path.startswith(IMAGE_ROOT + "/"), f"{path}: files of the project are in the image under {IMAGE_ROOT}"
    return REPO / path.removeprefix(IMAGE_ROOT + "/")


def _overrides(args) -> dict[str, str]:
    return dict(o.split("=", 1) for o in args.overrides)


def test_pretrain_job_is_a_valid_rec_command():
    from rec.config import load_config

    (job,) = [j for j in _of_kind("RayJob") if j["metadata"]["name"].endswith("pretrain")]
    args = _entrypoint_args(job)
    assert args.command == "pretrain"
    assert args.address == "auto", "a job connects to the cluster it runs on"
    cfg = load_config(_local(args.config), [*args.overrides, f"train.output_dir={args.output_dir}"])
    for value in (cfg.train.output_dir, cfg.ray.storage_path, cfg.text.cache_dir):
        assert value.startswith(SHARED + "/"), f"{value}: outputs must be on the shared volume"
    assert cfg.train.num_workers >= 2


def test_tune_job_is_a_valid_rec_command_on_the_pretrain_output():
    from rec.config import load_config
    from tuning.search_spaces import load_sweep

    (pre,) = [j for j in _of_kind("RayJob") if j["metadata"]["name"].endswith("pretrain")]
    (job,) = [j for j in _of_kind("RayJob") if j["metadata"]["name"].endswith("tune")]
    pre_args, args = _entrypoint_args(pre), _entrypoint_args(job)
    assert args.command == "tune" and args.address == "auto"
    assert args.backbone == f"{pre_args.output_dir}/checkpoint", "tune the backbone the pretrain job publishes"
    spec = load_sweep(_local(args.sweep))
    cfg = load_config(None, args.overrides)
    assert spec.check_against(cfg.model_dump(mode="json")) == []
    for value in (args.storage_path, cfg.adapt.output_root, cfg.text.cache_dir):
        assert value.startswith(SHARED + "/"), f"{value}: outputs must be on the shared volume"


def test_readapt_cronjob_is_a_valid_trigger_on_the_served_root():
    from rec.config import load_config

    (cron,) = _of_kind("RayCronJob")
    (pre,) = [j for j in _of_kind("RayJob") if j["metadata"]["name"].endswith("pretrain")]
    (tune,) = [j for j in _of_kind("RayJob") if j["metadata"]["name"].endswith("tune")]
    (svc,) = _of_kind("RayService")
    args, pre_args, tune_args = _entrypoint_args(cron), _entrypoint_args(pre), _entrypoint_args(tune)
    assert args.command == "readapt-trigger" and args.once, "the schedule runs one pass per tick"
    assert args.address == "auto", "it submits readapt jobs to the cluster it runs on"
    served = yaml.safe_load(svc["spec"]["serveConfigV2"])["applications"][0]["args"]["artifact_root"]
    assert args.root == served, "the trigger reads the log and moves the pointers of the root the RayService serves"
    assert args.backbone == tune_args.backbone == f"{pre_args.output_dir}/checkpoint"
    cfg = load_config(None, args.overrides)
    assert cfg.data.synthetic.tenants == load_config(None, tune_args.overrides).data.synthetic.tenants, (
        "readapt jobs see the same tenants the tune job adapted")
    assert cfg.text.cache_dir.startswith(SHARED + "/")
    minutes = cron["spec"]["schedule"].split()[0]
    assert minutes.startswith("*/") and int(minutes[2:]) <= cfg.feedback.readapt.every_minutes, (
        "the schedule must tick at least as often as feedback.readapt.every_minutes")


def test_dockerfile_copies_every_package_and_the_files_jobs_use():
    dockerfile = (REPO / "cluster" / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (?:--\S+ )*(\S+) \S+$", dockerfile, re.M))
    packages = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    for pattern in packages:
        assert pattern.rstrip("*") in copied, f"cluster/Dockerfile does not COPY the package {pattern}"
    for name, spec in _job_specs():
        for path in re.findall(rf"{IMAGE_ROOT}/(\S+)", spec["entrypoint"]):
            assert path.split("/")[0] in copied, f"{name} uses {path}, not in the image"


def test_rayservice_serve_config_is_rendered_from_serve_apps_config():
    if not render.SERVE_CONFIG.is_file():
        pytest.skip("serve_apps/config.yaml not in the repository yet")
    assert render.main(["--check"]) == 0, "run `python cluster/kuberay/render.py`"
    (svc,) = _of_kind("RayService")
    served = yaml.safe_load(svc["spec"]["serveConfigV2"])
    source = yaml.safe_load(render.SERVE_CONFIG.read_text())
    # The same apps and deployments; only the documented cluster overrides differ.
    assert [a["import_path"] for a in served["applications"]] == [a["import_path"] for a in source["applications"]]
    assert served["applications"][0]["deployments"] == source["applications"][0]["deployments"]
    root = served["applications"][0]["args"]["artifact_root"]
    assert root.startswith(SHARED + "/"), f"artifact_root {root} must be on the shared volume in the pods"


def test_render_notices_a_changed_serve_config():
    if not render.SERVE_CONFIG.is_file():
        pytest.skip("serve_apps/config.yaml not in the repository yet")
    manifest = render.RAYSERVICE.read_text()
    tree = yaml.safe_load(render.SERVE_CONFIG.read_text())
    tree["applications"][0]["deployments"][0]["ray_actor_options"] = {"num_cpus": 3}
    changed = render.render_manifest(manifest, yaml.safe_dump(tree))
    assert changed != manifest
    assert yaml.safe_load(yaml.safe_load(changed)["spec"]["serveConfigV2"])["applications"][0]["deployments"][0][
        "ray_actor_options"] == {"num_cpus": 3}
    assert render.render_manifest(changed, yaml.safe_dump(tree)) == changed, "rendering twice changes nothing"
    del tree["applications"][0]["args"]["artifact_root"]
    with pytest.raises(render.RenderError, match="artifact_root"):
        render.render_manifest(manifest, yaml.safe_dump(tree))


def test_launcher_clusters_get_the_same_serve_config(tmp_path: Path):
    if not render.SERVE_CONFIG.is_file():
        pytest.skip("serve_apps/config.yaml not in the repository yet")
    from cluster.validate import validate_serve_config

    out = tmp_path / "serve-cluster.yaml"
    assert render.main(["--serve-config", str(out)]) == 0
    (svc,) = _of_kind("RayService")
    assert yaml.safe_load(out.read_text()) == yaml.safe_load(svc["spec"]["serveConfigV2"])
    validate_serve_config(yaml.safe_load(out.read_text()), str(out))


def test_rayservice_gcs_is_fault_tolerant_on_redis():
    """KubeRay >= 1.3 form: gcsFaultToleranceOptions with the password from a Secret, no ft-enabled annotation."""
    (svc,) = _of_kind("RayService")
    cluster = svc["spec"]["rayClusterConfig"]
    ft = cluster["gcsFaultToleranceOptions"]
    assert re.match(r"^[a-z0-9.-]+:\d+$", ft["redisAddress"])
    ref = ft["redisPassword"]["valueFrom"]["secretKeyRef"]
    assert ref["name"] and ref["key"], "the Redis password comes from a Secret"
    assert "ray.io/ft-enabled" not in (svc["metadata"].get("annotations") or {}), "KubeRay rejects both forms together"
    # Serving survives the head only where replicas and the clients' proxies are not on the head.
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert svc["spec"]["excludeHeadPodFromServeSvc"] is True
    served = yaml.safe_load(svc["spec"]["serveConfigV2"])
    assert served["proxy_location"] == "EveryNode", "worker pods need their own proxies"
    for group, _, c in ray_containers(cluster):
        names = {e["name"] for e in c.get("env", [])}
        assert not names & {"RAY_REDIS_ADDRESS", "REDIS_PASSWORD"}, f"{group}: KubeRay sets these from the options"
        # KubeRay injects 600 s into workers when unset; an explicit value would have to exceed the head's.
        assert "RAY_gcs_rpc_server_reconnect_timeout_s" not in names, group


def test_only_the_rayservice_needs_gcs_fault_tolerance():
    """Batch clusters (RayCluster, RayJobs) are restartable work; Ray recommends GCS FT for Serve only."""
    for name, cluster in _clusters():
        assert ("gcsFaultToleranceOptions" in cluster) == name.startswith("RayService/"), name
