"""A checkpoint of the official CLaSP code -> a CLaSPModule (``clasp convert-official CKPT OUT``).

The official code (github.com/Toyota/clasp, ``models/contrastive.py``) keeps the crystal encoder
under ``model.`` (``models/cgcnn.py``), the text encoder under ``model_text.``
(``models/text_encoder.py``) and, for SigLIP only, the loss's parameters under ``loss_fn.``.
With ``A`` = atom width (64), ``G`` = Gaussians (41), ``E`` = embedding width (768),
``H`` = text hidden size (768 for SciBERT), the tensors map as follows:

======================================================  ==========================================
official (shape)                                        ours
======================================================  ==========================================
``model.atom_embedding_proj.*`` ([A, 92])                ``crystal_tower.embed.*``
``model.convolution_layers.{i}.fc_full.*`` ([2A, 2A+G])  ``crystal_tower.convs.{i}.gate_and_core.*``
``model.convolution_layers.{i}.bn1.*`` ([2A])            ``crystal_tower.convs.{i}.edge_norm.*``
``model.convolution_layers.{i}.bn2.*`` ([A])             ``crystal_tower.convs.{i}.atom_norm.*``
``model.crystal_embedding_proj.*`` ([E, A])              ``crystal_head.mlp.0.*``
``model.crystal_embedding_bn.*`` ([E])                   ``crystal_head.mlp.1.*``
``model.intermediate_modules.{k}.*`` (Linear [E, E])     ``crystal_head.mlp.{3j}.*`` (j = 1, 2...)
``model.intermediate_modules.{k}.*`` (BatchNorm [E])     folded into the next Linear (see below)
``model.final_projection.*`` ([E, E])                    ``crystal_head.mlp.{last}.*``
``model_text.text_encoder.*`` (HF BERT)                  ``text_tower.encoder.*``
``model_text.mlp.{k}.*`` (Linear/BatchNorm, in order)    ``text_head.mlp.{j}.*`` (same order)
``loss_fn.logit_scale``, ``loss_fn.logit_bias`` (SigLIP)  ``loss_fn.logit_scale``, ``.logit_bias``
======================================================  ==========================================

The architecture is read from the tensors (``atom_fea_len``, ``n_conv``, head widths, Gaussian
count -> graph radius, pooler present -> ``pooling: pooler``); the text model name comes from
``--text-model``, else the ``--config``, else the paper's SciBERT. The CGCNN convolutions are the
same computation as ours (CGCNN with BatchNorm on the gated pre-activations); the text head
(Linear-BN-ReLU..., Linear) is our ProjectionHead exactly.

Structural differences, and how they are handled:

- Crystal head: after pooling the official model runs Linear-BN-ReLU, then
  ``crystalencoder_n_mlp_layers`` x (Linear-**ReLU-BN**), then Linear; ours is
  (Linear-BN-ReLU) x n, then Linear. In eval mode a BatchNorm is an affine map, so each
  post-ReLU BatchNorm is folded exactly into the Linear after it, and our BatchNorm slot after
  that Linear is set to the identity. Embeddings (eval mode) are therefore identical to the
  official model's; *training* the converted model is a warm start, not the same network (its
  BatchNorms then use batch statistics in other places).
- Our CGCNN tower is used with ``n_hidden: 0`` (no softplus dense layers after pooling), which is
  the official layout. A regression head (``model.regression_layer``, the official fine-tuning
  for properties) has no counterpart and is refused.
- Not weights: the official cosface/InfoNCE scale and margin are config values (the loss section
  of ``--config``, else the paper's cosface s=3, m=0.5 pre-training setting); BERT's constant
  ``embeddings.position_ids`` buffer, stored by older transformers versions, is skipped.
- The converted checkpoint also stores data-module settings, as ``clasp fit`` does (``clasp
  eval`` rebuilds the data module from them, :func:`~clasp_pl.api.load_model` truncates
  captions to their ``max_length``): the paper's title captions cut to 64 tokens, updated from
  the ``data`` section of ``--config``, with the model's text and graph settings.
- Data side (the same weights see slightly different graphs): the official graphs use the
  conventional standard cell, exactly 12 neighbours per atom (padded with index 0 at distance
  radius+1 Å) and occupancy-weighted atom features for disordered sites; ours keep whole
  shells of tied neighbours and resolve disorder at ingestion.

Anything unmatched, missing or mis-shaped is refused with a message naming every such tensor.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from clasp_pl.checkpoints import read_checkpoint, write_checkpoint
from clasp_pl.data.graphs import GraphConfig
from clasp_pl.models.clasp import CLaSPModule

PAPER_TEXT_MODEL = "allenai/scibert_scivocab_uncased"
PAPER_LOSS = {"kind": "cosface", "scale": 3.0, "margin": 0.5}
PAPER_DATA = {"caption_fields": ["title"], "max_length": 64}  # stage 1: titles cut to 64 tokens
CRYSTAL, TEXT = "model.", "model_text."
CONSTANT_BUFFERS = ("embeddings.position_ids",)
OFFICIAL_BN_EPS = 1e-5  # torch's BatchNorm1d default, used throughout the official models
FROM_CONFIG = ("loss_fn.logit_scale",)  # a fixed-scale loss's scale is a buffer set by the config


class ConversionError(ValueError):
    """The official checkpoint does not fit the model; the message names every tensor."""


def load_official_state_dict(path: str | Path) -> dict[str, Tensor]:
    """The state dict of an official Lightning checkpoint (or of a bare state-dict file).

    Raises:
        CheckpointError: the file is missing, corrupt or refused by weights-only loading.
        ConversionError: it holds neither a Lightning checkpoint nor a state dict.
    """
    checkpoint = read_checkpoint(path, mmap=False)
    state = checkpoint.get("state_dict", checkpoint)
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise ConversionError(f"{path}: neither a Lightning checkpoint nor a state dict")
    return state


# ------------------------------------------------------------------------------------ layers
def _indices(state: Mapping[str, Tensor], prefix: str) -> list[int]:
    """Sorted indices ``i`` of the ``{prefix}{i}.*`` tensors (a ModuleList or Sequential)."""
    return sorted(
        {int(key[len(prefix) :].split(".")[0]) for key in state if key.startswith(prefix)}
    )


def _layers(state: Mapping[str, Tensor], prefix: str) -> list[tuple[str, str]]:
    """``(official prefix, kind)`` of the Linear/BatchNorm modules of a Sequential/ModuleList,
    in order; ``kind`` is ``linear`` or ``bn`` (parameter-free ReLU/Dropout have no tensors)."""
    names = [f"{prefix}{index}." for index in _indices(state, prefix)]
    return [(name, "bn" if f"{name}running_mean" in state else "linear") for name in names]


def _own_layers(sequential: nn.Sequential, prefix: str) -> list[tuple[str, str]]:
    """``(our prefix, kind)`` of the Linear/BatchNorm modules of one of our heads, in order."""
    kinds = {nn.Linear: "linear", nn.BatchNorm1d: "bn"}
    return [
        (f"{prefix}{name}.", kinds[type(module)])
        for name, module in sequential.named_children()
        if type(module) in kinds
    ]


def _module(state: Mapping[str, Tensor], prefix: str) -> dict[str, Tensor]:
    """Tensors of one module, keyed by their name inside it (``weight``, ``running_var``...)."""
    return {key[len(prefix) :]: value for key, value in state.items() if key.startswith(prefix)}


def fold_batchnorm(
    norm: Mapping[str, Tensor], linear: Mapping[str, Tensor], eps: float
) -> dict[str, Tensor]:
    """Linear(BN(x)) as one Linear, with BN in eval mode: ``W diag(s) x + (W t + b)`` where
    ``s = gamma / sqrt(var + eps)`` and ``t = beta - mean * s``."""
    scale = norm["weight"].double() / (norm["running_var"].double() + eps).sqrt()
    shift = norm["bias"].double() - norm["running_mean"].double() * scale
    weight = linear["weight"].double()
    return {
        "weight": (weight * scale).to(linear["weight"].dtype),
        "bias": (weight @ shift + linear["bias"].double()).to(linear["bias"].dtype),
    }


def identity_batchnorm(like: Mapping[str, Tensor], eps: float) -> dict[str, Tensor]:
    """Eval-mode identity BatchNorm state (``var = 1 - eps``, so ``sqrt(var + eps) = 1``)."""
    return {
        "weight": torch.ones_like(like["weight"]),
        "bias": torch.zeros_like(like["bias"]),
        "running_mean": torch.zeros_like(like["running_mean"]),
        "running_var": torch.full_like(like["running_var"], 1.0 - eps),
        "num_batches_tracked": torch.zeros_like(like["num_batches_tracked"]),
    }


# ------------------------------------------------------------------------------ architecture
def infer_hparams(state: Mapping[str, Tensor]) -> dict[str, Any]:
    """Our hyper-parameters for the architecture stored in an official state dict."""
    try:
        atoms = state[f"{CRYSTAL}atom_embedding_proj.weight"].shape[0]
        conv_in = state[f"{CRYSTAL}convolution_layers.0.fc_full.weight"].shape[1]
        proj = state[f"{CRYSTAL}crystal_embedding_proj.weight"].shape[0]
        embed = state[f"{CRYSTAL}final_projection.weight"].shape[0]
    except KeyError as missing:
        raise ConversionError(f"not an official CLaSP state dict: no {missing}") from None
    n_conv = len(_indices(state, f"{CRYSTAL}convolution_layers."))
    intermediate = _layers(state, f"{CRYSTAL}intermediate_modules.")
    text_mlp = _layers(state, f"{TEXT}mlp.")
    step = GraphConfig.gaussian_step
    return {
        "text": {
            "model": PAPER_TEXT_MODEL,
            "pooling": "pooler" if f"{TEXT}text_encoder.pooler.dense.weight" in state else "cls",
            "freeze": True,
        },
        "crystal": {"atom_fea_len": atoms, "n_conv": n_conv, "h_fea_len": atoms, "n_hidden": 0},
        "graph": {"radius": round((conv_in - 2 * atoms - 1) * step, 6)},
        "heads": {
            "embed_dim": embed,
            "crystal_hidden": [proj]
            + [state[f"{name}weight"].shape[0] for name, kind in intermediate if kind == "linear"],
            "text_hidden": [
                state[f"{name}weight"].shape[0] for name, kind in text_mlp if kind == "linear"
            ][:-1],
            "batch_norm": True,
            "dropout": 0.0,
        },
        "loss": {"kind": "siglip"} if "loss_fn.logit_bias" in state else dict(PAPER_LOSS),
    }


def merge_config(hparams: dict[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """``hparams`` updated section by section (one level deep) from a YAML config's ``model``
    section (``data.graph`` also sets ``graph``); a config replaces the paper's loss."""
    merged = copy.deepcopy(hparams)
    model = dict(config.get("model") or {})
    graph = (config.get("data") or {}).get("graph") or model.pop("graph", None)
    sections = {**model, **({"graph": graph} if graph else {})}
    for section, values in sections.items():
        if section == "loss" or not isinstance(values, Mapping):
            merged[section] = copy.deepcopy(values)
        else:
            merged.setdefault(section, {}).update(values)
    return merged


