"""Memory a model needs when loaded with given settings, per device, derived from llama.cpp's code.

- Weights: each tensor's bytes from its ggml type. With ``n_gpu_layers = N`` llama.cpp puts the output
  layer and the last N-1 repeating blocks on the GPU; ``token_embd`` stays on the host (llama-model.cpp).
- KV cache (llama-kv-cache.cpp, llama-kv-cache-iswa.cpp): per layer, cells x n_head_kv x
  (head_dim_k x bytes(K) + head_dim_v x bytes(V)); cells = n_ctx padded to 256, and for sliding-window
  layers pad(min(n_ctx, n_swa x n_seq + n_ubatch), 256). Recurrent layers keep a fixed f32 state per
  sequence instead.
- Compute buffers (llama-context.cpp's graph reservation): llama.cpp reserves the worst ubatch, whose
  largest live set is the logits of n_ubatch outputs (4 x n_ubatch x n_vocab) or, without flash attention,
  the attention scores (4 x n_ubatch x n_head x n_ctx). A GPU backend allocates all of it. On the CPU the
  reservation is only virtual: pages are touched by what really runs, which for generation (one output
  per sequence) is the activations of a full ubatch, not the logits of 512 outputs.
- Runtime: the vocabulary and other model structures on the host; the CUDA context and libraries on an
  NVIDIA GPU.

The constants marked "measured" were fitted on this project's accuracy benchmark
(benchmarks/plan_accuracy.py, docs/BENCHMARKS.md) against llama.cpp's own dry-run figures and RSS.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.planner.model_info import INPUT_GROUP, OUTPUT_GROUP, ModelInfo

MIB = 1 << 20
KV_TYPE_BYTES = {"f16": 2.0, "q8_0": 34 / 32, "q4_0": 18 / 32}
KV_PAD = 256

# Measured: host memory of model structures (vocabulary, token-to-piece cache, graph metadata).
HOST_RUNTIME_BYTES = 8 * MIB
HOST_BYTES_PER_VOCAB_TOKEN = 200
# Measured: activations live at once in a CPU forward pass, in units of 4 x n_ubatch x width.
CPU_ACTIVATION_EMBD_FACTOR = 10
CPU_ACTIVATION_FF_FACTOR = 3
# The CUDA context, cuBLAS workspace and kernels take this much device memory before any buffer
# (llama-server's fitting leaves 1 GiB per device; Ollama reserves ~457 MiB). Measured on an H100.
GPU_RUNTIME_BYTES = {"cuda": 600 * MIB, "metal": 64 * MIB}
# Measured on H100s (benchmarks/host_memory.py, docs/BENCHMARKS.md): host memory the CUDA runtime and
# its libraries add to the process, while the weights load (the context, the driver's pinned and
# device mappings) and once serving (plus the kernels, loaded lazily on first use, and their heap).
GPU_HOST_RUNTIME_LOAD_BYTES = {"cuda": 98 * MIB}
GPU_HOST_RUNTIME_BYTES = {"cuda": 167 * MIB}
DEFAULT_GPU_RUNTIME_BYTES = 256 * MIB


@dataclass(frozen=True)
class LoadSettings:
    """The llama.cpp settings a plan chooses."""

    n_ctx: int
    n_batch: int = 2048
    n_ubatch: int = 512
    n_parallel: int = 1
    n_gpu_layers: int = 0
    flash_attn: bool = True
    kv_type: str = "f16"
    kv_fixed: bool = False  # kv_type was asked for: the planner does not quantize further to fit
    gpu_backend: str | None = None  # None: CPU only
    unified_memory: bool = False  # the GPU shares host RAM (Apple silicon)
    cpu_repack_types: frozenset[str] = frozenset()  # see cpu_repack_types()
    cpu_amx: bool = False  # the CPU has AMX: llama.cpp copies matrices into its AMX buffer first
    # The GPUs (their indices, as `appliance hw` lists them) in the order llama.cpp gets them: the last
    # holds the output layer. Empty: one GPU, whichever the build picks (or none).
    gpus: tuple[int, ...] = ()
    # With several GPUs: the offloaded layers each holds, in that order (the output layer counts as one
    # of the last's). See appliance.planner.split.
    split: tuple[int, ...] = ()


@dataclass(frozen=True)
class DeviceMemory:
    """What one GPU holds."""

    gpu: int | None  # its index; None where the settings named no GPU (one GPU)
    layers: int  # offloaded layers on it (the output layer counts as one)
    weights_bytes: int
    kv_bytes: int
    compute_bytes: int
    runtime_bytes: int

    @property
    def vram_bytes(self) -> int:
        return self.weights_bytes + self.kv_bytes + self.compute_bytes + self.runtime_bytes


@dataclass(frozen=True)
class MemoryEstimate:
    weights_host: int
    weights_gpu: int
    kv_host: int
    kv_gpu: int
    compute_host: int
    compute_gpu: int
    runtime_host: int
    runtime_gpu: int
    # File pages of weights that loading read and llama.cpp keeps mapped (the GPU's share, matrices the
    # CPU repacked): resident, so counted in RSS and ram_bytes, but clean, so reclaimable under pressure.
    file_cache_host: int = 0
    # Per GPU, in the settings' order (empty on the CPU and on unified memory); the *_gpu figures are
    # their sums.
    devices: tuple[DeviceMemory, ...] = ()

    @property
    def weights_bytes(self) -> int:
        return self.weights_host + self.weights_gpu

    @property
    def kv_bytes(self) -> int:
        return self.kv_host + self.kv_gpu

    @property
    def compute_bytes(self) -> int:
        return self.compute_host + self.compute_gpu

    @property
    def ram_bytes(self) -> int:
        """Host memory (RSS) this plan adds (on unified memory, everything)."""
        return self.ram_required_bytes + self.file_cache_host

    @property
    def ram_required_bytes(self) -> int:
        """Host memory that cannot be reclaimed: what must fit the budget."""
        return self.weights_host + self.kv_host + self.compute_host + self.runtime_host

    @property
    def vram_bytes(self) -> int:
        return self.weights_gpu + self.kv_gpu + self.compute_gpu + self.runtime_gpu


def cpu_repack_types(cpu_features: tuple[str, ...]) -> frozenset[str]:
    """Weight types llama.cpp's CPU backend repacks for faster matmuls on a CPU with these features
    (ggml-cpu/repack.cpp, ggml_repack_get_optimal_repack_type). A repacked matrix lives twice in RSS:
    its file pages, read once while loading, and the repacked copy."""
    features = set(cpu_features)
    types: set[str] = set()
    if "avx2" in features:
        types |= {"Q4_0", "Q4_K", "IQ4_NL", "MXFP4"}
    if "avx512f" in features:
        types.add("Q2_K")
    if "neon" in features and ("dotprod" in features or "i8mm" in features):
        types |= {"Q4_0", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "MXFP4"}
    if "neon" in features and "i8mm" in features:
        types.add("Q8_0")
    return frozenset(types)


# Bytes a block takes in AMX's packed layout beside its own (ggml-cpu/amx/mmq.cpp, get_row_size): Q8_0
# keeps a compensation int32, Q4_K/Q5_K unpacked scales, IQ4_XS two more bytes.
AMX_EXTRA_PER_BLOCK = {"Q8_0": (4, 34), "Q4_K": (4, 144), "Q5_K": (4, 176), "IQ4_XS": (2, 136)}


def cpu_weight_copies(model: ModelInfo, settings: LoadSettings) -> tuple[int, int]:
    """For a CPU plan: the bytes of the copies llama.cpp makes of matrices (AMX's buffer first, where
    the CPU has AMX and the shape suits it, else the repack buffer for the repack types), and the file
    bytes that stay mapped: per file, the range of the tensors not copied."""
    copies = 0
    copied: dict[int, list[tuple[int, int]]] = {}
    for _layer, type_name, size, amx_shape, part, start in model.repackable:
        if settings.cpu_amx and amx_shape:
            extra, block = AMX_EXTRA_PER_BLOCK.get(type_name, (0, 1))
            copies += size + size // block * extra
        elif type_name in settings.cpu_repack_types:
            copies += size
        else:
            continue
        copied.setdefault(part, []).append((start, start + size))
    if not copies:
        return 0, model.file_bytes
    mapped = 0
    for part, _group, low, high in _part_extents(model):
        runs = sorted(copied.get(part, []))
        for start, end in runs:  # copied tensors at the start of the file are not in the range
            if start - low > 64:
                break
            low = max(low, end)
        for start, end in reversed(runs):  # nor those at its end
            if high - end > 64:
                break
            high = min(high, start)
        mapped += max(0, high - low)
    return copies, mapped


def _part_extents(model: ModelInfo) -> list[tuple[int, int, int, int]]:
    """(part, 0, first byte, end) of every file's tensor data."""
    extents: dict[int, tuple[int, int]] = {}
    for part, _group, start, end in model.group_ranges:
        low, high = extents.get(part, (start, end))
        extents[part] = (min(low, start), max(high, end))
    return [(part, 0, low, high) for part, (low, high) in sorted(extents.items())]


