"""Fuzz the data set scanner (gateway/dataset.py and the ingest path's parsing) with atheris.

    python tests/fuzz/fuzz_dataset.py -atheris_runs=1000000 tests/fuzz/corpus/dataset

Any libFuzzer option works (-max_total_time=3600, -jobs=2, -timeout=10); pass a scratch copy
of the corpus folder to keep the repository's seeds as they are. See tests/fuzz/targets.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

with atheris.instrument_imports(include=["gateway", "tests.fuzz"]):
    from tests.fuzz.targets import dataset


def main() -> None:
    atheris.Setup(sys.argv, dataset)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
