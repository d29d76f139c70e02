"""llm-appliance: the daemon core (config, hardware, engine, CLI)."""

from importlib import metadata

# The version lives in pyproject.toml alone; an installed package (editable too) carries it here.
try:
    __version__ = metadata.version("llm-appliance")
except metadata.PackageNotFoundError:  # a bare source tree on sys.path, never installed
    __version__ = "0+unknown"
