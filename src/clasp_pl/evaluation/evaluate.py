"""``clasp eval``: retrieval and keyword-screening report of a checkpoint on one split.

Rebuilds the checkpoint's own data module (same records, keywords file, captions and split by
paper), embeds the split, and writes into ``OUT`` (default: ``<run>/eval-<split>/``):

- ``metrics.json`` and ``metrics.md``: text→structure and structure→text pair/group Recall@k and
  median rank for the model and, on the same split, the baselines (random ranking, analytic; the
  same architecture untrained; lexical formula/element matching; the composition-only tower when
  its checkpoint exists and was trained on the same records and split) and the hybrid score
  cosine + α·lexical, α chosen on the validation split. A test-split evaluation with the
  checkpoint's own captions stores α beside the checkpoint as ``<checkpoint>.alpha.json``, tied
  to the checkpoint file by its sha256 (``clasp search`` uses it); on ``--split val`` the hybrid
  row is in-sample (α was chosen on the same pairs);
- ``recall_at_k.png``: Recall@k curves, both directions, model vs baselines;
- ``embedding_map_crystal_system.png`` / ``embedding_map_keywords.png``: t-SNE maps of the
  structure embeddings coloured by crystal system and by keyword category;
- ``screening.md`` and ``zero_shot_roc.png``: keyword screening (zero-shot classification).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from tqdm.auto import tqdm

from clasp_pl.api import embed_texts
from clasp_pl.data.cache import file_fingerprint
from clasp_pl.data.datamodule import DEFAULT_RECORDS, CrystalTextDataModule
from clasp_pl.data.records import CrystalRecord
from clasp_pl.data.text import CAPTION_FIELDS, compose_caption
from clasp_pl.evaluation import plots
from clasp_pl.evaluation.metrics import (
    BidirectionalRanks,
    bidirectional_ranks,
    group_sizes,
    random_expectation,
    summarise_bidirectional,
    summarise_ranks,
)
from clasp_pl.evaluation.screening import (
    keyword_labels,
    keyword_scores,
    keyword_screening,
)
from clasp_pl.models.clasp import CLaSPModule
from clasp_pl.search.hybrid import choose_alpha, save_alpha
from clasp_pl.search.lexical import LexicalIndex

DEFAULT_KEYWORDS = Path("conf/eval/amcsd_keywords.yaml")
COMPOSITION_RUN = Path("runs/composition")
COMPOSITION_ROW = "composition-only (same text tower, heads, loss, budget)"
TABLE_KEYS = (
    "pair_R@1",
    "pair_R@5",
    "pair_R@10",
    "group_R@1",
    "group_R@5",
    "group_R@10",
    "pair_median_rank",
)


class DifferentSplitError(ValueError):
    """A baseline checkpoint's split holds other records than the evaluated checkpoint's."""


@dataclass
class SplitEmbeddings:
    """Embeddings of one split, aligned row by row.

    Attributes:
        crystal: ``[N, D]`` structure embeddings; text: ``[N, D]`` caption embeddings.
        groups: ``[N]`` paper ids; records: the N records (structure, text fields, metadata,
            keywords file applied); captions: the N captions the text embeddings encode.
    """

    crystal: torch.Tensor
    text: torch.Tensor
    groups: torch.Tensor
    records: list[CrystalRecord]
    captions: list[str]


def default_checkpoint(run: Path = Path("runs/pretrain")) -> Path:
    """The checkpoint ``make eval-retrieval`` evaluates when none is named: the run's best
    checkpoint (selected on the validation split), else its newest one."""
    candidates = sorted(run.rglob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise FileNotFoundError(f"no checkpoint under {run}/: run `make pretrain` or pass --ckpt")
    best = [p for p in candidates if p.name.startswith("best")]
    return (best or candidates)[-1]


def require_file(path: Path, option: str) -> Path:
    """``path``, which the user named with ``option``; ``FileNotFoundError`` if it is no file."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{option} {path}: no such file")
    return Path(path)


