"""Validate the repository's YAML files, each with the loader that will read it for real.

Every ``*.yaml`` / ``*.yml`` of the repository (what git tracks or would track: ``.gitignore``d
folders such as ``.venv/`` and ``runs/`` are left out) belongs to one kind in ``KINDS``; a file of
no kind is an error, so a new YAML file has to be classified here. tests/cluster/test_every_yaml.py
runs this over the whole repository.

=================  ====================================  ==================================================
kind               files                                 validated by
=================  ====================================  ==================================================
rec-config         configs/*.yaml                        ``rec.config.load_config`` (what ``rec --config`` reads)
sweep              tuning/configs/*.yaml                 ``tuning.search_spaces.load_sweep`` + ``check_against``
bench              bench/fewshot*.yaml                   ``bench.fewshot_config.load_bench_config``
ray-launcher       cluster/*-cluster.yaml                ray's ``ray-schema.json`` (jsonschema), then Ray's own
                                                         ``prepare_config`` + ``validate_config`` (what ``ray up``
                                                         runs before touching a cloud) and, for ``provider: local``,
                                                         the local provider's bootstrap
kuberay            cluster/kuberay/*.yaml                structure of RayCluster / RayJob / RayCronJob / RayService (ray.io/v1)
                                                         and PersistentVolumeClaim: required fields, known keys,
                                                         containers, volumes; a RayService's ``serveConfigV2`` as
                                                         a serve config
serve              serve_apps/*.yaml                     ``ray.serve.schema.ServeDeploySchema`` + each app's
                                                         typed builder arguments
=================  ====================================  ==================================================

Not checked here (needs the real thing): an AWS account (AMI, IAM, quotas: ``ray up`` bootstraps
with boto3), a Kubernetes API server with the KubeRay CRDs (``kubectl apply --dry-run=server``),
whether images exist in a registry.

Usage (from the repository root)::

    python -m cluster.validate                 # every YAML file of the repository
    python -m cluster.validate cluster/ray-cluster.yaml
"""

from __future__ import annotations

import copy
import fnmatch
import importlib
import inspect
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]

__all__ = [
    "KINDS",
    "YamlError",
    "kind_of",
    "repo_yaml_files",
    "ray_clusters",
    "ray_containers",
    "validate_file",
    "validate_kuberay_doc",
    "validate_launcher",
    "validate_serve_config",
]


class YamlError(ValueError):
    """A YAML file is invalid for its kind (or has no kind); the message names the file and the problem."""


# --- finding the files ----------------------------------------------------------------------------
_SKIP_DIRS = {".git", ".venv", "venv", "runs", "outputs", "build", "dist", "node_modules", "__pycache__", ".cache"}


def repo_yaml_files(root: Path = REPO) -> list[Path]:
    """Every YAML file of the repository: tracked or untracked-but-not-ignored (git), sorted.

    Outside a git checkout, a walk that skips hidden folders, virtualenvs and run outputs.
    """
    try:
        out = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "--", "*.yaml", "*.yml"],
            cwd=root, capture_output=True, text=True, check=True,
        ).stdout
        return sorted(root / line for line in out.splitlines() if line and (root / line).is_file())
    except (OSError, subprocess.CalledProcessError):
        found = []
        for d, dirs, files in os.walk(root):
            dirs[:] = [x for x in dirs if x not in _SKIP_DIRS and not x.startswith(".") and not x.endswith(".egg-info")]
            found += [Path(d) / f for f in files if f.endswith((".yaml", ".yml"))]
        return sorted(found)


def _load_all(path: Path) -> list[Any]:
    try:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    except yaml.YAMLError as e:
        raise YamlError(f"{path}: not valid YAML: {e}") from None
    if not docs:
        raise YamlError(f"{path}: empty YAML file")
    return docs


def _load_one(path: Path) -> dict[str, Any]:
    docs = _load_all(path)
    if len(docs) != 1 or not isinstance(docs[0], dict):
        raise YamlError(f"{path}: expected one YAML mapping, got {len(docs)} document(s)")
    return docs[0]


