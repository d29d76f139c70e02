"""A request's sampling: its llama.cpp sampler chain, and its grammar checked one token at a time."""

from __future__ import annotations

import ctypes
import logging
import math
from collections.abc import Callable
from typing import Any

import llama_cpp
import numpy as np

from appliance.engine.formats.schema import prefixed
from appliance.engine.params import SamplingParams
from appliance.engine.runtime import init_backend
from appliance.errors import InvalidRequest

log = logging.getLogger(__name__)

_TOKEN_DATA = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])  # llama_token_data


class Sampler:
    """A request's sampler chain, and its grammar kept apart from it, as llama.cpp's own server does
    (common/sampling.cpp, common_sampler_sample): the chain picks a token from the raw logits and the
    grammar only checks that one token; only when the grammar rejects it is the whole vocabulary run
    through the grammar and sampled again. Constraining every token over the whole vocabulary halves the
    speed of structured output; this way most tokens cost one check. At temperature 0 the result is the
    same token: the best token, when the grammar allows it, is also the best allowed one."""

    def __init__(
        self,
        chain: Any,
        grammar: Any = None,
        n_vocab: int = 0,
        lazy: Lazy | None = None,
        greedy: Greedy | None = None,
    ) -> None:
        self.chain = chain
        self.grammar = grammar
        self.lazy = lazy  # a grammar waiting for its trigger; ``grammar`` once it appeared
        self.greedy = greedy  # the chain is greedy decoding (and biases): picked in numpy (see Greedy)
        if grammar is None and lazy is None:
            return
        self._ids = np.arange(n_vocab, dtype=np.int32)
        self._view, self._array = self._candidates(n_vocab)
        self._one, self._one_array = self._candidates(1)

    def watch(self, token: int, piece: bytes) -> None:
        """Note a token sampled while the lazy grammar waits; switch the grammar on once a trigger is
        in the output, fed the tokens from the one the trigger starts in (see Lazy)."""
        lazy = self.lazy
        assert lazy is not None
        start = lazy.seen(token, piece)
        if start is None:
            return
        self.lazy = None
        grammar = lazy.build(start)
        if grammar is None:
            return
        for tok in lazy.tokens_from(start):
            if not self._allows(grammar, tok):
                # The token that holds the trigger goes on with text the grammar does not allow: the
                # call is parsed without it rather than feeding llama.cpp a token it would abort on.
                log.info("a lazy grammar's trigger came with text it does not allow; sampling goes on free")
                llama_cpp.llama_sampler_free(grammar)
                return
            llama_cpp.llama_sampler_accept(grammar, tok)
        self.grammar = grammar

    def accept_checked(self, token: int) -> None:
        """Feed the grammar a token that was not sampled under it; one it does not allow ends the
        grammar (sampling goes on free) rather than making llama.cpp abort."""
        if self._allows(self.grammar, token):
            llama_cpp.llama_sampler_accept(self.grammar, token)
            return
        log.info("a token written for the model does not fit its grammar; sampling goes on free")
        llama_cpp.llama_sampler_free(self.grammar)
        self.grammar = None

    def _allows(self, grammar: Any, token: int) -> bool:
        self._one[0] = (token, 1.0, 0.0)
        self._one_array.size, self._one_array.selected, self._one_array.sorted = 1, -1, False
        llama_cpp.llama_sampler_apply(grammar, ctypes.byref(self._one_array))
        return bool(self._one["logit"][0] != -math.inf)

    def sample_checked(self, logits: Any) -> int:
        """Sample with the grammar checking the chain's choice (see the class); accepts the token."""
        chain, grammar = self.chain, self.grammar
        candidates = ctypes.byref(self._array)
        self._reset(logits)
        llama_cpp.llama_sampler_apply(chain, candidates)
        token = int(self._view["id"][self._array.selected])
        if not self._allows(grammar, token):  # rejected: constrain the whole vocabulary, sample again
            self._reset(logits)
            llama_cpp.llama_sampler_apply(grammar, candidates)
            allowed = np.isfinite(self._view["logit"])  # by id: the grammar keeps the order
            llama_cpp.llama_sampler_apply(chain, candidates)
            token = int(self._view["id"][self._array.selected])
            if not allowed[token]:
                # The chain banned every token the grammar allows (ignore_eos once the grammar is
                # complete leaves nothing): accepting its pick would make llama.cpp throw, which aborts
                # the whole process. Take the likeliest allowed token instead (there the end of text).
                token = self._likeliest(logits, allowed)
        llama_cpp.llama_sampler_accept(grammar, token)
        llama_cpp.llama_sampler_accept(chain, token)
        return token

    def _likeliest(self, logits: Any, allowed: np.ndarray[Any, Any]) -> int:
        ids = self._ids[allowed]
        if not len(ids):
            # The request's grammar asks for text no token of this vocabulary writes (a client's grammar
            # can: "[^\\x00-\\U0010FFFF]"): the request's fault, said as such, not a server error.
            raise InvalidRequest(
                "the grammar allows no next token: no token of this model writes what it asks for"
            )
        raw = np.ctypeslib.as_array(logits, shape=(len(self._ids),))
        return int(ids[np.argmax(raw[ids])])

    @staticmethod
    def _candidates(n: int) -> tuple[np.ndarray[Any, Any], Any]:
        """A llama_token_data_array of ``n`` entries, and a numpy view of its data (which keeps the
        data alive)."""
        data = (llama_cpp.llama_token_data * n)()
        view = np.frombuffer(memoryview(data).cast("B"), dtype=_TOKEN_DATA)
        pointer = ctypes.cast(data, llama_cpp.llama_token_data_p)
        return view, llama_cpp.llama_token_data_array(pointer, n, -1, False)

    def _reset(self, logits: Any) -> None:
        n = len(self._ids)
        self._view["id"] = self._ids  # samplers sort and shrink the array in place
        self._view["logit"] = np.ctypeslib.as_array(logits, shape=(n,))
        self._view["p"] = 0.0
        self._array.size, self._array.selected, self._array.sorted = n, -1, False

    def free(self) -> None:
        llama_cpp.llama_sampler_free(self.chain)
        if self.grammar is not None:
            llama_cpp.llama_sampler_free(self.grammar)


