"""The memory planner: GGUF header -> ModelInfo, (model, hardware, request) -> Plan with reasons."""
