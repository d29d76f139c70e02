"""LoadOptions as llama.cpp's model and context parameters, shared by a load and its dry run."""

from __future__ import annotations

import ctypes
from typing import Any

import llama_cpp

from appliance.engine.params import LoadOptions
from appliance.errors import ModelLoadFailed

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


def split_arguments(options: LoadOptions) -> dict[str, Any]:
    """The GPU placement ``options`` asks of llama.cpp, as llama_model_params fields: the devices (by
    name), ``split_mode`` (a layer split: whole layers, each with its KV cache, go to the devices in
    order), ``main_gpu`` (an index into the devices) and ``tensor_split`` (the share of each, as layer
    counts; llama.cpp reads llama_max_devices() floats). Empty where the options name no devices."""
    if options.n_gpu_layers == 0 or not options.devices:
        return {}
    split = list(options.tensor_split) if len(options.devices) > 1 else []
    return {
        "devices": list(options.devices),
        "split_mode": llama_cpp.LLAMA_SPLIT_MODE_LAYER,
        "main_gpu": options.main_gpu,
        "tensor_split": split + [0.0] * (int(llama_cpp.llama_max_devices()) - len(split)) if split else None,
    }


def model_params(options: LoadOptions) -> Any:
    """llama_model_params for a load with ``options``. The arrays it points to are kept on it
    (``_appliance_arrays``): keep it alive until the model is loaded."""
    from appliance.engine.runtime import repacks_by_default

    mparams = llama_cpp.llama_model_default_params()
    mparams.n_gpu_layers = options.n_gpu_layers
    if options.repack is not None:
        mparams.use_extra_bufts = options.repack
    elif options.n_gpu_layers < 0 and options.devices:
        # Every layer on the GPUs: no weight a CPU kernel multiplies is left to repack (the token
        # embeddings stay on the CPU, read by row); llama.cpp's default, and no warning about AMX.
        mparams.use_extra_bufts = True
    else:
        mparams.use_extra_bufts = repacks_by_default()
    if options.n_gpu_layers == 0:  # a CPU plan stays off the GPU entirely
        mparams.devices = ctypes.addressof(_NO_DEVICES)
        # Mapped, never AUTO's choice (direct I/O where the device allows): the planner counts the
        # file's pages as page cache the OS may drop, which holds on a 4 GB board only with mmap.
        mparams.load_mode = llama_cpp.LLAMA_LOAD_MODE_MMAP
        return mparams
    arguments = split_arguments(options)
    if arguments:
        from appliance.engine.runtime import device_handles

        try:
            handles = device_handles(tuple(arguments["devices"]))
        except LookupError as exc:
            raise ModelLoadFailed(f"cannot use the planned GPUs: {exc}") from None
        mparams.devices = ctypes.addressof(handles)
        mparams.split_mode = arguments["split_mode"]
        mparams.main_gpu = arguments["main_gpu"]
        arrays: list[Any] = [handles]
        if arguments["tensor_split"] is not None:
            split = (ctypes.c_float * len(arguments["tensor_split"]))(*arguments["tensor_split"])
            mparams.tensor_split = ctypes.cast(split, ctypes.POINTER(ctypes.c_float))
            arrays.append(split)
        mparams._appliance_arrays = arrays  # ctypes does not keep what a pointer field points to
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
