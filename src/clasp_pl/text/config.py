"""Which text model runs, and how it is pooled and trained: the settings model and data share."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from clasp_pl.text.sources import DEFAULT_TEXT_MODEL, native_pooling

Pooling = Literal["auto", "cls", "mean", "pooler"]


@dataclass
class TextConfig:
    """Which text model, and how it is pooled and trained.

    Shared by the model (which runs it) and the data module (which tokenizes for it and, for a
    frozen tower, caches its pooled outputs).

    Attributes:
        model: text model name or folder (see module docstring).
        pooling: ``cls`` (first token), ``mean`` (attention-masked mean), ``pooler`` (BERT's
            pretrained dense+tanh pooler on CLS) or ``auto`` (the model's own convention).
        freeze: no gradients into the encoder; it then always runs in eval mode (no dropout).
        trainable_layers: when set (and ``freeze`` off), freeze the embeddings and all but the
            top N transformer layers; the frozen lower part runs in eval mode (no dropout), so
            the data module can cache its hidden states (``cache_text_features``).
        gradient_checkpointing: trade compute for activation memory.
    """

    model: str = DEFAULT_TEXT_MODEL
    pooling: Pooling = "auto"
    freeze: bool = False
    trainable_layers: int | None = None
    gradient_checkpointing: bool = False

    @property
    def resolved_pooling(self) -> str:
        return native_pooling(self.model) if self.pooling == "auto" else self.pooling
