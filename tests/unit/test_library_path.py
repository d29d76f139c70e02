"""A llama.cpp built apart (docs/INSTALL.md's CUDA build) is loaded through LLAMA_CPP_LIB_PATH: the
appliance must read ggml's backend registry from there too. On the H200 it read the package's empty lib/
instead, so `appliance hw` saw no GPU backend and `serve` refused the GPU."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import llama_cpp

ROOT = Path(__file__).resolve().parents[2]


def test_the_registry_is_read_from_llama_cpp_lib_path(tmp_path: Path) -> None:
    package = Path(llama_cpp.__file__).parent
    # llama_cpp's Python code without its libraries, as a source checkout beside a CMake build has it.
    shutil.copytree(package, tmp_path / "llama_cpp", ignore=shutil.ignore_patterns("lib", "__pycache__"))
    (tmp_path / "llama_cpp" / "lib").mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)]),
           "LLAMA_CPP_LIB_PATH": str(package / "lib"), "APPLIANCE_HOME": str(tmp_path / "home")}  # fmt: skip
    probe = (
        "import llama_cpp, sys; assert llama_cpp.__file__.startswith(sys.argv[1]), llama_cpp.__file__; "
        "from appliance.engine.runtime import backend_devices; print(backend_devices())"
    )
    command = [sys.executable, "-c", probe, str(tmp_path)]
    run = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "'CPU'" in run.stdout
    hw = subprocess.run([sys.executable, "-m", "appliance", "hw"], capture_output=True, text=True, env=env,
                        timeout=120)  # fmt: skip
    assert hw.returncode == 0, hw.stderr
    assert "backend registry" not in hw.stdout + hw.stderr
