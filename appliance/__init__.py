"""llm-appliance: the daemon core (config, hardware, engine, CLI)."""

__version__ = "0.1.0"