# --- rec configs, sweeps, benchmark configs -------------------------------------------------------
def validate_rec_config(path: Path) -> None:
    from rec.config import ConfigError, load_config

    try:
        load_config(path)
    except ConfigError as e:
        raise YamlError(f"{path}: {e}") from None


def validate_sweep(path: Path) -> None:
    from rec.config import RecConfig
    from tuning.search_spaces import SweepError, load_sweep

    try:
        spec = load_sweep(path)
    except SweepError as e:
        raise YamlError(str(e)) from None
    errs = spec.check_against(RecConfig().model_dump(mode="json"))
    if errs:
        raise YamlError(f"{path}: " + "; ".join(errs))


def validate_bench(path: Path) -> None:
    from rec.config import ConfigError

    fewshot = importlib.import_module("bench.fewshot_config")
    try:
        fewshot.load_bench_config(path)
    except ConfigError as e:
        raise YamlError(str(e)) from None


# --- Ray cluster launcher -------------------------------------------------------------------------
def validate_launcher(config: dict[str, Any], where: str = "cluster config") -> dict[str, Any]:
    """Check a cluster launcher config the way ``ray up`` does before it reaches a provider.

    jsonschema against ray's ``ray-schema.json`` on the file as written (so a misspelled key is
    caught before defaults are merged in), then Ray's ``prepare_config`` (merges the provider's
    defaults, node types, setup commands) and ``validate_config`` (schema again plus Ray's own
    cross-checks). A ``provider: local`` config also goes through the local provider's bootstrap,
    which is offline. Returns the prepared config.
    """
    import click
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    try:
        jsonschema.validate(config, schema)
    except jsonschema.ValidationError as e:
        loc = ".".join(str(p) for p in e.absolute_path) or "(top level)"
        raise YamlError(f"{where}: {loc}: {e.message}") from None
    try:
        prepared = prepare_config(copy.deepcopy(config))
        validate_config(prepared)
        if prepared["provider"]["type"] == "local":
            from ray.autoscaler._private.local.config import bootstrap_local

            prepared = bootstrap_local(prepared)
    except jsonschema.ValidationError as e:
        loc = ".".join(str(p) for p in e.absolute_path) or "(top level)"
        raise YamlError(f"{where}: after Ray's defaults: {loc}: {e.message}") from None
    except (ValueError, KeyError, AssertionError, RuntimeError) as e:
        raise YamlError(f"{where}: {type(e).__name__}: {e}") from None
    except (SystemExit, click.ClickException) as e:  # cli_logger.abort, e.g. in the local provider's prepare step
        raise YamlError(f"{where}: rejected by Ray's prepare_config: {e}") from None
    for name, node_type in prepared["available_node_types"].items():
        if node_type.get("min_workers", 0) > node_type.get("max_workers", 0):
            raise YamlError(f"{where}: available_node_types.{name}: min_workers > max_workers")
    _launcher_gcs_ft(prepared, where)
    return prepared


# Ray's default for how long a raylet (and every worker process) waits for a lost GCS before exiting.
GCS_RECONNECT_DEFAULT_S = 60
_RECONNECT = re.compile(r"\bRAY_gcs_rpc_server_reconnect_timeout_s=(\d+)")


def _reconnect_timeout(commands: list[str]) -> int:
    found = [int(m.group(1)) for c in commands for m in _RECONNECT.finditer(c)]
    return found[-1] if found else GCS_RECONNECT_DEFAULT_S


def _launcher_gcs_ft(cfg: dict[str, Any], where: str) -> None:
    """GCS fault tolerance set up as Ray's "GCS Fault Tolerance" page says for ``ray up``, if at all.

    A head started with ``RAY_REDIS_ADDRESS`` needs ``--redis-password`` on the same command, and
    workers must wait longer for a lost GCS than the head does (KubeRay's rule for worker pods: 600
    against the head's 60), or they exit before a restarted head is back.
    """
    head = [c for c in cfg.get("head_start_ray_commands", []) if "ray start" in c]
    if not any("RAY_REDIS_ADDRESS=" in c for c in head):
        return
    for c in head:
        _need("--redis-password" in c, where, "head_start_ray_commands: RAY_REDIS_ADDRESS (GCS fault tolerance) "
              "needs --redis-password on the same `ray start` (Ray's GCS fault tolerance page)")
    workers = cfg.get("worker_start_ray_commands", [])
    head_s, worker_s = _reconnect_timeout(head), _reconnect_timeout(workers)
    _need(worker_s > head_s, where, f"worker_start_ray_commands: with GCS fault tolerance, set "
          f"RAY_gcs_rpc_server_reconnect_timeout_s above the head's ({head_s} s; e.g. 600 as KubeRay does), "
          f"or workers exit while the head restarts (now {worker_s} s)")


