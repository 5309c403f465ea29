"""The `rec` command line, run as users run it (a subprocess of the installed console script)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REC = [str(Path(sys.executable).with_name("rec"))]


def run(*args: str, cwd: Path | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(REC + list(args), capture_output=True, text=True, cwd=cwd, timeout=timeout)


def test_help_lists_subcommands():
    r = run("--help")
    assert r.returncode == 0
    for sub in ("pretrain", "evaluate", "data"):
        assert sub in r.stdout


@pytest.mark.parametrize("sub", [["pretrain"], ["evaluate"], ["data", "stats"], ["data", "generate"]])
def test_every_subcommand_has_help(sub):
    r = run(*sub, "--help")
    assert r.returncode == 0 and "key.sub=value" in r.stdout


@pytest.mark.parametrize(
    "args, expected",
    [
        (["data", "stats", "train.epocs=3"], "unknown key 'train.epocs'"),
        (["data", "stats", "--config", "missing.yaml"], "config file missing.yaml not found"),
        (["data", "stats", "data.sources=[{format: seqrec, path: /nonexistent}]"], "/nonexistent"),
        (["data", "stats", "data.sources=[{format: csv2}]"], "data.sources.0.format"),
        (["evaluate", "--checkpoint", "/nonexistent"], "does not exist"),
        (["pretrain", "model.d_model=30", "model.n_heads=4"], "divisible"),
        (["pretrain", "train.text_lora.layers=1"], "set model.use_text=true model.loss=infonce"),
    ],
)
def test_bad_input_one_line_nonzero(args, expected, tmp_path):
    r = run(*args, cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and expected in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_data_stats_and_generate(tmp_path):
    r = run("data", "stats", "data.synthetic.tenants=2", "data.synthetic.users_per_tenant=50")
    assert r.returncode == 0 and "books" in r.stdout
    r = run("data", "generate", "--out", str(tmp_path), "data.synthetic.tenants=2")
    assert r.returncode == 0
    assert (tmp_path / "books" / "interactions.csv").is_file() and (tmp_path / "books" / "items.csv").is_file()


@pytest.mark.slow
def test_pretrain_then_evaluate_end_to_end(tmp_path, text_cache):
    from tests.conftest import tiny_overrides

    r = run("pretrain", *tiny_overrides(tmp_path / "run", text_cache, **{"train.epochs": 2, "ray.num_cpus": 2}), cwd=tmp_path, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "ndcg@10" in r.stdout and "checkpoint:" in r.stdout
    ckpt = r.stdout.split("checkpoint:")[1].strip().split()[0]
    # zero-shot evaluation on tenants the checkpoint never saw (other synthetic seed -> other catalogs)
    r = run("evaluate", "--checkpoint", ckpt, "data.synthetic.seed=7", "data.synthetic.tenants=1",
            f"text.cache_dir={text_cache}", "--json", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert '"ndcg@10"' in r.stdout
