"""``clasp eval``: retrieval and keyword-screening report of a checkpoint on one split.

Rebuilds the checkpoint's own data module (same records, captions and split by paper), embeds the
split, and writes into ``OUT`` (default: ``<run>/eval-<split>/``):

- ``metrics.json`` and ``metrics.md``: text→structure and structure→text pair/group Recall@k and
  median rank for the model and, on the same split, the baselines (random ranking, analytic; the
  same architecture untrained; lexical formula/element matching; the composition-only tower when
  its checkpoint exists) and the hybrid score cosine + α·lexical, α chosen on the validation
  split and stored as ``alpha.json`` next to the checkpoint (``clasp search`` uses it);
- ``recall_at_k.png``: Recall@k curves, both directions, model vs baselines;
- ``embedding_map_crystal_system.png`` / ``embedding_map_keywords.png``: t-SNE maps of the
  structure embeddings coloured by crystal system and by keyword category;
- ``screening.md`` and ``zero_shot_roc.png``: keyword screening (zero-shot classification).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml
from tqdm.auto import tqdm

from clasp_pl.api import embed_texts
from clasp_pl.data.datamodule import CrystalTextDataModule
from clasp_pl.data.records import CrystalRecord, iter_record_lines
from clasp_pl.data.text import compose_caption
from clasp_pl.evaluation import plots
from clasp_pl.evaluation.metrics import (
    group_sizes,
    random_expectation,
    retrieval_ranks,
    summarise_ranks,
)
from clasp_pl.evaluation.screening import keyword_labels, keyword_scores, keyword_screening
from clasp_pl.models.clasp import CLaSPModule
from clasp_pl.search.hybrid import choose_alpha, save_alpha
from clasp_pl.search.lexical import LexicalIndex

DEFAULT_KEYWORDS = Path("conf/eval/amcsd_keywords.yaml")
COMPOSITION_RUN = Path("runs/composition")
TABLE_KEYS = (
    "pair_R@1",
    "pair_R@5",
    "pair_R@10",
    "group_R@1",
    "group_R@5",
    "group_R@10",
    "pair_median_rank",
)


@dataclass
class SplitEmbeddings:
    """Embeddings of one split, aligned row by row.

    Attributes:
        crystal: ``[N, D]`` structure embeddings; text: ``[N, D]`` caption embeddings.
        groups: ``[N]`` paper ids; records: the N records (structure, caption, metadata).
    """

    crystal: torch.Tensor
    text: torch.Tensor
    groups: torch.Tensor
    records: list[CrystalRecord]


def default_checkpoint(run: Path = Path("runs/pretrain")) -> Path:
    """The checkpoint ``make eval-retrieval`` evaluates when none is named: the run's best
    checkpoint (selected on the validation split), else its newest one."""
    candidates = sorted(run.rglob("*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise FileNotFoundError(f"no checkpoint under {run}/: run `make pretrain` or pass --ckpt")
    best = [p for p in candidates if p.name.startswith("best")]
    return (best or candidates)[-1]


def load_datamodule(
    ckpt: Path, caption_fields: Sequence[str] | None = None, keywords: str | None = None
) -> CrystalTextDataModule:
    """The checkpoint's own data module, set up (caches are reused when present).

    ``caption_fields`` evaluates on other captions of the same records and split (e.g. titles
    for a model fine-tuned on keyword captions)."""
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    hparams = state.get("datamodule_hyper_parameters")
    if not hparams:
        raise ValueError(f"{ckpt} carries no data-module settings; was it written by `clasp fit`?")
    hparams = {k: v for k, v in hparams.items() if not k.startswith("_")}  # LightningCLI's own keys
    if caption_fields:
        hparams["caption_fields"] = list(caption_fields)
    if keywords:
        hparams["keywords"] = keywords
    datamodule = CrystalTextDataModule(**hparams)
    datamodule.prepare_data()
    datamodule.setup("test")
    return datamodule


@torch.no_grad()
def embed_split(
    model: CLaSPModule, datamodule: CrystalTextDataModule, split: str
) -> SplitEmbeddings:
    """Run ``model`` over a split (eval mode) and fetch the split's records."""
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
    wanted = torch.cat(record_index).tolist()
    lines = list(iter_record_lines(datamodule.records))
    records = [CrystalRecord.from_json(lines[i]) for i in wanted]
    return SplitEmbeddings(torch.cat(crystal), torch.cat(text), torch.cat(groups), records)


