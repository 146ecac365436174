"""Text tower: a BERT-family encoder pooled to one vector per caption."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import torch
from torch import nn

from clasp_pl.text.config import TextConfig
from clasp_pl.text.layers import run_lower, run_upper, transformer_layers
from clasp_pl.text.sources import load_text_model


def masked_mean(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden [B, L, H]`` where ``attention_mask [B, L]`` is 1 -> ``[B, H]``."""
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)


def tensors_fingerprint(named_tensors: Iterable[tuple[str, torch.Tensor]]) -> str:
    """16 hex digits of the sha256 over ``(name, tensor bytes)`` pairs, sorted by name."""
    digest = hashlib.sha256()
    for name, tensor in sorted(named_tensors, key=lambda item: item[0]):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


class TextTower(nn.Module):
    """Transformer encoder + pooling, ``(input_ids [B, L], attention_mask [B, L]) -> [B, H]``.

    With ``trainable_layers = N`` (and ``freeze`` off) the embeddings and the lower
    ``frozen_layers = L - N`` layers are frozen and always run in eval mode (no dropout), so
    their outputs can be computed once and cached: :meth:`lower_hidden` gives them and
    :meth:`from_lower_hidden` runs only the top ``N`` layers and the pooling on them; the two
    together equal :meth:`forward`.
    """

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
        self.frozen_layers: int | None = None  # lower layers frozen below trainable top ones
        if config.freeze:
            self.encoder.requires_grad_(False)
            self.encoder.eval()  # Lightning keeps modules' modes: no dropout from the start
        elif config.trainable_layers is not None:
            self._freeze_all_but_top(config.trainable_layers)

    def _freeze_all_but_top(self, n_layers: int) -> None:
        layers = transformer_layers(self.encoder)
        if not 0 <= n_layers <= len(layers):
            raise ValueError(f"trainable_layers must be in 0..{len(layers)}, got {n_layers}")
        self.frozen_layers = len(layers) - n_layers
        self.encoder.requires_grad_(False)
        for layer in layers[self.frozen_layers :]:
            layer.requires_grad_(True)
        if self.encoder.pooler is not None:
            self.encoder.pooler.requires_grad_(True)  # above the top layer: trained with it
        self._lower_part_eval()

    def _lower_part(self, n_layers: int | None = None) -> list[nn.Module]:
        """The embeddings and the first ``n_layers`` layers (default: the frozen lower part,
        empty when there is none)."""
        n_layers = self.frozen_layers if n_layers is None else n_layers
        if n_layers is None:
            return []
        return [self.encoder.embeddings, *transformer_layers(self.encoder)[:n_layers]]

    def cut_layer(self) -> int:
        """``frozen_layers``, the layer the encoder is cut at for cached lower hidden states.

        Raises:
            ValueError: the tower has no frozen lower part (``trainable_layers`` unset, or
                ``freeze`` on).
        """
        if self.frozen_layers is None:
            raise ValueError("the text tower has no frozen lower layers (set trainable_layers)")
        return self.frozen_layers

    def _lower_part_eval(self) -> None:
        for module in self._lower_part():
            module.eval()

    @property
    def out_dim(self) -> int:
        return int(self.encoder.config.hidden_size)

    def weights_fingerprint(self) -> str:
        """sha256 over the encoder's parameters and buffers (keys a cache of its outputs)."""
        return tensors_fingerprint(self.encoder.state_dict().items())

    def lower_state_dict(self, n_layers: int, prefix: str = "") -> dict[str, torch.Tensor]:
        """Parameters and buffers of the embeddings and the first ``n_layers`` layers, named as
        in this tower's ``state_dict(prefix=prefix)``."""
        names = {id(module): name for name, module in self.named_modules()}
        state: dict[str, torch.Tensor] = {}
        for module in self._lower_part(n_layers):
            state.update(module.state_dict(prefix=f"{prefix}{names[id(module)]}."))
        return state

    def lower_fingerprint(self, n_layers: int | None = None) -> str:
        """sha256 over the embeddings' and the first ``n_layers`` layers' weights (default: the
        frozen lower part's, which keys a cache of :meth:`lower_hidden`; ValueError without
        one, see :meth:`cut_layer`)."""
        n_layers = self.cut_layer() if n_layers is None else n_layers
        return tensors_fingerprint(
            (f"{index}.{name}", tensor)
            for index, module in enumerate(self._lower_part(n_layers))
            for name, tensor in module.state_dict().items()
        )

    def train(self, mode: bool = True) -> TextTower:
        super().train(mode)
        if self.frozen:
            self.encoder.eval()
        self._lower_part_eval()
        return self

    def _pool(self, last_hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled outputs ``[B, H]`` of the last hidden states ``[B, L, H]``."""
        if self.pooling == "pooler":
            return self.encoder.pooler(last_hidden)
        if self.pooling == "cls":
            return last_hidden[:, 0]
        return masked_mean(last_hidden, attention_mask)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled outputs ``[B, H]``: the whole encoder (its own forward pass) + pooling."""
        output = self.encoder(input_ids=input_ids, attention_mask=attention_mask)
        return self._pool(output.last_hidden_state, attention_mask)

    def lower_hidden(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Hidden states ``[B, L, H]`` after the frozen lower layers (what a cache holds)."""
        return run_lower(self.encoder, input_ids, attention_mask, self.cut_layer())

    def from_lower_hidden(self, hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Pooled outputs ``[B, H]`` from :meth:`lower_hidden`'s ``[B, L, H]`` (values at padding
        positions are ignored): only the trainable top layers and the pooling run."""
        last = run_upper(self.encoder, hidden, attention_mask, self.cut_layer())
        return self._pool(last, attention_mask)
