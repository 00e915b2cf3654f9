"""The package layout holds: the core imports none of its edges, the CLI has no import cycle,
and the posture agent loads none of the server's dependencies."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
EDGES = ("ztbridge", "portal", "dicom_scp")
SERVER_ONLY = ("web3", "sqlalchemy", "fastapi", "pynetdicom", "pydicom", "uvicorn", "psycopg")


def _imports(path: Path, root: Path = ROOT) -> set[str]:
    """Every module a file imports (absolute names; relative imports resolved)."""
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(path.relative_to(root).with_suffix("").parts[:-1])
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)
    return found


def test_gateway_imports_none_of_its_edges() -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in sorted((ROOT / "gateway").rglob("*.py"))
        for name in sorted(_imports(path))
        if name.split(".")[0] in EDGES
    ]
    assert not offenders, "\n".join(offenders)


def test_the_walker_sees_an_edge_import(tmp_path: Path) -> None:
    """The check above can fail: a file importing the CLI is reported. (The probe lives in a
    copy of the layout under tmp_path: a file in the real gateway/, even for a moment, would
    be read by the source scans of tests running beside this one under pytest-xdist.)"""
    bad = tmp_path / "gateway" / "_layout_probe_tmp.py"
    bad.parent.mkdir()
    bad.write_text("from ztbridge.cli import main\nimport portal.app\n")
    assert {"ztbridge.cli", "portal.app"} <= _imports(bad, tmp_path)


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle in ``graph`` (as a path that ends where it began), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt) :], nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _graph(package: str) -> dict[str, set[str]]:
    files = {_module_name(p): p for p in (ROOT / package).rglob("*.py")}
    return {
        name: {m for m in _imports(path) if m in files and m != name}
        for name, path in files.items()
    }


def test_no_import_cycle_between_cli_modules() -> None:
    graph = _graph("ztbridge")
    assert len(graph) > 5, "the CLI package was not found"
    assert _cycle(graph) is None, _cycle(graph)


def test_cycle_finder_finds_a_cycle() -> None:
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_agent_loads_no_server_dependency() -> None:
    """``ztbridge agent`` as the console script runs it: none of the server's libraries load."""
    probe = (
        "import sys\n"
        "sys.argv = ['ztbridge', 'agent', '--help']\n"
        "from ztbridge.cli import main\n"
        "try:\n"
        "    main()\n"
        "except SystemExit as e:\n"
        "    assert e.code in (0, None), e.code\n"
        f"bad = sorted({{m.split('.')[0] for m in sys.modules}} & set({SERVER_ONLY!r}))\n"
        "print('LOADED', ','.join(bad))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "--gateway" in result.stdout  # it really ran the agent's command
    loaded = result.stdout.strip().splitlines()[-1]
    assert loaded.startswith("LOADED"), result.stdout
    assert loaded == "LOADED", f"the agent loaded server modules: {loaded}"


def test_full_cli_still_lists_every_group() -> None:
    """The light path must not hide commands from the full tree."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", "import sys; sys.argv=['ztbridge','--help'];"
         "from ztbridge.cli import main; main()"],
        capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip
    for name in ("up", "status", "import", "export", "verify", "agent", "device", "ca", "chain"):
        assert f" {name} " in result.stdout, result.stdout
