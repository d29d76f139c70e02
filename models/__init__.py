"""Model files: naming, the embedded default model (and later the store, GGUF headers, pulls)."""
