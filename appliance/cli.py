"""The `appliance` command line. Exit 0 ok, 1 user error (one line on stderr), 2 usage error."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from appliance import __version__
from appliance.config import Settings, load_settings, masked

if TYPE_CHECKING:
    from appliance.hardware.profile import HardwareProfile

log = logging.getLogger("appliance")


class UserError(Exception):
    """A problem the user can fix; printed as one line, exit status 1."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="appliance", description="A local LLM appliance on llama.cpp.")
    parser.add_argument("--version", action="version", version=f"llm-appliance {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a nested command's own --config must not reset one given before it (`config --config F show`).
    common.add_argument(
        "--config",
        type=Path,
        default=argparse.SUPPRESS,
        help="config file (default: config.toml in the config dir)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve", parents=[common], help="start the daemon", description="Start the OpenAI-compatible daemon."
    )
    serve.add_argument("model", nargs="?", metavar="MODEL", help="a .gguf file (default: the embedded model)")
    serve.add_argument("--alias", help="model id clients use (default: derived from the file name)")
    serve.add_argument("--host", help="listen address (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (default 11435)")
    serve.add_argument(
        "--ctx",
        type=int,
        help="KV cache tokens, shared by the slots (default: 4096 per slot, capped by the model)",
    )
    serve.add_argument("--parallel", type=int, help="requests generated at once (default 1)")
    serve.add_argument("--api-key", help="require this key from clients (also: appliance key new)")
    serve.add_argument(
        "--insecure-no-auth",
        action="store_true",
        default=None,
        help="serve a non-loopback --host without any API key (everyone who reaches the port may use it)",
    )
    serve.add_argument("--max-queue", type=int, help="requests that may wait at once (default 64)")
    serve.add_argument("--threads", type=int, help="generation threads (default: physical cores)")
    budgets = argparse.ArgumentParser(add_help=False)
    budgets.add_argument("--max-ram", metavar="SIZE", help="cap the RAM a model may use, e.g. 6GiB")
    budgets.add_argument("--max-vram", metavar="SIZE", help="cap the GPU memory a model may use, e.g. 20GiB")
    for action in budgets._actions:
        serve._add_action(action)

    plan = commands.add_parser(
        "plan",
        parents=[common, budgets],
        help="show what would be loaded and why, without loading it",
        description="Plan a model for this machine: quantization, context, GPU layers, memory, and why.",
    )
    plan.add_argument(
        "model",
        metavar="MODEL",
        help="a .gguf file, a directory of one model's quantizations, an installed name, "
        "a hub repo owner/name[:QUANT] or ollama:NAME[:TAG]",
    )
    plan.add_argument("--ctx", type=int, help="context length in tokens (default: 4096, less if needed)")
    plan.add_argument("--parallel", type=int, help="sequences served at once")
    plan.add_argument("--json", action="store_true", help="print the plan as JSON")
    plan.add_argument("--no-dry-run", action="store_true", help="skip llama.cpp's dry-run check")

    def shows(name: str, help_text: str, description: str) -> None:
        """A command that prints data, as text or with --json."""
        command = commands.add_parser(name, parents=[common], help=help_text, description=description)
        command.add_argument("--json", action="store_true", help="print as JSON")

    shows(
        "hw",
        "show the detected hardware",
        "Show what was detected: CPU, memory (and a container's limit), GPUs, and what the installed "
        "llama.cpp build can offload to.",
    )
    shows(
        "remotes",
        "show the remote GPU hosts: health, load, models",
        "Show the configured remotes (and Tailscale targets) with their health, breaker, load and models, "
        "as the running daemon sees them (or probed now if none runs).",
    )

    pull = commands.add_parser(
        "pull",
        parents=[common, budgets],
        help="download a model: the quantization that fits this machine",
        description="Pull a GGUF model from Hugging Face (owner/name[:QUANT]; honours HF_ENDPOINT and "
        "HF_TOKEN) or Ollama's registry (ollama:NAME[:TAG]). Without QUANT, the planner reads each "
        "quantization's header remotely and picks the best that fits, before downloading. Resumable.",
    )
    pull.add_argument("ref", metavar="REF", help="owner/name[:QUANT] or ollama:NAME[:TAG]")
    pull.add_argument("--ctx", type=int, help="plan for this context length (default: 4096)")
    pull.add_argument("--json", action="store_true", help="print the stored manifest as JSON at the end")

    listing = commands.add_parser(
        "list",
        parents=[common, budgets],
        help="list installed models and whether they fit here",
        description="List the installed models (the store, the embedded model, other tools' stores) "
        "with whether each fits this machine: full, partial (split between GPU and CPU) or no.",
    )
    listing.add_argument("--json", action="store_true", help="print the list as JSON")
    rm = commands.add_parser(
        "rm", parents=[common], help="remove a stored model", description="Remove a model from the store."
    )
    rm.add_argument("name", metavar="NAME", help="name:tag as `appliance list` shows it")
    rm.add_argument("-y", "--yes", action="store_true", help="do not ask for confirmation")
    imp = commands.add_parser(
        "import",
        parents=[common],
        help="add an existing .gguf to the store without copying it",
        description="Register an existing GGUF file in the store, without copying it.",
    )
    imp.add_argument("path", type=Path, metavar="PATH", help="a .gguf file")
    imp.add_argument("--name", help="store name (default: from the file name)")
    imp.add_argument("--tag", help="tag (default: the quantization)")
    imp.add_argument("--json", action="store_true", help="print the stored manifest as JSON")

    tui = commands.add_parser(
        "tui",
        parents=[common],
        help="the terminal UI, attached to a running daemon",
        description="Dashboard, models (load/unload) and remotes of a running daemon, over its HTTP API.",
    )
    tui.add_argument("--url", help="daemon URL (default: this machine's configured host and port)")
    tui.add_argument("--api-key", help="the daemon's API key, if it needs one")

    chat = commands.add_parser(
        "chat",
        parents=[common],
        help="chat with the running daemon in the terminal",
        description="Chat with a model the running daemon serves. On a terminal: type, Enter; /clear "
        "forgets, /bye or Ctrl-D leaves, Ctrl-C stops a reply. Piped: stdin is one message, the reply "
        "goes to stdout.",
    )
    chat.add_argument("model", nargs="?", help="a model the daemon serves (default: its default model)")
    chat.add_argument("--url", help="daemon URL (default: this machine's configured host and port)")
    chat.add_argument("--api-key", help="the daemon's API key, if it needs one")
    chat.add_argument("--system", help="a system prompt")
    chat.add_argument("--max-tokens", type=int, help="at most this many tokens a reply")
    chat.add_argument("--temperature", type=float, help="sampling temperature (default: the daemon's)")

    evaluate = commands.add_parser(
        "eval",
        parents=[common],
        help="score a model on a golden set; with --against, its drift from another quantization",
        description="Answer a golden set greedily and report the pass rate. With --against, also load "
        "both models here, one after the other, and report how far MODEL's next-token distributions are "
        "from MODEL2's on a text: KL divergence, top-1 agreement and perplexity (as llama-perplexity "
        "--kl-divergence). See docs/EVAL.md.",
    )
    evaluate.add_argument(
        "model",
        metavar="MODEL",
        help="a .gguf file, an installed name, or (with --url) a model the daemon serves",
    )
    evaluate.add_argument(
        "--golden", type=Path, metavar="FILE.jsonl", help="golden set (default: the built-in one)"
    )
    evaluate.add_argument(
        "--against", metavar="MODEL2", help="the reference quantization: a .gguf or installed name"
    )
    evaluate.add_argument(
        "--url", help="answer the golden set through this daemon instead of loading MODEL here"
    )
    evaluate.add_argument("--api-key", help="the daemon's API key, if it needs one")
    evaluate.add_argument(
        "--text", type=Path, metavar="FILE", help="text drift is measured on (default: built-in)"
    )
    evaluate.add_argument("--chunk", type=int, default=512, help="tokens per drift chunk (default 512)")
    evaluate.add_argument("--json", action="store_true", help="print the results as JSON")

    bench = commands.add_parser(
        "bench",
        parents=[common],
        help="measure serving speed: tokens/s, TTFT, inter-token latency, side by side with llama-server",
        description="Send streaming chat requests at a concurrency and report decode and aggregate "
        "tokens/s, TTFT and inter-token latency. With --url, measure a running server (this daemon or any "
        "OpenAI-compatible one). Without, start each of --servers in turn on the same GGUF with the same "
        "threads, context and slots, and compare them. See docs/BENCHMARKS.md.",
    )
    bench.add_argument(
        "model",
        nargs="?",
        metavar="MODEL",
        help="a .gguf or installed name (default: the embedded model); with --url, a model the server serves",
    )
    bench.add_argument("--url", help="measure this running server instead of starting any")
    bench.add_argument("--api-key", help="the server's API key, with --url")
    bench.add_argument(
        "--servers",
        help="servers to start, in turn: comma list of appliance, llama-server, llama-cpp-python "
        "(default: appliance)",
    )
    bench.add_argument("--llama-server", metavar="BIN", help="llama-server binary (default: on PATH)")
    bench.add_argument(
        "--threads", type=int, help="threads every started server uses (default: physical cores)"
    )
    bench.add_argument("--ctx", type=int, default=4096, help="context of every started server (default 4096)")
    bench.add_argument("--tokens", type=int, default=128, help="tokens generated per request (default 128)")
    bench.add_argument("--concurrency", type=int, default=1, help="requests in flight at once (default 1)")
    bench.add_argument("--requests", type=int, default=5, help="measured requests per server (default 5)")
    bench.add_argument("--prompt", choices=["short", "long"], default="short", help="short, or ~2000 tokens")
    bench.add_argument("--json", action="store_true", help="print the results as JSON")
    bench.add_argument("--out", type=Path, metavar="FILE", help="also write the results to FILE as JSON")
    bench.add_argument("--log-dir", type=Path, help="keep each started server's log in this directory")
    bench.add_argument(
        "--startup-timeout", type=float, default=300, help="seconds a server may take to start"
    )
    bench.add_argument("--request-timeout", type=float, default=600, help="seconds a request may take")

    key = commands.add_parser("key", parents=[common], help="make and list the daemon's API keys")
    key_commands = key.add_subparsers(dest="key_command", required=True, metavar="ACTION")
    key_new = key_commands.add_parser(
        "new",
        parents=[common],
        help="make a new API key and add it to the keys file",
        description="Make a new API key, add it to the keys file (server.api_keys_file, default api-keys "
        "in the config directory, owner-only) and print it. A running daemon accepts it after SIGHUP or "
        "a restart.",
    )
    key_new.add_argument("--name", default="", help="a name for the key, e.g. the client that uses it")
    key_new.add_argument("--json", action="store_true", help="print the key and the file as JSON")
    key_list = key_commands.add_parser(
        "list", parents=[common], help="list the keys the daemon accepts (masked)"
    )
    key_list.add_argument("--json", action="store_true", help="print as JSON")

    config = commands.add_parser("config", parents=[common], help="inspect the configuration")
    config_commands = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    config_commands.add_parser(
        "show", parents=[common], help="print the merged configuration (secrets masked)"
    )
    return parser


def _settings(args: argparse.Namespace, **overrides: Any) -> Settings:
    try:
        return load_settings(getattr(args, "config", None), **overrides)
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        message = str(first["msg"]).removeprefix("Value error, ")
        raise UserError(f"invalid setting {where}: {message}") from None
    except ValueError as exc:  # a TOML syntax error
        raise UserError(f"cannot read the configuration: {exc}") from None


def _cmd_config_show(args: argparse.Namespace) -> int:
    print(json.dumps(masked(_settings(args)), indent=2))
    return 0


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.1f} GiB"