class Greedy:
    """What a greedy chain (logit biases, then the best token) picks, computed on the logits in numpy.
    llama_sampler_sample builds a candidate array of the whole vocabulary for every token (for a 49k
    vocabulary, 590 kB allocated and filled: 45-50 us a token on the development CPU, 150-190 us while it
    was busy, against 12 us here; benchmarks/sampling_cost.py), a few percent of a small model's GPU
    step. The first best token wins ties, as in llama.cpp's greedy sampler; biases are added in float32,
    as llama.cpp adds them."""

    def __init__(self, n_vocab: int, biases: dict[int, float]) -> None:
        self.n_vocab = n_vocab
        self._ids = np.array(list(biases), dtype=np.int64)
        self._values = np.array(list(biases.values()), dtype=np.float32)

    def pick(self, logits: Any) -> int:
        raw = np.ctypeslib.as_array(logits, shape=(self.n_vocab,))
        if not len(self._ids):
            return int(raw.argmax())
        biased = raw.copy()
        biased[self._ids] += self._values  # the ids are distinct (a dict's keys)
        return int(biased.argmax())


class Lazy:
    """A grammar that holds from where one of ``triggers`` first appears in the output. The output is
    kept as bytes with where each token starts; when a trigger shows up, the grammar is built with the
    text of the trigger's token that comes before the trigger as a literal prefix of its root (a token
    can hold both), and fed the tokens from that one on. llama.cpp's own lazy grammar searches its
    whole buffer with std::regex after every token; this searches only around the new piece."""

    def __init__(self, vocab: Any, gbnf: str, triggers: tuple[str, ...]) -> None:
        self._vocab = vocab
        self._gbnf = gbnf
        self._triggers = [t.encode() for t in triggers if t]
        self._longest = max((len(t) for t in self._triggers), default=0)
        self._output = bytearray()
        self._tokens: list[tuple[int, int]] = []  # (token, where its bytes start)

    def seen(self, token: int, piece: bytes) -> int | None:
        """Add a sampled token; where the first trigger starts once one is in the output."""
        start = len(self._output)
        self._output += piece
        self._tokens.append((token, start))
        window = max(0, start - self._longest + 1)
        found = [i for i in (self._output.find(t, window) for t in self._triggers) if i >= 0]
        return min(found) if found else None

    def tokens_from(self, at: int) -> list[int]:
        """The tokens whose bytes end after byte ``at``."""
        ends = [start for _, start in self._tokens[1:]] + [len(self._output)]
        return [token for (token, _), end in zip(self._tokens, ends, strict=True) if end > at]

    def build(self, at: int) -> Any:
        """The grammar sampler, its root after the prefix the trigger's token holds; None when that
        prefix is not whole UTF-8 text (a character split across tokens) or llama.cpp refuses it."""
        first = max(start for _, start in self._tokens if start <= at)
        try:
            prefix = bytes(self._output[first:at]).decode("utf-8")
        except UnicodeDecodeError:
            return None
        grammar = llama_cpp.llama_sampler_init_grammar(
            self._vocab, prefixed(self._gbnf, prefix).encode(), b"root"
        )
        return grammar or None


