"""LoadOptions as llama.cpp's model and context parameters, shared by a load and its dry run."""

from __future__ import annotations

import ctypes
from typing import Any

import llama_cpp

from appliance.engine.params import LoadOptions

_FLASH_ATTN = {
    "auto": llama_cpp.LLAMA_FLASH_ATTN_TYPE_AUTO,
    "on": llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED,
    "off": llama_cpp.LLAMA_FLASH_ATTN_TYPE_DISABLED,
}

DEFAULT_N_CTX = 4096  # tokens, when the plan names no context size and the model was trained for more

_KV_TYPES = {
    "f16": llama_cpp.GGML_TYPE_F16,
    "q8_0": llama_cpp.GGML_TYPE_Q8_0,
    "q4_0": llama_cpp.GGML_TYPE_Q4_0,
}


# An empty, NULL-terminated device list: llama.cpp then leaves every GPU alone (no offloaded layers, and
# no GPU compute buffer for large batches, which it reserves even with 0 layers when it has a GPU).
_NO_DEVICES = (ctypes.c_void_p * 1)(None)


def model_params(options: LoadOptions) -> Any:
    """llama_model_params for a load with ``options``."""
    mparams = llama_cpp.llama_model_default_params()
    mparams.n_gpu_layers = options.n_gpu_layers
    if options.n_gpu_layers == 0:  # a CPU plan stays off the GPU entirely
        mparams.devices = ctypes.addressof(_NO_DEVICES)
        # Mapped, never AUTO's choice (direct I/O where the device allows): the planner counts the
        # file's pages as page cache the OS may drop, which holds on a 4 GB board only with mmap.
        mparams.load_mode = llama_cpp.LLAMA_LOAD_MODE_MMAP
    return mparams


def context_params(options: LoadOptions, model: Any) -> Any:
    """llama_context_params for ``model`` loaded with ``options``."""
    n_ctx_train = int(llama_cpp.llama_model_n_ctx_train(model))
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_ctx = options.n_ctx or min(DEFAULT_N_CTX, n_ctx_train)
    cparams.n_batch = options.n_batch
    cparams.n_ubatch = min(options.n_ubatch, options.n_batch)
    cparams.n_seq_max = options.n_seq_max
    cparams.n_threads = options.n_threads
    cparams.n_threads_batch = options.n_threads_batch
    cparams.flash_attn_type = _FLASH_ATTN[options.flash_attn]
    cparams.type_k = cparams.type_v = _KV_TYPES[options.kv_type]
    cparams.swa_full = False  # libllama defaults it on; llama-server turns it off (windows stay small)
    # One KV stream of n_ctx / n_seq_max cells per slot: a slot attends to its own cells only, so batching
    # does not change its output (and llama.cpp caps a unified cache at the trained context).
    cparams.kv_unified = False
    cparams.no_perf = True
    return cparams
