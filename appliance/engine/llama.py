"""A loaded model and its context, through llama-cpp-python's ctypes bindings.

It exposes plain Python: tokenize, decode several sequences' tokens in one batch, sample with a
per-request sampler, embed, score. Not thread-safe: one thread (the engine's worker) drives it.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np

from appliance.engine.infill import FimTokens
from appliance.engine.llama_params import context_params, model_params
from appliance.engine.params import GeneratedToken, LoadOptions, SamplingParams
from appliance.engine.runtime import init_backend
from appliance.engine.sampler import Sampler, check_grammar, new_sampler
from appliance.engine.tokens import common_prefix
from appliance.errors import ContextOverflow, EngineFailure, InvalidRequest, ModelLoadFailed


class LlamaModel:
    """A loaded model with one context. Only one thread may use an instance."""

    def __init__(self, path: Path, options: LoadOptions) -> None:
        bridge = init_backend()
        self.path = path
        self.options = options
        mparams = model_params(options)
        bridge.recent_errors.clear()
        model = llama_cpp.llama_model_load_from_file(str(path).encode("utf-8"), mparams)
        if not model:
            detail = "; ".join(bridge.recent_errors) or "llama.cpp could not read it"
            raise ModelLoadFailed(f"cannot load model {path}: {detail}")
        self._model = model
        self._vocab = llama_cpp.llama_model_get_vocab(model)
        self.n_ctx_train = int(llama_cpp.llama_model_n_ctx_train(model))
        if options.n_ctx is not None and options.n_ctx // options.n_seq_max > self.n_ctx_train:
            llama_cpp.llama_model_free(model)
            raise ModelLoadFailed(
                f"a context of {options.n_ctx // options.n_seq_max} tokens per slot exceeds what {path.name} "
                f"was trained for ({self.n_ctx_train})"
            )
        ctx = llama_cpp.llama_init_from_model(model, context_params(options, model))
        if not ctx:
            llama_cpp.llama_model_free(model)
            detail = "; ".join(bridge.recent_errors) or "not enough memory for the context?"
            raise ModelLoadFailed(f"cannot create a context for {path}: {detail}")
        self._ctx = ctx
        # A reranker (rank pooling: a classification head over the last or CLS token) outputs scores,
        # not logits: its context gives pooled outputs from the start, as llama-server's --reranking.
        self.reranker = llama_cpp.llama_pooling_type(ctx) == llama_cpp.LLAMA_POOLING_TYPE_RANK
        if self.reranker:
            llama_cpp.llama_set_embeddings(ctx, True)
        self._memory = llama_cpp.llama_get_memory(ctx)
        self.n_ctx = int(llama_cpp.llama_n_ctx(ctx))
        self.n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        self.n_embd = int(llama_cpp.llama_model_n_embd(model))
        self._batch = llama_cpp.llama_batch_init(max(options.n_batch, options.n_seq_max), 0, 1)
        self._pieces: dict[int, bytes] = {}
        self._special_pieces: dict[int, bytes] = {}
        self._eog_tokens: list[int] | None = None
        self._eog: dict[int, bool] = {}  # is_end_of_generation's answers: asked for every token sampled
        # Per sequence, the tokens whose KV is in the cache, in order: the prefix a next request may reuse.
        self._cached: list[list[int]] = [[] for _ in range(options.n_seq_max)]
        self._prefix_reuse = not (
            llama_cpp.llama_model_is_recurrent(model)
            or llama_cpp.llama_model_is_hybrid(model)
            or llama_cpp.llama_model_n_swa(model) > 0
        )
        self.metadata = self._read_metadata()

    # -- metadata and vocabulary ------------------------------------------------------------

    def _read_metadata(self) -> dict[str, str]:
        out: dict[str, str] = {}
        size = 4096
        buf = ctypes.create_string_buffer(size)
        for i in range(llama_cpp.llama_model_meta_count(self._model)):
            llama_cpp.llama_model_meta_key_by_index(self._model, i, buf, size)
            key = buf.value.decode("utf-8", errors="replace")
            needed = llama_cpp.llama_model_meta_val_str_by_index(self._model, i, buf, size)
            if needed >= size:
                big = ctypes.create_string_buffer(needed + 1)
                llama_cpp.llama_model_meta_val_str_by_index(self._model, i, big, needed + 1)
                out[key] = big.value.decode("utf-8", errors="replace")
            else:
                out[key] = buf.value.decode("utf-8", errors="replace")
        return out

    @property
    def chat_template(self) -> str | None:
        return self.metadata.get("tokenizer.chat_template")

    @property
    def add_bos(self) -> bool:
        return bool(llama_cpp.llama_vocab_get_add_bos(self._vocab))

    @property
    def bos_token(self) -> int:
        return int(llama_cpp.llama_vocab_bos(self._vocab))

    @property
    def eos_token(self) -> int:
        return int(llama_cpp.llama_vocab_eos(self._vocab))

    @property
    def sep_token(self) -> int:
        return int(llama_cpp.llama_vocab_sep(self._vocab))

    @property
    def add_eos(self) -> bool:
        return bool(llama_cpp.llama_vocab_get_add_eos(self._vocab))

    @property
    def add_sep(self) -> bool:
        return bool(llama_cpp.llama_vocab_get_add_sep(self._vocab))

    def fim_tokens(self) -> FimTokens:
        """The vocabulary's fill-in-the-middle tokens, as llama.cpp found them (the GGUF's ids, or its
        guess from the tokens' texts)."""

        def token(fn: Any) -> int | None:
            found = int(fn(self._vocab))
            return found if 0 <= found < self.n_vocab else None

        return FimTokens(
            pre=token(llama_cpp.llama_vocab_fim_pre),
            suf=token(llama_cpp.llama_vocab_fim_suf),
            mid=token(llama_cpp.llama_vocab_fim_mid),
            rep=token(llama_cpp.llama_vocab_fim_rep),
            sep=token(llama_cpp.llama_vocab_fim_sep),
        )

    @property
    def rerank_template(self) -> str | None:
        """The GGUF's ``rerank`` prompt (tokenizer.chat_template.rerank, with {query} and {document})."""
        found = llama_cpp.llama_model_chat_template(self._model, b"rerank")
        return found.decode("utf-8", errors="replace") if found else None

    def token_text(self, token: int) -> str:
        """The vocabulary entry of ``token`` as stored (special tokens included)."""
        if token < 0:
            return ""
        return llama_cpp.llama_vocab_get_text(self._vocab, token).decode("utf-8", errors="replace")

    def control_texts(self) -> list[str]:
        """The texts of the tokens that only a tokenization parsing special tokens produces (control and
        unknown tokens: llama.cpp's tokenizer_st_partition matches user-defined ones in any case)."""
        gated = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN
        return [
            self.token_text(t)
            for t in range(self.n_vocab)
            if llama_cpp.llama_vocab_get_attr(self._vocab, t) & gated
        ]

    def is_end_of_generation(self, token: int) -> bool:
        eog = self._eog.get(token)
        if eog is None:
            eog = self._eog[token] = bool(llama_cpp.llama_vocab_is_eog(self._vocab, token))
        return eog

    def _end_of_generation_tokens(self) -> list[int]:
        if self._eog_tokens is None:
            # Asked of llama.cpp directly: is_end_of_generation keeps only the sampled tokens' answers.
            vocab = self._vocab
            self._eog_tokens = [t for t in range(self.n_vocab) if llama_cpp.llama_vocab_is_eog(vocab, t)]
        return self._eog_tokens

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        """Token ids for ``text``. Thread-safe: it only reads the vocabulary."""
        data = text.encode("utf-8")
        capacity = len(data) + 8
        while True:
            tokens = (llama_cpp.llama_token * capacity)()
            n = llama_cpp.llama_tokenize(
                self._vocab, data, len(data), tokens, capacity, add_special, parse_special
            )
            if n >= 0:
                return list(tokens[:n])
            capacity = -n

    def piece(self, token: int, *, special: bool = False) -> bytes:
        """The bytes ``token`` adds to the output text; a special token renders as nothing unless
        ``special`` (then as its text, as a grammar sees it)."""
        cache = self._special_pieces if special else self._pieces
        cached = cache.get(token)
        if cached is not None:
            return cached
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, 64, 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self._vocab, token, buf, -n, 0, special)
        value = buf.raw[:n]
        cache[token] = value
        return value

    # -- sequences: the batching engine's primitives -------------------------------------------

    @property
    def n_seq(self) -> int:
        return self.options.n_seq_max

    @property
    def n_ctx_per_seq(self) -> int:
        """Tokens one sequence may hold: the context is shared equally by the parallel slots."""
        return self.n_ctx // self.options.n_seq_max

    @property
    def kv_cells_used(self) -> int:
        """Tokens held in the KV cache, all sequences together (read from any thread: a snapshot)."""
        return sum(len(tokens) for tokens in self._cached)

    def cached_tokens(self, seq: int) -> list[int]:
        return self._cached[seq]

    def forget(self, seq: int | None = None) -> None:
        """Drop the KV cache of one sequence, or of all."""
        if seq is None:
            llama_cpp.llama_memory_clear(self._memory, True)
            self._cached = [[] for _ in range(self.n_seq)]
        else:
            llama_cpp.llama_memory_seq_rm(self._memory, seq, -1, -1)
            self._cached[seq] = []

    def reuse_prefix(self, seq: int, prompt: list[int]) -> int:
        """Keep the cached KV of ``seq`` that matches the start of ``prompt``; return its length."""
        if not self._prefix_reuse:
            self.forget(seq)
            return 0
        cached = self._cached[seq]
        # At least one token is decoded, to get fresh logits.
        common = min(common_prefix(cached, prompt), len(prompt) - 1)
        if common <= 0 or not llama_cpp.llama_memory_seq_rm(self._memory, seq, common, -1):
            self.forget(seq)
            return 0
        del cached[common:]
        return common

    def state_size(self, seq: int) -> int:
        """Bytes of ``seq``'s state (its KV cells), as ``save_state`` would copy them."""
        return int(llama_cpp.llama_state_seq_get_size(self._ctx, seq))

    def save_state(self, seq: int, size: int | None = None) -> Any:
        """A copy of ``seq``'s state in host memory (it holds ``cached_tokens(seq)``): a byte array, which
        ``len`` measures and ``restore_state`` reads without another copy. ``size``: ``state_size(seq)``
        where the caller has it (llama.cpp walks the cache to count it)."""
        size = self.state_size(seq) if size is None else size
        # Not zeroed first (ctypes and bytearray are): llama.cpp writes every byte, and clearing tens of
        # megabytes took as long as the copy itself, on the engine's thread while every stream waits.
        buffer = np.empty(size, dtype=np.uint8)
        written = llama_cpp.llama_state_seq_get_data(self._ctx, _bytes_pointer(buffer), size, seq)
        if written != size:
            raise EngineFailure(f"llama.cpp copied {written} of {size} bytes of sequence {seq}'s state")
        return buffer

    def restore_state(self, seq: int, state: Any, tokens: list[int]) -> bool:
        """Replace ``seq``'s cache with ``state`` (from ``save_state``, holding ``tokens``); False, with the
        sequence emptied, where llama.cpp cannot (no room for it now)."""
        self.forget(seq)
        size = len(state)
        if llama_cpp.llama_state_seq_set_data(self._ctx, _bytes_pointer(state), size, seq) != size:
            self.forget(seq)
            return False
        self._cached[seq] = list(tokens)
        return True

    def decode(self, entries: list[tuple[int, list[int], int]], *, output_all: bool = False) -> list[int]:
        """One llama_decode of several sequences' tokens (at most n_batch in all), each appended at its
        sequence's next position. An entry's third element is how many of its last tokens get outputs
        (True: the last one; more for drafted tokens, each checked on the logits before it). Returns,
        per entry, the batch index of its first output (-1 where none was asked for); the others
        follow it."""
        batch = self._batch
        n = 0
        indices = []
        for seq, tokens, outputs in entries:
            start = len(self._cached[seq])
            first = len(tokens) - int(outputs)
            for i, tok in enumerate(tokens):
                batch.token[n] = tok
                batch.pos[n] = start + i
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = seq
                batch.logits[n] = output_all or i >= first
                n += 1
            indices.append(n - len(tokens) + first if outputs else -1)
        batch.n_tokens = n
        rc = llama_cpp.llama_decode(self._ctx, batch)
        if rc != 0:
            # On a fatal error llama.cpp keeps the micro-batches it did process: drop them, so each
            # sequence of this batch holds what it held before, and the other sequences are untouched.
            for seq, _, _ in entries:
                llama_cpp.llama_memory_seq_rm(self._memory, seq, len(self._cached[seq]), -1)
            raise EngineFailure(f"llama_decode failed with code {rc}")
        for seq, tokens, _ in entries:
            self._cached[seq].extend(tokens)
        return indices

    def truncate(self, seq: int, length: int) -> None:
        """Drop the cached tokens of ``seq`` from position ``length`` on (drafted tokens that sampling
        did not confirm). Only for models whose cache can be cut (``can_truncate``)."""
        if length < len(self._cached[seq]):
            if not llama_cpp.llama_memory_seq_rm(self._memory, seq, length, -1):
                raise EngineFailure(f"llama.cpp could not drop the cache of sequence {seq} from {length}")
            del self._cached[seq][length:]

    @property
    def can_truncate(self) -> bool:
        """Whether the cache of a sequence can be cut at any position: not for recurrent or hybrid
        models (their state is one summary), nor sliding-window ones (what left the window is gone)."""
        return self._prefix_reuse

    def new_sampler(self, params: SamplingParams) -> Sampler:
        """A sampler for one request (free it with free_sampler)."""
        return new_sampler(self._vocab, self.n_vocab, params, self._end_of_generation_tokens)

    def check_grammar(self, grammar: str) -> None:
        """Raise InvalidRequest when llama.cpp cannot build ``grammar`` over this vocabulary. Thread-safe,
        as tokenize is: it only reads the vocabulary."""
        check_grammar(self._vocab, grammar)

    def force(self, sampler: Sampler, tokens: list[int]) -> None:
        """Tokens written for the model (not sampled), accepted by ``sampler`` as if it had chosen them:
        its chain's history, and its grammar (a lazy one watches them for its trigger)."""
        for token in tokens:
            llama_cpp.llama_sampler_accept(sampler.chain, token)
            if sampler.lazy is not None:
                sampler.watch(token, self.piece(token, special=True))
            elif sampler.grammar is not None:
                sampler.accept_checked(token)

    @staticmethod
    def free_sampler(sampler: Sampler) -> None:
        sampler.free()

    def sample(self, sampler: Sampler, index: int, top_logprobs: int | None) -> GeneratedToken:
        """Sample from the logits at batch ``index``; the sampler accepts the token."""
        if sampler.grammar is None:
            if sampler.greedy is not None:  # the same token as the chain picks, without its candidate array
                token = sampler.greedy.pick(llama_cpp.llama_get_logits_ith(self._ctx, index))
                llama_cpp.llama_sampler_accept(sampler.chain, token)
            else:
                token = int(llama_cpp.llama_sampler_sample(sampler.chain, self._ctx, index))
            if sampler.lazy is not None:
                sampler.watch(token, self.piece(token, special=True))
        else:
            token = sampler.sample_checked(llama_cpp.llama_get_logits_ith(self._ctx, index))
        if top_logprobs is None:
            return GeneratedToken(token)
        return self._logprobs(token, top_logprobs, index)

    def top_token(self, index: int) -> tuple[int, float]:
        """The most likely token at batch ``index`` and its probability (a draft model's greedy guess,
        and how sure it is)."""
        ptr = llama_cpp.llama_get_logits_ith(self._ctx, index)
        logits = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))
        token = int(logits.argmax())
        peak = float(logits[token])
        return token, float(1.0 / np.exp(logits - peak, dtype=np.float64).sum())

    def _logprobs(self, token: int, top_n: int, index: int = -1) -> GeneratedToken:
        ptr = llama_cpp.llama_get_logits_ith(self._ctx, index)
        logits = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,)).astype(np.float64)
        peak = logits.max()
        logsum = peak + np.log(np.exp(logits - peak).sum())
        top: tuple[tuple[int, float], ...] = ()
        if top_n > 0:
            idx = np.argpartition(-logits, top_n - 1)[:top_n]
            idx = idx[np.argsort(-logits[idx])]
            top = tuple((int(i), float(logits[i] - logsum)) for i in idx)
        return GeneratedToken(token, float(logits[token] - logsum), top)

    def _read_prompt(self, prompt: list[int]) -> int:
        """Decode ``prompt`` on sequence 0 (reusing what it shares with the cache), in n_batch chunks;
        the batch index of the last token's logits."""
        pending = prompt[self.reuse_prefix(0, prompt) :]
        index = -1
        while pending:
            chunk, pending = pending[: self.options.n_batch], pending[self.options.n_batch :]
            index = self.decode([(0, chunk, not pending)])[0]
        return index

    def smoke_test(self, prompt: list[int], max_tokens: int = 8) -> str | None:
        """Generate a few tokens greedily on sequence 0 (forgotten after) and say why the model cannot
        serve: logits that are not finite, or output that is nothing but undecodable bytes and control
        characters. None when it works (an immediate end of generation is fine). A reranker scores
        ``prompt`` instead: a score that is not finite is the problem."""
        if self.reranker:
            score = self.rank(prompt[: self.rank_limit])
            return None if np.isfinite(score) else f"the reranker scores {score} (broken weights?)"
        sampler = self.new_sampler(SamplingParams(temperature=0.0))
        pieces: list[bytes] = []
        try:
            index = self._read_prompt(prompt)
            for _ in range(max_tokens):
                pointer = llama_cpp.llama_get_logits_ith(self._ctx, index)
                logits = np.ctypeslib.as_array(pointer, shape=(self.n_vocab,))
                if not np.isfinite(logits).all():
                    return "the model computes NaN or infinite logits (broken weights, or a backend bug)"
                token = self.sample(sampler, index, None).token
                if self.is_end_of_generation(token):
                    break
                pieces.append(self.piece(token))
                index = self.decode([(0, [token], True)])[0]
        finally:
            sampler.free()
            self.forget(0)
        text = b"".join(pieces).decode("utf-8", "replace")
        if pieces and not any(c.isprintable() and not c.isspace() and c != "\ufffd" for c in text):
            return f"the model writes nothing but garbage ({text[:40]!r})"
        return None

    def generate(
        self,
        prompt: list[int],
        params: SamplingParams,
        max_tokens: int,
        *,
        top_logprobs: int | None = None,
    ) -> Iterator[GeneratedToken]:
        """Sample up to ``max_tokens`` tokens after ``prompt`` on sequence 0, alone (benchmarks use it;
        serving goes through the batching engine). Stops after an end-of-generation token."""
        if not prompt or len(prompt) + max_tokens > self.n_ctx_per_seq:
            raise ContextOverflow(f"{len(prompt)} + {max_tokens} tokens do not fit {self.n_ctx_per_seq}")
        sampler = self.new_sampler(params)
        try:
            index = self._read_prompt(prompt)
            for _ in range(max_tokens):
                step = self.sample(sampler, index, top_logprobs)
                yield step
                if self.is_end_of_generation(step.token):
                    return
                index = self.decode([(0, [step.token], True)])[0]
        finally:
            sampler.free()

    # -- embeddings -----------------------------------------------------------------------------

    def embed(self, tokens: list[int]) -> list[float]:
        """Mean of the final hidden states over ``tokens``, L2-normalised."""
        if not tokens:
            raise InvalidRequest("cannot embed an empty input", param="input")
        if len(tokens) > self.n_ctx_per_seq:
            raise ContextOverflow(
                f"this model's context is {self.n_ctx_per_seq} tokens; the input has {len(tokens)}",
                param="input",
            )
        self.forget()
        llama_cpp.llama_set_embeddings(self._ctx, True)
        try:
            total = np.zeros(self.n_embd, dtype=np.float64)
            step = self.options.n_batch
            for offset in range(0, len(tokens), step):
                chunk = tokens[offset : offset + step]
                self.decode([(0, chunk, True)], output_all=True)
                for i in range(len(chunk)):
                    ptr = llama_cpp.llama_get_embeddings_ith(self._ctx, i)
                    total += np.ctypeslib.as_array(ptr, shape=(self.n_embd,))
        finally:
            llama_cpp.llama_set_embeddings(self._ctx, False)
            self.forget()
        mean = total / len(tokens)
        norm = float(np.linalg.norm(mean))
        return (mean / norm if norm > 0 else mean).tolist()

    # -- ranking (rerankers) ----------------------------------------------------------------------

    @property
    def rank_limit(self) -> int:
        """Tokens one query-document prompt may have: it is read in one micro-batch (a non-causal
        model's must be, or llama.cpp aborts) and fits one slot."""
        return min(self.n_ctx_per_seq, self.options.n_ubatch, self.options.n_batch)

    def rank(self, tokens: list[int]) -> float:
        """A reranker's relevance score of the prompt ``tokens`` (its classification head's first output,
        as llama-server reports it), read on sequence 0 from an empty cache."""
        if not self.reranker:
            raise InvalidRequest("this model is not a reranker", param="model")
        if not tokens or len(tokens) > self.rank_limit:
            raise ContextOverflow(
                f"a query and document take {len(tokens)} tokens; this reranker reads at most "
                f"{self.rank_limit} at once",
                param="documents",
            )
        self.forget(0)
        try:
            self.decode([(0, tokens, True)], output_all=True)
            scores = llama_cpp.llama_get_embeddings_seq(self._ctx, 0)
            if not scores:
                raise EngineFailure("llama.cpp gave no rank score")
            return float(scores[0])
        finally:
            self.forget(0)

    # -- scoring --------------------------------------------------------------------------------

    def score(self, tokens: list[int], first: int, step: int = 64) -> Iterator[np.ndarray[Any, Any]]:
        """The model's next-token log-probabilities at each position of ``tokens`` from ``first`` to the
        last but one, read as one sequence from an empty cache: float32 arrays of ``[rows, n_vocab]``,
        ``step`` rows at a time (llama.cpp's output buffer holds only those). Perplexity and
        quantization drift are computed from them."""
        if len(tokens) > self.n_ctx_per_seq:
            raise ContextOverflow(f"{len(tokens)} tokens do not fit this context ({self.n_ctx_per_seq})")
        step = max(1, min(step, self.options.n_batch))
        self.forget()
        try:
            for offset in range(0, first, self.options.n_batch):
                self.decode([(0, tokens[offset : min(first, offset + self.options.n_batch)], False)])
            for offset in range(first, len(tokens) - 1, step):
                part = tokens[offset : min(offset + step, len(tokens) - 1)]
                self.decode([(0, part, True)], output_all=True)
                pointer = llama_cpp.llama_get_logits(self._ctx)
                rows = np.ctypeslib.as_array(pointer, shape=(len(part), self.n_vocab)).astype(np.float32)
                rows -= rows.max(axis=1, keepdims=True)
                rows -= np.log(np.exp(rows).sum(axis=1, keepdims=True))
                yield rows
        finally:
            self.forget()

    def close(self) -> None:
        if getattr(self, "_ctx", None):
            llama_cpp.llama_batch_free(self._batch)
            llama_cpp.llama_free(self._ctx)
            llama_cpp.llama_model_free(self._model)
            self._ctx = None


def _bytes_pointer(array: Any) -> Any:
    """A ``uint8_t *`` to a numpy byte array's data, as llama.cpp's state functions take it."""
    return array.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))
