"""What every benchmark's JSON records about the machine it ran on."""

from __future__ import annotations

import os
import platform

import torch


def machine(device: torch.device) -> dict[str, object]:
    """Device name, CPU threads and cores, torch (and the CUDA it was built with) and Python versions."""
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "cpu_cores": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
    }
