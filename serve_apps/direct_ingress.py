"""Where HTTP clients reach a Serve application: the Serve proxy, or each ingress replica's own port.

By default every request goes client -> Serve's HTTP proxy -> (Serve transport) -> replica. On this
model that path is the whole cost of a request (docs/serving.md: ~6 ms of proxy + replica CPU
against a 0.13 ms model call). Ray Serve's throughput-optimized mode removes the proxy hop: with
``RAY_SERVE_THROUGHPUT_OPTIMIZED=1`` in the environment of every Ray node (set before ``ray start``
or ``ray.init``; it is read when Serve's processes start, so it cannot be set per application)
each replica of an application's *ingress* deployment serves HTTP itself on a port Serve allocates
(30000-31000 by default), and Serve runs user code on the replica's own event loop. The proxy
keeps listening on its port, so clients that only know it keep working, at the old cost.

On a cluster, Ray's HAProxy integration (``RAY_SERVE_ENABLE_HA_PROXY=1``, needs the ``haproxy``
binary) puts one load balancer in front of those replica ports. Without it, clients (or your own
load balancer) ask the Serve controller for the replica ports: :func:`http_targets` does that.
"""

from __future__ import annotations

__all__ = ["DIRECT_INGRESS_ENV", "HAPROXY_INGRESS_ENV", "http_targets"]

# The environment that turns the throughput-optimized mode on (Ray reads it when Serve's processes
# start). Of that mode's settings one is put back: deployment handles keep their router on its own
# event loop, so synchronous callers (drivers, jobs, tests: ``handle.method.remote().result()``)
# still work; the mode would otherwise require every handle call to come from a running loop.
DIRECT_INGRESS_ENV = {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1", "RAY_SERVE_RUN_ROUTER_IN_SEPARATE_LOOP": "1"}
# The same with Ray's HAProxy in place of the Python proxy on the Serve HTTP port (8000): one address
# for clients, balanced over every ingress replica's own port, so autoscaled replicas share the load.
HAPROXY_INGRESS_ENV = {**DIRECT_INGRESS_ENV, "RAY_SERVE_ENABLE_HA_PROXY": "1"}


def http_targets(app_name: str, host: str | None = None) -> list[str]:
    """Base URLs (``http://ip:port/<route prefix>``) at which ``app_name`` answers HTTP now.

    With direct ingress these are the running ingress replicas' own servers; otherwise (or while
    the app has no running replica yet) Serve's proxies. ``host`` replaces every target's IP
    (e.g. ``127.0.0.1`` when Serve binds HTTP to localhost only). Needs a connected Ray with Serve
    running; raises ``ValueError`` for an application Serve does not know.
    """
    import ray
    # A client-side helper (replicas never import this module). Ray 2.60 has no public call that
    # returns replica ports without the dashboard: the Serve REST API (GET /api/serve/applications/)
    # carries the same ``target_groups`` but needs the dashboard, which local runs and tests omit.
    # So this asks the Serve controller directly, as that REST endpoint does.
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    app = ray.get(controller.get_serve_instance_details.remote()).get("applications", {}).get(app_name)
    if app is None:
        raise ValueError(f"Serve has no application {app_name!r}: deploy it first (serve run / serve deploy)")
    # Proxy targets carry the route prefix "/" (a proxy routes every app): the app's own prefix is
    # what a client appends either way.
    route = app.get("route_prefix") or "/"
    prefix = "" if route == "/" else route.rstrip("/")
    urls = []
    for group in ray.get(controller.get_target_groups.remote(app_name)):
        if group.protocol.value != "HTTP" or (group.app_name and group.app_name != app_name):
            continue
        urls += [f"http://{host or t.ip}:{t.port}{prefix}" for t in group.targets]
    return urls