# ------------------------------------------------------------------------------------ mapping
class _Translation:
    """Official tensors under our names, remembering the official name of each."""

    def __init__(self, state: Mapping[str, Tensor], module: CLaSPModule):
        self.state = state
        self.module = module
        self.tensors: dict[str, Tensor] = {}
        self.origin: dict[str, str] = {}
        self.used: set[str] = set()
        self.notes: list[str] = []

    def put(self, ours: str, official: str, tensors: Mapping[str, Tensor] | None = None) -> None:
        """Map the official module ``official`` onto ours (prefixes); ``tensors`` replaces its
        values (a folded Linear)."""
        source = _module(self.state, official)
        self.used.update(official + key for key in source)
        for key, value in (source if tensors is None else tensors).items():
            self.tensors[ours + key] = value
            self.origin[ours + key] = official + key

    def put_linear(self, ours: str, official: str, folded_norm: str | None) -> None:
        """A Linear, with the official BatchNorm ``folded_norm`` (applied before it) folded in."""
        if folded_norm is None:
            self.put(ours, official)
            return
        norm = _module(self.state, folded_norm)
        self.used.update(folded_norm + key for key in norm)
        linear = _module(self.state, official)
        self.put(ours, official, fold_batchnorm(norm, linear, OFFICIAL_BN_EPS))
        self.notes.append(f"{folded_norm}* folded into {ours}* (exact in eval mode)")

    def put_identity_norm(self, ours: str) -> None:
        """Set our BatchNorm ``ours`` to the eval-mode identity (no official counterpart)."""
        norm = self.module.get_submodule(ours.rstrip("."))
        for key, value in identity_batchnorm(norm.state_dict(), norm.eps).items():
            self.tensors[ours + key] = value
            self.origin[ours + key] = "(identity)"


