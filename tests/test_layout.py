"""The codebase's layout and vocabulary: no import cycle, no reference to documents outside the repository, and every
command answers --help with snake_case flags."""

import argparse
import ast
import importlib
import re
import subprocess
import sys
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "etchat"

# Every command: what a user types -> the module whose build_parser() makes its parser. A module that can be run
# (a __main__.py, or an `if __name__ == "__main__"` block) must be listed here (checked below).
COMMANDS = {
    "python -m etchat.train.train": "etchat.train.train",
    "python -m etchat.train.train_grpo": "etchat.train.train_grpo",
    "python -m etchat.eval.etbench.infer": "etchat.eval.etbench.infer",
    "python compute_metrics.py": "etchat.eval.etbench.compute_metrics",
    "python -m etchat.eval.charades.infer": "etchat.eval.charades.infer",
    "python -m etchat.eval.charades": "etchat.eval.charades.metrics",
    "python -m etchat.eval.qvhighlights.infer": "etchat.eval.qvhighlights.infer",
    "python -m etchat.eval.qvhighlights": "etchat.eval.qvhighlights.evaluate",
    "python -m etchat.eval.dvc.infer": "etchat.eval.dvc.infer",
    "python -m etchat.eval.dvc": "etchat.eval.dvc.evaluate",
    "python -m etchat.eval.plot": "etchat.eval.plot",
    "python -m etchat.eval.report": "etchat.eval.report.cli",
    "python -m etchat.eval.api": "etchat.eval.api.run",
    "python -m etchat.eval.lmms": "etchat.eval.lmms.__main__",
    "python -m etchat.data.compress_videos": "etchat.data.compress_videos",
    "python -m etchat.data.check": "etchat.data.check",
    "python -m etchat.serve.chat": "etchat.serve.chat",
    "python -m etchat.serve.demo": "etchat.serve.demo",
    "python -m etchat.toy.synthetic": "etchat.toy.synthetic.__main__",
    "python -m etchat.toy.tiny": "etchat.toy.tiny",
    "python -m etchat.toy.baselines": "etchat.toy.baselines",
    "python -m etchat.toy.predictions": "etchat.toy.predictions",
    "python -m etchat.toy.rl_study": "etchat.toy.rl_study",
    "python -m etchat.download": "etchat.download",
    "python -m etchat.bench": "etchat.bench.__main__",
    "python -m etchat.bench.scoring_phases": "etchat.bench.scoring_phases",
    "python -m etchat.bench.official_scoring": "etchat.bench.official_scoring",
    "python -m etchat.bench.original_inference": "etchat.bench.original_inference",
    "python -m etchat.bench.compression_shift": "etchat.bench.compression_shift",
    "python -m etchat.bench.runner": "etchat.bench.runner",
}
# The runnable modules of a command whose parser lives elsewhere: a package's __main__.py calls its module.
RUN_AS = {
    "etchat.eval.etbench.compute_metrics": (
        "etchat.eval.etbench.compute_metrics",
        "etchat.eval.etbench.__main__",
        "compute_metrics",
    ),
    "etchat.eval.charades.metrics": ("etchat.eval.charades.metrics", "etchat.eval.charades.__main__"),
    "etchat.eval.qvhighlights.evaluate": ("etchat.eval.qvhighlights.__main__",),
    "etchat.eval.dvc.evaluate": ("etchat.eval.dvc.__main__",),
    "etchat.eval.report.cli": ("etchat.eval.report.__main__",),
    "etchat.eval.api.run": ("etchat.eval.api.__main__",),
}


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


# Layers below never import layers above: data and the model know nothing of training, evaluation or serving, the
# drawing of timelines nothing of either user, and serving (the chat, the demo) nothing of the benchmarks.
NEVER_IMPORTS = {
    "etchat.data": ("etchat.train", "etchat.eval", "etchat.serve", "etchat.bench", "etchat.toy"),
    "etchat.model": ("etchat.train", "etchat.eval", "etchat.serve", "etchat.bench", "etchat.toy"),
    "etchat.plot": ("etchat.eval", "etchat.serve"),
    "etchat.serve": ("etchat.eval", "etchat.train", "etchat.bench"),
}


def test_data_flows_one_way():
    files = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(path) for path in files}
    graph = {module_name(path): imported_modules(path, modules) for path in files}
    assert "etchat.plot" in graph["etchat.serve.session"]  # the walk sees imports inside functions
    wrong = [
        f"{module} imports {target}"
        for module, targets in graph.items()
        for layer, above in NEVER_IMPORTS.items()
        if module == layer or module.startswith(layer + ".")
        for target in targets
        if target.startswith(above)
    ]
    assert wrong == []