def _hw_summary(profile: HardwareProfile) -> list[str]:
    cpu, memory = profile.cpu, profile.memory
    features = " ".join(cpu.features) or "no SIMD extensions llama.cpp uses"
    lines = [
        f"CPU      {cpu.model} ({cpu.arch}, {cpu.cores_physical} cores, {cpu.cores_logical} threads; "
        f"{features})",
        f"Memory   {_gib(memory.total_bytes)} total, {_gib(memory.available_bytes)} available"
        + (f" (cgroup limit {_gib(memory.limit_bytes)})" if memory.limit_bytes is not None else ""),
    ]
    for gpu in profile.gpus:
        details = [gpu.backend]
        if gpu.compute_capability:
            details.append(f"compute {gpu.compute_capability}")
        if gpu.driver:
            details.append(f"driver {gpu.driver}")
        if gpu.unified_memory:
            details.append("unified memory")
        lines.append(
            f"GPU {gpu.index}    {gpu.name}: {_gib(gpu.free_bytes)} free of {_gib(gpu.total_bytes)} "
            f"({', '.join(details)})"
        )
    if profile.offload.supported:
        backends = ", ".join(profile.offload.backends) or "a GPU backend"
        lines.append(f"Offload  {backends} (the installed llama.cpp build)")
    else:
        lines.append("Offload  none: the installed llama.cpp build runs on the CPU only")
    unused = [g for g in profile.gpus if g not in profile.usable_gpus]
    if unused:
        lines.append(
            f"         ({', '.join(sorted({g.backend for g in unused}))} GPU unused by this build: "
            "rebuild llama-cpp-python for it, see docs/GPU.md)"
        )
    if profile.board:
        lines.append(f"Board    {profile.board}")
    lines.append(f"OS       {profile.os}")
    return lines