def _check_layout(head: str, ours: list[str], official: list[str]) -> None:
    """Refuse when the Linear/BN kinds of our head and the official one differ."""
    if ours != official:
        raise ConversionError(
            f"{head}: this model's layers ({', '.join(ours)}) do not fit the official ones "
            f"({', '.join(official)}); set heads.*_hidden and heads.batch_norm to match"
        )


def translate(state: Mapping[str, Tensor], module: CLaSPModule) -> _Translation:
    """Official tensors under our names, for ``module``'s layout (see the module docstring)."""
    result = _Translation(state, module)
    result.put("crystal_tower.embed.", f"{CRYSTAL}atom_embedding_proj.")
    for index in _indices(state, f"{CRYSTAL}convolution_layers."):
        official, ours = f"{CRYSTAL}convolution_layers.{index}.", f"crystal_tower.convs.{index}."
        result.put(ours + "gate_and_core.", official + "fc_full.")
        result.put(ours + "edge_norm.", official + "bn1.")
        result.put(ours + "atom_norm.", official + "bn2.")

    # crystal head: Linear-BN-ReLU, n x (Linear-ReLU-BN), Linear -> (Linear-BN-ReLU) x (n+1), Linear
    intermediate = _layers(state, f"{CRYSTAL}intermediate_modules.")
    n_mlp = len(intermediate) // 2
    _check_layout("crystal MLP", [kind for _, kind in intermediate], ["linear", "bn"] * n_mlp)
    ours = _own_layers(module.crystal_head.mlp, "crystal_head.mlp.")
    _check_layout(
        "crystal head", [kind for _, kind in ours], ["linear", "bn"] * (n_mlp + 1) + ["linear"]
    )
    result.put(ours[0][0], f"{CRYSTAL}crystal_embedding_proj.")
    result.put(ours[1][0], f"{CRYSTAL}crystal_embedding_bn.")
    pending = None
    for k in range(n_mlp):
        result.put_linear(ours[2 + 2 * k][0], intermediate[2 * k][0], pending)
        result.put_identity_norm(ours[3 + 2 * k][0])
        pending = intermediate[2 * k + 1][0]
    result.put_linear(ours[-1][0], f"{CRYSTAL}final_projection.", pending)

    text_official = _layers(state, f"{TEXT}mlp.")
    text_ours = _own_layers(module.text_head.mlp, "text_head.mlp.")
    _check_layout("text head", [kind for _, kind in text_ours], [kind for _, kind in text_official])
    for (mine, _), (theirs, _) in zip(text_ours, text_official, strict=True):
        result.put(mine, theirs)
    result.put("text_tower.encoder.", f"{TEXT}text_encoder.")
    result.put("loss_fn.", "loss_fn.")
    return result


