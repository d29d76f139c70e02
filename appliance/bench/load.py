"""The load generator: streaming chat completions at a given concurrency, and what they measured.

Every request asks for exactly ``tokens`` tokens at temperature 0 (``ignore_eos``, which llama-server,
vLLM, SGLang and the appliance all honour, plus whatever ``extra_body`` a server needs) and starts with
its own number, so no server can answer from a cached prompt prefix. Metrics:

- decode tok/s: per request, (tokens - 1) / (last token time - first token time); the median
- aggregate tok/s: all generated tokens / wall time of the measured batch
- TTFT: request sent -> first content chunk; ITL: gaps between content chunks
Generated tokens come from the final usage chunk (``stream_options.include_usage``); a server that sends
none has its content chunks counted instead.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import client

SHORT_PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."
_FILLER = (
    "the system reads each block of data from disk and checks its header before passing the "
    "payload to a worker thread which decodes records updates an index and reports progress "
    "to a small monitor that keeps counters for every stage of the pipeline"
)


def long_prompt() -> str:
    """About 2000 tokens (SmolLM2's tokenizer) of deterministic filler text and a question."""
    rng, vocab = random.Random(1234), _FILLER.split()
    sentences = []
    for _ in range(126):
        words = [rng.choice(vocab) for _ in range(rng.randint(10, 18))]
        sentences.append(" ".join(words).capitalize() + ".")
    return "Read these notes:\n\n" + " ".join(sentences) + "\n\nSummarize the notes above in detail."


EDIT_CODE = '''\
def load_settings(path, defaults=None):
    """Read a settings file and merge it over the defaults."""
    settings = dict(defaults or {})
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            if "=" not in line:
                raise ValueError(f"{path}:{number}: expected key = value, got {line!r}")
            key, value = (part.strip() for part in line.split("=", 1))
            if value.lower() in ("true", "false"):
                settings[key] = value.lower() == "true"
            elif value.isdigit():
                settings[key] = int(value)
            else:
                settings[key] = value.strip('"')
    return settings


def save_settings(path, settings):
    """Write the settings back, one key = value per line, sorted by key."""
    with open(path, "w", encoding="utf-8") as handle:
        for key in sorted(settings):
            value = settings[key]
            if isinstance(value, bool):
                value = "true" if value else "false"
            handle.write(f"{key} = {value}\\n")
'''


def edit_prompt() -> str:
    """A code edit whose answer mostly repeats the prompt (what speculation by prompt lookup speeds
    up): about 300 tokens of code to be given back whole with one name changed."""
    return (
        "Rename the function load_settings to read_settings in this code. Reply with the whole "
        f"code and nothing else.\n\n```python\n{EDIT_CODE}```"
    )


PROMPTS: dict[str, Callable[[], str]] = {
    "short": lambda: SHORT_PROMPT,
    "long": long_prompt,
    "edit": edit_prompt,
}
# Workloads whose requests share prefixes on purpose (appliance.bench.workloads); the others' do not.
WORKLOADS = ("chat", "agent")


@dataclass(frozen=True)
class Load:
    """What to send: ``requests`` measured requests (after one warm-up), ``concurrency`` at a time."""

    tokens: int = 128
    concurrency: int = 1
    requests: int = 5
    prompt: str = "short"  # a key of PROMPTS
    request_timeout_s: float = 600

    def prompt_text(self) -> str:
        return PROMPTS[self.prompt]() if self.prompt in PROMPTS else ""


@dataclass
class Result:
    ok: bool = False
    error: str = ""
    start: float = 0.0
    chunk_times: list[float] = field(default_factory=list)
    tokens: int = 0
    prompt_tokens: int | None = None
    text: str = ""  # the reply (a conversation goes on with it)


async def one_request(server: client.AsyncDaemonClient, body: dict[str, Any]) -> Result:
    r = Result(start=time.perf_counter())
    try:
        async for chunk in server.chat_chunks(body):
            if text := client.delta_text(chunk):
                r.chunk_times.append(time.perf_counter())
                r.text += text
            if usage := chunk.get("usage"):
                r.tokens = usage.get("completion_tokens", 0)
                r.prompt_tokens = usage.get("prompt_tokens")
    except client.ErrorReply as exc:
        r.error = (f"HTTP {exc.status}: " if exc.status else "") + exc.message[:200]
        return r
    except client.DaemonUnreachable as exc:
        r.error = "ConnectError" if exc.refused else exc.message
        return r
    except client.ClientError as exc:
        r.error = exc.message
        return r
    r.tokens = r.tokens or len(r.chunk_times)
    r.ok = bool(r.chunk_times)
    if not r.ok:
        r.error = "no content received"
    return r


def pct(values: list[float], q: float) -> float | None:
    """Percentile with linear interpolation; None for no data."""
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def summarize(results: list[Result], wall: float) -> dict[str, Any]:
    good = [r for r in results if r.ok]
    decode = [
        (r.tokens - 1) / (r.chunk_times[-1] - r.chunk_times[0])
        for r in good
        if r.tokens > 1 and r.chunk_times[-1] > r.chunk_times[0]
    ]
    ttft = [(r.chunk_times[0] - r.start) * 1000 for r in good]
    itl = [(b - a) * 1000 for r in good for a, b in zip(r.chunk_times[:-1], r.chunk_times[1:], strict=True)]
    tokens = sum(r.tokens for r in good)
    return {
        "requests": len(results),
        "errors": len(results) - len(good),
        "error_samples": sorted({r.error for r in results if not r.ok})[:3],
        "prompt_tokens": good[0].prompt_tokens if good else None,
        "generated_tokens": tokens,
        "content_chunks": sum(len(r.chunk_times) for r in good),
        "min_tokens_per_request": min((r.tokens for r in good), default=0),
        "decode_tok_s": pct(decode, 50),
        "aggregate_tok_s": tokens / wall if wall > 0 else None,
        "ttft_ms_p50": pct(ttft, 50),
        "ttft_ms_p95": pct(ttft, 95),
        "itl_ms_p50": pct(itl, 50),
        "itl_ms_p95": pct(itl, 95),
        "wall_s": wall,
    }


class LoadError(Exception):
    """The server could not be measured (unreachable, the warm-up failed): one readable line."""


async def served_model(server: client.AsyncDaemonClient) -> str:
    """The first model the server lists."""
    try:
        return (await server.openai_models())[0]
    except client.DaemonUnreachable as exc:
        raise LoadError(f"no server answers at {server.url}" if exc.refused else exc.message) from None
    except (client.ClientError, IndexError):
        raise LoadError(f"{server.url}/v1/models answered with no model") from None


def check_warm_up(warm: Result, base: str) -> None:
    """Raise LoadError, in one line, where the warm-up request failed."""
    if not warm.ok:
        if warm.error == "ConnectError":
            raise LoadError(f"no server answers at {base}")
        raise LoadError(f"the warm-up request failed: {warm.error}")


async def run_load(
    base: str,
    load: Load,
    model: str | None = None,
    *,
    api_key: str | None = None,
    extra_body: dict[str, Any] | None = None,
    ignore_eos: bool = True,
) -> dict[str, Any]:
    """One warm-up request, then the measured batch; the summary, with the model id used."""
    prompt = load.prompt_text()
    server = client.AsyncDaemonClient(
        base, api_key, timeout_s=load.request_timeout_s, stream_read_timeout_s=load.request_timeout_s
    )
    try:
        model_id = model or await served_model(server)

        def body(i: int) -> dict[str, Any]:
            return {
                "model": model_id,
                "temperature": 0,
                "max_tokens": load.tokens,
                "stream": True,
                "stream_options": {"include_usage": True},
                "messages": [{"role": "user", "content": f"Request {i}. {prompt}"}],
                **({"ignore_eos": True} if ignore_eos else {}),
                **(extra_body or {}),
            }

        if load.prompt in WORKLOADS:
            from appliance.bench.workloads import run_workload

            def base_body(messages: list[dict[str, str]]) -> dict[str, Any]:
                return {**body(0), "messages": messages}

            results, wall = await run_workload(server, load, base_body)
            return {"model": model_id, **summarize(results, wall)}
        warm = await one_request(server, body(0))
        check_warm_up(warm, base)
        gate = asyncio.Semaphore(load.concurrency)

        async def limited(i: int) -> Result:
            async with gate:
                return await one_request(server, body(i))

        started = time.perf_counter()
        results = await asyncio.gather(*(limited(i) for i in range(1, load.requests + 1)))
        return {"model": model_id, **summarize(list(results), time.perf_counter() - started)}
    finally:
        await server.close()