def ranks_both_ways(
    crystal: torch.Tensor,
    text: torch.Tensor,
    groups: torch.Tensor,
    extra_t2s: Callable[[slice], torch.Tensor] | None = None,
    extra_s2t: Callable[[slice], torch.Tensor] | None = None,
) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{"t2s": (pair_ranks, group_ranks), "s2t": (...)}`` for aligned pairs."""
    pairs = torch.arange(len(groups))
    return {
        "t2s": retrieval_ranks(text, crystal, groups, groups, pairs, extra_scores=extra_t2s),
        "s2t": retrieval_ranks(crystal, text, groups, groups, pairs, extra_scores=extra_s2t),
    }


def summarise(ranks: dict[str, tuple[torch.Tensor, torch.Tensor]], ks: Sequence[int]) -> dict:
    out = {}
    for direction, (pair, group) in ranks.items():
        out.update(summarise_ranks(pair, ks, prefix=f"{direction}_pair_"))
        out.update(summarise_ranks(group, ks, prefix=f"{direction}_group_"))
    return out


def lexical_scores(split: SplitEmbeddings, caption_fields: Sequence[str]) -> torch.Tensor:
    """``[N texts, N structures]`` formula/element match of each caption with each structure."""
    captions = [compose_caption(r, caption_fields) for r in split.records]
    return LexicalIndex([r.composition for r in split.records]).scores(captions)


def hybrid_ranks(
    split: SplitEmbeddings, lexical: torch.Tensor, alpha: float, learned: bool = True
) -> dict:
    """Ranks for score = cosine + ``alpha`` x lexical (``learned=False``: lexical alone)."""
    if learned:
        crystal, text = split.crystal, split.text
    else:
        crystal = text = torch.zeros(len(lexical), 1)
    return ranks_both_ways(
        crystal,
        text,
        split.groups,
        extra_t2s=lambda rows: alpha * lexical[rows],
        extra_s2t=lambda rows: alpha * lexical.T[rows],
    )


def choose_hybrid_alpha(
    model: CLaSPModule, datamodule: CrystalTextDataModule
) -> tuple[float, dict[float, float]]:
    """α of the hybrid score with the best validation text→structure group R@10."""
    val = embed_split(model, datamodule, "val")
    captions = [compose_caption(r, datamodule.caption_fields) for r in val.records]
    lexical = LexicalIndex([r.composition for r in val.records])
    return choose_alpha(val.text, val.crystal, captions, lexical, val.groups)


def screening(
    model: CLaSPModule,
    split: SplitEmbeddings,
    config: dict,
    caption_fields: Sequence[str],
    max_length: int,
):
    """Keyword screening: per keyword, prompts from templates x variations, max cosine."""
    keywords: dict[str, list[str]] = config["keywords"]
    templates: list[str] = config.get("templates", ["{}"])
    captions = [compose_caption(r, caption_fields) for r in split.records]
    labels = keyword_labels(captions, keywords)
    prompts = {
        name: embed_texts(
            model.eval(),
            [t.format(v) for t in templates for v in variations],
            max_length=max_length,
        ).cpu()
        for name, variations in keywords.items()
    }
    min_positives = int(config.get("min_positives", 5))
    result = keyword_screening(split.crystal, prompts, labels, min_positives=min_positives)
    balanced = keyword_screening(
        split.crystal, prompts, labels, min_positives=min_positives, downsample=True
    )
    return result, balanced, labels, keyword_scores(split.crystal, prompts)


def default_out_dir(ckpt: Path, split: str, caption_fields: Sequence[str] | None) -> Path:
    """``<run>/eval-<split>[-<fields>]`` beside the run's ``checkpoints/`` folder."""
    suffix = "-" + "-".join(caption_fields) if caption_fields else ""
    return ckpt.parent.parent / f"eval-{split}{suffix}"


def baseline_ranks(
    ckpt: Path, reference: SplitEmbeddings, split: str, device: str, data: CrystalTextDataModule
) -> dict:
    """Ranks of another checkpoint (e.g. the composition-only baseline) on the same split."""
    model = CLaSPModule.load_from_checkpoint(ckpt, map_location=device)
    baseline_data = load_datamodule(ckpt, data.caption_fields, data.keywords)  # the same captions
    embeddings = embed_split(model, baseline_data, split)
    if [r.id for r in embeddings.records] != [r.id for r in reference.records]:
        raise ValueError(f"{ckpt} was trained on another split or dataset; cannot compare")
    return ranks_both_ways(embeddings.crystal, embeddings.text, embeddings.groups)


