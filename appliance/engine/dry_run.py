"""A load's memory as llama.cpp itself would plan it: a dry run that allocates nothing."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import llama_cpp

from appliance.engine.llama_params import context_params, model_params
from appliance.engine.params import LoadOptions
from appliance.engine.runtime import captured_log, init_backend
from appliance.errors import ModelLoadFailed


@dataclass(frozen=True)
class DryRun:
    """llama.cpp's own figures for a load, from a dry run that allocates nothing."""

    kv_bytes: int
    compute_bytes: dict[str, int]  # per backend buffer ("CPU", "CUDA0", "CUDA_Host", ...)
    output_bytes: int


_MIB = 1 << 20
_BUFFER_LINE = re.compile(r"(\S+)\s+(compute|output) buffer size =\s+([\d.]+) MiB")
_KV_LINE = re.compile(r"(?:llama_kv_cache|llama_memory_recurrent): size =\s+([\d.]+) MiB")


def dry_run(path: Path, options: LoadOptions) -> DryRun:
    """Plan the buffers of a load without allocating them (``no_alloc``), and read llama.cpp's sizes."""
    bridge = init_backend()
    mparams = model_params(options)
    mparams.no_alloc = True
    mparams.load_mode = 0  # LLAMA_LOAD_MODE_NONE: the dry run needs mmap off
    with captured_log() as lines:
        model = llama_cpp.llama_model_load_from_file(str(path).encode("utf-8"), mparams)
        if not model:
            raise ModelLoadFailed(f"cannot read model {path}: " + "; ".join(bridge.recent_errors))
        try:
            ctx = llama_cpp.llama_init_from_model(model, context_params(options, model))
            if not ctx:
                raise ModelLoadFailed(f"llama.cpp cannot plan a context for {path}")
            llama_cpp.llama_free(ctx)
        finally:
            llama_cpp.llama_model_free(model)
    kv = sum(float(m.group(1)) for line in lines if (m := _KV_LINE.search(line)))
    compute: dict[str, int] = {}
    output = 0.0
    for line in lines:
        match = _BUFFER_LINE.search(line)
        if not match:
            continue
        if match.group(2) == "compute":
            compute[match.group(1)] = compute.get(match.group(1), 0) + int(float(match.group(3)) * _MIB)
        else:
            output += float(match.group(3))
    return DryRun(int(kv * _MIB), compute, int(output * _MIB))
