"""Fixtures: ``serving_world`` and ``world_copy`` live in tests/fixtures/serving.py (shared)."""
