"""bench/gpu_check's CPU fallback: the worker's steps under plain torch.distributed (gloo, world
size 1, no Ray) train, rank, and write a checkpoint that reads back equal, on a real dataset."""

from __future__ import annotations

from pathlib import Path

from bench.gpu_check import main


def test_gloo_fallback_trains_and_checkpoints(datasets_dir: Path, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    rc = main(["--dataset", "ml-100k", "--max-users", "300", "--epochs", "2", "--data-dir", str(datasets_dir),
               "--out", str(tmp_path), "model.d_model=32"])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert '"backend": "gloo"' in out and '"checkpoint_round_trip": true' in out
    assert (tmp_path / "state" / "model.safetensors").is_file()