def check(result: _Translation, module: CLaSPModule) -> list[str]:
    """Every problem: official tensors without a place, our tensors without a value, shape
    mismatches; constant buffers are skipped (and noted)."""
    expected = module.state_dict()
    problems = []
    for ours, tensor in result.tensors.items():
        official = result.origin[ours]
        if ours not in expected:
            if ours.endswith(CONSTANT_BUFFERS):
                result.notes.append(f"skipped constant buffer {official}")
            else:
                problems.append(f"unmatched: {official} (would be {ours}, not in this model)")
        elif tensor.shape != expected[ours].shape:
            problems.append(
                f"shape: {official} is {tuple(tensor.shape)}, "
                f"{ours} needs {tuple(expected[ours].shape)}"
            )
    problems += [
        f"unmatched: {name} (no counterpart)" for name in result.state.keys() - result.used
    ]
    for name in expected.keys() - result.tensors.keys():
        if name in FROM_CONFIG:
            result.notes.append(f"{name} set from the loss config, not the checkpoint")
        else:
            problems.append(f"missing: {name} has no official tensor")
    return sorted(problems)


def convert(
    state: Mapping[str, Tensor],
    *,
    config: Mapping[str, Any] | None = None,
    text_model: str | None = None,
) -> tuple[CLaSPModule, list[str]]:
    """Build our module for an official state dict and load its weights.

    Returns:
        ``(module in eval mode, notes)``.

    Raises:
        ConversionError: naming every unmatched, missing or mis-shaped tensor.
    """
    hparams = merge_config(infer_hparams(state), config or {})
    if text_model:
        hparams["text"]["model"] = text_model
    module = CLaSPModule(**hparams)
    result = translate(state, module)
    problems = check(result, module)
    if problems:
        raise ConversionError(
            f"{len(problems)} tensors do not fit the model:\n  " + "\n  ".join(problems)
        )
    own = module.state_dict()
    module.load_state_dict({k: v for k, v in result.tensors.items() if k in own}, strict=False)
    return module.eval(), result.notes


def data_hparams(module: CLaSPModule, config: Mapping[str, Any]) -> dict[str, Any]:
    """The data-module settings of a converted model: :data:`PAPER_DATA` updated from the
    config's ``data`` section, with the model's text and graph settings (``clasp fit`` links
    them the same way)."""
    data = {**copy.deepcopy(PAPER_DATA), **copy.deepcopy(dict(config.get("data") or {}))}
    data["text"] = copy.deepcopy(module.hparams["text"])
    data["graph"] = copy.deepcopy(module.hparams["graph"])
    return data


def save_converted_checkpoint(
    module: CLaSPModule, out: str | Path, notes: list[str], data: Mapping[str, Any]
) -> Path:
    """Write a checkpoint that ``CLaSPModule.load_from_checkpoint(out)`` restores, with the
    data-module settings ``data`` (:func:`data_hparams`) and the conversion ``notes``."""
    return write_checkpoint(
        out,
        module.state_dict(),
        dict(module.hparams),
        data,
        epoch=0,
        global_step=0,
        converted_from_official=notes,
    )
