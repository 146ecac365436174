"""The CLaSP LightningModule: crystal tower + text tower + projection heads + contrastive loss."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import lightning as L
import torch
from lightning.pytorch.utilities import rank_zero_info

from clasp_pl.checkpoints import read_checkpoint
from clasp_pl.config_utils import as_config
from clasp_pl.data.batch import GraphBatch, PairBatch
from clasp_pl.data.graphs import GraphConfig
from clasp_pl.losses import ContrastiveLoss
from clasp_pl.models.cgcnn import CGCNN, CGCNNConfig
from clasp_pl.models.chgnet_tower import ChgnetCrystalTower, ChgnetTowerConfig
from clasp_pl.models.composition import CompositionFeatures
from clasp_pl.models.fused import FusedConfig, FusedCrystalTower
from clasp_pl.models.heads import Activation, ProjectionHead
from clasp_pl.text.config import TextConfig
from clasp_pl.text.tower import TextTower


@dataclass
class HeadsConfig:
    """Projection heads into the shared embedding space (``embed_dim``-d, L2-normalised): MLPs
    of the given hidden widths (:func:`clasp_pl.models.heads.mlp`)."""

    embed_dim: int = 256
    crystal_hidden: list[int] = field(default_factory=list)
    text_hidden: list[int] = field(default_factory=list)
    batch_norm: bool = False
    dropout: float = 0.0
    activation: Activation = "relu"


@dataclass
class LossConfig:
    """Contrastive loss (see :class:`clasp_pl.losses.ContrastiveLoss`)."""

    kind: Literal["infonce", "cosface", "arcface", "siglip"] = "infonce"
    local_loss: bool = False
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0
    learn_scale: bool = True
    scale: float | None = None
    margin: float = 0.0


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then cosine decay to ``min_lr_ratio`` of the peak
    (``warmup_steps: 0`` with ``min_lr_ratio: 1.0`` is a constant learning rate: no schedule).

    Attributes:
        lr: peak learning rate of the crystal tower, the heads and the loss's scale.
        text_lr: peak learning rate of the (unfrozen part of the) text tower.
        weight_decay: AdamW weight decay (not applied to biases, norms and scales).
        warmup_steps: linear warm-up length in optimizer steps.
        min_lr_ratio: final learning rate as a fraction of the peak.
    """

    lr: float = 1e-3
    text_lr: float = 2e-5
    weight_decay: float = 0.01
    warmup_steps: int = 100
    min_lr_ratio: float = 0.01


TEXT_TOWER_PREFIX = "text_tower."
OMITTED_TEXT_WEIGHTS = "text_tower_weights"  # checkpoint key: which frozen weights were left out

# Checkpoints store these configs in their hyper-parameters; allow them under weights_only loads.
# Checkpoints written before the text package existed name TextConfig by its old module.
torch.serialization.add_safe_globals(
    [TextConfig, CGCNNConfig, GraphConfig, HeadsConfig, LossConfig, OptimConfig, FusedConfig]
    + [ChgnetTowerConfig, (TextConfig, "clasp_pl.text_models.TextConfig")]
)


CrystalTower = CGCNN | CompositionFeatures | FusedCrystalTower | ChgnetCrystalTower
CrystalEncoder = Literal["cgcnn", "composition", "fused", "chgnet"]


@dataclass(frozen=True)
class CrystalFeatures:
    """The cached per-record features a crystal tower reads besides (or instead of) the graph:
    what the data module must serve, and what :mod:`clasp_pl.api` computes for a new structure.

    Attributes:
        composition: the ``[333]`` composition/symmetry descriptor (``composition_features``).
        chgnet: the frozen ``[64]`` CHGNet crystal feature (``chgnet_features``).
    """

    composition: bool = False
    chgnet: bool = False


