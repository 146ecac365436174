"""Linear probes (``clasp probe``) of a frozen crystal encoder, CLaSP-pretrained vs randomly initialised.

Does contrastive pretraining make structure properties readable from the crystal embedding? The
protocol is fixed so that numbers compare across checkpoints:

- **structures**: every structure of the records file with a value of the target, grouped by
  paper (the records' ``group``);
- **features**: the CGCNN tower's pooled output ``[N, h_fea_len]`` (``--head``: CLaSP's
  L2-normalised projection ``[N, embed_dim]``), computed once with the encoder frozen and in eval
  mode;
- **probe**: features standardised with the training fold's mean and standard deviation, then an
  L2-regularised logistic regression (``C``, L-BFGS) for a class target or a ridge regression
  (``alpha``) for a numeric one;
- **score**: accuracy, or MAE in the target's units, on held-out papers: k-fold cross-validation
  by paper (no paper is on both sides of a fold), reported as mean ± standard deviation over folds;
- **baselines** on the same folds: the majority class (or training mean), and the same
  architecture randomly initialised (one row per seed) with its batch-norm statistics recomputed
  on the probe structures, without any gradient step. Uncalibrated, an untrained network's
  features reach ~350 on some structures (a pretrained one's stay below ~20), and the baseline
  would measure numerics rather than features; ``--raw-random`` adds those rows too.

Outputs in ``OUT`` (default ``<checkpoint folder>/../probe-<target>/``): ``probe.json`` (per-fold
scores) and ``probe.md`` (the table, also printed)::

    clasp probe                                  # best checkpoint of runs/pretrain, mineral_class
    clasp probe --ckpt runs/pretrain/checkpoints/last.ckpt --target crystal_system --folds 10
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import GroupKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from clasp_pl.data.labels import MINERAL_CLASS
from clasp_pl.data.property_datamodule import (
    PropertyDataModule,
    PropertyDataset,
    Task,
    num_classes_of,
    task_of,
)
from clasp_pl.models.finetune import PropertyModule
from clasp_pl.resources import DEFAULT_CACHE_DIR, DEFAULT_RECORDS


@dataclass
class ProbeRow:
    """One encoder's probe result.

    Attributes:
        encoder: what was probed (``pretrained``, ``random (seed 0)``, ``majority class``...).
        metric: ``accuracy`` (higher is better) or ``MAE`` (target units, lower is better).
        fold_scores: the score on each held-out fold.
    """

    encoder: str
    metric: str
    fold_scores: list[float]

    @property
    def mean(self) -> float:
        return float(np.mean(self.fold_scores))

    @property
    def std(self) -> float:
        return float(np.std(self.fold_scores))


def pretrained_encoder(checkpoint: str | Path, target: str, head: bool = False) -> PropertyModule:
    """The frozen crystal encoder of a CLaSP checkpoint (its tower, and with ``head`` its
    projection head), inside a :class:`PropertyModule` sized for ``target``."""
    return PropertyModule(
        task=task_of(target),
        num_classes=num_classes_of(target),
        init_from=str(checkpoint),
        use_pretrained_head=head,
        freeze_encoder=True,
    )


def random_encoder(like: PropertyModule, seed: int) -> PropertyModule:
    """The same architecture as ``like``, frozen, with weights drawn from ``seed``."""
    hp = like.hparams
    torch.manual_seed(seed)
    return PropertyModule(
        task=hp.task,
        num_classes=hp.num_classes,
        crystal=hp.crystal,
        graph=hp.graph,
        heads=hp.heads,
        use_pretrained_head=hp.use_pretrained_head,
        freeze_encoder=True,
    )


@torch.no_grad()
def recalibrate_batch_norm(model: PropertyModule, batches: Iterable[dict]) -> None:
    """Replace the encoder's batch-norm running statistics by their exact averages over
    ``batches`` (forward passes only; no weight changes). Leaves the encoder in eval mode."""
    norms = [
        m
        for encoder in model.encoder_modules
        for m in encoder.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm)
    ]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average over all batches
        norm.train()
    for batch in batches:
        model.encode(batch)
    for norm in norms:
        norm.eval()


@torch.no_grad()
def encode_features(model: PropertyModule, batches: Iterable[dict]) -> np.ndarray:
    """Frozen encoder features ``[N, D]`` (float64) of the structures in ``batches``."""
    model.eval()
    return torch.cat([model.encode(batch) for batch in batches]).double().numpy()


def probe_scores(
    features: np.ndarray,
    targets: np.ndarray,
    groups: np.ndarray,
    task: Task,
    folds: int = 5,
    strength: float = 1.0,
) -> np.ndarray:
    """Held-out scores ``[folds]`` of a linear probe, k-fold by group.

    Args:
        features: ``[N, D]`` encoder features (finite, any scale: they are standardised).
        targets: ``[N]`` class indices (classification) or values (regression).
        groups: ``[N]`` group ids; a group is never on both sides of a fold.
        task: ``classification`` (accuracy, logistic regression with ``C = strength``) or
            ``regression`` (MAE in the targets' units, ridge with ``alpha = strength``).
        folds: number of folds (at most the number of groups).
        strength: inverse L2 strength ``C`` (classification) or L2 strength ``alpha``.
    """
    scores = []
    for train, test in GroupKFold(folds).split(features, targets, groups):
        if task == "classification":
            probe = LogisticRegression(C=strength, max_iter=1000)
        else:
            probe = Ridge(alpha=strength)
        model = make_pipeline(StandardScaler(), probe).fit(features[train], targets[train])
        predicted = model.predict(features[test])
        if task == "classification":
            scores.append(float(np.mean(predicted == targets[test])))
        else:
            scores.append(float(np.mean(np.abs(predicted - targets[test]))))
    return np.asarray(scores)


def constant_scores(
    targets: np.ndarray, groups: np.ndarray, task: Task, folds: int = 5
) -> np.ndarray:
    """Scores ``[folds]`` of the featureless baseline on the folds of :func:`probe_scores`:
    the training fold's majority class, or its mean value."""
    scores = []
    for train, test in GroupKFold(folds).split(targets, targets, groups):
        if task == "classification":
            majority = np.bincount(targets[train].astype(np.int64)).argmax()
            scores.append(float(np.mean(targets[test] == majority)))
        else:
            scores.append(float(np.mean(np.abs(targets[test] - targets[train].mean()))))
    return np.asarray(scores)


@dataclass(frozen=True)
class ProbeOptions:
    """The probe protocol's settings (the options of ``clasp probe``).

    Attributes:
        target: label of the structures (``mineral_class``, ``crystal_system``, or a numeric
            meta key of the records such as ``heat_ref``).
        records: records file whose structures are probed.
        cache_dir: where their crystal graphs are cached.
        random_seeds: one randomly initialised baseline encoder per seed.
        raw_random: also probe the random encoders without batch-norm recalibration.
        head: probe CLaSP's projection embedding instead of the tower's pooled output.
        folds: k of the k-fold split by paper (at most the number of papers).
        strength: logistic ``C`` / ridge ``alpha`` (L2, on standardised features).
        batch_size: structures per forward pass.
        workers: processes building the caches.
    """

    target: str = MINERAL_CLASS
    records: Path = Path(DEFAULT_RECORDS)
    cache_dir: Path = Path(DEFAULT_CACHE_DIR)
    random_seeds: Sequence[int] = (0, 1, 2)
    raw_random: bool = False
    head: bool = False
    folds: int = 5
    strength: float = 1.0
    batch_size: int = 256
    workers: int = 1


def run_probe(checkpoint: str | Path, options: ProbeOptions = ProbeOptions()) -> list[ProbeRow]:
    """Probe the pretrained encoder of ``checkpoint`` and its baselines (module docstring) on
    the target of the structures of ``options.records``; one :class:`ProbeRow` per encoder."""
    target, records, batch_size = options.target, options.records, options.batch_size
    pretrained = pretrained_encoder(checkpoint, target, options.head)
    data = PropertyDataModule(
        records=str(records),
        target=target,
        cache_dir=str(options.cache_dir),
        graph=pretrained.hparams.graph,
        eval_batch_size=batch_size,
        prepare_workers=options.workers,
    )
    data.prepare_data()
    data.setup()
    dataset: PropertyDataset = data.labelled_dataset()
    targets = data.targets_of(dataset)
    if data.task == "classification":
        targets = targets.astype(np.int64)
    groups = dataset.graphs.field("group_id")[dataset.item_ids]
    folds = min(options.folds, len(np.unique(groups)))
    if folds < 2:
        raise ValueError(f"a probe needs structures from at least 2 papers, {records} has fewer")

    def batches(desc: str) -> Iterable[dict]:
        loader = DataLoader(dataset, batch_size=batch_size, collate_fn=data.collate)
        return tqdm(loader, desc=desc, unit="batch", leave=False)

    encoders = [("pretrained (CLaSP)", pretrained, False)]
    for seed in options.random_seeds:
        encoders.append((f"random init (seed {seed})", random_encoder(pretrained, seed), True))
        if options.raw_random:
            encoders.append(
                (
                    f"random init, no BN recalibration (seed {seed})",
                    random_encoder(pretrained, seed),
                    False,
                )
            )
    metric = "accuracy" if data.task == "classification" else "MAE"
    rows = [
        ProbeRow(
            "majority class" if data.task == "classification" else "training mean",
            metric,
            constant_scores(targets, groups, data.task, folds).tolist(),
        )
    ]
    for name, model, calibrate in encoders:
        if calibrate:
            recalibrate_batch_norm(model, batches(f"{name}: batch-norm statistics"))
        features = encode_features(model, batches(f"{name}: features"))
        scores = probe_scores(features, targets, groups, data.task, folds, options.strength)
        rows.append(ProbeRow(name, metric, scores.tolist()))
    return rows


def probe_table(rows: list[ProbeRow], title: str) -> str:
    """A Markdown table of probe rows: mean ± sd over folds and the per-fold scores."""
    lines = [
        f"### {title}",
        "",
        f"| encoder | {rows[0].metric} (mean ± sd over folds) | per fold |",
        "|---|---|---|",
    ]
    for row in rows:
        per_fold = " ".join(f"{s:.3f}" for s in row.fold_scores)
        lines.append(f"| {row.encoder} | {row.mean:.3f} ± {row.std:.3f} | {per_fold} |")
    return "\n".join(lines) + "\n"


def default_probe_dir(checkpoint: Path, target: str) -> Path:
    """Where a probe's report goes by default: ``<checkpoint folder>/../probe-<target>``."""
    return checkpoint.parent.parent / f"probe-{target}"


def write_probe_report(
    rows: list[ProbeRow], checkpoint: Path, options: ProbeOptions, out: Path
) -> str:
    """Write ``probe.md`` (the table) and ``probe.json`` (per-fold scores) into ``out``;
    returns the table."""
    features = "projection head" if options.head else "tower"
    title = (
        f"Linear probe of {options.target} on {Path(options.records).name}: {checkpoint.name} "
        f"({features} features), {len(rows[0].fold_scores)}-fold by group (paper)"
    )
    table = probe_table(rows, title)
    out.mkdir(parents=True, exist_ok=True)
    (out / "probe.md").write_text(table, encoding="utf-8")
    report = {
        "checkpoint": str(checkpoint),
        "target": options.target,
        "records": str(options.records),
        "features": features,
        "strength": options.strength,
        "rows": [asdict(row) | {"mean": row.mean, "std": row.std} for row in rows],
    }
    (out / "probe.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    return table