def _cmd_hw(args: argparse.Namespace) -> int:
    from appliance.hardware.detect import detect_hardware

    _settings(args)  # a broken --config is reported here as for every command
    profile = detect_hardware()
    if args.json:
        print(json.dumps(profile.to_json(), indent=2))
    else:
        print("\n".join(_hw_summary(profile)))
    return 0


def _cmd_plan(args: argparse.Namespace) -> int:
    from appliance.cli_plan import PlanError, make_plan, plan_json, plan_text

    settings = _settings(
        args,
        model={"n_ctx": args.ctx, "n_parallel": args.parallel},
        planner={"max_ram": args.max_ram, "max_vram": args.max_vram},
    )
    try:
        chosen, figures = make_plan(settings, args.model, dry_run=not args.no_dry_run)
    except PlanError as exc:
        raise UserError(str(exc)) from None
    print(plan_json(chosen, figures) if args.json else plan_text(chosen, figures))
    if not chosen.fits:
        raise UserError(chosen.reasons[0])
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    # llama.cpp (and its GPU backend's C++ runtime) is loaded and initialised before the web stack: on
    # the lent H100, with the CUDA libraries loaded after FastAPI/uvicorn's, the first model load
    # crashed in the tokenizer's std::regex locale code; loaded first, it works.
    from appliance.engine.llama import system_info

    system_info()
    # The CLI is the composition root: the only place the core reaches the server layer, lazily, so
    # importing `appliance` never loads FastAPI.
    from server.daemon import run_daemon

    def load() -> Settings:  # again on SIGHUP: the flags still win over the file and the environment
        return _settings(
            args,
            server={
                "host": args.host,
                "port": args.port,
                "api_key": args.api_key,
                "max_queue": args.max_queue,
                "insecure_no_auth": args.insecure_no_auth,
            },
            model={
                "alias": args.alias,
                "n_ctx": args.ctx,
                "n_parallel": args.parallel,
                "n_threads": args.threads,
            },
            planner={"max_ram": args.max_ram, "max_vram": args.max_vram},
        )

    return run_daemon(load(), args.model, load)