def test_nothing_cites_documents_outside_the_repository():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    pattern = re.compile(r"\bSPEC \d|\.\./shared|shared/SPEC")
    offenders = [
        name
        for name in tracked
        if name.endswith((".py", ".sh", ".md", ".txt", ".toml", ".json")) and pattern.search((ROOT / name).read_text())
    ]
    assert offenders == [name for name in offenders if name == "tests/test_layout.py"]


def runnable_modules() -> set[str]:
    """Modules a user can run: packages' __main__.py and modules with an `if __name__ == "__main__"` block."""
    found = {"compute_metrics"}
    for path in PACKAGE.rglob("*.py"):
        if path.name == "__main__.py" or 'if __name__ == "__main__"' in path.read_text():
            found.add(module_name(path))
    return found


def parsers() -> dict[str, argparse.ArgumentParser]:
    """Each command's parser, built in-process (sub-commands as "<command> <name>")."""
    built = {}
    for command, module in COMMANDS.items():
        parser = importlib.import_module(module).build_parser()
        built[command] = parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                built.update({f"{command} {name}": sub for name, sub in action.choices.items()})
    return built


def test_every_runnable_module_is_a_listed_command():
    listed = {name for module in COMMANDS.values() for name in RUN_AS.get(module, (module,))}
    assert runnable_modules() == listed


def test_every_command_names_itself_and_answers_help_with_snake_case_flags():
    for command, parser in parsers().items():
        expected = command.removeprefix("python ") if command.startswith("python compute_metrics") else command
        assert parser.prog == expected, f"{command}: usage names {parser.prog!r}"
        assert parser.format_help().startswith(f"usage: {expected} "), command
        flags = set(shown_options(parser))
        assert flags, command
        # HfArgumentParser adds a kebab-case alias to each of its snake_case flags; only an alias may be kebab-case.
        kebab = sorted(flag for flag in flags if "-" in flag[2:] and "--" + flag[2:].replace("-", "_") not in flags)
        assert not kebab, f"{command}: {kebab}"
        # A description with indented example commands keeps its lines (argparse would refill them otherwise).
        if parser.description and "\n    " in parser.description:
            assert issubclass(parser.formatter_class, argparse.RawDescriptionHelpFormatter), command


def shown_options(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Option string -> help of the options --help shows."""
    return {
        option: action.help or ""
        for action in parser._actions
        if action.help != argparse.SUPPRESS
        for option in action.option_strings
    }


def test_flags_mean_one_thing_and_old_spellings_still_parse():
    built = parsers()
    for command, parser in built.items():
        options = shown_options(parser)
        assert not {"--num_workers", "--output", "--threads"} & set(options), command  # old spellings, hidden
        if "--out" in options:  # a file; a folder is --output_dir
            assert "folder" not in options["--out"], command
        if "--plot" in options:  # the chat's PNG path; inference's sample count is --plot_samples
            assert command == "python -m etchat.serve.chat", command
    infer = built["python -m etchat.eval.etbench.infer"]
    required = ["--anno_path", "a", "--data_path", "v", "--pred_path", "p", "--model_path", "m"]
    new = infer.parse_args([*required, "--workers", "0", "--plot_samples", "3"])
    old = infer.parse_args([*required, "--num_workers", "0", "--plot", "3"])
    assert (new.workers, new.plot_samples) == (old.workers, old.plot_samples) == (0, 3)
    assert infer.parse_args(required).workers == 2
    report = built["python -m etchat.eval.report"]
    assert report.parse_args(["a", "--out", "r"]).output_dir == report.parse_args(["a", "--output_dir", "r"]).output_dir


def test_docstrings_do_not_join_lines_with_a_backslash():
    # In a plain string literal, a backslash at the end of a line joins it to the next: the example commands of a
    # docstring would run together in --help. Double the backslash (or use a raw string).
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        with open(path, "rb") as f:
            for token in tokenize.tokenize(f.readline):
                if token.type != tokenize.STRING:
                    continue
                prefix = token.string[: len(token.string) - len(token.string.lstrip("rRbBuUfF"))]
                if "r" not in prefix.lower() and JOINED_LINE.search(token.string):
                    offenders.append(f"{path.relative_to(ROOT)}:{token.start[0]}")
    assert offenders == []


JOINED_LINE = re.compile(r"(?<!\\)(?:\\\\)*\\\n")  # an odd number of backslashes, then the end of the line


def test_a_command_answers_help_in_a_fresh_process():
    # One end-to-end check of the wiring the in-process checks cannot see: the README's scoring command starts, and
    # its __main__ block parses the arguments with the parser checked above. (A light command: a fresh process
    # spends its time importing.)
    result = subprocess.run([sys.executable, "compute_metrics.py", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("usage: compute_metrics.py ") and "--subset" in result.stdout
