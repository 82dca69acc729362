"""What every benchmark prints beside its figures: the CPU they were measured on."""

from __future__ import annotations

import os

FLAGS = ("amx_tile", "amx_bf16", "amx_int8", "avx512_bf16", "avx512_vnni", "avx_vnni", "avx512f")


def describe_cpu() -> str:
    """Model name, the flags that decide bf16/int8 speed, and the CPUs this process may use."""
    model, flags = "unknown CPU", set()
    with open("/proc/cpuinfo") as info:
        for line in info:
            key, _, value = line.partition(":")
            if key.strip() == "model name" and model == "unknown CPU":
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    present = [flag for flag in FLAGS if flag in flags] or ["no AVX-512/AMX"]
    return f"{model} ({', '.join(present)}); {len(os.sched_getaffinity(0))} CPUs"
