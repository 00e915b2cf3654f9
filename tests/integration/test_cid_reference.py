"""Our CIDs and CAR files against independent JS implementations, run under node.

Reference: ``ipfs-unixfs-importer`` (the importer Helia and js-ipfs use; its options set
explicitly to what ``ipfs add --cid-version=1`` does) and ``@ipld/car``. Why: a CID that
differs from Kubo's in one byte would silently split every object from its IPFS address,
and only a separate implementation can catch a mistake we would repeat in our own checks.

Needs node and ``tests/js/node_modules`` (``npm ci --prefix tests/js``). Without them the test
fails naming the command to run, so the check cannot quietly vanish.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
from pathlib import Path

import pytest

from gateway.store import PackBlockStore
from gateway.store.unixfs import CHUNK_SIZE, MAX_LINKS, build_dag, cid_to_str
from tests.support.node import require_node_package

pytestmark = pytest.mark.integration

JS_DIR = Path(__file__).resolve().parents[1] / "js"
MiB = 1 << 20


@pytest.fixture(scope="module")
def node() -> str:
    """Path to node once the npm packages are installed; else fail naming the npm command."""
    return require_node_package(
        JS_DIR / "node_modules", "ipfs-unixfs-importer", "npm ci --prefix tests/js"
    )


def _run_js(node: str, script: str, args: list[str], env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(
        [node, str(JS_DIR / script), *args],
        cwd=JS_DIR,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
        check=False,
    )
    assert proc.returncode == 0, f"{script} failed:\n{proc.stderr}"
    return proc.stdout


def _js_dags(
    node: str, files: list[Path], env: dict[str, str] | None = None
) -> list[dict[str, object]]:
    out = _run_js(node, "unixfs_cid.mjs", [str(f) for f in files], env)
    return [json.loads(line) for line in out.splitlines()]


def _content(size: int) -> bytes:
    return random.Random(size).randbytes(size)


SIZES = [
    0,
    1,
    CHUNK_SIZE - 1,
    CHUNK_SIZE,
    CHUNK_SIZE + 1,
    530_000,  # a typical CT instance
    MAX_LINKS * CHUNK_SIZE,  # one full node
    MAX_LINKS * CHUNK_SIZE + 1,  # the first two-level tree
    50 * MiB,
]


def test_unixfs_cids_match_js_importer(node: str, tmp_path: Path) -> None:
    files = []
    for size in SIZES:
        path = tmp_path / f"{size}.bin"
        path.write_bytes(_content(size))
        files.append(path)
    results = _js_dags(node, files)
    assert len(results) == len(SIZES)
    for size, result in zip(SIZES, results, strict=True):
        dag = build_dag(_content(size))
        assert result["size"] == size
        assert result["root"] == dag.root_str, f"root CID differs for {size} bytes"
        ours = sorted({cid_to_str(cid) for cid, _ in dag.blocks})
        assert result["blocks"] == ours, f"block set differs for {size} bytes"


def test_empty_file_cid_matches_js_and_kubo(node: str, tmp_path: Path) -> None:
    path = tmp_path / "empty"
    path.write_bytes(b"")
    (result,) = _js_dags(node, [path])
    # Kubo's `ipfs add --cid-version=1` of an empty file prints this same raw-leaf CID.
    expected = "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"
    assert result["root"] == build_dag(b"").root_str == expected


@pytest.mark.parametrize(("chunk", "links", "size"), [(1000, 3, 100_000), (7, 4, 10_240)])
def test_deep_trees_match_js_importer(
    node: str, tmp_path: Path, chunk: int, links: int, size: int
) -> None:
    # Small chunks and fan-out give trees many levels deep from a small input, exercising
    # the balanced layout where 256 KiB/174 would need gigabytes.
    data = _content(size)
    path = tmp_path / "deep.bin"
    path.write_bytes(data)
    (result,) = _js_dags(node, [path], {"CHUNK_SIZE": str(chunk), "MAX_CHILDREN": str(links)})
    dag = build_dag(data, chunk_size=chunk, max_links=links)
    assert result["root"] == dag.root_str
    assert result["blocks"] == sorted({cid_to_str(cid) for cid, _ in dag.blocks})


def test_store_put_and_car_export_match_js(node: str, tmp_path: Path) -> None:
    objects = [_content(size) for size in (0, 1, CHUNK_SIZE + 1, 530_000)]
    files = []
    for i, data in enumerate(objects):
        path = tmp_path / f"obj{i}.bin"
        path.write_bytes(data)
        files.append(path)
    js = _js_dags(node, files)
    car_path = tmp_path / "export.car"
    with PackBlockStore(tmp_path / "store") as store:
        roots = [store.put(data) for data in objects]
        assert roots == [r["root"] for r in js]
        with car_path.open("wb") as out:
            written = store.export_car(roots, out)
    parsed = json.loads(_run_js(node, "car_check.mjs", [str(car_path)]))
    assert parsed["version"] == 1
    assert parsed["roots"] == roots
    assert len(parsed["blocks"]) == written
    assert all(block["ok"] for block in parsed["blocks"])
    expected_blocks = set()
    for r in js:
        blocks = r["blocks"]
        assert isinstance(blocks, list)
        expected_blocks.update(blocks)
    assert {block["cid"] for block in parsed["blocks"]} == expected_blocks
