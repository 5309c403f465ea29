"""What a serving replica imports: the serving path must not load the training stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
# torch/peft/transformers and Ray Train cost a replica ~150 MB and seconds of start time, and
# rec.training/rec.export hold code a replica never runs (docs/serving.md, "What a replica imports").
FORBIDDEN = ("torch", "ray.train", "peft", "transformers", "rec.training", "rec.export", "rec.adaptation", "rec.models")


def _imported_after(statement: str) -> list[str]:
    probe = f"import json, sys\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": str(REPO), "RAY_USAGE_STATS_ENABLED": "0"}
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("statement", ["import serve_apps.recommender", "import rec.serving"])
def test_the_serving_path_does_not_import_the_training_stack(statement):
    modules = set(_imported_after(statement))
    loaded = sorted(m for m in FORBIDDEN if m in modules)
    assert not loaded, f"`{statement}` loaded {loaded} in a fresh interpreter"


def test_the_probe_sees_a_training_import():
    """The check above can fail: the same probe reports torch after importing the export side."""
    assert "torch" in _imported_after("import rec.export.onnx_export")
