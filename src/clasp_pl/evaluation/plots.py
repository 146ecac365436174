"""Figures and tables of the evaluation report (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from sklearn.manifold import TSNE  # noqa: E402
from sklearn.metrics import roc_curve  # noqa: E402

from clasp_pl.data.labels import CRYSTAL_SYSTEMS, crystal_system_index  # noqa: E402
from clasp_pl.data.records import CrystalRecord  # noqa: E402

DIRECTIONS = {"t2s": "text → structure", "s2t": "structure → text"}


def markdown_table(
    rows: Mapping[str, Mapping[str, float]],
    keys: Sequence[str],
    info: dict,
    intervals: Mapping[str, Mapping[str, Sequence[float]]] | None = None,
) -> str:
    """Both directions' metrics, one row per method; a metric with an interval in
    ``intervals[method][key]`` (``(low, high)``) is printed ``value [low, high]``."""
    lines = [
        f"Split `{info['split']}`: {info['n_pairs']} structure-text pairs from {info['n_papers']} "
        f"papers; checkpoint `{info['checkpoint']}`.",
        "",
    ]
    intervals = intervals or {}
    for direction, label in DIRECTIONS.items():
        lines += [
            f"**{label}**",
            "",
            "| method | " + " | ".join(keys) + " |",
            "|---|" + "---|" * len(keys),
        ]
        for name, metrics in rows.items():
            bounds = intervals.get(name, {})
            cells = [
                _fmt_interval(metrics.get(f"{direction}_{key}"), bounds.get(f"{direction}_{key}"))
                for key in keys
            ]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _fmt_interval(value: float | None, bounds: Sequence[float] | None) -> str:
    if bounds is None:
        return _fmt(value)
    return f"{_fmt(value)} [{bounds[0]:.3f}, {bounds[1]:.3f}]"


def _fmt(value: float | None) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "–"
    return f"{value:.1f}" if value >= 1.5 else f"{value:.3f}"


def recall_curves(
    curves: Mapping[str, Mapping[str, Mapping[str, float]]], ks: Sequence[int], path: Path
) -> None:
    """Pair Recall@k against k, one panel per direction, one line per method."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    for ax, (direction, label) in zip(axes, DIRECTIONS.items(), strict=True):
        for name, per_direction in curves.items():
            values = [per_direction[direction][f"R@{k}"] for k in ks]
            ax.plot(ks, values, label=name)
        ax.set(title=label, xlabel="k", xscale="log")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("Recall@k (exact partner)")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def crystal_system(record: CrystalRecord) -> str:
    """The record's crystal system name (:func:`~clasp_pl.data.labels.crystal_system_index`),
    ``"unknown"`` when the symmetry analysis fails (the structure only loses its colour)."""
    index = crystal_system_index(record)
    return "unknown" if index is None else CRYSTAL_SYSTEMS[index]


def embedding_maps(
    crystal_emb: torch.Tensor,
    records: Sequence[CrystalRecord],
    keyword_labels: Mapping[str, torch.Tensor],
    out_dir: Path,
    seed: int = 0,
) -> None:
    """t-SNE of structure embeddings, coloured by crystal system and by keyword category
    (the first configured keyword the structure's text mentions, else "other")."""
    n = crystal_emb.shape[0]
    perplexity = float(min(30, max(2, (n - 1) // 3)))
    xy = TSNE(perplexity=perplexity, random_state=seed, init="pca").fit_transform(
        crystal_emb.float().numpy()
    )
    systems = [crystal_system(r) for r in records]
    _scatter(xy, systems, "crystal system", out_dir / "embedding_map_crystal_system.png")
    categories = ["other"] * n
    for name, labels in keyword_labels.items():
        for i in torch.nonzero(labels).flatten().tolist():
            if categories[i] == "other":
                categories[i] = name
    _scatter(xy, categories, "keyword in title", out_dir / "embedding_map_keywords.png")


def _scatter(xy: np.ndarray, labels: Sequence[str], title: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7.5, 6))
    names = sorted(set(labels), key=lambda name: (name == "other", name))
    colours = plt.get_cmap("tab20")(np.linspace(0, 1, max(len(names), 2)))
    for colour, name in zip(colours, names, strict=False):
        mask = np.array([label == name for label in labels])
        ax.scatter(
            *xy[mask].T,
            s=8,
            color="lightgrey" if name == "other" else colour,
            label=f"{name} ({mask.sum()})",
        )
    ax.set(title=f"Structure embeddings (t-SNE), coloured by {title}", xticks=[], yticks=[])
    ax.legend(fontsize=7, markerscale=2, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def screening_table(result, balanced) -> str:
    """Per-keyword AP / ROC-AUC / precision@10 (all structures and balanced) vs random."""
    lines = [
        "| keyword | positives | AP | random AP | ROC-AUC | P@10 | AP (balanced) | "
        "ROC-AUC (balanced) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in result.per_keyword.items():
        b = balanced.per_keyword[name]
        lines.append(
            f"| {name} | {int(m['n_positives'])} | {m['ap']:.3f} | {m['random_ap']:.3f} | "
            f"{m['roc_auc']:.3f} | {m['precision@10']:.2f} | {b['ap']:.3f} | {b['roc_auc']:.3f} |"
        )
    if result.per_keyword:
        m, b = result.mean, balanced.mean
        lines.append(
            f"| **mean** | | {m['ap']:.3f} | {m['random_ap']:.3f} | {m['roc_auc']:.3f} | "
            f"{m['precision@10']:.2f} | {b['ap']:.3f} | {b['roc_auc']:.3f} |"
        )
    if result.skipped:
        lines.append(f"\nSkipped (too few positives): {', '.join(result.skipped)}")
    return "\n".join(lines) + "\n"


def roc_curves(
    scores: Mapping[str, torch.Tensor], labels: Mapping[str, torch.Tensor], path: Path
) -> None:
    """ROC curve of each evaluated keyword's zero-shot score."""
    fig, ax = plt.subplots(figsize=(6, 5.5))
    for name, score in scores.items():
        fpr, tpr, _ = roc_curve(labels[name].numpy(), score.numpy())
        ax.plot(fpr, tpr, label=name)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8, label="random")
    ax.set(
        xlabel="false positive rate",
        ylabel="true positive rate",
        title="Zero-shot keyword classification",
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
