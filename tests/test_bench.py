"""Benchmark plumbing that needs no GPU: the run list and the text-tower MFU of a GPU run."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import pytest

from helpers.data import REPO


def bench_module(name: str) -> ModuleType:
    """``bench/<name>.py`` imported as a module (``bench/`` is not a package)."""
    spec = importlib.util.spec_from_file_location(name, REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def train_step() -> ModuleType:
    return bench_module("bench_train_step")


def test_quick_runs_keep_the_device_of_the_full_run() -> None:
    """`make bench BENCH_ARGS=--quick` must not run the GPU benchmark on the CPU."""
    for title, command, quick in bench_module("run_all").BENCHMARKS:
        if "--device" in command:
            device = command[command.index("--device") + 1]
            assert "--device" in quick and quick[quick.index("--device") + 1] == device, title


def test_peak_is_chosen_from_the_gpu_name(train_step) -> None:
    assert train_step.default_peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert train_step.default_peak_tflops("NVIDIA H200") == 989.0
    assert train_step.default_peak_tflops("NVIDIA A100-SXM4-40GB") == 312.0
    assert train_step.default_peak_tflops("Tesla T4") is None


def test_text_mfu_is_na_for_cached_features_and_without_a_peak(train_step) -> None:
    mfu = train_step.text_tower_mfu
    assert mfu("cached", 10**8, 2000, 0.001, 989.0) is None  # only the head ran in that time
    assert mfu("frozen-live", 10**8, 2000, 0.01, None) is None
    assert mfu("frozen-live", 10**8, 2000, 0.01, 100.0) == pytest.approx(2e8 * 2000 / 0.01 / 1e14)
    assert mfu("trainable", 10**8, 2000, 0.01, 100.0) == pytest.approx(6e8 * 2000 / 0.01 / 1e14)


def test_gpu_table_names_the_assumed_peak(train_step) -> None:
    step = {"collate": 0.01, "crystal fwd+bwd": 0.02, "loss fwd+bwd": 0.01, "full step": 0.05}
    results = {
        "cached": {**step, "text fwd": 0.001, "samples/s": 2560.0, "peak GiB": 1.0},
        "frozen-live": {**step, "text fwd": 0.02, "samples/s": 1280.0, "peak GiB": 2.0},
        "trainable": {**step, "text fwd+bwd": 0.06, "samples/s": 900.0, "peak GiB": 4.0},
    }
    for mode, result in results.items():
        result["text MFU"] = train_step.text_tower_mfu(mode, 10**8, 2000, 0.02, 989.0)
    peak = train_step.peak_note("NVIDIA H100 80GB HBM3", 989.0)
    text = train_step.table(results, "cuda", 128, peak)
    assert "| cached |" in text and "| n/a |" in text.split("| cached |")[1].splitlines()[0]
    assert "989 TFLOPS (NVIDIA H100 80GB HBM3)" in text
    assert "pass --peak-tflops" in train_step.peak_note("Tesla T4", None)
