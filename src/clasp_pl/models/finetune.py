"""Property prediction with a (CLaSP-pretrained) CGCNN crystal encoder and a new MLP head.

The encoder is a :class:`~clasp_pl.models.cgcnn.CGCNN` tower, optionally followed by CLaSP's
crystal projection head; ``init_from`` loads both from a CLaSP checkpoint, taking the tower's
sizes and the graph settings from the checkpoint's hyper-parameters so that shapes match.
Two regimes:

- linear probe (``freeze_encoder=True``, ``head_hidden=[]``): the encoder gets no gradient and
  stays in eval mode (batch norm uses its pretrained running statistics);
- full fine-tuning: everything trains, the encoder at ``encoder_lr`` (typically 10x below
  ``lr``) so that the pretrained features are adjusted rather than overwritten.

Regression targets are standardised with the training split's mean and standard deviation
(taken from the data module's ``target_stats()`` at fit time and saved with the model); the loss
is the MSE of the standardised values and the reported ``{stage}/mae`` is in the target's own
units (eV/atom for perov_5's ``heat_ref``). Classification uses cross-entropy and reports
``{stage}/acc``.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from torch import nn
from torch.nn import functional as F

from clasp_pl.checkpoints import read_checkpoint
from clasp_pl.config_utils import as_config
from clasp_pl.data.batch import GraphBatch, PropertyBatch
from clasp_pl.data.graphs import GraphConfig
from clasp_pl.models.cgcnn import CGCNN, CGCNNConfig
from clasp_pl.models.clasp import HeadsConfig, WarmupCosine
from clasp_pl.models.heads import ProjectionHead, mlp

# CGCNNConfig fields that change no parameter shape or value (free to differ from a checkpoint).
_RUNTIME_FIELDS = frozenset({"use_torch_scatter"})


def _differences(wanted, found, ignore: frozenset[str] = frozenset()) -> list[str]:
    """``field=value (checkpoint: value)`` for every field where two configs disagree."""
    return [
        f"{f.name}={getattr(wanted, f.name)!r} (checkpoint: {getattr(found, f.name)!r})"
        for f in fields(wanted)
        if f.name not in ignore and getattr(wanted, f.name) != getattr(found, f.name)
    ]


def read_clasp_checkpoint(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """Hyper-parameters and state dict of a CLaSP Lightning checkpoint (``.ckpt``)."""
    path = Path(path)
    checkpoint = read_checkpoint(path, mmap=False)
    if "state_dict" not in checkpoint or "hyper_parameters" not in checkpoint:
        raise ValueError(f"{path} is not a Lightning checkpoint of a CLaSPModule")
    return dict(checkpoint["hyper_parameters"]), checkpoint["state_dict"]


def _prefixed(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


class PropertyModule(L.LightningModule):
    """CGCNN encoder + MLP head predicting one property per crystal.

    Batches are :class:`~clasp_pl.data.batch.PropertyBatch` dicts (graph fields plus
    ``targets [B]``); the forward pass returns ``[B]`` standardised values
    (regression) or ``[B, num_classes]`` logits (classification).

    Args:
        task: ``regression`` or ``classification``.
        num_classes: number of classes (classification only).
        crystal: CGCNN sizes. ``None``: the checkpoint's when ``init_from`` is set, else the
            defaults; a value that disagrees with the checkpoint is refused.
        graph: crystal-graph settings (linked from the data by the CLI). ``None``: the
            checkpoint's, else the defaults; must equal the checkpoint's when ``init_from`` is set.
        heads: CLaSP head config, used with ``use_pretrained_head`` (``None``: the checkpoint's).
        init_from: CLaSP checkpoint whose ``crystal_tower.*`` (and with ``use_pretrained_head``
            ``crystal_head.*``) weights initialise the encoder; ``None`` for random init. Read once,
            at construction, and not a hyper-parameter (the resolved sizes are): a fine-tuned
            checkpoint restores without the CLaSP file, and records it as ``initialised_from``.
        use_pretrained_head: put CLaSP's projection head (L2-normalised embedding) on top of the
            tower, i.e. probe the contrastive embedding instead of the tower's features.
        freeze_encoder: linear-probe mode (encoder frozen and in eval mode).
        head_hidden: hidden widths of the new MLP head (``[]``: a single linear layer).
        head_dropout: dropout after each hidden layer of the new head.
        lr: peak learning rate of the new head (and of the encoder when ``encoder_lr`` is None).
        encoder_lr: peak learning rate of the encoder when it is fine-tuned.
        weight_decay: AdamW weight decay.
        warmup_steps: linear warm-up in optimizer steps, then cosine decay to 1% of the peak.
    """

    def __init__(
        self,
        task: Literal["regression", "classification"] = "regression",
        num_classes: int = 1,
        crystal: CGCNNConfig | None = None,
        graph: GraphConfig | None = None,
        heads: HeadsConfig | None = None,
        init_from: str | None = None,
        use_pretrained_head: bool = False,
        freeze_encoder: bool = False,
        head_hidden: list[int] | None = None,
        head_dropout: float = 0.0,
        lr: float = 1e-3,
        encoder_lr: float | None = None,
        weight_decay: float = 0.0,
        warmup_steps: int = 20,
    ):
        super().__init__()
        if task == "classification" and num_classes < 2:
            raise ValueError(f"classification needs num_classes >= 2, got {num_classes}")
        state: dict[str, torch.Tensor] = {}
        if init_from is not None:
            hparams, state = read_clasp_checkpoint(init_from)
            crystal, graph, heads = self._resolve_configs(hparams, crystal, graph, heads, init_from)
        crystal, graph, heads = (
            crystal or CGCNNConfig(),
            graph or GraphConfig(),
            heads or HeadsConfig(),
        )
        self.save_hyperparameters(ignore=["init_from"])
        self.initialised_from = init_from
        self.hparams.update(
            crystal=crystal, graph=graph, heads=heads
        )  # resolved: enough to rebuild shapes
        self.task = task
        self.crystal_tower = CGCNN(crystal, graph)
        width = self.crystal_tower.out_dim
        self.crystal_head = None
        if use_pretrained_head:
            self.crystal_head = ProjectionHead(
                width,
                heads.embed_dim,
                heads.crystal_hidden,
                batch_norm=heads.batch_norm,
                dropout=heads.dropout,
                activation=heads.activation,
            )
            width = heads.embed_dim
        if state:
            self.crystal_tower.load_state_dict(_prefixed(state, "crystal_tower."))
            if self.crystal_head is not None:
                self.crystal_head.load_state_dict(_prefixed(state, "crystal_head."))
        outputs = num_classes if task == "classification" else 1
        self.head = mlp(width, outputs, head_hidden or [], dropout=head_dropout)
        self.freeze_encoder = freeze_encoder
        if freeze_encoder:
            for module in self.encoder_modules:  # eval now: Lightning never calls .train()
                module.requires_grad_(False).eval()
        self.register_buffer("target_mean", torch.zeros(()))
        self.register_buffer("target_std", torch.ones(()))

    @staticmethod
    def _resolve_configs(
        hparams: dict,
        crystal: CGCNNConfig | None,
        graph: GraphConfig | None,
        heads: HeadsConfig | None,
        path: str,
    ) -> tuple[CGCNNConfig, GraphConfig, HeadsConfig]:
        """The checkpoint's tower, graph and head configs; refuses settings that contradict it."""
        encoder = hparams.get("crystal_encoder", "cgcnn")
        if encoder != "cgcnn":
            raise ValueError(
                f"{path} has a {encoder!r} crystal tower; fine-tuning starts from a CGCNN tower "
                "(model.crystal_encoder: cgcnn)"
            )
        found_crystal = as_config(CGCNNConfig, hparams["crystal"])
        found_graph = as_config(GraphConfig, hparams["graph"])
        found_heads = as_config(HeadsConfig, hparams["heads"])
        problems = []
        if graph is not None:
            problems += _differences(graph, found_graph)
        if crystal is not None:
            problems += _differences(crystal, found_crystal, _RUNTIME_FIELDS)
        if heads is not None:
            problems += _differences(heads, found_heads)
        if problems:
            raise ValueError(
                f"settings disagree with the CLaSP checkpoint {path}: {'; '.join(problems)}. "
                "Leave model.crystal/model.heads unset to take them from the checkpoint and set "
                "data.graph to the graph settings it was pretrained with."
            )
        if crystal is not None:  # keeps the caller's runtime choices (e.g. use_torch_scatter)
            found_crystal = crystal
        return found_crystal, found_graph, found_heads

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["initialised_from"] = self.initialised_from

    @property
    def encoder_modules(self) -> list[nn.Module]:
        """The pretrained part: the CGCNN tower and, if used, CLaSP's projection head."""
        return [m for m in (self.crystal_tower, self.crystal_head) if m is not None]

    def train(self, mode: bool = True) -> PropertyModule:
        """Switch modes; a frozen encoder always stays in eval mode (fixed batch-norm stats)."""
        super().train(mode)
        if self.freeze_encoder:
            for module in self.encoder_modules:
                module.eval()
        return self

    # ----------------------------------------------------------------- forward
    def encode(self, batch: GraphBatch) -> torch.Tensor:
        """Encoder features ``[B, D]`` of a batch of crystal graphs."""
        features = self.crystal_tower(batch)
        return features if self.crystal_head is None else self.crystal_head(features)

    def forward(self, batch: GraphBatch) -> torch.Tensor:
        """Standardised predictions ``[B]`` (regression) or logits ``[B, num_classes]``."""
        out = self.head(self.encode(batch))
        return out.squeeze(-1) if self.task == "regression" else out

    def predict_values(self, output: torch.Tensor) -> torch.Tensor:
        """Predictions in the target's units ``[B]`` (regression) or class indices ``[B]``."""
        if self.task == "regression":
            return output * self.target_std + self.target_mean
        return output.argmax(-1)

    # ----------------------------------------------------------------- steps
    def setup(self, stage: str) -> None:
        """At fit time, take the standardisation of regression targets from the data module."""
        stats = getattr(self.trainer.datamodule, "target_stats", None)
        if stage == "fit" and self.task == "regression" and stats is not None:
            mean, std = stats()
            self.target_mean.fill_(mean)
            self.target_std.fill_(std)

    def _loss(self, output: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        if self.task == "regression":
            return F.mse_loss(output, (targets - self.target_mean) / self.target_std)
        return F.cross_entropy(output, targets)

    def training_step(self, batch: PropertyBatch, batch_idx: int) -> torch.Tensor:
        loss = self._loss(self(batch), batch["targets"])
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["num_crystals"])
        return loss

    def _eval_step(self, batch: PropertyBatch, stage: str) -> None:
        output = self(batch)
        targets = batch["targets"]
        size = batch["num_crystals"]
        self.log(f"{stage}/loss", self._loss(output, targets), sync_dist=True, batch_size=size)
        predicted = self.predict_values(output)
        if self.task == "regression":
            name, value = "mae", (predicted - targets).abs().mean()
        else:
            name, value = "acc", (predicted == targets).float().mean()
        self.log(f"{stage}/{name}", value, prog_bar=True, sync_dist=True, batch_size=size)

    def validation_step(self, batch: PropertyBatch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: PropertyBatch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def predict_step(self, batch: PropertyBatch, batch_idx: int) -> dict[str, torch.Tensor]:
        """``record_index [B]`` and ``prediction [B]`` (target units or class index)."""
        return {
            "record_index": batch["record_index"],
            "prediction": self.predict_values(self(batch)),
        }

    # ----------------------------------------------------------------- optimisation
    def configure_optimizers(self):
        hp = self.hparams
        groups = [{"params": list(self.head.parameters()), "lr": hp.lr}]
        if not self.freeze_encoder:
            encoder = [p for m in self.encoder_modules for p in m.parameters()]
            groups.append({"params": encoder, "lr": hp.encoder_lr or hp.lr})
        optimizer = torch.optim.AdamW(groups, weight_decay=hp.weight_decay)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        schedule = WarmupCosine(hp.warmup_steps, total, floor=0.01)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }
