"""`appliance eval`: how well a model answers a golden set, and how far a quantization drifts from another."""
