"""The `appliance` command's entry point. For the commands that load llama.cpp, its libraries are loaded
and initialised before anything else is imported.

On the lent H100 (a CUDA build of llama.cpp, in an image with PyTorch and numpy 2.5), a model load
segfaulted in the tokenizer's `std::regex` code, resolved into libggml-cuda.so, whenever numpy had been
imported before llama.cpp: a dry run alone reproduces it after `import numpy` and never after psutil,
pydantic or the CLI's own imports (docs/BENCHMARKS.md). `plan`'s dry run and `eval` crashed that way, and
`serve` once did. Loading llama.cpp first costs a fraction of a second, so these commands always do.
"""

from __future__ import annotations

import sys

LOADS_LLAMA = frozenset({"serve", "plan", "eval"})


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] in LOADS_LLAMA:
        from appliance.engine.runtime import system_info

        system_info()
    from appliance.cli import main as cli_main

    return cli_main()