def checkpoint_data_hparams(ckpt: Path) -> dict[str, Any]:
    """The data-module settings stored in a checkpoint (LightningCLI's own ``_`` keys left out).

    Raises:
        ValueError: when the checkpoint stores none (not written by ``clasp fit``).
    """
    state = torch.load(ckpt, map_location="cpu", weights_only=True, mmap=True)
    hparams = state.get("datamodule_hyper_parameters")
    if not hparams:
        raise ValueError(f"{ckpt} carries no data-module settings; was it written by `clasp fit`?")
    return {k: v for k, v in hparams.items() if not k.startswith("_")}


def load_datamodule(
    ckpt: Path, caption_fields: Sequence[str] | None = None, keywords: str | None = None
) -> CrystalTextDataModule:
    """The checkpoint's own data module, set up (caches are reused when present).

    ``caption_fields`` evaluates on other captions of the same records and split (e.g. titles
    for a model fine-tuned on keyword captions)."""
    hparams = checkpoint_data_hparams(ckpt)
    if caption_fields:
        hparams["caption_fields"] = list(caption_fields)
    if keywords:
        hparams["keywords"] = keywords
    datamodule = CrystalTextDataModule(**hparams)
    datamodule.prepare_data()
    datamodule.setup("test")
    return datamodule


def uses_own_captions(ckpt: Path, caption_fields: Sequence[str] | None) -> bool:
    """Whether ``caption_fields`` (None: the checkpoint's own) are the checkpoint's captions."""
    if not caption_fields:
        return True
    own = checkpoint_data_hparams(ckpt).get("caption_fields") or CAPTION_FIELDS
    return list(caption_fields) == list(own)