def evaluate(
    ckpt: Path,
    split: str = "test",
    out_dir: Path | None = None,
    keywords_file: Path = DEFAULT_KEYWORDS,
    ks: Sequence[int] = (1, 5, 10),
    device: str = "cpu",
    seed: int = 0,
    composition_ckpt: Path | None = None,
    caption_fields: Sequence[str] | None = None,
) -> dict:
    """Evaluate a checkpoint on a split and write the report; returns ``metrics.json``'s content."""
    out_dir = out_dir or default_out_dir(ckpt, split, caption_fields)
    out_dir.mkdir(parents=True, exist_ok=True)
    model = CLaSPModule.load_from_checkpoint(ckpt, map_location=device)
    datamodule = load_datamodule(ckpt, caption_fields)
    fields, max_length = datamodule.caption_fields, datamodule.max_length
    embeddings = embed_split(model, datamodule, split)

    torch.manual_seed(seed)
    untrained = CLaSPModule(**{k: v for k, v in model.hparams.items() if not k.startswith("_")}).to(
        device
    )
    untrained_embeddings = embed_split(untrained, datamodule, split)

    alpha, alpha_grid = choose_hybrid_alpha(model, datamodule)
    save_alpha(ckpt, alpha, alpha_grid)
    lexical = lexical_scores(embeddings, fields)

    curve_ks = list(range(1, 51))
    all_ranks = {
        "CLaSP (this checkpoint)": ranks_both_ways(
            embeddings.crystal, embeddings.text, embeddings.groups
        ),
        "untrained (same architecture)": ranks_both_ways(
            untrained_embeddings.crystal, untrained_embeddings.text, untrained_embeddings.groups
        ),
        "lexical (formulas/elements in text)": hybrid_ranks(embeddings, lexical, 1.0, False),
        f"hybrid: CLaSP + {alpha:g} x lexical (α from val)": hybrid_ranks(
            embeddings, lexical, alpha
        ),
    }
    if composition_ckpt and Path(composition_ckpt).is_file() and Path(composition_ckpt) != ckpt:
        all_ranks["composition-only (same text tower, heads, loss, budget)"] = baseline_ranks(
            Path(composition_ckpt), embeddings, split, device, datamodule
        )
    rows = {name: summarise(r, ks) for name, r in all_ranks.items()}
    rows["random (expected)"] = random_expectation(
        len(embeddings.groups), group_sizes(embeddings.groups), ks
    )

    keyword_config = (
        yaml.safe_load(Path(keywords_file).read_text()) if Path(keywords_file).is_file() else None
    )
    report = {
        "checkpoint": str(ckpt),
        "split": split,
        "n_pairs": len(embeddings.groups),
        "n_papers": int(torch.unique(embeddings.groups).numel()),
        "hybrid_alpha": alpha,
        "hybrid_alpha_val_group_R@10": alpha_grid,
        "methods": rows,
    }
    (out_dir / "metrics.md").write_text(plots.markdown_table(rows, TABLE_KEYS, report))
    plots.recall_curves(
        {name: {d: summarise_ranks(r[d][0], curve_ks) for d in r} for name, r in all_ranks.items()},
        curve_ks,
        out_dir / "recall_at_k.png",
    )
    keyword_labels_all = (
        keyword_labels(
            [compose_caption(r, fields) for r in embeddings.records], keyword_config["keywords"]
        )
        if keyword_config
        else {}
    )
    plots.embedding_maps(embeddings.crystal, embeddings.records, keyword_labels_all, out_dir, seed)
    if keyword_config:
        result, balanced, labels, scores = screening(
            model, embeddings, keyword_config, fields, max_length
        )
        report["screening"] = {"all": result._asdict(), "balanced": balanced._asdict()}
        (out_dir / "screening.md").write_text(plots.screening_table(result, balanced))
        evaluated = {name: scores[name] for name in result.per_keyword}
        plots.roc_curves(evaluated, labels, out_dir / "zero_shot_roc.png")
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
        default=DEFAULT_KEYWORDS,
        help="YAML with keywords, templates, min_positives",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--composition-ckpt",
        type=Path,
        help="composition-only baseline (default: the best of runs/composition, written by "
        "make pretrain-composition); its row is left out if there is none",
    )
    parser.add_argument(
        "--caption-fields",
        nargs="+",
        choices=("title", "abstract", "keywords"),
        help="evaluate on these record fields instead of the checkpoint's own captions",
    )
    args = parser.parse_args(argv)
    ckpt = args.ckpt or default_checkpoint()
    composition = args.composition_ckpt
    if composition is None and list(COMPOSITION_RUN.rglob("*.ckpt")):
        composition = default_checkpoint(COMPOSITION_RUN)
    print(f"evaluating {ckpt} on the {args.split} split")
    report = evaluate(
        ckpt,
        args.split,
        args.out,
        args.keywords,
        device=args.device,
        composition_ckpt=composition,
        caption_fields=args.caption_fields,
    )
    out = args.out or default_out_dir(ckpt, args.split, args.caption_fields)
    print((out / "metrics.md").read_text())
    print(f"report, plots and metrics.json in {out}/ ({report['n_pairs']} pairs)")
    return 0
