"""The recommender Serve application: ``import_path: serve_apps.recommender:build_app``.

``build_app`` takes the typed ``args:`` of the Serve YAML (:class:`RecommenderArgs`), so one
``serve_apps/config.yaml`` works for ``serve run``, ``serve deploy`` and a KubeRay RayService::

    serve run serve_apps/config.yaml          # or: serve deploy serve_apps/config.yaml

Deployment options (replicas, autoscaling, fractional CPUs) live in the YAML's ``deployments:``;
the decorators hold defaults that fit a 2-core machine.
"""

# No `from __future__ import annotations`: Serve reads the builder's parameter annotation as a class
# to validate the YAML args into RecommenderArgs.
from ray.serve import Application

from serve_apps.api import Ingress
from serve_apps.args import RecommenderArgs
from serve_apps.ranker import Ranker

__all__ = ["build_app", "RecommenderArgs"]


def build_app(args: RecommenderArgs) -> Application:
    """Ingress -> Ranker, both reading ``args.artifact_root``.

    Serve validates the YAML ``args:`` dict into :class:`RecommenderArgs` from the type hint;
    a dict is accepted too (and validated here) for programmatic use.
    """
    args = RecommenderArgs.model_validate(args) if not isinstance(args, RecommenderArgs) else args
    plain = args.model_dump(mode="json")
    return Ingress.bind(plain, Ranker.bind(plain))
