"""Model ids derived from file names."""

from __future__ import annotations

import re
from pathlib import Path

# A quantization suffix as GGUF file names carry it: ".Q4_1", "-q4_k_m", ".IQ2_XS", "-f16", "-BF16"...
_QUANT_SUFFIX = re.compile(r"[.\-_](?:i?q\d[a-z0-9_]*|tq\d_\d|mxfp4|fp?16|fp?32|bf16)$", re.IGNORECASE)
# Split files: "-00001-of-00003".
_SPLIT_SUFFIX = re.compile(r"-\d{5}-of-\d{5}$")


def model_id_from_path(path: Path) -> str:
    """A stable, lowercase id for a GGUF file: its name without extension and quantization suffix.

    ``SmolLM2-135M-Instruct.Q4_1.gguf`` -> ``smollm2-135m-instruct``.
    """
    stem = _SPLIT_SUFFIX.sub("", path.name.removesuffix(".gguf"))
    stripped = _QUANT_SUFFIX.sub("", stem)
    return (stripped or stem).lower()


def quant_from_path(path: Path) -> str | None:
    """The quantization named in a GGUF file name, lowercase (``q4_1``), if it names one."""
    match = _QUANT_SUFFIX.search(_SPLIT_SUFFIX.sub("", path.name.removesuffix(".gguf")))
    return match.group(0)[1:].lower() if match else None
