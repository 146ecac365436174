"""``clasp convert-official``: official CLaSP tensor names -> CLaSPModule, same embeddings."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from transformers import BertModel

from clasp_pl.api import load_model, text_max_length
from clasp_pl.checkpoints import read_settings
from clasp_pl.cli import main as clasp
from clasp_pl.data.batch import collate_pairs
from clasp_pl.data.datamodule import CrystalTextDataModule
from clasp_pl.data.graphs import cgcnn_atom_features, structure_to_graph
from clasp_pl.models.clasp import CLaSPModule
from clasp_pl.models.official import ConversionError, convert
from clasp_pl.text.sources import load_text_model, load_tokenizer
from helpers.data import TINY_GRAPH, first_records

ATOMS, GAUSSIANS, EMBED, N_CONV, N_MLP = 16, 26, 16, 2, 2  # 26 Gaussians = TINY_GRAPH's 5 Å


def official_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under the official code's names, at tiny sizes (BERT: tiny-random)."""
    generator = torch.Generator().manual_seed(seed)

    def randn(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=generator)

    state: dict[str, torch.Tensor] = {}

    def linear(prefix: str, out: int, inp: int) -> None:
        state[prefix + "weight"] = randn(out, inp) / math.sqrt(inp)
        state[prefix + "bias"] = 0.1 * randn(out)

    def norm(prefix: str, size: int) -> None:
        state[prefix + "weight"] = 1 + 0.2 * randn(size)
        state[prefix + "bias"] = 0.1 * randn(size)
        state[prefix + "running_mean"] = 0.3 * randn(size)
        state[prefix + "running_var"] = 0.5 + torch.rand(size, generator=generator)
        state[prefix + "num_batches_tracked"] = torch.tensor(7)

    linear("model.atom_embedding_proj.", ATOMS, 92)
    for i in range(N_CONV):
        linear(f"model.convolution_layers.{i}.fc_full.", 2 * ATOMS, 2 * ATOMS + GAUSSIANS)
        norm(f"model.convolution_layers.{i}.bn1.", 2 * ATOMS)
        norm(f"model.convolution_layers.{i}.bn2.", ATOMS)
    linear("model.crystal_embedding_proj.", EMBED, ATOMS)
    norm("model.crystal_embedding_bn.", EMBED)
    for k in range(N_MLP):  # [Linear, ReLU, BatchNorm] per layer
        linear(f"model.intermediate_modules.{3 * k}.", EMBED, EMBED)
        norm(f"model.intermediate_modules.{3 * k + 2}.", EMBED)
    linear("model.final_projection.", EMBED, EMBED)
    bert = load_text_model("tiny-random").state_dict()
    for name, value in bert.items():  # perturbed, so a copy of our own init would not pass
        noisy = value + 0.05 * randn(*value.shape) if value.is_floating_point() else value
        state["model_text.text_encoder." + name] = noisy
    hidden = bert["pooler.dense.weight"].shape[0]
    linear("model_text.mlp.0.", EMBED, hidden)  # [Linear, BN, ReLU] x 2, Linear
    norm("model_text.mlp.1.", EMBED)
    linear("model_text.mlp.3.", EMBED, EMBED)
    norm("model_text.mlp.4.", EMBED)
    linear("model_text.mlp.6.", EMBED, EMBED)
    return state


def _bn(x: torch.Tensor, state: dict, prefix: str) -> torch.Tensor:
    return F.batch_norm(
        x,
        state[prefix + "running_mean"],
        state[prefix + "running_var"],
        state[prefix + "weight"],
        state[prefix + "bias"],
        training=False,
    )


def _lin(x: torch.Tensor, state: dict, prefix: str) -> torch.Tensor:
    return F.linear(x, state[prefix + "weight"], state[prefix + "bias"])


def official_crystal_embeddings(state: dict, batch: dict) -> torch.Tensor:
    """The official CGCNN + MLP forward (eval mode), written from its description."""
    table = torch.from_numpy(cgcnn_atom_features())
    n_sites = len(batch["crystal_index"])
    occupancy = torch.zeros(n_sites, len(batch["site_species_z"]))  # [sites, species entries]
    occupancy[batch["species_site"], torch.arange(occupancy.shape[1])] = batch["site_occupancy"]
    species = table[batch["site_species_z"]]
    atoms = _lin(occupancy @ species, state, "model.atom_embedding_proj.")  # occup @ atom_features
    centres = torch.arange(0.0, TINY_GRAPH.radius + 0.2, 0.2)
    edges = torch.exp(-((batch["edge_dist"][:, None] - centres) ** 2) / 0.2**2)
    src, dst = batch["edge_src"], batch["edge_dst"]
    for i in range(N_CONV):
        prefix = f"model.convolution_layers.{i}."
        z = torch.cat([atoms[src], atoms[dst], edges], dim=1)
        gate, core = _bn(_lin(z, state, prefix + "fc_full."), state, prefix + "bn1.").chunk(2, 1)
        summed = torch.zeros_like(atoms).index_add_(0, src, torch.sigmoid(gate) * F.softplus(core))
        atoms = F.softplus(atoms + _bn(summed, state, prefix + "bn2."))
    index = batch["crystal_index"]
    counts = torch.bincount(index, minlength=batch["num_crystals"]).clamp_min(1)
    pooled = torch.zeros(batch["num_crystals"], ATOMS).index_add_(0, index, atoms) / counts[:, None]
    x = _lin(pooled, state, "model.crystal_embedding_proj.")
    x = F.relu(_bn(x, state, "model.crystal_embedding_bn."))
    for k in range(N_MLP):
        x = F.relu(_lin(x, state, f"model.intermediate_modules.{3 * k}."))
        x = _bn(x, state, f"model.intermediate_modules.{3 * k + 2}.")
    return F.normalize(_lin(x, state, "model.final_projection."), dim=-1)


