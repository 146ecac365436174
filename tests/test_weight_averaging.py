"""WeightEMA: the average it keeps, what validation and checkpoints see, exact resume, DDP, and
the commands that load its checkpoints (conf/trainer/cpu.yaml's model selection rule)."""

from __future__ import annotations

import os
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.strategies import DDPStrategy
from torch.utils.data import DataLoader, TensorDataset

from clasp_pl.api import load_model
from clasp_pl.checkpoints import find_checkpoint
from clasp_pl.cli import main
from clasp_pl.commands.cv import FoldRun, build_parser
from clasp_pl.models.finetune import read_clasp_checkpoint
from clasp_pl.training.callbacks import TRAINING_WEIGHTS, StopAfterSteps, WeightEMA
from helpers.ddp import run_ranks
from helpers.fit import TINY_FIT

STEPS_PER_EPOCH = 4
HALF_LIFE = 2.0  # decay 0.707: a running mean for 3 updates, then an EMA
DDP_TIMEOUT_S = 240


class Toy(L.LightningModule):
    """A frozen linear map, a trained one and a batch norm (averaged running statistics)."""

    def __init__(self) -> None:
        super().__init__()
        self.frozen = torch.nn.Linear(3, 3).requires_grad_(False)
        self.layer = torch.nn.Linear(3, 2)
        self.norm = torch.nn.BatchNorm1d(2)
        self.validated: list[torch.Tensor] = []  # layer.weight seen by each validation epoch

    def training_step(self, batch, batch_idx):
        x, y = batch
        return torch.nn.functional.mse_loss(self.norm(self.layer(self.frozen(x))), y)

    def validation_step(self, batch, batch_idx):
        if batch_idx == 0:
            self.validated.append(self.layer.weight.detach().clone())

    def configure_optimizers(self):
        trainable = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.SGD(trainable, lr=0.3, momentum=0.5)


class StepWeights(L.Callback):
    """The trained tensors after every optimizer step: name -> tensor, one dict per step."""

    def __init__(self) -> None:
        self.steps: list[dict[str, torch.Tensor]] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        tensors = WeightEMA.averaged_tensors(pl_module)
        self.steps.append({name: t.detach().clone() for name, t in tensors.items()})


def loader() -> DataLoader:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(4 * STEPS_PER_EPOCH, 3, generator=generator)
    y = torch.randn(4 * STEPS_PER_EPOCH, 2, generator=generator)
    return DataLoader(TensorDataset(x, y), batch_size=4)


def trainer(folder: Path, *callbacks: L.Callback, epochs: int = 3, **options) -> L.Trainer:
    last = ModelCheckpoint(dirpath=folder, filename="last", save_top_k=1, every_n_epochs=1)
    return L.Trainer(
        max_epochs=epochs,
        callbacks=[*callbacks, last],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator="cpu",
        **{"devices": 1, **options},
    )


def fit(folder: Path, *callbacks: L.Callback, ckpt_path: str | None = None, **options) -> Toy:
    L.seed_everything(0)
    model = Toy()
    trainer(folder, *callbacks, **options).fit(model, loader(), loader(), ckpt_path=ckpt_path)
    return model


def expected_average(steps: list[dict[str, torch.Tensor]], half_life: float) -> dict:
    """The rule written out: a <- a + (w - a) * max(1 - decay, 1 / (n + 1))."""
    decay = 0.5 ** (1 / half_life)
    average = {name: torch.zeros_like(t) for name, t in steps[0].items()}
    for n, weights in enumerate(steps):
        rate = max(1 - decay, 1 / (n + 1))
        average = {name: a + (weights[name] - a) * rate for name, a in average.items()}
    return average


def test_average_is_a_running_mean_then_an_ema_and_training_is_unchanged(tmp_path):
    recorded, ema = StepWeights(), WeightEMA(HALF_LIFE)
    model = fit(tmp_path / "ema", recorded, ema)
    plain = StepWeights()
    fit(tmp_path / "plain", plain)
    assert len(recorded.steps) == 3 * STEPS_PER_EPOCH
    for with_ema, without in zip(recorded.steps, plain.steps, strict=True):
        for name, tensor in without.items():  # averaging never feeds back into training
            assert torch.equal(with_ema[name], tensor), name
    wanted = expected_average(recorded.steps, HALF_LIFE)
    assert set(ema.average) == {"layer.weight", "layer.bias", "norm.weight", "norm.bias"} | {
        "norm.running_mean",
        "norm.running_var",
    }  # not the frozen map, not the integer num_batches_tracked
    for name, tensor in wanted.items():
        torch.testing.assert_close(ema.average[name], tensor, rtol=1e-6, atol=1e-7)
    # the plain mean of the first 3 steps, not pulled towards the initial weights
    first = expected_average(recorded.steps[:3], HALF_LIFE)["layer.weight"]
    mean = sum(step["layer.weight"] for step in recorded.steps[:3]) / 3
    torch.testing.assert_close(first, mean)
    # fitting ends with the average in the model; the last step's weights differ from it
    torch.testing.assert_close(model.layer.weight, wanted["layer.weight"], rtol=1e-6, atol=1e-7)
    assert not torch.allclose(model.layer.weight, recorded.steps[-1]["layer.weight"])


