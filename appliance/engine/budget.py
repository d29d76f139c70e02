"""What a generation may ask of the loaded model: its token budget within one slot's context, and its
sampling settings fitted to the context and the vocabulary. Pure functions of plain numbers."""

from __future__ import annotations

from dataclasses import replace

from appliance.engine.params import SamplingParams
from appliance.errors import ContextOverflow, InvalidRequest


def generation_budget(
    prompt_tokens: int,
    max_tokens: int | None,
    n_ctx_per_seq: int,
    cap: int | None,
    context_tokens: int | None = None,
) -> int:
    """How many tokens a request may generate after a prompt of ``prompt_tokens``, in a slot of
    ``n_ctx_per_seq`` tokens, under the server's ``cap`` (server.max_tokens_cap; None: no cap), within
    the request's own smaller context ``context_tokens`` (Ollama's num_ctx) when it has one.

    ``max_tokens`` None means the rest of the context (within the cap). Raises InvalidRequest
    for an empty prompt or a max_tokens over the cap, ContextOverflow when the prompt and max_tokens do
    not fit the context together."""
    what = "this model's maximum context length"
    if context_tokens is not None and context_tokens < n_ctx_per_seq:
        n_ctx_per_seq, what = context_tokens, "this request's context (num_ctx)"
    if prompt_tokens == 0:
        raise InvalidRequest("the prompt is empty", param="prompt")
    if max_tokens is not None and cap is not None and max_tokens > cap:
        raise InvalidRequest(
            f"max_tokens is {max_tokens}; this server generates at most {cap} tokens a request "
            "(server.max_tokens_cap)",
            param="max_tokens",
        )
    if max_tokens is None:
        if prompt_tokens >= n_ctx_per_seq:
            raise ContextOverflow(
                f"{what} is {n_ctx_per_seq} tokens; the prompt has {prompt_tokens} tokens, which leaves "
                "none to generate",
                param="messages",
            )
        max_tokens = min(n_ctx_per_seq - prompt_tokens, cap or n_ctx_per_seq)
    if max_tokens < 1 or prompt_tokens + max_tokens > n_ctx_per_seq:
        raise ContextOverflow(
            f"{what} is {n_ctx_per_seq} tokens; the prompt has {prompt_tokens} "
            f"tokens and {max_tokens} more were requested ({prompt_tokens + max_tokens} in all)",
            param="messages",
        )
    return max_tokens


def fitted_sampling(
    sampling: SamplingParams,
    grammar: str | None,
    n_ctx_per_seq: int,
    n_vocab: int,
    triggers: tuple[str, ...] = (),
) -> SamplingParams:
    """``sampling`` with the request's ``grammar``, and a repeat_last_n the slot can hold. Raises
    InvalidRequest for a logit_bias naming a token outside the vocabulary."""
    if any(token < 0 or token >= n_vocab for token in sampling.logit_bias):
        # ctypes would cut such an id to 32 bits and bias whatever token that names
        raise InvalidRequest("logit_bias names a token outside the vocabulary", param="logit_bias")
    if grammar is not None:
        sampling = replace(sampling, grammar=grammar, grammar_triggers=triggers)
    if not 0 <= sampling.repeat_last_n <= n_ctx_per_seq:
        # -1 means the whole context (as Ollama says); more than that only sizes llama.cpp's window
        # (2**31 of it was seconds of allocation per request)
        sampling = replace(sampling, repeat_last_n=n_ctx_per_seq)
    return sampling
