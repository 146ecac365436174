"""Retrieval and keyword-screening report (``clasp eval``) of a checkpoint on one split.

Rebuilds the checkpoint's own data module (same records, keywords file, captions and split by
paper), embeds the split, and writes into ``OUT`` (default: ``<run>/eval-<split>/``):

- ``metrics.json`` and ``metrics.md``: text→structure and structure→text pair/group Recall@k and
  median rank for the model and, on the same split, the baselines
  (:mod:`clasp_pl.evaluation.baselines`: random ranking, analytic; the same architecture
  untrained; lexical formula/element matching; the composition-only tower when its checkpoint
  exists and was trained on the same records and split) and the hybrid score
  cosine + α·lexical, α chosen on the validation split (:mod:`clasp_pl.evaluation.hybrid`). A
  test-split evaluation with the checkpoint's own captions stores α beside the checkpoint as
  ``<checkpoint>.alpha.json``, tied to the checkpoint file by its sha256 (``clasp search`` uses
  it); on ``--split val`` the hybrid row is in-sample (α was chosen on the same pairs);
  Every Recall@k has a 95% bootstrap interval over papers (:mod:`clasp_pl.evaluation.bootstrap`);
  the report gives the split's pair Recall@k ceiling (:mod:`clasp_pl.evaluation.ceiling`) and the
  description queries ("a monoclinic sulfate", :mod:`clasp_pl.evaluation.description_queries`);
- ``recall_at_k.png``: Recall@k curves, both directions, model vs baselines;
- ``embedding_map_crystal_system.png`` / ``embedding_map_keywords.png``: t-SNE maps of the
  structure embeddings coloured by crystal system and by keyword category;
- ``embedding_map.html``: the same structures as an interactive map (hover for id, formula,
  space group, mineral and title; one self-contained file that opens offline);
- ``screening.md`` and ``zero_shot_roc.png``: keyword screening (zero-shot classification), and
  ``keyword_scores.npz``, each structure's keyword scores and labels (``clasp cv`` pools them).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch

from clasp_pl.api import load_model
from clasp_pl.checkpoints import read_settings
from clasp_pl.errors import UserError
from clasp_pl.evaluation import plots, report
from clasp_pl.evaluation.baselines import (
    COMPOSITION_ROW,
    composition_ranks,
    find_composition_baseline,
    lexical_ranks,
    random_row,
    untrained_ranks,
)
from clasp_pl.evaluation.bootstrap import N_RESAMPLES, PaperResamples, bidirectional_intervals
from clasp_pl.evaluation.ceiling import pair_recall_ceiling
from clasp_pl.evaluation.description_queries import evaluate_description_queries
from clasp_pl.evaluation.hybrid import choose_split_alpha, hybrid_ranks, hybrid_row_name
from clasp_pl.evaluation.metrics import summarise_bidirectional
from clasp_pl.evaluation.screening import keyword_labels
from clasp_pl.evaluation.split import (
    SplitEmbeddings,
    embed_split,
    load_datamodule,
    split_lexical_scores,
    uses_own_captions,
)
from clasp_pl.evaluation.zero_shot import load_keyword_config, screen_keywords
from clasp_pl.search.alpha_store import save_alpha
from clasp_pl.viz import record_points, write_embedding_map

logger = logging.getLogger(__name__)
EMBEDDING_MAP = "embedding_map.html"
"""The interactive map of the split's structure embeddings written beside the PNGs."""


@dataclass(frozen=True)
class EvalOptions:
    """What ``clasp eval`` evaluates, and how.

    Attributes:
        ckpt: the checkpoint.
        split: ``test`` or ``val``.
        out_dir: report folder; None: :func:`~clasp_pl.evaluation.report.default_out_dir`.
        keywords_file: keyword-screening YAML (must exist); None: :data:`DEFAULT_KEYWORDS` if
            present, else no screening.
        ks: Recall@k cut-offs of the table.
        device: where the models run.
        seed: seed of the untrained baseline and of the t-SNE maps.
        caption_fields: evaluate on these record fields instead of the checkpoint's captions.
        composition_ckpt: composition-only baseline; it must exist and share the split.
        composition_run: without ``composition_ckpt``, the run whose last checkpoint is the
            baseline when it shares the split (else its row is left out, with a warning).
        n_resamples: paper-bootstrap resamples of the Recall@k intervals (seeded by ``seed``).
        maps: also write the t-SNE maps (PNG and HTML); ``clasp cv`` leaves them out.
    """

    ckpt: Path
    split: Literal["val", "test"] = "test"
    out_dir: Path | None = None
    keywords_file: Path | None = None
    ks: tuple[int, ...] = (1, 5, 10)
    device: str = "cpu"
    seed: int = 0
    caption_fields: tuple[str, ...] | None = None
    composition_ckpt: Path | None = None
    composition_run: Path | None = None
    n_resamples: int = N_RESAMPLES
    maps: bool = True

    @property
    def report_dir(self) -> Path:
        """:attr:`out_dir`, or the default one of the checkpoint and split."""
        return self.out_dir or report.default_out_dir(self.ckpt, self.split, self.caption_fields)


