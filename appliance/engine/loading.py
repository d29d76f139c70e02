"""Loading a model for serving: the planned options first, then the fallbacks (smaller context, KV
type or offload) when llama.cpp refuses; then its chat template, its control texts and a smoke test,
so a model that cannot chat is reported instead of served."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from appliance.engine.chat_template import ChatTemplate, TemplateError
from appliance.engine.literals import trie_pattern
from appliance.engine.params import LoadOptions
from appliance.engine.prompts import tokenize_prompt
from appliance.errors import ModelLoadFailed

log = logging.getLogger(__name__)


def load_with_fallbacks(
    path: Path,
    options: LoadOptions,
    fallbacks: list[LoadOptions],
    loader: Callable[[Path, LoadOptions], Any] | None = None,
) -> tuple[Any, LoadOptions]:
    """The model loaded by ``loader`` (LlamaModel by default) with ``options``, or else with each of
    ``fallbacks`` in order (for memory, usually: see appliance.planning.fallback_ladder); and the
    options that worked. The last attempt's ModelLoadFailed is raised when none does."""
    if loader is None:
        from appliance.engine.llama import LlamaModel  # llama.cpp loads here, not on import

        loader = LlamaModel
    attempts = [options, *(o for o in fallbacks if o != options)]
    for index, attempt in enumerate(attempts):
        try:
            return loader(path, attempt), attempt
        except ModelLoadFailed as exc:
            if index + 1 == len(attempts):
                raise
            following = attempts[index + 1]
            log.warning(
                "load failed (%s); retrying with context %s, KV %s, %s GPU layers",
                exc.message,
                following.n_ctx,
                following.kv_type,
                following.n_gpu_layers,
            )
    raise ModelLoadFailed(f"cannot load {path}")


def prepare(model: Any, template: str | None = None) -> tuple[ChatTemplate, re.Pattern[str] | None]:
    """``model``'s chat template (``template`` when given, else the GGUF's) and the pattern of its
    control-token texts (see literals), once a smoke test passed. Closes the model and raises
    ModelLoadFailed (or ValueError, for a template that does not compile) when it cannot serve."""
    try:
        chat = ChatTemplate(
            template or model.chat_template,
            bos_token=model.token_text(model.bos_token),
            eos_token=model.token_text(model.eos_token),
        )
        control_texts = trie_pattern(model.control_texts())
        smoke_test(model, chat)
    except BaseException:
        model.close()
        raise
    return chat, control_texts


def smoke_test(model: Any, template: ChatTemplate) -> None:
    """A short fixed chat at temperature 0 must produce tokens through the model's chat template
    before the model is marked ready; a model that cannot is reported instead of being served."""
    try:
        text = template.render([{"role": "user", "content": "Say hello."}])
    except TemplateError as exc:
        raise ModelLoadFailed(f"its chat template fails: {exc.message}") from None
    problem = model.smoke_test(tokenize_prompt(model, text))
    if problem:
        raise ModelLoadFailed(f"smoke test failed: {problem}")
