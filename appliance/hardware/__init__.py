"""Hardware detection: one small module per source, each returning frozen plain data."""
