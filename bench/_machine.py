"""What the benchmarks share: a description of the machine, timing with the load average
beside each figure, and the machine's own limits (memory bandwidth, FLOP/s).

The machines these run on are shared: other jobs take CPU time while a benchmark runs,
so every figure is a median of repeated measurements, each recorded with the 1-minute
load average at the time, and configurations that are compared are measured in turns
(A, B, A, B ...) rather than one after the other.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


def load_average() -> float:
    """The 1-minute load average: how many runnable jobs shared the cores."""
    return os.getloadavg()[0]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    """The machine as the results record it."""
    info: dict[str, Any] = {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    return info


def describe(info: dict[str, Any]) -> str:
    threads = f", torch {info['torch']} with {info['torch_threads']} threads" if "torch" in info else ""
    load = ", ".join(f"{x:.2f}" for x in info["load_average"])
    return f"{info['cpu']}, {info['cores']} cores{threads}; load average {load}; {info['date']}"


@dataclass
class Timing:
    """Repeated measurements of one configuration."""

    seconds: list[float] = field(default_factory=list)
    loads: list[float] = field(default_factory=list)
    """The 1-minute load average at the end of each measurement."""

    def add(self, seconds: float) -> None:
        self.seconds.append(seconds)
        self.loads.append(load_average())

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def load(self) -> float:
        return statistics.median(self.loads)

    def spread(self) -> str:
        """min-max of the measurements, to show how noisy they were."""
        return f"{min(self.seconds):.2f}-{max(self.seconds):.2f}"


def timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


# -- the machine's limits -----------------------------------------------------------


def memory_bandwidth(megabytes: int = 512, repeats: int = 5) -> tuple[float, float]:
    """(best, median) bytes per second of a large array copy (read + write), far larger
    than the CPU caches: what streaming weights from memory can reach."""
    import numpy as np

    source = np.ones(megabytes * 2**20 // 8, dtype=np.float64)
    target = np.empty_like(source)
    np.copyto(target, source)  # touch the pages first
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        np.copyto(target, source)
        rates.append(2 * source.nbytes / (time.perf_counter() - started))
    return max(rates), statistics.median(rates)


def matmul_flops(size: int = 2048, repeats: int = 5, dtype: str = "float32") -> tuple[float, float]:
    """(best, median) FLOP/s of a square matrix product with torch's threads: what the
    model's matrix products can reach at best."""
    import torch

    kind = getattr(torch, dtype)
    a = torch.randn(size, size, dtype=kind)
    b = torch.randn(size, size, dtype=kind)
    torch.matmul(a, b)  # warm up the kernels
    rates = []
    for _ in range(repeats):
        started = time.perf_counter()
        torch.matmul(a, b)
        rates.append(2 * size**3 / (time.perf_counter() - started))
    return max(rates), statistics.median(rates)


def write_json(path: str | None, payload: dict[str, Any]) -> None:
    """Write a benchmark's figures as JSON (when asked for, with --json)."""
    if path:
        Path(path).write_text(json.dumps(payload, indent=2, default=_plain))


def _plain(value: Any) -> Any:
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    return str(value)