@torch.no_grad()
def embed_split(
    model: CLaSPModule, datamodule: CrystalTextDataModule, split: str, lines: Sequence[str]
) -> SplitEmbeddings:
    """Run ``model`` over a split (eval mode) and fetch the split's records and captions.

    Args:
        lines: the data module's records as JSON lines, keywords file applied
            (``datamodule.record_lines()[0]``), indexed by the batches' ``record_index``.
    """
    model.eval()
    loader = datamodule.val_dataloader() if split == "val" else datamodule.test_dataloader()
    crystal, text, groups, record_index = [], [], [], []
    for batch in tqdm(loader, desc=f"embedding {split}", leave=False):
        batch = {k: v.to(model.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        c, t = model(batch)
        crystal.append(c.cpu())
        text.append(t.cpu())
        groups.append(batch["group_ids"].cpu())
        record_index.append(batch["record_index"].cpu())
    records = [CrystalRecord.from_json(lines[i]) for i in torch.cat(record_index).tolist()]
    captions = [compose_caption(r, datamodule.caption_fields) for r in records]
    return SplitEmbeddings(
        torch.cat(crystal), torch.cat(text), torch.cat(groups), records, captions
    )


def untrained_split(
    model: CLaSPModule,
    datamodule: CrystalTextDataModule,
    split: str,
    lines: Sequence[str],
    seed: int,
) -> SplitEmbeddings:
    """The split embedded by ``model``'s architecture freshly initialised (seeded), on its
    device."""
    torch.manual_seed(seed)
    hparams = {k: v for k, v in model.hparams.items() if not k.startswith("_")}
    hparams["init_from"] = None  # older checkpoints kept it as a hyper-parameter: load nothing
    return embed_split(CLaSPModule(**hparams).to(model.device), datamodule, split, lines)


def split_lexical_index(split: SplitEmbeddings) -> LexicalIndex:
    """Lexical index over the compositions of the split's structures."""
    return LexicalIndex([r.composition for r in split.records])


def split_lexical_scores(split: SplitEmbeddings) -> torch.Tensor:
    """``[N texts, N structures]`` formula/element match of each caption with each structure."""
    return split_lexical_index(split).scores(split.captions)


def hybrid_ranks(
    split: SplitEmbeddings, lexical: torch.Tensor, alpha: float, learned: bool = True
) -> BidirectionalRanks:
    """Ranks for score = cosine + ``alpha`` x ``lexical [N, N]`` (``learned=False``: lexical
    alone)."""
    if learned:
        crystal, text = split.crystal, split.text
    else:
        crystal = text = torch.zeros(len(lexical), 1)
    return bidirectional_ranks(
        crystal,
        text,
        split.groups,
        extra_t2s=lambda rows: alpha * lexical[rows],
        extra_s2t=lambda rows: alpha * lexical.T[rows],
    )


def choose_hybrid_alpha(val: SplitEmbeddings) -> tuple[float, dict[float, float]]:
    """α of the hybrid score with the best validation text→structure group R@10."""
    return choose_alpha(val.text, val.crystal, val.captions, split_lexical_index(val), val.groups)


def hybrid_row_name(alpha: float, split: str) -> str:
    """The hybrid row's label; on the validation split α was chosen on the same pairs."""
    origin = "α from val, in-sample" if split == "val" else "α from val"
    return f"hybrid: CLaSP + {alpha:g} x lexical ({origin})"


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


def load_keyword_config(path: Path | None) -> dict[str, Any] | None:
    """The keyword-screening config: ``path`` (which must exist), else :data:`DEFAULT_KEYWORDS`
    when present; None (no screening, with a note) when the default is absent."""
    if path is not None:
        return yaml.safe_load(require_file(path, "--keywords").read_text())
    if DEFAULT_KEYWORDS.is_file():
        return yaml.safe_load(DEFAULT_KEYWORDS.read_text())
    print(
        f"note: {DEFAULT_KEYWORDS} not found (run from the repository root or pass --keywords); "
        "no keyword screening"
    )
    return None


def composition_checkpoint(
    ckpt: Path, explicit: Path | None, run: Path | None
) -> tuple[Path | None, bool]:
    """``(composition-only baseline to compare with, named by the user)``: ``explicit`` (which
    must exist), else the best checkpoint under ``run`` (a note when there is none). None when
    there is none, or when it is the evaluated checkpoint itself."""
    if explicit is not None:
        found = require_file(explicit, "--composition-ckpt")
    elif run is not None and any(run.rglob("*.ckpt")):
        found = default_checkpoint(run)
    else:
        if run is not None:
            print(f"note: no checkpoint under {run}/ (make pretrain-composition adds its row)")
        return None, False
    if found.resolve() == ckpt.resolve():
        print(f"note: {found} is the evaluated checkpoint; no composition-only row")
        return None, False
    return found, explicit is not None


def check_same_records(ckpt: Path, data: CrystalTextDataModule) -> None:
    """Raise :class:`DifferentSplitError` unless checkpoint ``ckpt`` was trained on a records
    file with the same content as ``data``'s (checked before featurizing anything)."""
    records = Path(checkpoint_data_hparams(ckpt).get("records") or DEFAULT_RECORDS)
    if not records.is_file() or file_fingerprint(records) != file_fingerprint(data.records):
        raise DifferentSplitError(
            f"{ckpt} was trained on {records}, not on {data.records}; cannot compare"
        )


def baseline_ranks(
    ckpt: Path, reference: SplitEmbeddings, split: str, device: str, data: CrystalTextDataModule
) -> BidirectionalRanks:
    """Ranks of another checkpoint (e.g. the composition-only baseline) on the same split.

    Raises:
        DifferentSplitError: when it was trained on other records, or its split holds other
            records than ``reference``.
    """
    check_same_records(ckpt, data)
    model = CLaSPModule.load_from_checkpoint(ckpt, map_location=device)
    baseline_data = load_datamodule(ckpt, data.caption_fields, data.keywords)  # the same captions
    embeddings = embed_split(model, baseline_data, split, baseline_data.record_lines()[0])
    if [r.id for r in embeddings.records] != [r.id for r in reference.records]:
        raise DifferentSplitError(f"{ckpt} was trained on another split or dataset; cannot compare")
    return bidirectional_ranks(embeddings.crystal, embeddings.text, embeddings.groups)


def optional_baseline_ranks(
    ckpt: Path,
    required: bool,
    reference: SplitEmbeddings,
    split: str,
    device: str,
    data: CrystalTextDataModule,
) -> BidirectionalRanks | None:
    """:func:`baseline_ranks`; a baseline found automatically (not ``required``) whose split
    differs is left out with a warning instead of stopping the evaluation."""
    try:
        return baseline_ranks(ckpt, reference, split, device, data)
    except DifferentSplitError as error:
        if required:
            raise
        print(f"warning: {error}; its row is left out", file=sys.stderr)
        return None


def default_out_dir(ckpt: Path, split: str, caption_fields: Sequence[str] | None) -> Path:
    """``<run>/eval-<split>[-<fields>]`` beside the run's ``checkpoints/`` folder."""
    suffix = "-" + "-".join(caption_fields) if caption_fields else ""
    return ckpt.parent.parent / f"eval-{split}{suffix}"


def write_retrieval(
    report: Mapping[str, Any], ranks: Mapping[str, BidirectionalRanks], out_dir: Path
) -> None:
    """Write ``metrics.md`` (the report's ``methods`` table) and ``recall_at_k.png`` (pair
    Recall@k for k = 1..50 of every ranked method)."""
    (out_dir / "metrics.md").write_text(plots.markdown_table(report["methods"], TABLE_KEYS, report))
    curve_ks = list(range(1, 51))
    curves = {
        name: {
            direction: summarise_ranks(pair_group[0], curve_ks)
            for direction, pair_group in r.items()
        }
        for name, r in ranks.items()
    }
    plots.recall_curves(curves, curve_ks, out_dir / "recall_at_k.png")


def write_screening(
    model: CLaSPModule,
    embeddings: SplitEmbeddings,
    config: Mapping[str, Any],
    labels: Mapping[str, torch.Tensor],
    max_length: int,
    out_dir: Path,
) -> dict[str, Any]:
    """Keyword screening of all structures and of a balanced subset, scored by the max cosine
    over each keyword's prompts: writes ``screening.md`` and ``zero_shot_roc.png`` and returns
    the report's screening part."""
    scores = keyword_scores(embeddings.crystal, prompt_embeddings(model, config, max_length))
    min_positives = int(config.get("min_positives", 5))
    result = keyword_screening(scores, labels, min_positives=min_positives)
    balanced = keyword_screening(scores, labels, min_positives=min_positives, downsample=True)
    (out_dir / "screening.md").write_text(plots.screening_table(result, balanced))
    evaluated = {name: scores[name] for name in result.per_keyword}
    plots.roc_curves(evaluated, labels, out_dir / "zero_shot_roc.png")
    return {"all": result._asdict(), "balanced": balanced._asdict()}


def evaluate(
    ckpt: Path,
    split: str = "test",
    out_dir: Path | None = None,
    keywords_file: Path | None = None,
    ks: Sequence[int] = (1, 5, 10),
    device: str = "cpu",
    seed: int = 0,
    composition_ckpt: Path | None = None,
    caption_fields: Sequence[str] | None = None,
    composition_run: Path | None = None,
) -> dict:
    """Evaluate a checkpoint on a split and write the report; returns ``metrics.json``'s content.

    Args:
        keywords_file: keyword-screening YAML (must exist); None: :data:`DEFAULT_KEYWORDS` if
            present, else no screening.
        composition_ckpt: composition-only baseline; it must exist and share the split.
        composition_run: without ``composition_ckpt``, the run whose best checkpoint is the
            baseline when it shares the split (else its row is left out, with a warning).
        caption_fields: evaluate on these record fields instead of the checkpoint's captions.

    Raises:
        FileNotFoundError: a named file (``keywords_file``, ``composition_ckpt``) is missing.
        DifferentSplitError: ``composition_ckpt`` was trained on another split.
    """
    keyword_config = load_keyword_config(keywords_file)
    baseline, baseline_required = composition_checkpoint(ckpt, composition_ckpt, composition_run)
    out_dir = out_dir or default_out_dir(ckpt, split, caption_fields)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = CLaSPModule.load_from_checkpoint(ckpt, map_location=device)
    datamodule = load_datamodule(ckpt, caption_fields)
    lines = datamodule.record_lines()[0]
    embeddings = embed_split(model, datamodule, split, lines)
    composition = (  # first: a named baseline of another split fails before the long part
        optional_baseline_ranks(baseline, baseline_required, embeddings, split, device, datamodule)
        if baseline is not None
        else None
    )
    untrained = untrained_split(model, datamodule, split, lines, seed)
    val = embeddings if split == "val" else embed_split(model, datamodule, "val", lines)
    alpha, alpha_grid = choose_hybrid_alpha(val)
    alpha_file = None
    if split == "test" and uses_own_captions(ckpt, caption_fields):
        alpha_file = str(save_alpha(ckpt, alpha, alpha_grid))
    lexical = split_lexical_scores(embeddings)
    all_ranks = {
        "CLaSP (this checkpoint)": bidirectional_ranks(
            embeddings.crystal, embeddings.text, embeddings.groups
        ),
        "untrained (same architecture)": bidirectional_ranks(
            untrained.crystal, untrained.text, untrained.groups
        ),
        "lexical (formulas/elements in text)": hybrid_ranks(embeddings, lexical, 1.0, False),
        hybrid_row_name(alpha, split): hybrid_ranks(embeddings, lexical, alpha),
        **({COMPOSITION_ROW: composition} if composition is not None else {}),
    }
    rows = {name: summarise_bidirectional(r, ks) for name, r in all_ranks.items()}
    rows["random (expected)"] = random_expectation(
        len(embeddings.groups), group_sizes(embeddings.groups), ks
    )
    report = {
        "checkpoint": str(ckpt),
        "split": split,
        "n_pairs": len(embeddings.groups),
        "n_papers": int(torch.unique(embeddings.groups).numel()),
        "hybrid_alpha": alpha,
        "hybrid_alpha_val_group_R@10": alpha_grid,
        "hybrid_alpha_file": alpha_file,
        "methods": rows,
    }
    write_retrieval(report, all_ranks, out_dir)
    labels = (
        keyword_labels(embeddings.captions, keyword_config["keywords"]) if keyword_config else {}
    )
    plots.embedding_maps(embeddings.crystal, embeddings.records, labels, out_dir, seed)
    if keyword_config:
        report["screening"] = write_screening(
            model, embeddings, keyword_config, labels, datamodule.max_length, out_dir
        )
    (out_dir / "metrics.json").write_text(json.dumps(report, indent=1))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clasp eval", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--ckpt", type=Path, help="checkpoint (default: the best one of runs/pretrain)"
    )
    parser.add_argument("--split", choices=("val", "test"), default="test")
    parser.add_argument("--out", type=Path, help="output folder (default: <run>/eval-<split>)")
    parser.add_argument(
        "--keywords",
        type=Path,
        help=f"YAML with keywords, templates, min_positives (default: {DEFAULT_KEYWORDS}; "
        "no screening, with a note, when it is absent)",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--composition-ckpt",
        type=Path,
        help="composition-only baseline, trained on the same records and split (default: the "
        f"best of {COMPOSITION_RUN}, written by make pretrain-composition; its row is left out "
        "if there is none or if it was trained on other records)",
    )
    parser.add_argument(
        "--caption-fields",
        nargs="+",
        choices=CAPTION_FIELDS,
        help="evaluate on these record fields instead of the checkpoint's own captions",
    )
    args = parser.parse_args(argv)
    try:
        ckpt = args.ckpt or default_checkpoint()
        print(f"evaluating {ckpt} on the {args.split} split")
        report = evaluate(
            ckpt,
            args.split,
            args.out,
            args.keywords,
            device=args.device,
            composition_ckpt=args.composition_ckpt,
            caption_fields=args.caption_fields,
            composition_run=None if args.composition_ckpt else COMPOSITION_RUN,
        )
    except FileNotFoundError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    out = args.out or default_out_dir(ckpt, args.split, args.caption_fields)
    print((out / "metrics.md").read_text())
    alpha_note = report["hybrid_alpha_file"] or (
        "not stored: only a test-split evaluation with the checkpoint's own captions stores it"
    )
    print(f"hybrid α {report['hybrid_alpha']:g} ({alpha_note})")
    print(f"report, plots and metrics.json in {out}/ ({report['n_pairs']} pairs)")
    return 0
