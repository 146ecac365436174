"""A BERT-family encoder cut between two transformer layers: the lower part (embeddings and the
first ``k`` layers) and the upper part (the other layers), run separately.

Running ``run_lower(.., k)`` then ``run_upper(.., k)`` equals the model's own forward pass: the
same embeddings, the same padding mask (made by transformers' ``create_bidirectional_mask`` for
the model's attention implementation, as ``BertModel.forward`` does) and the same layers in
order. Works for encoders whose transformer layers are ``model.encoder.layer`` and take
``(hidden_states, attention_mask)`` (BERT, RoBERTa, MiniLM, SciBERT...).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.masking_utils import create_bidirectional_mask


def transformer_layers(model: PreTrainedModel) -> nn.ModuleList:
    """The transformer layers of a BERT-family encoder, lowest first.

    Raises:
        TypeError: the model has no ``encoder.layer`` list, or is a decoder (causal mask).
    """
    layers = getattr(getattr(model, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList) or model.config.is_decoder:
        raise TypeError(
            f"{type(model).__name__} is not a BERT-family encoder (no encoder.layer list, or a "
            "decoder): its layers cannot be run in two parts"
        )
    return layers


def padding_mask(model: PreTrainedModel, hidden: torch.Tensor, attention_mask: torch.Tensor):
    """The attention mask the model's layers take for ``hidden [B, L, H]`` and the 0/1 token mask
    ``attention_mask [B, L]``: a 4-d additive or boolean mask, or ``None`` (no padding, for
    attention implementations that can skip it)."""
    return create_bidirectional_mask(
        config=model.config, inputs_embeds=hidden, attention_mask=attention_mask
    )


def run_lower(
    model: PreTrainedModel, input_ids: torch.Tensor, attention_mask: torch.Tensor, k: int
) -> torch.Tensor:
    """Hidden states ``[B, L, H]`` after the first ``k`` layers (``k = 0``: the embeddings) of
    token ids ``input_ids [B, L]`` with token mask ``attention_mask [B, L]``."""
    hidden = model.embeddings(input_ids=input_ids)
    mask = padding_mask(model, hidden, attention_mask)
    for layer in transformer_layers(model)[:k]:
        hidden = layer(hidden, mask)
    return hidden


def run_upper(
    model: PreTrainedModel, hidden: torch.Tensor, attention_mask: torch.Tensor, k: int
) -> torch.Tensor:
    """Last hidden states ``[B, L, H]`` from the hidden states after layer ``k``,
    ``hidden [B, L, H]`` (padding positions may hold anything: they are masked out as keys and
    their own outputs are never read), by running layers ``k..`` on top."""
    mask = padding_mask(model, hidden, attention_mask)
    for layer in transformer_layers(model)[k:]:
        hidden = layer(hidden, mask)
    return hidden
