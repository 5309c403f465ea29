"""Serve tests reuse the session's serving artifact root (tests/rec/serving/conftest.py)."""

from tests.rec.adaptation.conftest import new_tenant, small_backbone  # noqa: F401 - fixtures reused
from tests.rec.serving.conftest import serving_world  # noqa: F401 - fixtures reused