def crystal_features(encoder: CrystalEncoder, chgnet: ChgnetTowerConfig) -> CrystalFeatures:
    """What the crystal tower ``encoder`` reads (:class:`CrystalFeatures`): ``composition`` and
    ``fused`` the descriptor, ``chgnet`` the CHGNet feature and, ``with_composition``, the
    descriptor; ``cgcnn`` neither."""
    if encoder == "chgnet":
        return CrystalFeatures(composition=chgnet.with_composition, chgnet=True)
    return CrystalFeatures(composition=encoder in ("composition", "fused"))


def crystal_tower(
    encoder: CrystalEncoder,
    crystal: CGCNNConfig,
    graph: GraphConfig,
    fused: FusedConfig,
    chgnet: ChgnetTowerConfig,
) -> CrystalTower:
    """The crystal tower ``model.crystal_encoder`` names: ``cgcnn`` (the graph alone),
    ``composition`` (the descriptor alone, the baseline), ``fused`` (both) or ``chgnet`` (the
    frozen CHGNet feature, with the descriptor unless ``chgnet.with_composition`` is false).
    All but ``cgcnn`` read per-record features of the batches (:func:`crystal_features`).

    Raises:
        ValueError: another name.
    """
    if encoder == "cgcnn":
        return CGCNN(crystal, graph)
    if encoder == "composition":
        return CompositionFeatures()
    if encoder == "fused":
        return FusedCrystalTower(crystal, graph, fused)
    if encoder == "chgnet":
        return ChgnetCrystalTower(chgnet)
    raise ValueError(f"unknown crystal_encoder {encoder!r}: cgcnn, composition, fused or chgnet")


