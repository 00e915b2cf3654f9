"""The fuzzing targets, briefly, on every run: each atheris script for a bounded number of
inputs from the committed seed corpus (a crash or a hang fails the test and names its
input), and every regression input a fuzzer ever found, replayed in-process.

A long run is for developers (README, "Fuzzing"); here the point is that the targets keep
working and that nothing once found comes back.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fuzz.targets import TARGETS

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
RUNS = 2000  # inputs per target: a few seconds each
SCRIPTS = {"dataset": HERE / "fuzz_dataset.py", "pdu": HERE / "fuzz_pdu.py"}


def _inputs(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_fuzzer_runs_clean_from_the_seed_corpus(target: str, tmp_path: Path) -> None:
    import atheris  # noqa: F401 (the test extra installs it: pip install -e '.[test]')

    corpus = tmp_path / "corpus"
    shutil.copytree(HERE / "corpus" / target, corpus)  # libFuzzer adds to its first folder
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [
            sys.executable, str(SCRIPTS[target]),
            f"-atheris_runs={RUNS}", "-seed=1", "-timeout=20", "-rss_limit_mb=1024",
            f"-artifact_prefix={tmp_path}/", str(corpus),
        ],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    found = sorted(p.name for p in tmp_path.iterdir() if p.is_file())
    assert done.returncode == 0 and not found, (
        f"fuzz_{target} found {found} (copy it to tests/fuzz/regressions/{target}/ and fix):\n"
        + done.stderr[-4000:]
    )
    assert f"Done {RUNS} in" in done.stderr, done.stderr[-2000:]


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_seeds_and_regressions_replay_clean(target: str) -> None:
    """Every seed and every input a fuzzer once crashed on returns cleanly (a refusal is a
    clean return)."""
    inputs = _inputs(HERE / "corpus" / target) + _inputs(HERE / "regressions" / target)
    assert inputs
    for path in inputs:
        TARGETS[target](path.read_bytes())
