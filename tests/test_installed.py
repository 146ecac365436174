"""``pip install <repo>`` into a fresh venv, then a short run from an empty folder: the defaults
(records, configs, keyword file) come from the installed package, runs and caches land in the
working folder. The venv reuses this venv's third-party packages (a ``.pth`` line), not its
clasp_pl: ``.pth`` files of a directory added that way are not processed, so this venv's
editable install stays out."""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
from pathlib import Path

import pytest

from helpers.data import COD_SAMPLE, REPO, shared_path

pytestmark = pytest.mark.slow

SKIP_COPY = shutil.ignore_patterns(".venv", ".git", "runs", "cache", "build", "*.egg-info")


def run(argv: list[str], cwd: Path, env: dict[str, str]) -> str:
    """Run a command, fail with its output when it fails; returns stdout + stderr."""
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    output = done.stdout + done.stderr
    assert done.returncode == 0, f"{argv} exited {done.returncode}:\n{output[-4000:]}"
    return output


def test_installed_package_runs_from_an_empty_folder(tmp_path) -> None:
    source = tmp_path / "source"  # a copy: the build must not write into the checkout
    shutil.copytree(REPO, source, symlinks=True, ignore=SKIP_COPY)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    venv_site = Path(
        subprocess.check_output([python, "-c", "import site; print(site.getsitepackages()[0])"])
        .decode()
        .strip()
    )
    (venv_site / "test_dependencies.pth").write_text(
        "\n".join(site.getsitepackages()) + "\n", encoding="utf-8"
    )
    env = {
        key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")
    }
    env |= {"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    install = [python, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    run([*install, str(source)], tmp_path, env)

    work = tmp_path / "work"
    work.mkdir()
    where = run([python, "-c", "import clasp_pl; print(clasp_pl.__file__)"], work, env)
    assert str(venv_site) in where  # the installed copy, not the checkout
    clasp = str(venv / "bin" / "clasp")
    assert "convert-official" in run([clasp, "--help"], work, env)

    run([clasp, "fit", "--preset", "smoke"], work, env)
    ckpt = work / "runs/debug/checkpoints/last.ckpt"
    assert ckpt.is_file() and any((work / "data/cache").iterdir())

    report = run([clasp, "eval", "--ckpt", str(ckpt), "--device", "cpu"], work, env)
    assert f"in {work / 'runs/debug/eval-test'}/" in report
    metrics = json.loads((work / "runs/debug/eval-test/metrics.json").read_text())
    assert metrics["screening"], "the packaged keyword file was not found"

    cifs = work / "cifs"
    cifs.mkdir()
    for path in sorted(shared_path(COD_SAMPLE).glob("*.cif"))[:5]:
        shutil.copy(path, cifs)
    embed = [clasp, "embed", "--ckpt", str(ckpt), "--input", "cifs", "--out", "index"]
    assert "→ index" in run([*embed, "--no-progress", "--device", "cpu"], work, env)
    assert (work / "index/index.json").is_file()
    hits = run([clasp, "search", "--index", "index", "oxide", "--device", "cpu"], work, env)
    assert "query: oxide" in hits and "rank" in hits
    assert not list(tmp_path.glob("source/runs")) and not (source / "data/cache").exists()
