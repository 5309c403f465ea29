"""Fixtures: ``small_backbone`` and ``new_tenant`` live in tests/fixtures/backbone.py (shared)."""