def official_text_embeddings(state: dict, input_ids, attention_mask) -> torch.Tensor:
    """The official text forward: BERT pooler output, then the MLP (eval mode)."""
    bert = BertModel(load_text_model("tiny-random").config).eval()
    prefix = "model_text.text_encoder."
    bert.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    x = bert(input_ids=input_ids, attention_mask=attention_mask).pooler_output
    x = F.relu(_bn(_lin(x, state, "model_text.mlp.0."), state, "model_text.mlp.1."))
    x = F.relu(_bn(_lin(x, state, "model_text.mlp.3."), state, "model_text.mlp.4."))
    return F.normalize(_lin(x, state, "model_text.mlp.6."), dim=-1)


def crystal_batch() -> dict:
    samples = []
    for record in first_records(6, max_sites=24):
        graph = structure_to_graph(record.to_structure(), TINY_GRAPH)
        samples.append(
            {
                **vars(graph),
                "group_id": np.array([0]),
                "record_index": np.array([0]),
                "item_id": np.array([0]),
                "input_ids": np.array([101, 102]),
            }
        )
    return collate_pairs(samples)


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> tuple[dict, str]:
    state = official_state_dict()
    path = tmp_path_factory.mktemp("official") / "official.ckpt"
    torch.save({"state_dict": state, "epoch": 3}, path)
    out = path.with_name("converted.ckpt")
    assert clasp(["convert-official", str(path), str(out), "--text-model", "tiny-random"]) == 0
    return state, str(out)


def test_converted_checkpoint_loads_with_inferred_layout(converted) -> None:
    _, out = converted
    model = CLaSPModule.load_from_checkpoint(out).eval()
    hparams = model.hparams
    assert hparams["crystal"]["n_conv"] == N_CONV and hparams["crystal"]["n_hidden"] == 0
    assert hparams["heads"]["crystal_hidden"] == [EMBED] * (N_MLP + 1)
    assert hparams["heads"]["text_hidden"] == [EMBED, EMBED]
    assert hparams["graph"]["radius"] == TINY_GRAPH.radius
    assert hparams["text"]["pooling"] == "pooler"
    assert hparams["loss"]["kind"] == "cosface"


def test_converted_checkpoint_carries_the_papers_data_settings(
    converted, records_file, tmp_path
) -> None:
    """Title captions cut to 64 tokens (what `clasp eval` and load_model read), with the model's
    text and graph settings; a config's data section overrides the paper's."""
    _, out = converted
    data = read_settings(out).require_data()
    assert data["caption_fields"] == ["title"] and data["max_length"] == 64
    assert text_max_length(load_model(out).hparams) == 64
    datamodule = CrystalTextDataModule(
        **{**data, "records": str(records_file), "cache_dir": str(tmp_path)}
    )
    assert datamodule.text.model == "tiny-random" and datamodule.graph.radius == TINY_GRAPH.radius

    official = Path(out).with_name("official.ckpt")
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"data": {"max_length": 32, "split_seed": 3}}))
    other = tmp_path / "with_config.ckpt"
    argv = [str(official), str(other), "--text-model", "tiny-random", "--config", str(config)]
    assert clasp(["convert-official", *argv]) == 0
    data = read_settings(other).require_data()
    assert (data["max_length"], data["split_seed"], data["caption_fields"]) == (32, 3, ["title"])


def test_same_embeddings_as_the_official_forward(converted) -> None:
    state, out = converted
    model = CLaSPModule.load_from_checkpoint(out).eval()
    batch = crystal_batch()
    tokens = load_tokenizer("tiny-random")(
        ["layered cuprate superconductor", "garnet"], padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        ours_crystal = model.encode_crystals(batch)
        ours_text = model.encode_texts(tokens["input_ids"], tokens["attention_mask"])
        reference_crystal = official_crystal_embeddings(state, batch)
        reference_text = official_text_embeddings(
            state, tokens["input_ids"], tokens["attention_mask"]
        )
    torch.testing.assert_close(ours_crystal, reference_crystal, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours_text, reference_text, atol=1e-5, rtol=1e-4)


def test_wrong_shape_is_refused_naming_the_tensor(capsys, tmp_path) -> None:
    state = official_state_dict()
    state["model.convolution_layers.1.bn2.running_var"] = torch.ones(ATOMS + 1)
    with pytest.raises(ConversionError, match=r"model\.convolution_layers\.1\.bn2\.running_var"):
        convert(state, text_model="tiny-random")
    path = tmp_path / "bad.ckpt"
    torch.save(state, path)  # a bare state dict is accepted as input too
    assert (
        clasp(
            [
                "convert-official",
                str(path),
                str(tmp_path / "out.ckpt"),
                "--text-model",
                "tiny-random",
            ]
        )
        == 2
    )
    assert "crystal_tower.convs.1.atom_norm.running_var" in capsys.readouterr().err
    assert not (tmp_path / "out.ckpt").exists()


def test_unknown_name_is_refused_naming_the_tensor() -> None:
    state = official_state_dict()
    state["model.regression_layer.weight"] = torch.zeros(1, EMBED)
    with pytest.raises(ConversionError, match=r"unmatched: model\.regression_layer\.weight"):
        convert(state, text_model="tiny-random")


def test_config_that_disagrees_is_refused() -> None:
    config = {"model": {"heads": {"crystal_hidden": [EMBED]}}}
    with pytest.raises(ConversionError, match="crystal head"):
        convert(official_state_dict(), config=config, text_model="tiny-random")
