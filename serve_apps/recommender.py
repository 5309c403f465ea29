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

__all__ = ["build_app", "RecommenderArgs", "SINGLE_HOP"]

SINGLE_HOP = "Recommender"  # the one deployment of the default layout


def build_app(args: RecommenderArgs) -> Application:
    """The recommender, reading ``args.artifact_root``. Two layouts:

    - ``multiplex: false`` (default): ONE deployment, ``Recommender``: the FastAPI ingress that
      also holds the ORT session and batches across tenants, so a request is proxy -> replica
      (no Serve hop; the hop cost ~2x throughput on 2 cores, see docs/serving.md);
    - ``multiplex: true``: ``Ingress`` -> ``Ranker``, the Ingress tagging each call with the
      tenant id as Serve's multiplexed model id, so tenants are sharded over Ranker replicas.

    The YAML's ``deployments:`` must name the deployments of the chosen layout
    (``config.yaml``: Recommender; ``config.sharded.yaml``: Ingress and Ranker).

    Serve validates the YAML ``args:`` dict into :class:`RecommenderArgs` from the type hint;
    a dict is accepted too (and validated here) for programmatic use.
    """
    args = RecommenderArgs.model_validate(args) if not isinstance(args, RecommenderArgs) else args
    plain = args.model_dump(mode="json")
    if args.multiplex:
        return Ingress.bind(plain, Ranker.bind(plain))
    return Ingress.options(name=SINGLE_HOP, ray_actor_options={"num_cpus": 0.5}).bind(plain)
