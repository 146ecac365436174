"""The CLaSP LightningModule and the data module on real structures, with a tiny config."""

from __future__ import annotations

import sys
import types
import zipfile

import lightning as L
import numpy as np
import pytest
import torch

from clasp_pl.data.graphs import GraphConfig
from clasp_pl.models.cgcnn import CGCNNConfig
from clasp_pl.models.clasp import CLaSPModule, HeadsConfig, LossConfig, OptimConfig
from clasp_pl.text.config import TextConfig
from clasp_pl.text.tower import TextTower
from helpers.data import TINY_GRAPH, data_module
from helpers.lightning import quiet_trainer, save_lightning_checkpoint


def tiny_module(text: TextConfig, init_from: str | None = None, **heads) -> CLaSPModule:
    return CLaSPModule(
        text=text,
        crystal=CGCNNConfig(atom_fea_len=16, n_conv=2, h_fea_len=32),
        graph=TINY_GRAPH,
        heads=HeadsConfig(embed_dim=16, **heads),
        optim=OptimConfig(warmup_steps=2),
        init_from=init_from,
    )


def test_collated_batch_is_consistent(records_file, tmp_path):
    dm = data_module(records_file, tmp_path, TextConfig(model="tiny-random"))
    batch = next(iter(dm.train_dataloader()))
    n_sites = batch["crystal_index"].shape[0]
    assert batch["site_species_z"].shape == batch["site_occupancy"].shape
    assert batch["species_site"].shape == batch["site_species_z"].shape
    # every site has at least one species entry, and entries are grouped by site
    assert torch.equal(batch["species_site"].unique(), torch.arange(n_sites))
    assert (batch["species_site"].diff() >= 0).all()
    assert batch["num_crystals"] == 16 == batch["input_ids"].shape[0]
    # every edge stays inside its own crystal
    src_crystal = batch["crystal_index"][batch["edge_src"]]
    assert torch.equal(src_crystal, batch["crystal_index"][batch["edge_dst"]])
    assert batch["attention_mask"].sum(1).min() > 2
    assert (batch["input_ids"][batch["attention_mask"] == 0] == 0).all()


def test_split_keeps_papers_apart(records_file, tmp_path):
    dm = data_module(records_file, tmp_path, TextConfig(model="tiny-random"))
    groups = {
        name: set(dm.datasets[name].graphs.field("group_id")[dm.datasets[name].item_ids].tolist())
        for name in ("train", "val", "test")
    }
    assert groups["train"] and groups["val"] and groups["test"]
    assert not (groups["train"] & groups["val"]) and not (groups["train"] & groups["test"])
    assert not (groups["val"] & groups["test"])


def test_cached_frozen_text_features_equal_live_eval_forward(records_file, tmp_path):
    text = TextConfig(model="tiny-random", freeze=True)
    dm = data_module(records_file, tmp_path, text)
    batch = next(iter(dm.val_dataloader()))
    tower = TextTower(text).eval()
    with torch.no_grad():
        live = tower(batch["input_ids"], batch["attention_mask"])
    torch.testing.assert_close(batch["text_features"], live, atol=1e-5, rtol=1e-5)


def test_changed_max_length_rebuilds_text_caches(records_file, tmp_path):
    text = TextConfig(model="tiny-random", freeze=True)
    data_module(records_file, tmp_path, text)
    short = data_module(records_file, tmp_path, text, cache_text_features=True)
    short.max_length = 4
    short.datasets = {}
    short.setup("fit")
    batch = next(iter(short.val_dataloader()))
    assert batch["input_ids"].shape[1] <= 4
    manifest = (short.cache_root / "text_features" / "manifest.json").read_text()
    assert '"max_length": 4' in manifest


def test_frozen_text_tower_gets_no_gradient_and_stays_in_eval_mode(records_file, tmp_path):
    module = tiny_module(TextConfig(model="tiny-random", freeze=True))
    dm = data_module(records_file, tmp_path, TextConfig(model="tiny-random"))
    batch = next(iter(dm.train_dataloader()))
    module.train()
    assert not module.text_tower.encoder.training
    crystal, text = module(batch)
    module.loss_fn(crystal, text, batch["group_ids"]).backward()
    assert all(p.grad is None for p in module.text_tower.parameters())
    assert all(p.grad is not None for p in module.crystal_tower.parameters() if p.requires_grad)
    assert module.text_head.mlp[0].weight.grad is not None


