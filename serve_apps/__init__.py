"""Ray Serve applications. ``serve_apps.recommender:build_app`` is the multi-tenant recommender
(Ingress -> Ranker, see docs/serving.md); ``serve_apps/config.yaml`` deploys it."""
