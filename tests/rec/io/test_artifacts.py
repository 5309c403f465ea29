import pytest

from rec.io.artifacts import ArtifactError, artifact_writer, complete_versions, next_version_dir, read_manifest


def test_write_and_verify(tmp_path):
    dest = tmp_path / "art"
    with artifact_writer(dest, kind="thing", meta={"x": 1}) as d:
        (d / "a.bin").write_bytes(b"hello")
        (d / "sub").mkdir()
        (d / "sub" / "b.txt").write_text("x")
    m = read_manifest(dest, kind="thing")
    assert m["x"] == 1 and set(m["files"]) == {"a.bin", "sub/b.txt"}
    assert "torch" in m["versions"]
    assert [p.name for p in tmp_path.iterdir()] == ["art"]  # no temp folders left behind


def test_crash_mid_write_leaves_nothing(tmp_path):
    dest = tmp_path / "art"
    with pytest.raises(RuntimeError):
        with artifact_writer(dest, kind="thing") as d:
            (d / "a.bin").write_bytes(b"partial")
            raise RuntimeError("crash")
    assert not dest.exists() and list(tmp_path.iterdir()) == []


def test_replace_keeps_old_until_new_complete(tmp_path):
    dest = tmp_path / "art"
    with artifact_writer(dest, kind="thing") as d:
        (d / "v").write_text("1")
    with pytest.raises(RuntimeError):
        with artifact_writer(dest, kind="thing") as d:
            (d / "v").write_text("2")
            raise RuntimeError("crash")
    assert (dest / "v").read_text() == "1"
    with artifact_writer(dest, kind="thing") as d:
        (d / "v").write_text("2")
    assert (dest / "v").read_text() == "2" and read_manifest(dest)


def test_corruption_and_missing_detected(tmp_path):
    dest = tmp_path / "art"
    with artifact_writer(dest, kind="thing") as d:
        (d / "a.bin").write_bytes(b"hello")
    (dest / "a.bin").write_bytes(b"hellO")
    with pytest.raises(ArtifactError, match="checksum"):
        read_manifest(dest)
    with pytest.raises(ArtifactError, match="expected a 'other'"):
        read_manifest(dest, verify=False, kind="other")
    (dest / "manifest.json").unlink()
    with pytest.raises(ArtifactError, match="no manifest.json"):
        read_manifest(dest)
    (dest / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        read_manifest(dest)


def test_next_version(tmp_path):
    assert next_version_dir(tmp_path / "t").name == "v1"
    (tmp_path / "t" / "v1").mkdir(parents=True)
    (tmp_path / "t" / "v3").mkdir()
    assert next_version_dir(tmp_path / "t").name == "v4"


def test_complete_versions_skip_folders_without_a_manifest(tmp_path):
    assert complete_versions(tmp_path / "absent") == []
    for v in (1, 3, 10):
        with artifact_writer(tmp_path / f"v{v}", "thing", {}) as d:
            (d / "x").write_text("x")
    (tmp_path / "v4").mkdir()  # a crashed write: no manifest
    (tmp_path / "vx").mkdir()
    (tmp_path / "notes.txt").write_text("")
    assert complete_versions(tmp_path) == [1, 3, 10]