def new_sampler(
    vocab: Any, n_vocab: int, params: SamplingParams, end_of_generation: Callable[[], list[int]]
) -> Sampler:
    """A sampler for one request over ``vocab`` (free it with ``free``); ``end_of_generation`` lists
    the tokens that ignore_eos bans."""
    chain, biases = _chain(n_vocab, params, end_of_generation)
    greedy = Greedy(n_vocab, biases) if biases is not None else None
    if not params.grammar:
        return Sampler(chain, greedy=greedy)
    if params.grammar_triggers:
        lazy = Lazy(vocab, params.grammar, params.grammar_triggers)
        return Sampler(chain, None, n_vocab, lazy, greedy=greedy)
    grammar = llama_cpp.llama_sampler_init_grammar(vocab, params.grammar.encode(), b"root")
    if not grammar:
        llama_cpp.llama_sampler_free(chain)
        raise InvalidRequest("invalid grammar: llama.cpp could not parse it", param="response_format")
    return Sampler(chain, grammar, n_vocab)


def check_grammar(vocab: Any, grammar: str) -> None:
    """Raise InvalidRequest (param ``grammar``) when llama.cpp cannot build ``grammar`` over ``vocab``:
    what appliance.engine.gbnf leaves to it (a ``<token>`` not in the vocabulary, left recursion). Its
    reason is the error line it logs (kept by the log bridge), when it logs one."""
    bridge = init_backend()
    before = list(bridge.recent_errors)
    sampler = llama_cpp.llama_sampler_init_grammar(vocab, grammar.encode(), b"root")
    if sampler:
        llama_cpp.llama_sampler_free(sampler)
        return
    logged = list(bridge.recent_errors)
    reason = logged[-1].strip() if logged != before and logged else "see the daemon's log"
    raise InvalidRequest(f"invalid grammar: llama.cpp refused it ({reason})", param="grammar")


def _chain(
    n_vocab: int, params: SamplingParams, end_of_generation: Callable[[], list[int]]
) -> tuple[Any, dict[int, float] | None]:
    """The request's sampler chain, without its grammar (see Sampler), and, where it only adds biases and
    takes the best token, those biases (Greedy picks the same token faster)."""
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())

    def add(sampler: ctypes.c_void_p | None) -> None:
        if not sampler:
            llama_cpp.llama_sampler_free(chain)
            raise InvalidRequest("invalid sampling settings")
        llama_cpp.llama_sampler_chain_add(chain, sampler)

    biases = dict(params.logit_bias)
    if params.ignore_eos:
        biases.update((tok, -math.inf) for tok in end_of_generation())
    if biases:
        bias = (llama_cpp.llama_logit_bias * len(biases))()
        for i, (tok, value) in enumerate(biases.items()):
            bias[i] = llama_cpp.llama_logit_bias(tok, value)
        add(llama_cpp.llama_sampler_init_logit_bias(n_vocab, len(biases), bias))
    penalties = params.repeat_penalty != 1.0 or params.presence_penalty or params.frequency_penalty
    if penalties:
        add(
            llama_cpp.llama_sampler_init_penalties(
                n_vocab,
                params.repeat_last_n,
                params.repeat_penalty,
                params.frequency_penalty,
                params.presence_penalty,
            )
        )
    if params.temperature <= 0:
        add(llama_cpp.llama_sampler_init_greedy())
        return chain, None if penalties else biases
    else:
        add(llama_cpp.llama_sampler_init_top_k(params.top_k))
        add(llama_cpp.llama_sampler_init_top_p(params.top_p, 1))
        add(llama_cpp.llama_sampler_init_min_p(params.min_p, 1))
        add(llama_cpp.llama_sampler_init_temp(params.temperature))
        seed = llama_cpp.LLAMA_DEFAULT_SEED if params.seed is None else params.seed & 0xFFFFFFFF
        add(llama_cpp.llama_sampler_init_dist(seed))
    return chain, None
