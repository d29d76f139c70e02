"""Measured results kept with the model: the probe's counts, the golden set's pass rate and the drift
from another quantization, one JSON file per model file in the state directory.

The file is named by a digest of the model file, so the same weights under two names share results,
and a changed file (another template, a re-download of another revision) starts with none. The digest
covers the whole header (where a template or a setting changes) and two samples of the weights, not
every byte: hashing a 20 GB file on each `appliance list` would take minutes.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any

from models.gguf_header import read_gguf_file

_SAMPLE_BYTES = 1 << 20


def file_digest(path: Path) -> str:
    """The digest results are kept under (size, header and two 1 MiB samples of the data), cached per
    file as it is now. OSError or GGUFError when it cannot be read."""
    stat = path.stat()
    return _digest(path, stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=256)
def _digest(path: Path, size_bytes: int, mtime_ns: int) -> str:
    header_bytes = read_gguf_file(path).data_offset
    digest = hashlib.sha256(str(size_bytes).encode())
    with path.open("rb") as f:
        digest.update(f.read(header_bytes))
        for start in (header_bytes + (size_bytes - header_bytes) // 2, max(0, size_bytes - _SAMPLE_BYTES)):
            f.seek(start)
            digest.update(f.read(_SAMPLE_BYTES))
    return digest.hexdigest()[:32]


def results_file(data_dir: Path, path: Path) -> Path:
    return data_dir / "evaluations" / f"{file_digest(path)}.json"


def load_results(data_dir: Path, path: Path) -> dict[str, Any] | None:
    """What was measured on the model file ``path`` as it is now (None: nothing, or not readable)."""
    try:
        data = json.loads(results_file(data_dir, path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def save_results(data_dir: Path, path: Path, model: str, **sections: dict[str, Any]) -> Path:
    """Keep ``sections`` (``probe``, ``golden``, ``drift``) for the model file ``path``, each stamped
    with when it was measured, beside what was measured before; the file written."""
    target = results_file(data_dir, path)
    record = load_results(data_dir, path) or {}
    record.update(model=model, file=str(path))
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for name, section in sections.items():
        record[name] = {**section, "measured_at": now}
    target.parent.mkdir(parents=True, exist_ok=True)
    scratch = target.with_suffix(f".{os.getpid()}.tmp")
    scratch.write_text(json.dumps(record, indent=1), encoding="utf-8")
    scratch.replace(target)  # a reader never sees half a file
    return target


def results_summary(record: dict[str, Any] | None) -> str:
    """One line: ``tools 9/10, json 10/10, thinking split 5/5, golden 14/21, KLD vs Q8_0 0.05``
    (empty when nothing was measured)."""
    if not record:
        return ""
    parts = []
    probe = record.get("probe") or {}
    for key, label in (("tools", "tools"), ("json", "json"), ("thinking", "thinking split")):
        counts = probe.get(key)
        if isinstance(counts, dict):
            parts.append(f"{label} {counts.get('passed')}/{counts.get('total')}")
    golden = record.get("golden")
    if isinstance(golden, dict):
        parts.append(f"golden {golden.get('passed')}/{golden.get('total')}")
    drift = record.get("drift")
    if isinstance(drift, dict) and isinstance(drift.get("kld_mean"), (int, float)):
        parts.append(f"KLD vs {drift.get('against_quant') or drift.get('against')} {drift['kld_mean']:.2f}")
    return ", ".join(parts)