class CLaSPModule(L.LightningModule):
    """Contrastive language-structure pretraining.

    Batches are :class:`~clasp_pl.data.batch.PairBatch` dicts. Embeddings are ``[B, embed_dim]``
    and L2-normalised; their dot product is the cosine similarity.

    ``crystal_encoder`` picks the crystal tower (:func:`crystal_tower`); ``crystal`` sizes its
    CGCNN (``cgcnn``, ``fused``), ``fused`` the fused tower's composition branch and fusion layer,
    ``chgnet`` the inputs of the CHGNet tower. :attr:`crystal_features` says which cached
    per-record features the tower reads (:func:`crystal_features`).

    ``init_from`` (a checkpoint whose towers and heads start this run, e.g. stage 1 for stage 2)
    is read once, at construction, and is not a hyper-parameter: reloading this run's own
    checkpoint never needs that file again. It is recorded as ``initialised_from`` in this run's
    checkpoints (and in the resolved config beside the logs).

    ``text_max_length`` is the caption truncation (tokens) the model is trained with: the CLI
    links it from the data module's ``max_length``, and embedding new texts
    (:func:`clasp_pl.api.embed_texts`) reads it from the hyper-parameters. A checkpoint written
    before it existed, or built without the CLI (``None``), gets the data module's ``max_length``
    that it recorded.

    A frozen text tower that still holds its pretrained model's weights is left out of the
    checkpoints (``text_tower_weights`` records the model name and the weights' fingerprint
    instead): 92 MB less per checkpoint with MiniLM, 440 MB with SciBERT. Loading puts the same
    model's weights back, and refuses a text model whose weights differ from the recorded ones.
    A partly trainable tower (``trainable_layers``) leaves out its frozen embeddings and lower
    layers the same way (``text_tower_weights`` then also records ``frozen_layers``): with
    MiniLM's top 2 layers trained, 14 MB of text weights are stored instead of 90 MB.
    """

    def __init__(
        self,
        text: TextConfig = TextConfig(),
        crystal: CGCNNConfig = CGCNNConfig(),
        graph: GraphConfig = GraphConfig(),
        heads: HeadsConfig = HeadsConfig(),
        loss: LossConfig = LossConfig(),
        optim: OptimConfig = OptimConfig(),
        crystal_encoder: CrystalEncoder = "cgcnn",
        fused: FusedConfig = FusedConfig(),
        chgnet: ChgnetTowerConfig = ChgnetTowerConfig(),
        text_max_length: int | None = None,
        init_from: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["init_from"])
        text, crystal, graph = (
            as_config(TextConfig, text),
            as_config(CGCNNConfig, crystal),
            as_config(GraphConfig, graph),
        )
        heads, loss, optim = (
            as_config(HeadsConfig, heads),
            as_config(LossConfig, loss),
            as_config(OptimConfig, optim),
        )
        chgnet = as_config(ChgnetTowerConfig, chgnet)
        self.crystal_features = crystal_features(crystal_encoder, chgnet)
        self.crystal_tower = crystal_tower(
            crystal_encoder, crystal, graph, as_config(FusedConfig, fused), chgnet
        )
        self.text_tower = TextTower(text)
        head_args = {
            "batch_norm": heads.batch_norm,
            "dropout": heads.dropout,
            "activation": heads.activation,
        }
        self.crystal_head = ProjectionHead(
            self.crystal_tower.out_dim, heads.embed_dim, heads.crystal_hidden, **head_args
        )
        self.text_head = ProjectionHead(
            self.text_tower.out_dim, heads.embed_dim, heads.text_hidden, **head_args
        )
        self.loss_fn = ContrastiveLoss(**asdict(loss))
        self.optim = optim
        self.initialised_from = init_from
        self.text_tower_from_checkpoint = False  # text weights differ from the pristine model's
        if init_from:
            self.load_tower_and_head_weights(init_from)

    def load_tower_and_head_weights(self, ckpt: str) -> None:
        """Start from another run's towers and heads (e.g. stage 1 for stage-2 keyword
        fine-tuning). Unlike ``--ckpt_path`` (which resumes a run), the optimizer, schedule and
        step count start fresh, and the loss's own scale/bias are those of this run's loss.

        Raises:
            ValueError: naming every tensor that is missing, unexpected or of another shape.
        """
        checkpoint = read_checkpoint(ckpt, mmap=False)
        self.restore_omitted_text_weights(checkpoint, ckpt)
        source = checkpoint["state_dict"]
        own = {k: v for k, v in self.state_dict().items() if not k.startswith("loss_fn.")}
        source = {k: v for k, v in source.items() if not k.startswith("loss_fn.")}
        problems = [f"missing in {ckpt}: {k}" for k in own.keys() - source.keys()]
        problems += [f"not in this model: {k}" for k in source.keys() - own.keys()]
        problems += [
            f"shape of {k}: {tuple(source[k].shape)} in {ckpt}, {tuple(v.shape)} here"
            for k, v in own.items()
            if k in source and source[k].shape != v.shape
        ]
        if problems:
            raise ValueError(f"cannot initialise from {ckpt}:\n  " + "\n  ".join(sorted(problems)))
        self.text_tower_from_checkpoint = any(
            not torch.equal(v, source[k]) for k, v in own.items() if k.startswith(TEXT_TOWER_PREFIX)
        )
        self.load_state_dict(source, strict=False)

    # ----------------------------------------------------------------- embeddings
    def encode_crystals(self, batch: GraphBatch | PairBatch) -> torch.Tensor:
        """Crystal embeddings ``[B, embed_dim]`` of a batch (the towers that read cached
        features, :attr:`crystal_features`, read a pair batch's ``composition_features`` and
        ``chgnet_features``)."""
        return self.crystal_head(self.crystal_tower(batch))

    def encode_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Text embeddings ``[B, embed_dim]`` of token ids ``[B, L]`` (the whole text tower)."""
        return self.text_head(self.text_tower(input_ids, attention_mask))

    def forward(self, batch: PairBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """``(crystal_emb, text_emb)``, each ``[B, embed_dim]``. A batch carrying cached frozen
        text-tower outputs (``text_features [B, H]``) skips the text tower; one carrying cached
        lower-layer hidden states (``text_hidden [B, L, H]``) runs only its top layers."""
        if "text_features" in batch:
            text_emb = self.text_head(batch["text_features"])
        elif "text_hidden" in batch:
            pooled = self.text_tower.from_lower_hidden(
                batch["text_hidden"], batch["attention_mask"]
            )
            text_emb = self.text_head(pooled)
        else:
            text_emb = self.encode_texts(batch["input_ids"], batch["attention_mask"])
        return self.encode_crystals(batch), text_emb

    # ----------------------------------------------------------------- steps
    def training_step(self, batch: PairBatch, batch_idx: int) -> torch.Tensor:
        crystal_emb, text_emb = self(batch)
        loss = self.loss_fn(crystal_emb, text_emb, batch["group_ids"])
        size = batch["num_crystals"]
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        self.log("train/logit_scale", self.loss_fn.logit_scale_value, batch_size=size)
        return loss

    def _eval_step(self, batch: PairBatch, stage: str) -> dict[str, torch.Tensor]:
        crystal_emb, text_emb = self(batch)
        loss = self.loss_fn(crystal_emb, text_emb, batch["group_ids"])
        self.log(
            f"{stage}/loss", loss, prog_bar=True, sync_dist=True, batch_size=batch["num_crystals"]
        )
        return {
            "crystal_emb": crystal_emb.detach(),
            "text_emb": text_emb.detach(),
            "group_ids": batch["group_ids"],
            "item_id": batch["item_id"],
        }

    def validation_step(self, batch: PairBatch, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._eval_step(batch, "val")

    def test_step(self, batch: PairBatch, batch_idx: int) -> dict[str, torch.Tensor]:
        return self._eval_step(batch, "test")

    def setup(self, stage: str) -> None:
        """Refuse cached text features or lower-layer states that this text tower would not
        produce."""
        datamodule = getattr(self.trainer, "datamodule", None)
        self._check_text_hidden_cache(getattr(datamodule, "text_hidden_key", None))
        if self.text_tower_from_checkpoint and getattr(datamodule, "uses_text_features", False):
            raise ValueError(
                f"the text tower of {self.initialised_from} was trained, but the data module "
                "caches the outputs of the pristine text model: set "
                "--data.cache_text_features false (or start from a checkpoint with a frozen text "
                "tower)"
            )

    def _check_text_hidden_cache(self, key: dict | None) -> None:
        """Refuse cached lower-layer states (their store's ``key``) cut at another layer or made
        by other lower weights (e.g. a checkpoint whose lower layers were trained).

        Raises:
            ValueError: the cache does not hold what this tower's lower layers compute.
        """
        if key is None:
            return
        cut = self.text_tower.frozen_layers
        if (
            cut != key["frozen_layers"]
            or self.text_tower.lower_fingerprint() != key["lower_weights"]
        ):
            raise ValueError(
                f"the data module caches the text model's hidden states after layer "
                f"{key['frozen_layers']} (weights {key['lower_weights']}), which this model's "
                f"text tower (frozen below layer {cut}) would not compute: set "
                "--data.cache_text_features false, or use the same text settings"
            )

    # ----------------------------------------------------------------- checkpoints
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """Record ``initialised_from``; leave out the pretrained weights of a frozen text tower,
        or of the frozen lower part (embeddings and lower layers) of a partly trainable one."""
        checkpoint["initialised_from"] = self.initialised_from
        if self.text_tower_from_checkpoint:
            return
        record = {"model": self.text_tower.text_model_name}
        if self.text_tower.frozen:
            omitted = [k for k in checkpoint["state_dict"] if k.startswith(TEXT_TOWER_PREFIX)]
            record["fingerprint"] = self.text_tower.weights_fingerprint()
        elif self.text_tower.frozen_layers is not None:
            cut = self.text_tower.frozen_layers
            omitted = list(self.text_tower.lower_state_dict(cut, TEXT_TOWER_PREFIX))
            record.update(fingerprint=self.text_tower.lower_fingerprint(cut), frozen_layers=cut)
        else:
            return
        for key in omitted:
            del checkpoint["state_dict"][key]
        checkpoint[OMITTED_TEXT_WEIGHTS] = record

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Put back omitted text weights; take the caption length of an older checkpoint (which
        has no ``text_max_length``) from its data module's hyper-parameters."""
        self.restore_omitted_text_weights(checkpoint, "the checkpoint")
        data = checkpoint.get("datamodule_hyper_parameters") or {}
        recorded = checkpoint.get("hyper_parameters", {}).get("text_max_length")
        if recorded is None and "max_length" in data:
            self.hparams["text_max_length"] = int(data["max_length"])

    def restore_omitted_text_weights(self, checkpoint: dict, source: str | Path) -> None:
        """Put this model's text-tower weights into a checkpoint that left them out (all of
        them, or the embeddings and the lower ``frozen_layers`` layers), after checking that
        they are the ones it was trained with (its recorded fingerprint).

        Raises:
            ValueError: the text model here has other weights (another model, or a revision).
        """
        record = checkpoint.get(OMITTED_TEXT_WEIGHTS)
        if record is None:
            return
        cut = record.get("frozen_layers")  # None: the whole tower was left out
        if cut is None:
            found = self.text_tower.weights_fingerprint()
            own = self.text_tower.state_dict(prefix=TEXT_TOWER_PREFIX, keep_vars=False)
        else:
            found = self.text_tower.lower_fingerprint(cut)
            own = self.text_tower.lower_state_dict(cut, TEXT_TOWER_PREFIX)
        if found != record["fingerprint"]:
            raise ValueError(
                f"{source} was trained with the frozen text model {record['model']!r} of weights "
                f"fingerprint {record['fingerprint']}, which it does not store; the text model "
                f"{self.text_tower.text_model_name!r} here has fingerprint {found}. Make that "
                "name resolve to the files it was trained with (the same folder, or the same "
                "revision in the Hugging Face cache)."
            )
        checkpoint["state_dict"].update(own)

    def on_fit_start(self) -> None:
        """Record how the text tower is pooled ("auto" resolves to the model's own convention)."""
        pooling = self.text_tower.pooling
        rank_zero_info(f"text tower {self.text_tower.text_model_name!r} pooled by {pooling}")
        if self.logger is not None:
            self.logger.log_hyperparams({"text_pooling_resolved": pooling})

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        self.loss_fn.clamp_parameters_()

    # ----------------------------------------------------------------- optimisation
    def configure_optimizers(self):
        text_params = [p for p in self.text_tower.parameters() if p.requires_grad]
        text_ids = {id(p) for p in text_params}
        other = [
            (n, p) for n, p in self.named_parameters() if p.requires_grad and id(p) not in text_ids
        ]
        no_decay = [p for n, p in other if p.ndim < 2 or "loss_fn" in n]
        decay = [p for n, p in other if p.ndim >= 2 and "loss_fn" not in n]
        groups = [
            {"params": decay, "lr": self.optim.lr, "weight_decay": self.optim.weight_decay},
            {"params": no_decay, "lr": self.optim.lr, "weight_decay": 0.0},
        ]
        for decayed in (True, False):
            params = [p for p in text_params if (p.ndim >= 2) == decayed]
            if params:
                weight_decay = self.optim.weight_decay if decayed else 0.0
                groups.append(
                    {"params": params, "lr": self.optim.text_lr, "weight_decay": weight_decay}
                )
        optimizer = torch.optim.AdamW(groups)
        total = max(int(self.trainer.estimated_stepping_batches), 1)
        schedule = WarmupCosine(self.optim.warmup_steps, total, self.optim.min_lr_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step"},
        }


class WarmupCosine:
    """Learning-rate factor: linear warm-up to 1, then cosine decay to ``floor``."""

    def __init__(self, warmup: int, total: int, floor: float):
        self.warmup, self.total, self.floor = warmup, total, floor

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min((step - self.warmup) / max(self.total - self.warmup, 1), 1.0)
        return self.floor + (1 - self.floor) * 0.5 * (1 + math.cos(math.pi * progress))
