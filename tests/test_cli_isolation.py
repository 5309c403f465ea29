"""Property test (hypothesis): no tenant id or version given to the CLI touches a file outside that
tenant's own folders of the artifact root, and bad ones end with exit 2 and one line, never a
traceback (issue 19, the CLI side of tests/serve_apps/inproc_isolation.py).

Every file opened, created, renamed or removed while a command runs is recorded with a Python
audit hook.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rec.cli import main

_TOUCHED: list[str] | None = None
_EVENTS = {"open": 1, "os.rename": 2, "os.replace": 2, "os.remove": 1, "os.rmdir": 1, "os.mkdir": 1, "shutil.rmtree": 1,
           "os.symlink": 2, "os.link": 2, "os.truncate": 1, "os.chmod": 1}


def _audit(event: str, args: tuple) -> None:
    n = _EVENTS.get(event)
    if _TOUCHED is None or n is None:
        return
    for a in args[:n]:
        if isinstance(a, (str, bytes, os.PathLike)):
            _TOUCHED.append(os.fsdecode(a))


sys.addaudithook(_audit)  # hooks cannot be removed; it records only while _TOUCHED is a list

tenant_like = st.one_of(
    st.text(max_size=60),
    st.sampled_from(["..", ".", "../books", "books/../courses", "podcasts/..", "a\n", "%2e%2e", "/etc/passwd", "podcasts/",
                     "books\\..\\courses", "-rf", "podcasts", "books", "courses"]),
)
version_like = st.one_of(st.none(), st.integers(min_value=-3, max_value=10**12))


@pytest.fixture(scope="module")
def root(serving_world, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("cli-iso") / "root"
    shutil.copytree(serving_world.root, dest)
    return dest.resolve()


def _allowed(root: Path, tenant: str, path: str) -> bool:
    p = Path(os.path.normpath(os.path.join(os.getcwd(), path)))
    if not p.is_relative_to(root):
        return True  # not the artifact root (imports, /proc ...): not a tenant's file
    rel = p.relative_to(root).parts
    return rel == () or rel[:1] in (("model",), ("tenants",), ("events",)) and len(rel) == 1 or \
        rel[:2] in (("tenants", tenant), ("events", tenant))


def _run(argv: list[str], capsys) -> tuple[int, list[str], str]:  # noqa: ANN001
    global _TOUCHED
    _TOUCHED = []
    try:
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse refusing an argument value
            rc = e.code if isinstance(e.code, int) else 2
        touched = list(_TOUCHED)
    finally:
        _TOUCHED = None
    return rc, touched, capsys.readouterr().err


@given(tenant=tenant_like, version=version_like, command=st.sampled_from(["rollback", "apikey", "apikey-revoke", "ope"]))
@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_cli_command_touches_another_tenants_files(root, capsys, tenant, version, command):
    argv = {"rollback": ["rollback", "--root", str(root), "--tenant", tenant] + ([] if version is None else ["--to", str(version)]),
            "apikey": ["apikey", "--root", str(root), "--tenant", tenant],
            "apikey-revoke": ["apikey", "--root", str(root), "--tenant", tenant, "--revoke"],
            "ope": ["ope", "--root", str(root), "--tenant", tenant, "--target", "epsilon:0.1"]}[command]
    if tenant.startswith("-"):
        argv[argv.index("--tenant")] = f"--tenant={tenant}"
        argv.remove(tenant)
    rc, touched, err = _run(argv, capsys)
    assert rc in (0, 2), (argv, rc, err)
    if rc == 2:
        lines = [ln for ln in err.strip().splitlines() if ln.strip()]
        assert lines and "Traceback" not in err, (argv, err)
        assert len(lines) == 1 or lines[0].startswith("usage:"), (argv, err)  # argparse prints usage + one error line
    bad = [p for p in touched if not _allowed(root, tenant, p)]
    assert not bad, (argv, bad)


def test_the_audit_hook_sees_a_real_commands_files(root, capsys):
    """The property above would pass vacuously if nothing were recorded: a real tenant's command is."""
    rc, touched, err = _run(["apikey", "--root", str(root), "--tenant", "books"], capsys)
    assert rc == 0, err
    inside = [p for p in touched if Path(os.path.normpath(p)).is_relative_to(root / "tenants" / "books")]
    assert inside, touched
    rc, _, err = _run(["ope", "--root", str(root), "--tenant", "books", "--target", "greedy"], capsys)
    assert rc in (0, 2) and "Traceback" not in err
