"""`ray job submit --working-dir .` from the repository root uploads the project, not the venv.

Ray zips the working directory (honouring .gitignore and .rayignore) and refuses packages over its
gRPC limit (512 MiB); each job re-uploads it when it changed. This builds that zip with Ray's own
packaging code and checks what would go to the cluster.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from ray._private.runtime_env.packaging import create_package

from tests.conftest import REPO

BUDGET_MIB = 25  # ~1-2 MiB today; far below Ray's 512 MiB limit, so growth is noticed early


def test_working_dir_package_is_the_project_without_ignored_files(tmp_path: Path):
    pkg = tmp_path / "working_dir.zip"
    create_package(str(REPO), pkg, include_gitignore=True)
    names = zipfile.ZipFile(pkg).namelist()
    tops = {n.split("/")[0] for n in names}
    for needed in ("rec", "tuning", "serve_apps", "configs", "pyproject.toml"):
        assert needed in tops, f"{needed} missing from the job's working dir"
    for ignored in (".venv", "runs", ".cache", "outputs", ".git", ".hypothesis"):
        assert ignored not in tops, f"{ignored}/ would be uploaded with every job"
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    size_mib = pkg.stat().st_size / 2**20
    assert size_mib < BUDGET_MIB, f"working dir package is {size_mib:.1f} MiB: add big folders to .gitignore/.rayignore"
