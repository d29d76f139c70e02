"""The layers import one way: models <- appliance <- server (<- tui), and heavy libraries stay put."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("appliance", "server", "models", "tui", "client")


def test_importing_the_core_loads_no_web_or_ui_framework() -> None:
    code = (
        "import json, sys\n"
        "import appliance, appliance.config, appliance.engine.local, appliance.manager, models.embedded\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    loaded = set(json.loads(result.stdout))
    assert "appliance" in loaded
    # llama_cpp and uvicorn too: the native library loads when a model does, the web server when serving.
    assert loaded.isdisjoint({"fastapi", "starlette", "textual", "uvicorn", "llama_cpp"}), loaded


@dataclass(frozen=True)
class Import:
    file: str  # relative to the repository root, with forward slashes
    function: str | None  # the enclosing function, for lazy imports; None at module level
    module: str  # the absolute module name imported

    @property
    def top(self) -> str:
        return self.module.split(".")[0]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


class _Collector(ast.NodeVisitor):
    def __init__(self, path: Path) -> None:
        self.path = path
        self.file = path.relative_to(ROOT).as_posix()
        self.module = _module_name(path)
        self.is_package = path.name == "__init__.py"
        self.functions: list[str] = []
        self.imports: list[Import] = []

    def _add(self, module: str) -> None:
        self.imports.append(Import(self.file, self.functions[-1] if self.functions else None, module))

    def _function(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.functions.append(node.name)
        self.generic_visit(node)
        self.functions.pop()

    visit_FunctionDef = _function
    visit_AsyncFunctionDef = _function

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            self._add(alias.name)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            package = self.module.split(".")
            if not self.is_package:
                package.pop()
            base = package[: len(package) - (node.level - 1)]
            module = ".".join([*base, *([node.module] if node.module else [])])
        else:
            module = node.module or ""
        self._add(module)


def _all_imports() -> list[Import]:
    imports: list[Import] = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            collector = _Collector(path)
            collector.visit(ast.parse(path.read_text(), filename=str(path)))
            imports.extend(collector.imports)
    return imports


IMPORTS = _all_imports()


def test_the_scan_sees_the_code() -> None:
    files = {i.file for i in IMPORTS}
    assert {"appliance/engine/llama.py", "server/errors.py", "models/naming.py"} <= files
    assert Import("appliance/engine/llama.py", None, "llama_cpp") in IMPORTS


# (library, the files or folders allowed to import it)
CONFINED = [
    # the engine's low-level modules, named in appliance/engine/__init__.py
    (
        "llama_cpp",
        tuple(
            f"appliance/engine/{name}.py"
            for name in ("runtime", "llama_params", "dry_run", "grammar", "sampler", "llama")
        ),
    ),
    ("fastapi", ("server/",)),
    ("starlette", ("server/",)),
    ("uvicorn", ("server/",)),
    ("textual", ("tui/",)),
]


@pytest.mark.parametrize(("library", "allowed"), CONFINED)
def test_library_is_imported_only_where_allowed(library: str, allowed: tuple[str, ...]) -> None:
    offenders = [i for i in IMPORTS if i.top == library and not i.file.startswith(allowed)]
    assert offenders == []


# The CLI is the composition root: `appliance serve` reaches the server layer and `appliance tui` the UI
# layer, lazily, one place each.
ALLOWED_UPWARD = {
    Import("appliance/cli/serve.py", "run", "server.daemon"),
    Import("appliance/cli/tui.py", "run", "tui.app"),
}

# (package, the packages of ours it must not import)
LAYERS = [
    ("models", ("appliance", "server", "tui")),
    ("appliance", ("server", "tui")),
    ("server", ("tui",)),
    ("tui", ("appliance", "models")),
    ("client", ("appliance", "server", "models", "tui")),
]


@pytest.mark.parametrize(("package", "forbidden"), LAYERS)
def test_layers_import_one_way(package: str, forbidden: tuple[str, ...]) -> None:
    upward = {i for i in IMPORTS if i.file.startswith(f"{package}/") and i.top in forbidden}
    assert upward - ALLOWED_UPWARD == set()


def test_the_allowed_upward_imports_are_still_there_and_lazy() -> None:
    """If the CLI stops needing it, drop it from ALLOWED_UPWARD rather than leave a hole open."""
    assert set(IMPORTS) >= ALLOWED_UPWARD
    for allowed in ALLOWED_UPWARD:
        assert allowed.function is not None