def _validate_launcher_file(path: Path) -> None:
    validate_launcher(_load_one(path), str(path))


# --- Serve ----------------------------------------------------------------------------------------
def _builder_args_model(import_path: str) -> type | None:
    """The pydantic model a Serve app builder takes (its first parameter's annotation), if any."""
    from pydantic import BaseModel

    module, _, attr = import_path.replace(":", ".").rpartition(".")
    builder = getattr(importlib.import_module(module), attr)
    if not inspect.isfunction(builder):
        return None  # a bound Application: takes no args
    params = list(inspect.signature(builder).parameters)
    if not params:
        return None
    import typing

    hint = typing.get_type_hints(builder).get(params[0])
    return hint if inspect.isclass(hint) and issubclass(hint, BaseModel) else None


def validate_serve_config(tree: Any, where: str = "serve config", import_apps: bool = True) -> None:
    """``ServeDeploySchema`` (what ``serve deploy`` and KubeRay's serveConfigV2 accept), then each
    application's ``args`` against its builder's typed argument model (imports the app's module)."""
    from pydantic import ValidationError
    from ray.serve.schema import ServeDeploySchema

    if not isinstance(tree, dict):
        raise YamlError(f"{where}: a serve config is a mapping with `applications:`")
    try:
        schema = ServeDeploySchema.model_validate(tree)
    except ValidationError as e:
        raise YamlError(f"{where}: not a valid Serve config: {e}") from None
    if not schema.applications:
        raise YamlError(f"{where}: no applications")
    if not import_apps:
        return
    for app in schema.applications:
        try:
            model = _builder_args_model(app.import_path)
        except (ImportError, AttributeError) as e:
            raise YamlError(f"{where}: application {app.name!r}: cannot import {app.import_path}: {e}") from None
        if model is not None:
            try:
                model.model_validate(app.args or {})
            except ValidationError as e:
                raise YamlError(f"{where}: application {app.name!r}: args: {e}") from None


def _validate_serve_file(path: Path) -> None:
    validate_serve_config(_load_one(path), str(path))


# --- KubeRay --------------------------------------------------------------------------------------
RAY_API = "ray.io/v1"
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
# Fields of KubeRay's ray.io/v1 specs (KubeRay 1.5-1.7 API reference). The API server prunes unknown
# fields of a custom resource silently, so a misspelled field would otherwise just be ignored.
CLUSTER_SPEC_KEYS = {
    "rayVersion", "headGroupSpec", "workerGroupSpecs", "enableInTreeAutoscaling", "autoscalerOptions",
    "authOptions", "headServiceAnnotations", "suspend", "managedBy", "gcsFaultToleranceOptions",
    "upgradeStrategy", "labelSelector",
}
HEAD_GROUP_KEYS = {"rayStartParams", "template", "serviceType", "headService", "enableIngress", "suspend", "labels", "resources"}
WORKER_GROUP_KEYS = {
    "groupName", "replicas", "minReplicas", "maxReplicas", "idleTimeoutSeconds", "rayStartParams", "template",
    "scaleStrategy", "numOfHosts", "suspend", "labels", "resources",
}
JOB_SPEC_KEYS = {
    "entrypoint", "runtimeEnvYAML", "jobId", "metadata", "shutdownAfterJobFinishes", "ttlSecondsAfterFinished",
    "activeDeadlineSeconds", "rayClusterSpec", "clusterSelector", "submissionMode", "submitterPodTemplate",
    "submitterConfig", "entrypointNumCpus", "entrypointNumGpus", "entrypointResources", "suspend", "backoffLimit",
    "deletionStrategy", "managedBy",
}
SUBMISSION_MODES = {"K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"}
# RayCronJob (KubeRay >= 1.6, alpha; timeZone since 1.7): a RayJob spec under jobTemplate, on a schedule.
CRON_SPEC_KEYS = {"schedule", "jobTemplate", "suspend", "timeZone"}
_CRON_FIELD = r"(\*|\d+(-\d+)?)(/\d+)?(,(\*|\d+(-\d+)?)(/\d+)?)*"
_CRON = re.compile(rf"^{_CRON_FIELD}( {_CRON_FIELD}){{4}}$|^@(yearly|annually|monthly|weekly|daily|midnight|hourly)$")
SERVICE_SPEC_KEYS = {
    "serveConfigV2", "rayClusterConfig", "serveService", "upgradeStrategy", "excludeHeadPodFromServeSvc",
    "deploymentUnhealthySecondThreshold", "serviceUnhealthySecondThreshold", "rayClusterDeletionDelaySeconds",
}


