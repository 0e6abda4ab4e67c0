"""Tables and the sections appended to `docs/benchmarks.md`: the machine, the command and the figures."""

from __future__ import annotations

import datetime
import os
import platform
import shlex
import sys

import torch

DEFAULT_OUTPUT = "docs/benchmarks.md"
FILE_TITLE = "# Benchmarks\n\nSections are appended by the tools that measured them; the newest is last.\n"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 1024**2
    except OSError:
        pass
    return None


def machine_info(device: str) -> dict:
    import transformers

    info = {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "device": device,
    }
    if torch.device(device).type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def describe_machine(info: dict) -> str:
    parts = [f"{info['cpu']}, {info['cores']} cores"]
    if info.get("memory_gib"):
        parts.append(f"{info['memory_gib']:.0f} GiB RAM")
    if info.get("gpu"):
        parts.append(f"GPU {info['gpu']}")
    parts.append(f"Python {info['python']}, torch {info['torch']}, transformers {info['transformers']}")
    parts.append(f"{info['torch_threads']} torch threads")
    if info.get("load_average"):
        load = ", ".join(f"{x:.1f}" for x in info["load_average"])
        parts.append(f"load average at start {load}")
    return "; ".join(parts)


def format_value(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        magnitude = abs(value)
        if magnitude >= 100:
            return f"{value:.0f}"
        if magnitude >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    return str(value)


def format_table(columns: list[str], rows: list[dict]) -> str:
    """A Markdown table whose column widths fit the values (readable in a terminal too)."""
    cells = [[format_value(row.get(c)) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) if cells else len(c) for i, c in enumerate(columns)]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(columns, widths)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += ["| " + " | ".join(v.ljust(w) for v, w in zip(r, widths)) + " |" for r in cells]
    return "\n".join(lines)


def command_line(argv: list[str] | None) -> str:
    args = sys.argv[1:] if argv is None else argv
    return "python -m etchat.bench " + " ".join(shlex.quote(a) for a in args)


def build_section(title: str, command: str, machine: dict, body: str) -> str:
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return f"\n## {title} ({stamp})\n\nCommand: `{command}`\n\nMachine: {describe_machine(machine)}\n\n{body.strip()}\n"


def append_section(path: str, section: str) -> None:
    """Append `section` to `path` (created with a title when missing); existing content is never rewritten."""
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    is_new = not os.path.exists(path) or os.path.getsize(path) == 0
    with open(path, "a", encoding="utf-8") as f:
        if is_new:
            f.write(FILE_TITLE)
        f.write(section)
