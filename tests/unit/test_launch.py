"""The entry point loads llama.cpp before numpy for the commands that load models: on the lent H100 a
CUDA build segfaulted in its tokenizer's std::regex code whenever numpy had been imported first."""

from __future__ import annotations

import subprocess
import sys

import pytest

ORDER = """
import sys
sys.argv = ["appliance", *sys.argv[1:]]
from appliance.launch import main
try:
    main()
except SystemExit:
    pass
names = list(sys.modules)
llama = names.index("llama_cpp.llama_cpp") if "llama_cpp.llama_cpp" in names else -1
print("ORDER", llama, names.index("numpy"))
"""


@pytest.mark.parametrize("command", ["plan", "eval", "serve"])
def test_llama_cpp_is_loaded_before_numpy(command: str) -> None:
    done = subprocess.run(
        [sys.executable, "-c", ORDER, command, "/no/such/model.gguf"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    order = next(line for line in done.stdout.splitlines() if line.startswith("ORDER "))
    llama, numpy = (int(n) for n in order.split()[1:])
    assert 0 <= llama < numpy, done.stdout + done.stderr
    assert "no such file" in done.stderr  # the command itself still ran, and failed as it should