def test_validation_scores_the_average(tmp_path):
    recorded = StepWeights()
    model = fit(tmp_path, recorded, WeightEMA(HALF_LIFE))
    assert len(model.validated) == 3
    for epoch, seen in enumerate(model.validated):
        steps = recorded.steps[: (epoch + 1) * STEPS_PER_EPOCH]
        wanted = expected_average(steps, HALF_LIFE)["layer.weight"]
        torch.testing.assert_close(seen, wanted, rtol=1e-6, atol=1e-7)


def test_checkpoint_holds_the_average_and_the_trained_weights_to_resume(tmp_path):
    recorded, ema = StepWeights(), WeightEMA(HALF_LIFE)
    L.seed_everything(0)
    initial_frozen = Toy().frozen.weight.detach().clone()
    # as conf/trainer/cpu.yaml's step-period last.ckpt: written when fitting ends, after the
    # model took the average
    at_end = ModelCheckpoint(tmp_path / "end", save_last=True, save_top_k=0, every_n_train_steps=99)
    model = fit(tmp_path, recorded, ema, at_end)
    for path in (tmp_path / "last.ckpt", tmp_path / "end" / "last.ckpt"):
        checkpoint = torch.load(path, weights_only=True)
        assert checkpoint["callbacks"]["WeightEMA"]["updates"] == 3 * STEPS_PER_EPOCH
        for name, tensor in ema.average.items():
            assert torch.equal(checkpoint["state_dict"][name], tensor), name
            trained = checkpoint[TRAINING_WEIGHTS][name]
            assert torch.equal(trained, recorded.steps[-1][name]), name
        assert set(checkpoint[TRAINING_WEIGHTS]) == set(ema.average)  # frozen ones stored once
        assert torch.equal(checkpoint["state_dict"]["frozen.weight"], initial_frozen)
        assert checkpoint["state_dict"]["norm.num_batches_tracked"] == 3 * STEPS_PER_EPOCH
    trainer(tmp_path / "validate", ema).validate(model, loader(), verbose=False)
    assert torch.equal(model.validated[-1], ema.average["layer.weight"])  # no swap after fit


def test_resumed_run_ends_with_the_average_of_the_straight_run(tmp_path):
    straight_ema = WeightEMA(HALF_LIFE)
    straight = fit(tmp_path / "straight", straight_ema)
    fit(tmp_path / "resumed", WeightEMA(HALF_LIFE), StopAfterSteps(STEPS_PER_EPOCH))
    resumed_ema = WeightEMA(HALF_LIFE)
    resumed = fit(
        tmp_path / "resumed", resumed_ema, ckpt_path=str(tmp_path / "resumed" / "last.ckpt")
    )
    assert resumed_ema.updates == straight_ema.updates == 3 * STEPS_PER_EPOCH
    for name, tensor in straight.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], tensor), name
    a, b = (
        torch.load(tmp_path / run / "last.ckpt", weights_only=True)
        for run in ("straight", "resumed")
    )
    for key in ("state_dict", TRAINING_WEIGHTS):
        for name, tensor in a[key].items():
            assert torch.equal(b[key][name], tensor), f"{key}: {name}"


def test_resuming_a_checkpoint_without_an_average_starts_one_from_its_weights(tmp_path, caplog):
    fit(tmp_path, StopAfterSteps(STEPS_PER_EPOCH))
    trained = torch.load(tmp_path / "last.ckpt", weights_only=True)["state_dict"]
    ema, recorded = WeightEMA(HALF_LIFE), StepWeights()
    fit(tmp_path, ema, recorded, ckpt_path=str(tmp_path / "last.ckpt"))
    assert "holds no averaged weights" in caplog.text
    assert ema.updates == len(recorded.steps) == 2 * STEPS_PER_EPOCH
    wanted = expected_average(recorded.steps, HALF_LIFE)  # the old weights count for nothing
    torch.testing.assert_close(ema.average["layer.weight"], wanted["layer.weight"])
    assert not torch.equal(ema.average["layer.weight"], trained["layer.weight"])


def test_gradient_accumulation_averages_once_per_optimizer_step(tmp_path):
    ema = WeightEMA(HALF_LIFE)
    fit(tmp_path, ema, accumulate_grad_batches=2)
    assert ema.updates == 3 * STEPS_PER_EPOCH // 2


def test_half_life_must_be_positive():
    with pytest.raises(ValueError, match="half_life_steps must be > 0"):
        WeightEMA(0)


