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


def _writer(tag: str, versions: list[int]):
    def write(folder, version):
        versions.append(version)
        with artifact_writer(folder, "thing", {"tag": tag, "version": f"v{version}"}) as d:
            (d / "x").write_text(tag)
    return write


def test_claim_version_takes_the_next_free_number_and_writes_it_into_the_artifact(tmp_path):
    from rec.io.artifacts import claim_version

    seen: list[int] = []
    assert claim_version(tmp_path / "t", _writer("a", seen)).name == "v1"
    (tmp_path / "t" / "v5").mkdir()  # an in-flight (or crashed) write: its number is never reused
    path = claim_version(tmp_path / "t", _writer("b", seen))
    assert path.name == "v6" and read_manifest(path)["version"] == "v6" and seen == [1, 6]
    assert sorted(p.name for p in (tmp_path / "t").iterdir()) == ["v1", "v5", "v6"]  # no staging left behind
    with pytest.raises(ArtifactError, match="no manifest.json"):
        claim_version(tmp_path / "t", lambda folder, v: folder.mkdir())


def test_concurrent_claims_get_distinct_versions(tmp_path):
    import threading

    from rec.io.artifacts import claim_version

    barrier, paths = threading.Barrier(6), []

    def claim(i: int) -> None:
        def write(folder, version):
            barrier.wait(timeout=10) if version == 1 else None  # every writer first races for v1
            _writer(str(i), [])(folder, version)
        paths.append(claim_version(tmp_path / "t", write))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(p.name for p in paths) == [f"v{i}" for i in range(1, 7)]
    assert all(read_manifest(p)["version"] == p.name for p in paths)  # the manifest names the claimed number


def test_an_unversioned_artifact_is_written_once_and_moved_on_to_the_next_number(tmp_path):
    from rec.io.artifacts import claim_version

    calls: list[int] = []

    def write(folder, version):
        calls.append(version)
        _writer("rival", [])(tmp_path / "t" / f"v{version}", version)  # another publisher takes v<N> meanwhile
        _writer("ours", [])(folder, version)

    path = claim_version(tmp_path / "t", write, versioned=False)
    assert calls == [1] and path.name == "v2" and read_manifest(path)["tag"] == "ours"
    assert read_manifest(tmp_path / "t" / "v1")["tag"] == "rival"