def _base_url(url: str | None) -> str | None:
    """A server's root URL, also when given as the OpenAI base URL (``http://host:port/v1``)."""
    return url.rstrip("/").removesuffix("/v1") if url else url


def _api_key(args: argparse.Namespace, settings: Settings) -> str | None:
    """The daemon's API key: as given, else the first this machine's daemon accepts."""
    from appliance.keys import KeyFileError, accepted_keys

    if args.api_key:
        return str(args.api_key)
    try:
        keys = accepted_keys(settings)
    except KeyFileError as exc:
        raise UserError(str(exc)) from None
    return keys[0] if keys else None


def _daemon(args: argparse.Namespace) -> tuple[str, str | None]:
    """The daemon's URL and API key: as given, else this machine's configured host, port and key."""
    settings = _settings(args)
    server = settings.server
    host = server.host if server.host not in ("0.0.0.0", "::") else "127.0.0.1"
    url = _base_url(args.url) or f"http://{host}:{server.port}"
    return url, _api_key(args, settings)


def _cmd_tui(args: argparse.Namespace) -> int:
    url, key = _daemon(args)
    # The composition root may reach the UI layer, lazily: importing `appliance` never loads Textual.
    from tui.app import ApplianceApp

    ApplianceApp(url, key).run()
    return 0


