"""Zero-shot keyword screening of an evaluated split: the keywords config, the embeddings of
each keyword's prompts, and the screening part of the report (:mod:`clasp_pl.evaluation.screening`
computes the metrics)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import yaml

from clasp_pl.api import embed_texts
from clasp_pl.evaluation import report
from clasp_pl.evaluation.keyword_scores import KEYWORD_SCORES, KeywordScores
from clasp_pl.evaluation.screening import keyword_scores, keyword_screening
from clasp_pl.evaluation.split import SplitEmbeddings
from clasp_pl.models.clasp import CLaSPModule
from clasp_pl.resources import DEFAULT_KEYWORDS

logger = logging.getLogger(__name__)


def load_keyword_config(path: Path | None) -> dict[str, Any] | None:
    """The keyword-screening config: ``path`` (named by the user), else
    :data:`DEFAULT_KEYWORDS` when present; None (no screening, with a warning) when the default
    is absent."""
    if path is not None:
        return yaml.safe_load(path.read_text())
    if DEFAULT_KEYWORDS.is_file():
        return yaml.safe_load(DEFAULT_KEYWORDS.read_text())
    logger.warning(
        "note: %s not found (run from the repository root or pass --keywords); "
        "no keyword screening",
        DEFAULT_KEYWORDS,
    )
    return None


def prompt_embeddings(
    model: CLaSPModule, config: Mapping[str, Any], max_length: int
) -> dict[str, torch.Tensor]:
    """keyword -> ``[T, D]`` embeddings of its prompts (templates x variations)."""
    templates: list[str] = config.get("templates", ["{}"])
    return {
        name: embed_texts(
            model.eval(),
            [t.format(v) for t in templates for v in variations],
            max_length=max_length,
        ).cpu()
        for name, variations in config["keywords"].items()
    }


def screen_keywords(
    model: CLaSPModule,
    embeddings: SplitEmbeddings,
    config: Mapping[str, Any],
    labels: Mapping[str, torch.Tensor],
    max_length: int,
    out_dir: Path,
) -> dict[str, Any]:
    """Keyword screening of all structures and of a balanced subset, scored by the max cosine
    over each keyword's prompts; writes ``screening.md``, ``zero_shot_roc.png`` and
    :data:`~clasp_pl.evaluation.keyword_scores.KEYWORD_SCORES` and returns the report's
    screening part."""
    scores = keyword_scores(embeddings.crystal, prompt_embeddings(model, config, max_length))
    KeywordScores.of(scores, labels, embeddings.groups).save(out_dir / KEYWORD_SCORES)
    min_positives = int(config.get("min_positives", 5))
    result = keyword_screening(scores, labels, min_positives=min_positives)
    balanced = keyword_screening(scores, labels, min_positives=min_positives, downsample=True)
    return report.write_screening(result, balanced, scores, labels, out_dir)
