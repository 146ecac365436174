"""Text tower: a BERT-family encoder pooled to one vector per caption."""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from clasp_pl.text.config import TextConfig
from clasp_pl.text.sources import load_text_model


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden [B, L, H]`` where ``attention_mask [B, L]`` is 1 -> ``[B, H]``."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)


class TextTower(nn.Module):
    """Transformer encoder + pooling, ``(input_ids [B, L], attention_mask [B, L]) -> [B, H]``."""

    def __init__(self, config: TextConfig):
        super().__init__()
        self.text_model_name = config.model
        self.pooling = config.resolved_pooling
        self.encoder = load_text_model(config.model)
        if self.pooling != "pooler" and getattr(self.encoder, "pooler", None) is not None:
            self.encoder.pooler = None  # unused weights would stall DDP's gradient reduction
        if config.gradient_checkpointing:
            self.encoder.gradient_checkpointing_enable()
        self.frozen = config.freeze
        if config.freeze:
            self.encoder.requires_grad_(False)
            self.encoder.eval()  # Lightning keeps modules' modes: no dropout from the start
        elif config.trainable_layers is not None:
            self._freeze_all_but_top(config.trainable_layers)

    def _freeze_all_but_top(self, n_layers: int) -> None:
        layers = self.encoder.encoder.layer
        if not 0 <= n_layers <= len(layers):
            raise ValueError(f"trainable_layers must be in 0..{len(layers)}, got {n_layers}")
        self.encoder.requires_grad_(False)
        for layer in layers[len(layers) - n_layers :]:
            layer.requires_grad_(True)

    @property
    def out_dim(self) -> int:
        return int(self.encoder.config.hidden_size)

    def weights_fingerprint(self) -> str:
        """sha256 over the encoder's parameters and buffers (keys a cache of its outputs)."""
        digest = hashlib.sha256()
        for name, tensor in sorted(self.encoder.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        return digest.hexdigest()[:16]

    def train(self, mode: bool = True) -> TextTower:
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        return self

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        output = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        if self.pooling == "pooler":
            return output.pooler_output
        if self.pooling == "cls":
            return output.last_hidden_state[:, 0]
        return masked_mean(output.last_hidden_state, attention_mask)
