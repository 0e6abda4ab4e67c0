"""The codebase's layout and vocabulary: no import cycle, no reference to documents outside the repository, and every
command answers --help with snake_case flags."""

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "etchat"

COMMANDS = (
    "etchat.train.train",
    "etchat.eval.etbench.infer",
    "etchat.eval.etbench",
    "etchat.eval.charades.infer",
    "etchat.eval.charades",
    "etchat.eval.qvhighlights.infer",
    "etchat.eval.qvhighlights",
    "etchat.eval.dvc.infer",
    "etchat.eval.dvc",
    "etchat.eval.plot",
    "etchat.eval.report",
    "etchat.data.compress_videos",
    "etchat.data.check",
    "etchat.serve.chat",
    "etchat.serve.demo",
    "etchat.toy.synthetic",
    "etchat.toy.tiny",
    "etchat.toy.baselines",
    "etchat.toy.predictions",
    "etchat.bench infer",
    "etchat.bench train",
    "etchat.bench video",
    "etchat.bench memory",
    "etchat.bench scoring",
    "etchat.bench.scoring_phases",
    "etchat.download",
    "etchat.bench.official_scoring",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, modules: set[str]) -> set[str]:
    """The etchat modules `path` imports anywhere in its body (functions included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        for name in names:
            if name in modules:
                found.add(name)
    # `from a.b import c` names module a.b.c when it exists, else the package a.b: keep the most specific.
    return {name for name in found if not any(other.startswith(name + ".") for other in found)} - {module_name(path)}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == "open":
                return stack[stack.index(target) :] + [target]
            if target not in state and (cycle := visit(target)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_import_graph_has_no_cycle():
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in files}
    graph = {module_name(path): imported_modules(path, modules) for path in files}
    assert "etchat.eval.runner" in graph["etchat.eval.etbench.infer"]  # the walk sees imports
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))
    assert find_cycle({"a": {"b"}, "b": {"a"}}) == ["a", "b", "a"]


def test_nothing_cites_documents_outside_the_repository():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    pattern = re.compile(r"\bSPEC \d|\.\./shared|shared/SPEC")
    offenders = [
        name
        for name in tracked
        if name.endswith((".py", ".sh", ".md", ".txt", ".toml", ".json")) and pattern.search((ROOT / name).read_text())
    ]
    assert offenders == [name for name in offenders if name == "tests/test_layout.py"]


def test_every_command_answers_help_with_snake_case_flags():
    processes = {
        command: subprocess.Popen(
            [sys.executable, "-m", *command.split(), "--help"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for command in COMMANDS
    }
    for command, process in processes.items():
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, f"{command} --help: {err.decode()[-2000:]}"
        flags = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9_-]*", out.decode()))
        assert flags, command
        # HfArgumentParser adds a kebab-case alias to each of its snake_case flags; only an alias may be kebab-case.
        kebab = sorted(flag for flag in flags if "-" in flag[2:] and "--" + flag[2:].replace("-", "_") not in flags)
        assert not kebab, f"{command}: {kebab}"
