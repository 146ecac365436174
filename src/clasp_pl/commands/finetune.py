"""``clasp finetune fit|validate|test|predict``: property prediction with LightningCLI.

The model's graph settings come from the data (as for pretraining), and its task and number of
classes from the data's target (``crystal_system``: 7-class classification; a ``meta`` key:
regression)::

    clasp finetune fit --config conf/finetune.yaml
    clasp finetune fit --config conf/finetune.yaml --model.init_from null   # random init
    clasp finetune test --config conf/finetune.yaml --ckpt_path runs/finetune/checkpoints/last.ckpt
"""

from __future__ import annotations

from lightning.pytorch.cli import LightningArgumentParser, LightningCLI

from clasp_pl.commands.fit import run_lightning_cli
from clasp_pl.data.graphs import GraphConfig
from clasp_pl.data.property_datamodule import PropertyDataModule, num_classes_of, task_of
from clasp_pl.models.finetune import PropertyModule


class PropertyCLI(LightningCLI):
    """LightningCLI whose model takes its graph settings and its task from the data."""

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        graph_fields = tuple(f"data.graph.{name}" for name in GraphConfig.__dataclass_fields__)
        parser.link_arguments(graph_fields, "model.graph", compute_fn=GraphConfig)
        parser.link_arguments("data.target", "model.task", compute_fn=task_of)
        parser.link_arguments("data.target", "model.num_classes", compute_fn=num_classes_of)


def main(argv: list[str] | None = None) -> int:
    """Run the fine-tuning LightningCLI on ``argv`` (``fit``, ``validate``, ``test``, ...)."""
    run_lightning_cli(PropertyCLI, PropertyModule, PropertyDataModule, argv or [])
    return 0
