"""Keep the RayService's ``serveConfigV2`` in sync with ``serve_apps/config.yaml``.

``serve_apps/config.yaml`` is the one Serve config of the project (``serve deploy`` on a launcher
cluster, ``serve run`` locally). The RayService manifest embeds it as a string, with the few
changes a Kubernetes pod needs (``CLUSTER_OVERRIDES``: artifacts on the shared volume, the HTTP
proxy listening on every interface so the Kubernetes Service reaches it). This script writes that
block; ``--check`` only compares (tests/cluster/test_kuberay.py runs it, so a change to the Serve
config that is not rendered here fails the tests).

Usage (from the repository root)::

    python cluster/kuberay/render.py           # rewrite serveConfigV2 in cluster/kuberay/rayservice.yaml
    python cluster/kuberay/render.py --check   # exit 1 and say what to run when it is out of date
    python cluster/kuberay/render.py --serve-config serve-cluster.yaml
        # the same cluster config as a file, for `serve deploy` on a `ray up` cluster (docs/cluster.md)
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
SERVE_CONFIG = REPO / "serve_apps" / "config.yaml"
RAYSERVICE = REPO / "cluster" / "kuberay" / "rayservice.yaml"

# Dotted keys of the Serve config (list items by index, as in rec.config.apply_overrides) -> the
# value a pod needs. ``must_exist``: the key has to be in serve_apps/config.yaml already, so that a
# renamed argument fails loudly here instead of adding an argument the app does not take.
CLUSTER_OVERRIDES: list[tuple[str, Any, bool]] = [
    ("applications.0.args.artifact_root", "/mnt/shared/serving", True),
    ("http_options.host", "0.0.0.0", False),
]

HEADER = "# Rendered by cluster/kuberay/render.py from serve_apps/config.yaml: edit that file, then re-run.\n"
_BLOCK = re.compile(r"^(?P<indent>[ ]*)serveConfigV2: \|[-+]?\n(?P<body>(?:(?:(?P=indent)[ ]+[^\n]*)?\n)*)", re.M)


class RenderError(RuntimeError):
    """The Serve config or the manifest cannot be rendered; the message says what to fix."""


def _get(tree: Any, parts: list[str]) -> tuple[bool, Any]:
    node = tree
    for p in parts:
        if isinstance(node, list) and p.isdigit() and int(p) < len(node):
            node = node[int(p)]
        elif isinstance(node, dict) and p in node:
            node = node[p]
        else:
            return False, None
    return True, node


def cluster_serve_config(source: str) -> dict[str, Any]:
    """The Serve config a RayService runs: ``source`` (YAML text) with ``CLUSTER_OVERRIDES`` applied."""
    tree = yaml.safe_load(source)
    if not isinstance(tree, dict):
        raise RenderError(f"{SERVE_CONFIG}: top level must be a mapping (a Serve deploy config)")
    for key, value, must_exist in CLUSTER_OVERRIDES:
        parts = key.split(".")
        found, _ = _get(tree, parts)
        if must_exist and not found:
            raise RenderError(
                f"{SERVE_CONFIG} has no {key}: update CLUSTER_OVERRIDES in cluster/kuberay/render.py "
                "to the Serve app's current argument names"
            )
        parent_found, parent = _get(tree, parts[:-1])
        if not parent_found:
            parent = tree
            for p in parts[:-1]:
                parent = parent.setdefault(p, {})
        if not isinstance(parent, dict):
            raise RenderError(f"cannot set {key} in {SERVE_CONFIG}: {'.'.join(parts[:-1])} is not a mapping")
        parent[parts[-1]] = value
    return tree


def render_block(source: str) -> str:
    """The text of ``serveConfigV2`` (unindented) for a Serve config's YAML text."""
    return HEADER + yaml.safe_dump(cluster_serve_config(source), sort_keys=False, default_flow_style=False)


def render_manifest(manifest: str, source: str) -> str:
    """``manifest`` (rayservice.yaml text) with its ``serveConfigV2: |`` block replaced."""
    matches = list(_BLOCK.finditer(manifest))
    if len(matches) != 1:
        raise RenderError(f"{RAYSERVICE}: expected exactly one `serveConfigV2: |` block, found {len(matches)}")
    m = matches[0]
    pad = m.group("indent") + "  "
    body = "".join(pad + line if line.strip() else "\n" for line in render_block(source).splitlines(keepends=True))
    return manifest[: m.start()] + f"{m.group('indent')}serveConfigV2: |\n" + body + manifest[m.end():]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="only compare; exit 1 when rayservice.yaml is out of date")
    ap.add_argument("--serve-config", metavar="OUT", type=Path,
                    help="instead, write the cluster Serve config to OUT (for `serve deploy` on a launcher cluster)")
    args = ap.parse_args(argv)
    if not SERVE_CONFIG.is_file():
        print(f"error: {SERVE_CONFIG} not found: it is the source of the RayService's serveConfigV2", file=sys.stderr)
        return 2
    if args.serve_config:
        try:
            text = render_block(SERVE_CONFIG.read_text())
        except (RenderError, yaml.YAMLError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        args.serve_config.write_text(text)
        print(f"wrote {args.serve_config}")
        return 0
    try:
        current = RAYSERVICE.read_text()
        rendered = render_manifest(current, SERVE_CONFIG.read_text())
    except (RenderError, yaml.YAMLError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if rendered == current:
        return 0
    if args.check:
        print(f"error: {RAYSERVICE.relative_to(REPO)} is out of date with serve_apps/config.yaml: "
              "run `python cluster/kuberay/render.py`", file=sys.stderr)
        return 1
    tmp = RAYSERVICE.with_suffix(".yaml.tmp")
    tmp.write_text(rendered)
    tmp.replace(RAYSERVICE)
    print(f"wrote serveConfigV2 of {RAYSERVICE.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
