"""Serve tests use the session fixtures ``serving_world`` / ``world_copy`` (tests/fixtures/serving.py)."""
