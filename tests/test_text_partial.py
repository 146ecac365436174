"""A text tower trained in its top layers on cached hidden states of its frozen lower layers.

The cached path (lower layers once, in eval mode, stored per caption; top layers every step)
must give what the whole model gives, for the default MiniLM and for batches of captions of
different lengths; only the top layers learn; a model trained this way checkpoints, reloads and
embeds new texts with the whole model, matching the cached path.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from clasp_pl.api import embed_texts, load_model
from clasp_pl.data.datamodule import CrystalTextDataModule
from clasp_pl.models.cgcnn import CGCNNConfig
from clasp_pl.models.clasp import CLaSPModule, HeadsConfig, OptimConfig
from clasp_pl.text.config import TextConfig
from clasp_pl.text.layers import transformer_layers
from clasp_pl.text.tower import TextTower
from helpers.data import TINY_GRAPH, data_module
from helpers.lightning import quiet_trainer

TOP2 = TextConfig(model="minilm", freeze=False, trainable_layers=2)


def small_module(text: TextConfig) -> CLaSPModule:
    return CLaSPModule(
        text=text,
        crystal=CGCNNConfig(atom_fea_len=16, n_conv=2, h_fea_len=32),
        graph=TINY_GRAPH,
        heads=HeadsConfig(embed_dim=16),
        optim=OptimConfig(lr=1e-3, text_lr=1e-3, warmup_steps=1),
        text_max_length=32,
    )


@pytest.fixture(scope="module")
def top2_data(records_file, tmp_path_factory) -> CrystalTextDataModule:
    return data_module(records_file, tmp_path_factory.mktemp("top2"), TOP2)


def test_minilm_cached_lower_layers_then_top_layers_equal_the_whole_model(top2_data):
    batch = next(iter(top2_data.val_dataloader()))
    lengths = batch["attention_mask"].sum(1)
    assert lengths.min() < lengths.max()  # padding in the batch
    assert batch["text_hidden"].shape == (*batch["input_ids"].shape, 384)
    assert (batch["text_hidden"][batch["attention_mask"] == 0] == 0).all()
    tower = TextTower(TOP2).eval()
    assert tower.frozen_layers == 4
    with torch.no_grad():
        whole = tower(batch["input_ids"], batch["attention_mask"])
        cached = tower.from_lower_hidden(batch["text_hidden"], batch["attention_mask"])
        live = tower.from_lower_hidden(
            tower.lower_hidden(batch["input_ids"], batch["attention_mask"]),
            batch["attention_mask"],
        )
    torch.testing.assert_close(cached, whole, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(live, whole, atol=1e-5, rtol=1e-5)
    key = top2_data.text_hidden_key
    assert key["frozen_layers"] == 4 and key["lower_weights"] == tower.lower_fingerprint()
    assert key["max_length"] == 32 and key["caption_fields"] == ["title"]


def test_each_caption_gets_the_same_states_alone_and_in_a_padded_batch():
    """A short caption's states do not depend on the longer captions padded beside it."""
    tower = TextTower(TOP2).eval()
    ids = torch.tensor([[101, 8912, 3252, 1997, 15540, 102], [101, 15540, 102, 0, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        together = tower.from_lower_hidden(tower.lower_hidden(ids, mask), mask)
        alone = tower(ids[1:, :3], mask[1:, :3])
    torch.testing.assert_close(together[1:], alone, atol=1e-5, rtol=1e-5)


def test_only_the_top_layers_learn_and_the_lower_part_never_drops_out(top2_data):
    module = small_module(TOP2).train()
    tower = module.text_tower
    layers = transformer_layers(tower.encoder)
    assert not tower.encoder.embeddings.training and not layers[3].training
    assert layers[4].training and layers[5].training
    batch = next(iter(top2_data.train_dataloader()))
    crystal, text = module(batch)
    module.loss_fn(crystal, text, batch["group_ids"]).backward()
    assert all(p.grad is None for p in tower.encoder.embeddings.parameters())
    for index, layer in enumerate(layers):
        grads = [p.grad for p in layer.parameters()]
        if index < 4:
            assert all(g is None for g in grads), index
        else:
            assert all(g is not None and g.abs().sum() > 0 for g in grads), index


def test_a_top2_model_checkpoints_and_embeds_new_texts_like_the_cached_path(top2_data, tmp_path):
    torch.manual_seed(0)
    module = small_module(TOP2)
    pristine = TextTower(TOP2)
    trainer = quiet_trainer(max_steps=3)
    trainer.fit(module, top2_data)
    trained = module.text_tower.encoder.state_dict()
    for name, tensor in pristine.encoder.state_dict().items():
        top = name.startswith(("encoder.layer.4.", "encoder.layer.5."))
        assert torch.equal(trained[name], tensor) != top, name  # only the top 2 layers moved
    trainer.save_checkpoint(tmp_path / "top2.ckpt")
    saved = torch.load(tmp_path / "top2.ckpt", weights_only=True)
    stored = [k for k in saved["state_dict"] if k.startswith("text_tower.")]
    assert stored and all(
        k.startswith(("text_tower.encoder.encoder.layer.4.", "text_tower.encoder.encoder.layer.5."))
        for k in stored
    )
    assert saved["text_tower_weights"]["frozen_layers"] == 4  # the pristine lower part: left out
    restored = load_model(tmp_path / "top2.ckpt")
    for name, tensor in module.state_dict().items():
        assert torch.equal(tensor, restored.state_dict()[name]), name
    dataset = top2_data.datasets["val"]
    record_index = dataset.graphs.field("record_index")[dataset.item_ids]
    lines = top2_data.record_lines().lines
    titles = [json.loads(lines[i])["title"] for i in record_index]
    new = embed_texts(restored, titles)  # tokenized afresh, the whole text model
    batch = next(iter(top2_data.val_dataloader()))
    with torch.no_grad():
        cached = restored(batch)[1]
    torch.testing.assert_close(new[: len(cached)], cached, atol=1e-5, rtol=1e-5)


def test_a_cache_cut_at_another_layer_is_refused(top2_data):
    module = small_module(TextConfig(model="minilm", freeze=False, trainable_layers=1))
    with pytest.raises(ValueError, match="cache_text_features false"):
        module._check_text_hidden_cache(top2_data.text_hidden_key)
    small_module(TOP2)._check_text_hidden_cache(top2_data.text_hidden_key)  # the same: fine


def test_float16_cache_is_half_the_size_and_close(records_file, tmp_path, top2_data):
    half = data_module(records_file, tmp_path, TOP2, text_hidden_dtype="float16")
    full_store = top2_data.datasets["val"].per_record["text_hidden"]
    half_store = half.datasets["val"].per_record["text_hidden"]
    assert half_store[0]["features"].dtype == np.float16
    assert half_store[0]["features"].nbytes * 2 == full_store[0]["features"].nbytes
    tower = TextTower(TOP2).eval()
    a, b = next(iter(top2_data.val_dataloader())), next(iter(half.val_dataloader()))
    with torch.no_grad():
        exact = tower.from_lower_hidden(a["text_hidden"], a["attention_mask"])
        rounded = tower.from_lower_hidden(b["text_hidden"], b["attention_mask"])
    cosine = torch.nn.functional.cosine_similarity(exact, rounded)
    assert cosine.min() > 0.9999