def _need(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise YamlError(f"{where}: {msg}")


def _unknown(d: dict[str, Any], known: set[str], where: str) -> None:
    extra = sorted(set(d) - known)
    _need(not extra, where, f"unknown field(s) {extra} (known: {sorted(known)})")


def _pod_template(template: Any, where: str) -> None:
    _need(isinstance(template, dict) and isinstance(template.get("spec"), dict), where, "needs template.spec")
    spec = template["spec"]
    containers = spec.get("containers")
    _need(isinstance(containers, list) and containers, f"{where}.spec", "needs a non-empty containers list")
    volumes = {v.get("name") for v in spec.get("volumes", []) or []}
    for i, c in enumerate(containers):
        cw = f"{where}.spec.containers[{i}]"
        _need(isinstance(c, dict) and c.get("name") and c.get("image"), cw, "needs name and image")
        res = c.get("resources") or {}
        _need(isinstance(res.get("limits"), dict) and "cpu" in res["limits"] and "memory" in res["limits"],
              cw, "needs resources.limits.cpu and .memory (Ray sizes its node from them)")
        for m in c.get("volumeMounts", []) or []:
            _need(m.get("name") in volumes, cw, f"volumeMount {m.get('name')!r} has no matching volume")
        for e in c.get("env", []) or []:
            _need(isinstance(e, dict) and "name" in e and ("value" in e or "valueFrom" in e), cw, f"bad env entry {e!r}")
            _need(not isinstance(e.get("value"), (int, float, bool)), cw, f"env {e['name']}: value must be a string")


def _start_params(params: Any, where: str) -> None:
    _need(isinstance(params, dict), where, "rayStartParams must be a mapping (may be empty)")
    bad = [k for k, v in params.items() if not isinstance(v, str)]
    _need(not bad, where, f"rayStartParams values must be strings (quote them): {bad}")


GCS_FT_KEYS = {"redisAddress", "redisPassword", "redisUsername", "externalStorageNamespace", "backend"}
FT_ANNOTATION = "ray.io/ft-enabled"


def _env_names(container: dict[str, Any]) -> dict[str, Any]:
    return {e.get("name"): e for e in container.get("env", []) or [] if isinstance(e, dict)}


def _redis_credential(cred: Any, where: str) -> None:
    ok = isinstance(cred, dict) and (
        (set(cred) == {"value"} and isinstance(cred["value"], str))
        or (set(cred) == {"valueFrom"} and isinstance(cred["valueFrom"], dict)
            and all((cred["valueFrom"].get("secretKeyRef") or {}).get(k) for k in ("name", "key"))))
    _need(ok, where, "must be {value: ...} or {valueFrom: {secretKeyRef: {name: ..., key: ...}}} (a Secret)")


def _gcs_fault_tolerance(spec: dict[str, Any], annotations: dict[str, Any], where: str) -> None:
    """KubeRay's own rules for GCS FT (ValidateRayClusterSpec, KubeRay 1.3+), checked before a cluster sees them."""
    ft = spec.get("gcsFaultToleranceOptions")
    head = spec["headGroupSpec"]
    head_env = _env_names(head["template"]["spec"]["containers"][0])
    params = head.get("rayStartParams", {}) or {}
    _need(not ({"redis-username"} & set(params)) and "REDIS_USERNAME" not in head_env, f"{where}.headGroupSpec",
          "set a Redis username in gcsFaultToleranceOptions.redisUsername, not in rayStartParams or env")
    if ft is None:
        _need("RAY_REDIS_ADDRESS" not in head_env, f"{where}.headGroupSpec", "RAY_REDIS_ADDRESS in the head's env "
              "turns GCS fault tolerance on implicitly: use gcsFaultToleranceOptions.redisAddress instead")
        return
    fw = f"{where}.gcsFaultToleranceOptions"
    _need(isinstance(ft, dict), fw, "must be a mapping")
    _unknown(ft, GCS_FT_KEYS, fw)
    _need(FT_ANNOTATION not in annotations, where, f"the {FT_ANNOTATION} annotation and gcsFaultToleranceOptions are "
          "both set, which KubeRay rejects: keep only gcsFaultToleranceOptions")
    _need("ray.io/external-storage-namespace" not in annotations, where,
          "use gcsFaultToleranceOptions.externalStorageNamespace, not the ray.io/external-storage-namespace annotation")
    if ft.get("backend", "redis") == "redis":
        address = ft.get("redisAddress")
        _need(isinstance(address, str) and re.match(r"^(rediss?://)?[^\s:/]+:\d+$", address or ""), fw,
              f"redisAddress must be host:port (or redis://host:port), got {address!r}")
    for key in ("redisPassword", "redisUsername"):
        if key in ft:
            _redis_credential(ft[key], f"{fw}.{key}")
    _need("redis-password" not in params, f"{where}.headGroupSpec",
          "with gcsFaultToleranceOptions the Redis password goes in gcsFaultToleranceOptions.redisPassword, not rayStartParams")
    for name in ("REDIS_PASSWORD", "RAY_REDIS_ADDRESS"):
        _need(name not in head_env, f"{where}.headGroupSpec",
              f"with gcsFaultToleranceOptions, do not set {name} in the head's env (KubeRay sets it from the options)")
    head_s = _env_timeout(head_env, GCS_RECONNECT_DEFAULT_S)
    for g in spec.get("workerGroupSpecs", []) or []:
        worker_s = _env_timeout(_env_names(g["template"]["spec"]["containers"][0]), None)
        _need(worker_s is None or worker_s > head_s, f"{where}.workerGroupSpecs[{g['groupName']}]",
              f"RAY_gcs_rpc_server_reconnect_timeout_s ({worker_s}) must exceed the head's ({head_s}) or workers "
              "exit before the head is back (leave it unset: KubeRay injects 600)")


def _env_timeout(env: dict[str, Any], default: int | None) -> int | None:
    e = env.get("RAY_gcs_rpc_server_reconnect_timeout_s")
    return int(e["value"]) if e and str(e.get("value", "")).isdigit() else default


def validate_cluster_spec(spec: Any, where: str, annotations: dict[str, Any] | None = None) -> None:
    """A RayClusterSpec (RayCluster.spec, RayJob.spec.rayClusterSpec, RayService.spec.rayClusterConfig).

    ``annotations``: those of the manifest that holds it (KubeRay reads some settings from them).
    """
    _need(isinstance(spec, dict), where, "must be a mapping")
    _unknown(spec, CLUSTER_SPEC_KEYS, where)
    _need(isinstance(spec.get("rayVersion"), str), where, "needs rayVersion as a string (e.g. \"2.60.0\")")
    auth = spec.get("authOptions")
    if auth is not None:
        _need(isinstance(auth, dict) and auth.get("mode", "token") in {"token", "disabled"}, f"{where}.authOptions", "mode: token|disabled")
    head = spec.get("headGroupSpec")
    _need(isinstance(head, dict), where, "needs headGroupSpec")
    _unknown(head, HEAD_GROUP_KEYS, f"{where}.headGroupSpec")
    _start_params(head.get("rayStartParams", {}), f"{where}.headGroupSpec")
    _pod_template(head.get("template"), f"{where}.headGroupSpec.template")
    groups = spec.get("workerGroupSpecs", []) or []
    _need(isinstance(groups, list), where, "workerGroupSpecs must be a list")
    names = [g.get("groupName") for g in groups if isinstance(g, dict)]
    _need(len(names) == len(groups) and all(names) and len(set(names)) == len(names), where,
          f"every worker group needs a unique groupName, got {names}")
    for g in groups:
        gw = f"{where}.workerGroupSpecs[{g['groupName']}]"
        _unknown(g, WORKER_GROUP_KEYS, gw)
        _start_params(g.get("rayStartParams", {}), gw)
        lo, n, hi = g.get("minReplicas", 0), g.get("replicas", 0), g.get("maxReplicas", 2**31 - 1)
        _need(all(isinstance(x, int) for x in (lo, n, hi)) and 0 <= lo <= n <= hi, gw,
              f"needs 0 <= minReplicas <= replicas <= maxReplicas, got {lo}, {n}, {hi}")
        _pod_template(g.get("template"), f"{gw}.template")
    _gcs_fault_tolerance(spec, annotations or {}, where)


def validate_kuberay_doc(doc: Any, where: str, import_apps: bool = True) -> None:
    """One manifest: RayCluster / RayJob / RayCronJob / RayService (ray.io/v1) or a PersistentVolumeClaim."""
    _need(isinstance(doc, dict), where, "a manifest must be a mapping")
    kind, api = doc.get("kind"), doc.get("apiVersion")
    name = (doc.get("metadata") or {}).get("name")
    _need(isinstance(name, str) and _NAME.match(name) and len(name) <= 63, where,
          f"metadata.name must be a DNS-1123 label, got {name!r}")
    where = f"{where} ({kind} {name})"
    annotations = (doc.get("metadata") or {}).get("annotations") or {}
    spec = doc.get("spec")
    _need(isinstance(spec, dict), where, "needs spec")
    if kind == "PersistentVolumeClaim":
        _need(api == "v1", where, f"apiVersion must be v1, got {api!r}")
        _need(spec.get("accessModes") and ((spec.get("resources") or {}).get("requests") or {}).get("storage"),
              where, "needs accessModes and resources.requests.storage")
        return
    _need(api == RAY_API, where, f"apiVersion must be {RAY_API}, got {api!r}")
    if kind == "RayCluster":
        validate_cluster_spec(spec, f"{where}.spec", annotations)
    elif kind == "RayJob":
        _validate_job_spec(spec, f"{where}.spec", annotations)
    elif kind == "RayCronJob":
        _unknown(spec, CRON_SPEC_KEYS, f"{where}.spec")
        schedule = spec.get("schedule")
        _need(isinstance(schedule, str) and _CRON.match(schedule.strip()), where,
              f"schedule must be a 5-field cron expression (e.g. \"*/5 * * * *\") or @hourly/@daily/..., got {schedule!r}")
        _need(isinstance(spec.get("suspend", False), bool), where, "suspend must be true or false")
        _validate_job_spec(spec.get("jobTemplate"), f"{where}.spec.jobTemplate", annotations)
    elif kind == "RayService":
        _unknown(spec, SERVICE_SPEC_KEYS, f"{where}.spec")
        raw = spec.get("serveConfigV2")
        _need(isinstance(raw, str), where, "serveConfigV2 must be a string (a `|` block)")
        validate_serve_config(yaml.safe_load(raw), f"{where}.spec.serveConfigV2", import_apps=import_apps)
        validate_cluster_spec(spec.get("rayClusterConfig"), f"{where}.spec.rayClusterConfig", annotations)
    else:
        raise YamlError(f"{where}: unknown kind {kind!r} (RayCluster, RayJob, RayCronJob, RayService, PersistentVolumeClaim)")


def _validate_job_spec(spec: Any, where: str, annotations: dict[str, Any] | None = None) -> None:
    """A RayJobSpec (RayJob.spec, RayCronJob.spec.jobTemplate)."""
    _need(isinstance(spec, dict), where, "must be a mapping (a RayJob spec)")
    _unknown(spec, JOB_SPEC_KEYS, where)
    _need(isinstance(spec.get("entrypoint"), str) and spec["entrypoint"].strip(), where, "needs an entrypoint")
    _need(("rayClusterSpec" in spec) != ("clusterSelector" in spec), where, "needs exactly one of rayClusterSpec, clusterSelector")
    if "rayClusterSpec" in spec:
        validate_cluster_spec(spec["rayClusterSpec"], f"{where}.rayClusterSpec", annotations)
    _need(spec.get("submissionMode", "K8sJobMode") in SUBMISSION_MODES, where, f"submissionMode must be one of {sorted(SUBMISSION_MODES)}")
    if "runtimeEnvYAML" in spec:
        _need(isinstance(yaml.safe_load(spec["runtimeEnvYAML"]), dict), where, "runtimeEnvYAML must be a YAML mapping in a string")


def _validate_kuberay_file(path: Path) -> None:
    for i, doc in enumerate(_load_all(path)):
        validate_kuberay_doc(doc, f"{path}[{i}]")


def ray_clusters(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The RayClusterSpec inside a RayCluster, RayJob (own cluster) or RayService manifest."""
    spec = doc.get("spec") or {}
    if doc.get("kind") == "RayCluster":
        yield spec
    elif doc.get("kind") == "RayJob" and "rayClusterSpec" in spec:
        yield spec["rayClusterSpec"]
    elif doc.get("kind") == "RayCronJob" and "rayClusterSpec" in (spec.get("jobTemplate") or {}):
        yield spec["jobTemplate"]["rayClusterSpec"]
    elif doc.get("kind") == "RayService":
        yield spec["rayClusterConfig"]


def ray_containers(cluster: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """(group name or 'head', group spec, container) for every container of a RayClusterSpec."""
    head = cluster["headGroupSpec"]
    for c in head["template"]["spec"]["containers"]:
        yield "head", head, c
    for g in cluster.get("workerGroupSpecs", []) or []:
        for c in g["template"]["spec"]["containers"]:
            yield g["groupName"], g, c


# --- the table of kinds ---------------------------------------------------------------------------
KINDS: list[tuple[str, str, Callable[[Path], None]]] = [
    ("rec-config", "configs/*.yaml", validate_rec_config),
    ("sweep", "tuning/configs/*.yaml", validate_sweep),
    ("bench", "bench/fewshot*.yaml", validate_bench),
    ("ray-launcher", "cluster/*-cluster.yaml", _validate_launcher_file),
    ("kuberay", "cluster/kuberay/*.yaml", _validate_kuberay_file),
    ("serve", "serve_apps/*.yaml", _validate_serve_file),
]


def kind_of(path: Path, root: Path = REPO) -> str | None:
    rel = path.resolve().relative_to(root).as_posix()
    for kind, pattern, _ in KINDS:
        if fnmatch.fnmatchcase(rel, pattern) and "/" not in rel[len(pattern.rsplit("/", 1)[0]) + 1:]:
            return kind
    return None


def validate_file(path: Path, root: Path = REPO) -> str:
    """Validate one YAML file with the validator of its kind; returns the kind."""
    kind = kind_of(path, root)
    if kind is None:
        rel = path.resolve().relative_to(root).as_posix()
        raise YamlError(f"{rel}: no validator for this YAML file: add its kind to KINDS in cluster/validate.py")
    dict((k, fn) for k, _, fn in KINDS)[kind](path)
    return kind


def main(argv: list[str] | None = None) -> int:
    paths = [Path(p).resolve() for p in (argv if argv is not None else sys.argv[1:])] or repo_yaml_files()
    failed = 0
    for p in paths:
        try:
            kind = validate_file(p)
            print(f"ok    {kind:<13} {p.relative_to(REPO)}")
        except YamlError as e:
            failed += 1
            print(f"FAIL  {e}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