def _cmd_chat(args: argparse.Namespace) -> int:
    from appliance.cli_chat import Chat, ChatError, run

    url, key = _daemon(args)
    if args.max_tokens is not None and args.max_tokens < 1:
        raise UserError("--max-tokens must be at least 1")
    chat = Chat(url, args.model, key, args.system, args.max_tokens, args.temperature)
    try:
        return run(chat)
    except ChatError as exc:
        raise UserError(str(exc)) from None


def _cmd_eval(args: argparse.Namespace) -> int:
    from appliance import cli_eval

    settings = _settings(args)
    url = _base_url(args.url)
    run = cli_eval.EvalRun(
        args.model, args.golden, args.against, url, _api_key(args, settings), args.text, args.chunk
    )
    try:
        return cli_eval.main(run, settings, args.json)
    except cli_eval.EvalError as exc:
        raise UserError(str(exc)) from None


def _cmd_bench(args: argparse.Namespace) -> int:
    import psutil

    from appliance import cli_bench
    from appliance.bench.load import Load

    settings = _settings(args)
    load = Load(args.tokens, args.concurrency, args.requests, args.prompt, args.request_timeout)
    servers = [n.strip() for n in args.servers.split(",") if n.strip()] if args.servers else None
    try:
        report = cli_bench.run(
            args.model,
            load,
            url=_base_url(args.url),
            api_key=_api_key(args, settings) if args.url else None,
            servers=servers,
            threads=args.threads or psutil.cpu_count(logical=False) or 1,
            ctx=args.ctx,
            llama_server=args.llama_server,
            startup_timeout_s=args.startup_timeout,
            log_dir=args.log_dir,
        )
        return cli_bench.main(report, as_json=args.json, out=args.out)
    except cli_bench.BenchError as exc:
        raise UserError(str(exc)) from None


def _cmd_store(args: argparse.Namespace) -> int:
    from appliance import cli_store

    if args.command == "list":
        from appliance.hardware.detect import detect_hardware

        settings = _settings(args, planner={"max_ram": args.max_ram, "max_vram": args.max_vram})
        entries = cli_store.list_entries(settings, detect_hardware())
        print(json.dumps(entries, indent=2) if args.json else cli_store.list_text(entries))
        return 0
    if args.command == "pull":
        from appliance.cli_pull import run_pull
        from appliance.pulls import PullError

        settings = _settings(
            args, model={"n_ctx": args.ctx}, planner={"max_ram": args.max_ram, "max_vram": args.max_vram}
        )
        try:
            print(run_pull(settings, args.ref, args.json))
        except PullError as exc:
            raise UserError(str(exc)) from None
        return 0
    _settings(args)
    try:
        if args.command == "rm":
            print(cli_store.remove(args.name, yes=args.yes))
        else:
            print(cli_store.import_file(args.path, args.name, args.tag, args.json))
    except cli_store.StoreCommandError as exc:
        raise UserError(str(exc)) from None
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _cmd_serve(args)
        if args.command == "hw":
            return _cmd_hw(args)
        if args.command == "plan":
            return _cmd_plan(args)
        if args.command == "config":
            return _cmd_config_show(args)
        if args.command == "key":
            from appliance.cli_keys import run_key_command
            from appliance.keys import KeyFileError

            try:
                return run_key_command(args, _settings(args))
            except KeyFileError as exc:
                raise UserError(str(exc)) from None
        if args.command == "remotes":
            from appliance.cli_remotes import remotes, remotes_text

            data = remotes(_settings(args))
            print(json.dumps(data, indent=2) if args.json else remotes_text(data))
            return 0
        if args.command == "tui":
            return _cmd_tui(args)
        if args.command == "chat":
            return _cmd_chat(args)
        if args.command == "bench":
            return _cmd_bench(args)
        if args.command == "eval":
            return _cmd_eval(args)
        if args.command in ("pull", "list", "rm", "import"):
            return _cmd_store(args)
    except UserError as exc:
        print(f"appliance: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