def check_named_files(options: EvalOptions) -> None:
    """Raise :class:`UserError`, naming the option, when a file the user named is missing."""
    named = (
        ("--keywords", options.keywords_file),
        ("--composition-ckpt", options.composition_ckpt),
    )
    for option, path in named:
        if path is not None and not Path(path).is_file():
            raise UserError(path, f"no such file ({option})", f"check the path of {option}")


def evaluate(options: EvalOptions) -> dict[str, Any]:
    """Evaluate a checkpoint on a split and write the report; returns ``metrics.json``'s content.

    Raises:
        UserError: a named file (``keywords_file``, ``composition_ckpt``) is missing.
        CheckpointError: the checkpoint cannot be read or records no data-module settings.
        DifferentSplitError: ``composition_ckpt`` was trained on another split.
    """
    ckpt, split = options.ckpt, options.split
    check_named_files(options)
    settings = read_settings(ckpt)
    data_settings = settings.require_data()
    keyword_config = load_keyword_config(options.keywords_file)
    baseline = find_composition_baseline(ckpt, options.composition_ckpt, options.composition_run)
    out_dir = options.report_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    model = load_model(ckpt, options.device, settings)
    datamodule = load_datamodule(data_settings, options.caption_fields)
    lines, records_sha256, _ = datamodule.record_lines()
    embeddings = embed_split(model, datamodule, split, lines)
    composition = (  # first: a named baseline of another split fails before the long part
        composition_ranks(baseline, embeddings, split, options.device, datamodule, records_sha256)
        if baseline is not None
        else None
    )
    untrained = untrained_ranks(settings.model, model.device, datamodule, split, options.seed)
    val = embeddings if split == "val" else embed_split(model, datamodule, "val", lines)
    alpha, alpha_grid = choose_split_alpha(val)
    alpha_file = None
    if split == "test" and uses_own_captions(data_settings, options.caption_fields):
        alpha_file = str(save_alpha(ckpt, alpha, alpha_grid))
    lexical = split_lexical_scores(embeddings)
    all_ranks = {
        "CLaSP (this checkpoint)": embeddings.ranks(),
        "untrained (same architecture)": untrained,
        "lexical (formulas/elements in text)": lexical_ranks(embeddings, lexical),
        hybrid_row_name(alpha, split): hybrid_ranks(embeddings, lexical, alpha),
        **({COMPOSITION_ROW: composition} if composition is not None else {}),
    }
    rows = {name: summarise_bidirectional(r, options.ks) for name, r in all_ranks.items()}
    resamples = PaperResamples(embeddings.groups, options.n_resamples, options.seed)
    intervals = {
        name: {key: list(i) for key, i in bidirectional_intervals(r, resamples, options.ks).items()}
        for name, r in all_ranks.items()
    }
    rows["random (expected)"] = random_row(embeddings.groups, options.ks)
    descriptions = evaluate_description_queries(
        model, embeddings.crystal, embeddings.records, datamodule.max_length
    )
    metrics = {
        "checkpoint": str(ckpt),
        "split": split,
        "n_pairs": len(embeddings.groups),
        "n_papers": int(torch.unique(embeddings.groups).numel()),
        "hybrid_alpha": alpha,
        "hybrid_alpha_val_group_R@10": alpha_grid,
        "hybrid_alpha_file": alpha_file,
        "methods": rows,
        "intervals": intervals,
        "interval_note": f"95% percentile bootstrap over papers, {options.n_resamples} resamples",
        "pair_ceiling": pair_recall_ceiling(embeddings.captions, options.ks),
        "description_queries": {
            "queries": descriptions.queries,
            "min_relevant": descriptions.min_relevant,
            "rows": {name: row._asdict() for name, row in descriptions.rows.items()},
        },
    }
    report.write_retrieval(metrics, all_ranks, out_dir, descriptions)
    labels = (
        keyword_labels(embeddings.captions, keyword_config["keywords"]) if keyword_config else {}
    )
    if options.maps:
        write_maps(embeddings, labels, out_dir, options)
    if keyword_config:
        metrics["screening"] = screen_keywords(
            model, embeddings, keyword_config, labels, datamodule.max_length, out_dir
        )
    report.write_metrics_json(metrics, out_dir)
    return metrics


def write_maps(
    embeddings: SplitEmbeddings,
    labels: dict[str, torch.Tensor],
    out_dir: Path,
    options: EvalOptions,
) -> None:
    """The t-SNE maps of the split's structures: two PNGs and :data:`EMBEDDING_MAP`."""
    plots.embedding_maps(embeddings.crystal, embeddings.records, labels, out_dir, options.seed)
    write_embedding_map(
        embeddings.crystal,
        record_points(embeddings.records),
        out_dir / EMBEDDING_MAP,
        cache_dir=out_dir / "map-cache",
        title=f"CLaSP structure embeddings, {options.split} split (t-SNE)",
    )
