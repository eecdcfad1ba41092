"""What a result depends on besides the seed: the processor's instruction set and the libraries.

On the CPU the same seed gives bit-identical trainings only where the same kernels run: torch picks
its vector kernels (ATen's CPU capability: AVX512, AVX2, ...), MKL its GEMM code path and oneDNN its
ISA from the processor. Each of them alone moves a 120-step training's loss in the 7th digit
(BENCHMARKS.md "Reproducibility"), and a search, which ranks such losses, can then take another path.
So a search records where it ran (`environment()`, on the parent run's tags and in summary.json),
and `python -m evo.compare A B` says whether two searches made the same decisions, and if not,
whether they ran on different kernels.
"""
from __future__ import annotations

import functools
import os
import platform
import sys


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@functools.lru_cache(maxsize=1)
def environment() -> dict:
    """The processor, the kernels torch dispatches to, the thread settings and the library versions
    (read once per process: none of it changes while it runs; do not modify the returned dict)."""
    import deap
    import numpy
    import torch

    mkl = next((line.split("Library Version")[1].split("Product")[0].strip(" -")
                for line in torch.__config__.show().splitlines() if "Math Kernel Library Version" in line), None)
    return {"cpu": _cpu_model(), "machine": platform.machine(), "os": f"{platform.system()} {platform.release()}",
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(), "mkl": mkl,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(), "torch": torch.__version__, "numpy": numpy.__version__,
            "deap": deap.__version__,
            "kernel_env": {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "MKL_CBWR", "MKL_ENABLE_INSTRUCTIONS",
                                                      "DNNL_MAX_CPU_ISA", "OMP_NUM_THREADS") if k in os.environ},
            "platform": sys.platform}


def differences(a: dict | None, b: dict | None) -> dict:
    """{key: (a's, b's)} for the environment entries that differ (all of them when one is missing)."""
    a, b = a or {}, b or {}
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}