def cpu_has_amx(cpu_features: tuple[str, ...]) -> bool:
    """llama.cpp builds its AMX buffer type for CPUs with AMX int8 and AVX512-VNNI (ggml-cpu/amx)."""
    return "amx_int8" in cpu_features and "avx512_vnni" in cpu_features


def _pad(value: int, to: int) -> int:
    return -(-value // to) * to


def kv_cells(model: ModelInfo, settings: LoadSettings) -> tuple[int, int]:
    """KV cells of full-attention layers and of sliding-window layers."""
    full = _pad(settings.n_ctx, KV_PAD)
    if model.n_swa <= 0:
        return full, full
    window = _pad(min(full, model.n_swa * settings.n_parallel + settings.n_ubatch), KV_PAD)
    return full, window


def kv_layer_bytes(model: ModelInfo, settings: LoadSettings) -> list[int]:
    """KV cache bytes of each layer (recurrent state included)."""
    k_bytes = KV_TYPE_BYTES[settings.kv_type]
    v_bytes = KV_TYPE_BYTES[settings.kv_type]
    full, window = kv_cells(model, settings)
    recurrent = model.recurrent_layers or tuple(h == 0 for h in model.n_head_kv)
    attention = model.attention_layers or tuple(h != 0 for h in model.n_head_kv)
    state = model.recurrent_state_bytes_per_seq * settings.n_parallel // max(sum(recurrent), 1)
    out = []
    for il in range(model.n_layer):
        size = state if recurrent[il] else 0
        if attention[il]:
            cells = window if model.swa_layers[il] else full
            heads = model.n_head_kv[il]
            size += int(cells * heads * (model.head_dim_k * k_bytes + model.head_dim_v * v_bytes))
        out.append(size)
    return out


def compute_reserved_bytes(model: ModelInfo, settings: LoadSettings, *, output: bool = True) -> int:
    """llama.cpp's compute buffer reservation for one backend running the whole graph (``output``), or
    only repeating layers (a GPU of a split that does not hold the output layer: no logits there)."""
    t = min(settings.n_ubatch, settings.n_ctx)
    logits = 4 * t * (model.n_vocab + 2 * model.n_embd) if output else 0
    ffn = 4 * t * (2 * model.n_embd + 2 * model.n_ff)
    attention = 0
    if not settings.flash_attn and model.has_attention:
        # Scores and mask over all KV cells, beside one layer's activations (measured in dry runs).
        full, _ = kv_cells(model, settings)
        kv_width = 2 * max(model.n_head_kv) * model.head_dim_k
        attention = 4 * t * (max(model.n_head) * full + full + model.n_ff + model.n_embd + kv_width)
    return max(logits, ffn, attention)


def compute_touched_cpu_bytes(model: ModelInfo, settings: LoadSettings) -> int:
    """The part of a CPU compute buffer that generation really writes (see the module docstring)."""
    t = min(settings.n_ubatch, settings.n_ctx)
    activations = 4 * t * (CPU_ACTIVATION_EMBD_FACTOR * model.n_embd + CPU_ACTIVATION_FF_FACTOR * model.n_ff)
    logits = 4 * model.n_vocab * settings.n_parallel
    attention = 0
    if not settings.flash_attn and model.has_attention:
        full, _ = kv_cells(model, settings)
        attention = 4 * t * (max(model.n_head) + 1) * full
    return activations + logits + attention


def _mask_bytes_per_token(model: ModelInfo, settings: LoadSettings) -> int:
    """One token's row of the attention masks over the KV cells (f16 with flash attention, else f32)."""
    if not model.has_attention:
        return 0
    full, window = kv_cells(model, settings)
    swa = [s for s, h in zip(model.swa_layers, model.n_head_kv, strict=False) if h]
    masks = (full if not all(swa) else 0) + (window if any(swa) else 0)
    return (2 if settings.flash_attn else 4) * masks


def gpu_host_compute_bytes(model: ModelInfo, settings: LoadSettings) -> int:
    """The GPU backend's pinned host compute buffer (llama.cpp's `CUDA_Host compute buffer`): the graph's
    inputs, i.e. the attention masks over the KV cells (f16 with flash attention) and two n_embd-wide
    f32 rows a token, plus the logits of one output a sequence. Matched llama.cpp to the KiB on four
    models at 2k-64k contexts. With pipeline parallelism the scheduler keeps PIPELINE_COPIES of the
    inputs (ggml-backend.cpp, pass 6 of the split)."""
    t = min(settings.n_ubatch, settings.n_ctx)
    inputs = t * (_mask_bytes_per_token(model, settings) + 8 * model.n_embd)
    copies = PIPELINE_COPIES if pipeline_parallel(model, settings) else 1
    return copies * inputs + 4 * model.n_vocab * settings.n_parallel


# ggml_backend_sched keeps this many copies of each split's inputs with pipeline parallelism
# (GGML_SCHED_MAX_COPIES), so that one ubatch's device can start while the next device computes.
PIPELINE_COPIES = 4


def pipeline_parallel(model: ModelInfo, settings: LoadSettings) -> bool:
    """Whether llama.cpp runs the GPUs of a split as a pipeline (llama-context.cpp): several devices, a
    layer split, every layer offloaded (the KV cache with it)."""
    n_gpu = model.n_layer + 1 if settings.n_gpu_layers < 0 else settings.n_gpu_layers
    return len(settings.split) > 1 and settings.gpu_backend is not None and n_gpu > model.n_layer


def device_memory(model: ModelInfo, settings: LoadSettings, kv_layers: list[int]) -> tuple[DeviceMemory, ...]:
    """What each GPU of a discrete-GPU load holds (llama-model.cpp, load_tensors; llama-context.cpp):
    the offloaded positions (the last n_gpu - 1 repeating layers, then the output layer) go to the GPUs
    in order, ``settings.split`` of them each; a layer's KV cache lives with it; every GPU has the
    runtime and a compute buffer for its part of the graph, and the one holding the output layer
    also the logits (and a copy of tied embeddings). One GPU without a split holds them all."""
    n_layer = model.n_layer
    n_gpu = n_layer + 1 if settings.n_gpu_layers < 0 else min(settings.n_gpu_layers, n_layer + 1)
    counts = settings.split if len(settings.split) > 1 else (n_gpu,)
    gpus: tuple[int | None, ...] = (
        settings.gpus if len(settings.gpus) == len(counts) else (None,) * len(counts)
    )
    positions = list(range(n_layer + 1 - n_gpu, n_layer + 1))  # n_layer: the output layer
    output = (
        model.output_bytes + model.other_bytes + (model.token_embd_bytes if model.output_bytes == 0 else 0)
    )
    runtime = GPU_RUNTIME_BYTES.get(settings.gpu_backend or "", DEFAULT_GPU_RUNTIME_BYTES)
    pipeline = pipeline_parallel(model, settings)
    t = min(settings.n_ubatch, settings.n_ctx)
    # A device of a pipeline holds its copies of what enters it: the hidden state and the masks.
    inputs = (
        PIPELINE_COPIES * t * (4 * model.n_embd + _mask_bytes_per_token(model, settings)) if pipeline else 0
    )
    out = []
    start = 0
    for gpu, count in zip(gpus, counts, strict=True):
        chunk = positions[start : start + count]
        start += count
        has_output = n_layer in chunk
        weights = sum(model.layer_bytes[il] for il in chunk if il < n_layer) + (output if has_output else 0)
        kv = sum(kv_layers[il] for il in chunk if il < n_layer)
        compute = compute_reserved_bytes(model, settings, output=has_output) + inputs
        out.append(DeviceMemory(gpu, count, weights, kv, compute, runtime))
    return tuple(out)


def cpu_mapped_bytes(model: ModelInfo, first_gpu_layer: int, output_on_gpu: bool) -> int:
    """File bytes that stay mapped for the CPU's weights: llama.cpp maps, per file, one range from the
    first CPU tensor to the end of the last, and unmaps the rest after loading. GPU tensors lying inside
    that range were read through it while loading, so their pages stay resident too: with the tensor
    order many converters write (blk.0, blk.1, blk.10, ..., token_embd last) a split keeps about the
    whole file. Without the layout (a model described by hand), the CPU's tensors alone."""
    spans: dict[int, tuple[int, int]] = {}
    for part, group, start, end in model.group_ranges:
        if group == INPUT_GROUP:
            on_cpu = True
        elif group == OUTPUT_GROUP:
            on_cpu = not output_on_gpu
        else:
            on_cpu = group < first_gpu_layer
        if on_cpu:
            low, high = spans.get(part, (start, end))
            spans[part] = (min(low, start), max(high, end))
    return sum(high - low for low, high in spans.values())


def estimate(model: ModelInfo, settings: LoadSettings) -> MemoryEstimate:
    """Bytes on the host and on the GPU for ``model`` loaded with ``settings``, serving."""
    n_layer = model.n_layer
    gpu = settings.gpu_backend is not None and settings.n_gpu_layers != 0
    n_gpu = (
        (n_layer + 1 if settings.n_gpu_layers < 0 else min(settings.n_gpu_layers, n_layer + 1)) if gpu else 0
    )
    first_gpu_layer = n_layer + 1 - n_gpu  # repeating layers from here on are on the GPU
    output_on_gpu = n_gpu >= 1
    kv_layers = kv_layer_bytes(model, settings)

    gpu_layers = sum(b for il, b in enumerate(model.layer_bytes) if il >= first_gpu_layer)
    kv_gpu = sum(b for il, b in enumerate(kv_layers) if il >= first_gpu_layer)
    output = model.output_bytes + model.other_bytes
    weights_host = model.token_embd_bytes + sum(model.layer_bytes) - gpu_layers
    weights_gpu = gpu_layers
    if not output_on_gpu:
        weights_host += output
    else:
        weights_gpu += output
        if model.output_bytes == 0:  # tied embeddings: the GPU gets its own copy for the output projection
            weights_gpu += model.token_embd_bytes
    kv_host = sum(kv_layers) - kv_gpu

    file_cache = 0
    devices: tuple[DeviceMemory, ...] = ()
    runtime_host = HOST_RUNTIME_BYTES + HOST_BYTES_PER_VOCAB_TOKEN * model.n_vocab
    if not gpu:
        compute_host, compute_gpu, runtime_gpu = compute_touched_cpu_bytes(model, settings), 0, 0
        # With a GPU, the CPU's weights go to the GPU backend's pinned host buffer, which comes before the
        # CPU's extra buffers in llama.cpp's list (llama-model.cpp, make_cpu_buft_list): no copies then.
        copies, mapped = cpu_weight_copies(model, settings)
        if copies:
            # Loading reads the whole file beside the copies; serving keeps mapped only the range of
            # the tensors left in the file (as with a GPU, see cpu_mapped_bytes). Peak: the larger.
            loading = model.file_bytes + copies + runtime_host
            serving = mapped + copies + kv_host + compute_host + runtime_host
            required = weights_host + kv_host + compute_host + runtime_host
            file_cache = max(0, max(loading, serving) - required)
    elif settings.unified_memory:
        assert settings.gpu_backend is not None
        compute_gpu = compute_reserved_bytes(model, settings)
        # The host still embeds tokens and runs whatever layers stayed on the CPU.
        cpu_share = (first_gpu_layer if first_gpu_layer > 0 else 0) / max(n_layer, 1)
        compute_host = 4 * settings.n_ubatch * model.n_embd * 2 + int(
            cpu_share * compute_touched_cpu_bytes(model, settings)
        )
        runtime_gpu = GPU_RUNTIME_BYTES.get(settings.gpu_backend, DEFAULT_GPU_RUNTIME_BYTES)
        runtime_host += GPU_HOST_RUNTIME_BYTES.get(settings.gpu_backend, 0)
    else:
        assert settings.gpu_backend is not None
        devices = device_memory(model, settings, kv_layers)
        compute_gpu = sum(d.compute_bytes for d in devices)
        # The CPU's layers compute in the GPU backend's pinned host buffer: no CPU compute buffer.
        compute_host = gpu_host_compute_bytes(model, settings)
        runtime_gpu = sum(d.runtime_bytes for d in devices)
        base = runtime_host
        runtime_host = base + GPU_HOST_RUNTIME_BYTES.get(settings.gpu_backend, 0)
        # Peak RSS is the larger of two phases (measured on H100s, docs/BENCHMARKS.md). Loading reads
        # every tensor through the file mapping: about the whole file resident, beside the runtime.
        # Serving: what stays mapped for the CPU's weights, the CPU's KV cache and the pinned compute
        # buffer, beside the runtime with its kernels loaded. Mapped pages beyond the CPU's weights are
        # clean file cache, reclaimable.
        loading = model.file_bytes + base + GPU_HOST_RUNTIME_LOAD_BYTES.get(settings.gpu_backend, 0)
        mapped = cpu_mapped_bytes(model, first_gpu_layer, output_on_gpu) if model.group_ranges else 0
        serving = max(mapped, weights_host) + kv_host + compute_host + runtime_host
        file_cache += max(loading, serving) - (weights_host + kv_host + compute_host + runtime_host)
    if settings.unified_memory:
        # One pool: what the GPU holds is host memory too.
        return MemoryEstimate(
            weights_host + weights_gpu, 0, kv_host + kv_gpu, 0, compute_host + compute_gpu, 0,
            runtime_host + runtime_gpu, 0, file_cache,
        )  # fmt: skip
    return MemoryEstimate(
        weights_host,
        weights_gpu,
        kv_host,
        kv_gpu,
        compute_host,
        compute_gpu,
        runtime_host,
        runtime_gpu,
        file_cache,
        devices,
    )
