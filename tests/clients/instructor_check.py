"""instructor, unchanged, against a daemon: run in a process of its own whose path puts rich<15 first
(tests/server/test_clients_side_installed.py installs it there), as instructor pins it and the TUI's
snapshot tests need rich 15. Prints what it got as JSON.

    python tests/clients/instructor_check.py BASE_URL MODEL
"""

from __future__ import annotations

import importlib.metadata
import json
import sys

import instructor
from openai import OpenAI
from pydantic import BaseModel


class City(BaseModel):
    name: str
    country: str


def main() -> None:
    base, model = sys.argv[1], sys.argv[2]
    ask = [{"role": "user", "content": "Name a city in France."}]
    got: dict[str, object] = {"rich": importlib.metadata.version("rich")}
    for mode in (instructor.Mode.JSON_SCHEMA, instructor.Mode.TOOLS):
        client = instructor.from_openai(OpenAI(base_url=f"{base}/v1", api_key="unused"), mode=mode)
        city = client.chat.completions.create(model=model, response_model=City, messages=ask,  # type: ignore[arg-type]
                                              max_tokens=60, temperature=0, max_retries=0)  # fmt: skip
        got[mode.value] = city.model_dump()
    print(json.dumps(got))


if __name__ == "__main__":
    main()