# ----------------------------------------------------------------------------- DDP
def _ddp_rank(rank: int, port: int, out_dir: str) -> None:
    """Rank ``rank`` of 2 (gloo): a straight 3-epoch fit, and one stopped after epoch 0 and
    resumed; saves each run's average to ``rank{rank}.pt``."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE="2",
        NODE_RANK="0",
        LOCAL_RANK=str(rank),
        RANK=str(rank),
        GLOO_SOCKET_IFNAME="lo",
    )
    torch.set_num_threads(1)
    out = Path(out_dir)
    ddp = {"strategy": DDPStrategy(process_group_backend="gloo"), "devices": 2}
    averages = {}
    straight = WeightEMA(HALF_LIFE)
    fit(out / "straight", straight, use_distributed_sampler=True, **ddp)
    averages["straight"] = straight.average
    ddp["strategy"] = DDPStrategy(process_group_backend="gloo")
    fit(out / "resumed", WeightEMA(HALF_LIFE), StopAfterSteps(STEPS_PER_EPOCH // 2), **ddp)
    resumed = WeightEMA(HALF_LIFE)
    ddp["strategy"] = DDPStrategy(process_group_backend="gloo")
    fit(out / "resumed", resumed, ckpt_path=str(out / "resumed" / "last.ckpt"), **ddp)
    averages["resumed"] = resumed.average
    averages["updates"] = (straight.updates, resumed.updates)
    torch.save(averages, out / f"rank{rank}.pt")


@pytest.mark.ddp
def test_ddp_ranks_hold_one_average_and_resume_it_exactly(tmp_path):
    ranks = run_ranks(_ddp_rank, 2, tmp_path, DDP_TIMEOUT_S)
    steps = 3 * STEPS_PER_EPOCH // 2  # each rank trains on half of every epoch
    assert [r["updates"] for r in ranks] == [(steps, steps)] * 2
    checkpoint = torch.load(tmp_path / "straight" / "last.ckpt", weights_only=True)
    for name, tensor in ranks[0]["straight"].items():
        assert torch.equal(ranks[1]["straight"][name], tensor), name  # the same on every rank
        assert torch.equal(checkpoint["state_dict"][name], tensor), name  # written by rank 0
        for rank in ranks:
            assert torch.equal(rank["resumed"][name], tensor), name  # resume across DDP


# ----------------------------------------------------------------------------- commands
@pytest.fixture(scope="module")
def trained_ema_run(tmp_path_factory, records_file) -> Path:
    """A 2-epoch tiny ``clasp fit`` with conf/trainer/cpu.yaml (its WeightEMA, best and last
    checkpoints), launched from its own folder."""
    run = tmp_path_factory.mktemp("ema_run")
    args = ["--data.records", str(records_file), "--data.split_fractions", "[0.6, 0.2, 0.2]"]
    args += ["--data.batch_size", "16", "--data.prepare_workers", "1"]
    args += ["--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "false"]
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(run)
        assert main([*TINY_FIT, *args]) == 0
    return run


@pytest.mark.slow
def test_commands_load_the_averaged_weights_of_the_final_checkpoint(trained_ema_run: Path):
    """``clasp eval``/``clasp cv`` pick last.ckpt; ``clasp eval``/``clasp embed`` (load_model)
    and ``clasp finetune`` (read_clasp_checkpoint) load its averaged weights."""
    run = trained_ema_run / "runs" / "pretrain"
    last = find_checkpoint(run)
    assert last.name == "last.ckpt"
    assert find_checkpoint(run, "best").name.startswith("best-")
    checkpoint = torch.load(last, weights_only=True)
    averaged, trained = checkpoint["state_dict"], checkpoint[TRAINING_WEIGHTS]
    name = (
        "crystal_head.net.0.weight"
        if "crystal_head.net.0.weight" in trained
        else next(iter(trained))
    )
    assert not torch.equal(averaged[name], trained[name])
    model = load_model(last, device="cpu")
    for key, tensor in model.state_dict().items():
        if key in averaged:
            assert torch.equal(tensor, averaged[key]), key
    _, state = read_clasp_checkpoint(last)
    assert torch.equal(state[name], averaged[name])


def test_cv_evaluates_the_last_checkpoint_unless_asked_for_the_best(tmp_path):
    args, fit_args = build_parser().parse_known_args(["--folds", "2", "--preset", "composition"])
    assert args.checkpoint == "last" and fit_args == ["--preset", "composition"]
    args, _ = build_parser().parse_known_args(["--folds", "2", "--checkpoint", "best"])
    last, best = FoldRun(tmp_path, "last"), FoldRun(tmp_path, args.checkpoint)
    assert last.report == tmp_path / "eval-test" / "metrics.json"
    assert best.report == tmp_path / "eval-test-best" / "metrics.json"  # never the last's report