def test_partially_frozen_text_tower():
    module = tiny_module(TextConfig(model="tiny-random", trainable_layers=1))
    layers = module.text_tower.encoder.encoder.layer
    assert not any(p.requires_grad for p in layers[0].parameters())
    assert all(p.requires_grad for p in layers[1].parameters())
    assert not any(p.requires_grad for p in module.text_tower.encoder.embeddings.parameters())


def test_training_lowers_loss_clamps_scale_and_checkpoints(records_file, tmp_path):
    L.seed_everything(0)
    module = tiny_module(TextConfig(model="tiny-random", freeze=True))
    dm = data_module(records_file, tmp_path, TextConfig(model="tiny-random", freeze=True))
    with torch.no_grad():
        module.loss_fn.logit_scale.fill_(10.0)  # above log(100): must be clamped after a step
    trainer = L.Trainer(
        max_epochs=6,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    first = None
    losses = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    trainer.callbacks.append(Record())
    trainer.fit(module, dm)
    first = np.mean(losses[:4])
    assert module.loss_fn.logit_scale.item() <= np.log(100) + 1e-6
    assert np.mean(losses[-4:]) < first
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    restored = CLaSPModule.load_from_checkpoint(tmp_path / "m.ckpt")
    for (name, a), b in zip(
        module.state_dict().items(), restored.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_unknown_text_model_offline_gives_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError, match="huggingface-cli download"):
        TextTower(TextConfig(model="allenai/scibert_scivocab_uncased"))


def test_default_text_model_pools_by_its_own_convention():
    assert TextConfig(model="minilm").resolved_pooling == "mean"
    assert GraphConfig().radius == 8.0


def test_init_from_copies_towers_and_heads_but_not_the_loss(tmp_path):
    stage1 = tiny_module(TextConfig(model="tiny-random", freeze=True))
    torch.save({"state_dict": stage1.state_dict()}, tmp_path / "stage1.ckpt")
    stage2 = CLaSPModule(
        text=TextConfig(model="tiny-random", freeze=True),
        crystal=CGCNNConfig(atom_fea_len=16, n_conv=2, h_fea_len=32),
        graph=TINY_GRAPH,
        heads=HeadsConfig(embed_dim=16),
        loss=LossConfig(kind="cosface", scale=10.0, margin=0.1),
        init_from=str(tmp_path / "stage1.ckpt"),
    )
    for name, tensor in stage1.state_dict().items():
        if not name.startswith("loss_fn."):
            assert torch.equal(tensor, stage2.state_dict()[name]), name
    assert stage2.loss_fn.logit_scale_value == pytest.approx(10.0)


def test_a_stage2_checkpoint_reloads_without_the_stage1_file(records_file, tmp_path):
    """init_from is read at construction only: the stage-2 checkpoint records where it started
    but restores (weights equal) after the stage-1 file is gone."""
    text = TextConfig(model="tiny-random", freeze=True)
    stage1 = tmp_path / "stage1.ckpt"
    torch.save({"state_dict": tiny_module(text).state_dict()}, stage1)
    stage2 = tiny_module(text, init_from=str(stage1))
    assert "init_from" not in stage2.hparams
    trainer = quiet_trainer(max_steps=2)
    trainer.fit(stage2, data_module(records_file, tmp_path, text))  # cached features: allowed
    trainer.save_checkpoint(tmp_path / "stage2.ckpt")
    stage1.unlink()
    restored = CLaSPModule.load_from_checkpoint(tmp_path / "stage2.ckpt")
    for name, tensor in stage2.state_dict().items():
        assert torch.equal(tensor, restored.state_dict()[name]), name
    saved = torch.load(tmp_path / "stage2.ckpt", weights_only=True)
    assert saved["initialised_from"] == str(stage1)


def test_checkpoints_leave_out_a_frozen_pretrained_text_tower(records_file, tmp_path):
    """The frozen text tower's weights are the named model's: the checkpoint records their
    fingerprint instead, loading restores them, and other weights are refused."""
    text = TextConfig(model="tiny-random", freeze=True)
    module = tiny_module(text)
    trainer = quiet_trainer(max_steps=1)
    trainer.fit(module, data_module(records_file, tmp_path, text))
    trainer.save_checkpoint(tmp_path / "slim.ckpt")
    saved = torch.load(tmp_path / "slim.ckpt", weights_only=True)
    assert not [k for k in saved["state_dict"] if k.startswith("text_tower.")]
    assert saved["text_tower_weights"]["model"] == "tiny-random"
    for restored in (
        CLaSPModule.load_from_checkpoint(tmp_path / "slim.ckpt"),
        CLaSPModule(**saved["hyper_parameters"], init_from=str(tmp_path / "slim.ckpt")),
    ):
        for name, tensor in module.state_dict().items():
            if not (name.startswith("loss_fn.") and restored.initialised_from):
                assert torch.equal(tensor, restored.state_dict()[name]), name
    saved["text_tower_weights"]["fingerprint"] = "0" * 16  # as if the text model had changed
    torch.save(saved, tmp_path / "other_text.ckpt")
    with pytest.raises(ValueError, match="fingerprint 0000000000000000"):
        CLaSPModule.load_from_checkpoint(tmp_path / "other_text.ckpt")


def test_cached_text_features_are_refused_for_a_trained_text_tower(records_file, tmp_path):
    """Stage 1 trained the text tower; stage 2 freezes it: the cache of the pristine model's
    outputs would silently replace the checkpoint's text tower, so fitting stops with advice."""
    stage1 = tiny_module(TextConfig(model="tiny-random"))
    with torch.no_grad():
        next(stage1.text_tower.parameters()).add_(0.1)
    torch.save({"state_dict": stage1.state_dict()}, tmp_path / "stage1.ckpt")
    text = TextConfig(model="tiny-random", freeze=True)
    stage2 = tiny_module(text, init_from=str(tmp_path / "stage1.ckpt"))
    assert stage2.text_tower_from_checkpoint
    with pytest.raises(ValueError, match="cache_text_features false"):
        quiet_trainer(max_steps=1).fit(stage2, data_module(records_file, tmp_path, text))
    live = data_module(records_file, tmp_path, text, cache_text_features=False)
    quiet_trainer(max_steps=1).fit(stage2, live)  # the checkpoint's tower runs every step
    assert stage2.trainer.global_step == 1


def test_biases_and_norms_get_no_weight_decay(records_file, tmp_path):
    """Matrices decay; biases, norms and the loss's scale do not, in the text tower too."""
    module = tiny_module(TextConfig(model="tiny-random", freeze=False))
    trainer = quiet_trainer(max_steps=1)
    trainer.fit(module, data_module(records_file, tmp_path, TextConfig(model="tiny-random")))
    decay = {
        id(p): g["weight_decay"] for g in trainer.optimizers[0].param_groups for p in g["params"]
    }
    loss_params = {id(p) for p in module.loss_fn.parameters()}
    assert decay.keys() == {id(p) for p in module.parameters() if p.requires_grad}
    for name, param in module.named_parameters():
        matrix = param.ndim >= 2 and id(param) not in loss_params
        assert decay[id(param)] == (module.optim.weight_decay if matrix else 0.0), name
    text_lrs = {
        g["lr"]
        for g in trainer.optimizers[0].param_groups
        if any(p is q for p in g["params"] for q in module.text_tower.parameters())
    }
    assert len(text_lrs) == 1  # text groups keep the text learning rate
    trainer.save_checkpoint(tmp_path / "trained_text.ckpt")  # a trained text tower is kept
    saved = torch.load(tmp_path / "trained_text.ckpt", weights_only=True)
    assert "text_tower_weights" not in saved
    assert any(k.startswith("text_tower.") for k in saved["state_dict"])


def test_pooling_of_a_hub_id_comes_from_the_hugging_face_cache(tmp_path, monkeypatch):
    """A sentence-transformers model named by hub id is mean-pooled, as from a folder."""
    snapshot = tmp_path / "models--org--st-model" / "snapshots" / "abc123"
    (snapshot / "1_Pooling").mkdir(parents=True)
    (snapshot / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    (tmp_path / "models--org--st-model" / "refs").mkdir()
    (tmp_path / "models--org--st-model" / "refs" / "main").write_text("abc123")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert TextConfig(model="org/st-model").resolved_pooling == "mean"
    assert (
        TextConfig(model="org/plain-bert").resolved_pooling == "cls"
    )  # not cached: no pooling file


def test_init_from_a_mismatched_checkpoint_names_the_tensors(tmp_path):
    other = tiny_module(TextConfig(model="tiny-random"), crystal_hidden=[8])
    torch.save({"state_dict": other.state_dict()}, tmp_path / "other.ckpt")
    with pytest.raises(ValueError, match="crystal_head.mlp") as error:
        tiny_module(TextConfig(model="tiny-random"), init_from=str(tmp_path / "other.ckpt"))
    assert "not in this model" in str(error.value) or "shape of" in str(error.value)


def test_composition_only_tower_trains_on_descriptors(records_file, tmp_path):
    dm = data_module(
        records_file,
        tmp_path,
        TextConfig(model="tiny-random", freeze=True),
        composition_features=True,
    )
    batch = next(iter(dm.train_dataloader()))
    assert batch["composition_features"].shape == (16, 333)
    fractions = batch["composition_features"][:, :100].sum(1)
    torch.testing.assert_close(fractions, torch.ones(16))
    module = CLaSPModule(
        text=TextConfig(model="tiny-random", freeze=True),
        heads=HeadsConfig(embed_dim=16, crystal_hidden=[32], activation="gelu", dropout=0.1),
        crystal_encoder="composition",
    )
    tower_out = module.crystal_tower(batch)  # the descriptor, fractions x 10
    torch.testing.assert_close(tower_out[:, :100].sum(1), torch.full((16,), 10.0))
    torch.testing.assert_close(tower_out[:, 100:], batch["composition_features"][:, 100:])
    crystal, text = module(batch)
    module.loss_fn(crystal, text, batch["group_ids"]).backward()
    assert crystal.shape == (16, 16)
    assert module.crystal_head.mlp[0].weight.grad.abs().sum() > 0
    kinds = [type(layer) for layer in module.crystal_head.mlp]
    assert kinds == [torch.nn.Linear, torch.nn.GELU, torch.nn.Dropout, torch.nn.Linear]
    without = dict(batch)
    del without["composition_features"]
    with pytest.raises(KeyError, match="data.composition_features=true"):
        module.encode_crystals(without)


def test_no_warmup_and_a_floor_of_one_is_a_constant_learning_rate(records_file, tmp_path):
    """``warmup_steps: 0, min_lr_ratio: 1.0`` (the composition baseline's "no schedule"): every
    step at the peak learning rate."""
    text = TextConfig(model="tiny-random", freeze=True)
    module = tiny_module(text)
    module.optim = OptimConfig(lr=3e-3, warmup_steps=0, min_lr_ratio=1.0)
    seen: list[float] = []

    class RecordLR(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(trainer.optimizers[0].param_groups[0]["lr"])

    trainer = quiet_trainer(max_epochs=2)
    trainer.callbacks.append(RecordLR())
    trainer.fit(module, data_module(records_file, tmp_path, text))
    assert len(seen) >= 4 and seen == [3e-3] * len(seen)


def test_checkpoints_that_name_the_old_text_config_module_still_load(tmp_path, monkeypatch):
    """Checkpoints written before the text package existed pickle ``TextConfig`` as
    ``clasp_pl.text_models.TextConfig``; ``weights_only`` loads still resolve it."""
    legacy = types.ModuleType("clasp_pl.text_models")
    legacy.TextConfig = TextConfig
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "clasp_pl.text_models", legacy)
        patch.setattr(TextConfig, "__module__", "clasp_pl.text_models")
        torch.save({"text": TextConfig(model="tiny-random", freeze=True)}, tmp_path / "old.ckpt")
    with zipfile.ZipFile(tmp_path / "old.ckpt") as archive:
        pickled = b"".join(archive.read(n) for n in archive.namelist() if n.endswith("data.pkl"))
    assert b"clasp_pl.text_models" in pickled
    loaded = torch.load(tmp_path / "old.ckpt", map_location="cpu", weights_only=True)
    assert loaded["text"] == TextConfig(model="tiny-random", freeze=True)


def test_the_caption_length_is_a_hyper_parameter(tmp_path):
    """``text_max_length`` is saved with the model; a checkpoint from before it existed takes
    its data module's recorded ``max_length``."""
    module = tiny_module(TextConfig(model="tiny-random"))
    module.hparams["text_max_length"] = 48  # what the CLI's link from data.max_length sets
    path = save_lightning_checkpoint(module, tmp_path / "new.ckpt")
    assert CLaSPModule.load_from_checkpoint(path).hparams["text_max_length"] == 48
    checkpoint = torch.load(path, weights_only=True)
    del checkpoint["hyper_parameters"]["text_max_length"]
    checkpoint["datamodule_hyper_parameters"] = {"max_length": 40}
    torch.save(checkpoint, tmp_path / "old.ckpt")
    assert CLaSPModule.load_from_checkpoint(tmp_path / "old.ckpt").hparams["text_max_length"] == 40
