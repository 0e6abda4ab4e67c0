"""Timers and peak-memory probes shared by the benchmark scenarios.

CPU peak memory is the process's resident-set high-water mark (VmHWM), which torch's allocator shows and tracemalloc
does not; Linux lets a process reset it (writing 5 to /proc/self/clear_refs), so a run's peak excludes model building
and warm-up spikes. CUDA peak memory is `torch.cuda.max_memory_allocated`.
"""

from __future__ import annotations

import contextlib
import resource
import sys
import time
from collections import defaultdict

import torch

MIB = 1024**2


def synchronize(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def _status_kib(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def current_rss_mib() -> float:
    kib = _status_kib("VmRSS")
    return kib / 1024 if kib is not None else float("nan")


def peak_rss_mib() -> float:
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib / 1024
    # ru_maxrss is in KiB on Linux and in bytes on macOS.
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / MIB if sys.platform == "darwin" else maxrss / 1024


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS; False where the kernel does not allow it (the peak then covers the process)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


class PeakMemory:
    """Peak memory of the code run between `reset()` and `read()`, in MiB, on the model's device."""

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self.start_mib = 0.0
        self.reset_ok = True

    def reset(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.start_mib = torch.cuda.memory_allocated(self.device) / MIB
        else:
            self.reset_ok = reset_peak_rss()
            self.start_mib = current_rss_mib()

    def read(self) -> dict:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device) / MIB
        else:
            peak = peak_rss_mib()
        return {"peak_mib": peak, "start_mib": self.start_mib, "peak_reset": self.reset_ok}


class StageTimer:
    """Wall seconds per named stage; on CUDA each stage boundary synchronizes so kernels are charged to their stage."""

    def __init__(self, device: torch.device | str):
        self.device = torch.device(device)
        self.seconds: dict[str, float] = defaultdict(float)
        self._open: dict[str, list[float]] = defaultdict(list)

    def start(self, name: str) -> None:
        synchronize(self.device)
        self._open[name].append(time.perf_counter())

    def stop(self, name: str) -> None:
        synchronize(self.device)
        self.seconds[name] += time.perf_counter() - self._open[name].pop()

    @contextlib.contextmanager
    def stage(self, name: str):
        self.start(name)
        try:
            yield
        finally:
            self.stop(name)


def attach_stage_timers(model, timer: StageTimer) -> list:
    """Time E.T. Chat's inference stages inside `generate`: `encode` (`model.encode_videos`: gathering the pixels,
    EVA-ViT, compressor), `compressor` (Q-Former and aggregator, inside `encode`) and `prefill` (the LLM forward over
    the whole prompt). Returns handles whose `remove()` undoes the instrumentation."""

    def is_prefill(kwargs) -> bool:
        embeds = kwargs.get("inputs_embeds")
        return embeds is not None and embeds.size(1) > 1

    def before(module, args, kwargs):
        if is_prefill(kwargs):
            timer.start("prefill")

    def after(module, args, kwargs, output):
        if is_prefill(kwargs):
            timer.stop("prefill")

    handles = [
        model.register_forward_pre_hook(before, with_kwargs=True),
        model.register_forward_hook(after, with_kwargs=True),
        wrap_method(model, "encode_videos", "encode", timer),
        wrap_method(model.model, "compress_frames", "compressor", timer),
    ]
    return handles


def wrap_method(obj, method: str, stage: str, timer: StageTimer):
    """Time `obj.method` calls as `stage` by shadowing the method on this instance only."""
    function = getattr(obj, method)
    restore = _Restore(obj, method)

    def timed(*args, **kwargs):
        with timer.stage(stage):
            return function(*args, **kwargs)

    setattr(obj, method, timed)
    return restore


class _Restore:
    """Undo an instance-level shadowing: put back what the instance held before, or fall back to the class's."""

    def __init__(self, obj, attribute: str):
        self.obj, self.attribute = obj, attribute
        self.previous = obj.__dict__.get(attribute)

    def remove(self) -> None:
        if self.previous is not None:
            setattr(self.obj, self.attribute, self.previous)
        else:
            delattr(self.obj, self.attribute)


def detach_stage_timers(handles: list) -> None:
    for handle in handles:
        handle.remove()
