"""`appliance eval MODEL [--golden FILE.jsonl] [--against MODEL2] [--probe] [--url URL] [--json]`.

The golden set is answered by the daemon at ``--url`` (MODEL is then any id it serves, a remote's
included) or by MODEL loaded here (a .gguf path or an installed name), planned as `serve` plans it.
Drift (``--against``) needs logits, which no HTTP API returns whole: both models are loaded here, one
after the other, each planned for one sequence of ``--chunk`` tokens. ``--probe`` runs the capability
probe (appliance.evaluation.probe) instead of the golden set. Results are kept with the model file
(appliance.evaluation.results), for `list`, `plan`, `/api/show` and the TUI.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from appliance.cli.common import api_key, base_url, settings, show
from appliance.config import Settings
from appliance.errors import UserError
from appliance.evaluation import CaseError, EvalError
from appliance.evaluation.golden import Case, GoldenError, Outcome, builtin_golden, judge, load_golden

if TYPE_CHECKING:
    from appliance.evaluation.drift import Drift
    from appliance.evaluation.probe import ProbeResult
    from appliance.hardware.profile import HardwareProfile
    from appliance.planner.plan import Plan

__all__ = ["EvalError", "EvalRun", "builtin_text", "run_eval"]


def builtin_text() -> Path:
    """The text drift is measured on unless another is given: 1,400 words of plain English prose, a
    letter, instructions, a dialogue and a little code (about 1,700 tokens for a 49k vocabulary)."""
    return builtin_golden().with_name("drift.txt")


@dataclass
class EvalRun:
    model: str
    golden: Path | None = None
    against: str | None = None
    url: str | None = None
    api_key: str | None = None
    text: Path | None = None
    chunk: int = 512
    outcomes: list[Outcome] = field(default_factory=list)
    drift: Drift | None = None
    file: Path | None = None  # the model's file, when it was loaded here
    against_file: Path | None = None
    probe: bool = False
    probed: ProbeResult | None = None
    against_quant: str | None = None
    stored: Path | None = None  # where the results were kept


def _local(settings: Settings, hardware: HardwareProfile, target: str, **model: Any) -> Plan:
    """The plan for ``target`` (a .gguf file or an installed name) on this machine, as `serve` plans."""
    from appliance.cli.plan import PlanError, local_candidates
    from appliance.planning import choose_plan

    try:
        found = local_candidates(target, settings)
    except PlanError as exc:
        raise EvalError(str(exc)) from None
    if found is None:
        raise EvalError(
            f"no such file or installed model: {target} (`appliance list` shows what is installed; "
            "with --url, MODEL is a model the daemon serves)"
        )
    planned = settings.model_copy(update={"model": settings.model.model_copy(update=model)})
    chosen = choose_plan(found, hardware, planned)
    if not chosen.fits:
        raise EvalError(f"{Path(chosen.model.path).name} does not fit this machine: {chosen.reasons[0]}")
    return chosen


def _replies(run: EvalRun, settings: Settings, hardware: HardwareProfile) -> Any:
    """The daemon's replies (``--url``), or the model's loaded here; sets ``run.file`` when the file is
    known here (a daemon on this machine names it in the model's card)."""
    from appliance.evaluation.replies import DaemonReplies, LocalReplies

    if run.url is not None:
        replies = DaemonReplies(run.url, run.model, run.api_key)
        try:
            path = (replies.card().get("meta") or {}).get("path")
        except EvalError:  # a model it sends to a remote has no card: the golden set still runs
            path = None
        if path and Path(path).is_file():
            run.file = Path(path)
        return replies
    from appliance.planning import fallback_ladder, load_options
    from models.naming import model_id_from_path

    chosen = _local(settings, hardware, run.model, n_parallel=1)
    run.file = Path(chosen.model.path)
    options = load_options(chosen, hardware, settings.model)
    fallbacks = fallback_ladder(options, chosen.model)
    return LocalReplies(run.file, model_id_from_path(run.file), options, fallbacks)


def _probe(run: EvalRun, settings: Settings, hardware: HardwareProfile) -> None:
    from appliance.capabilities import declared_capabilities
    from appliance.evaluation.probe import run_probe
    from models.gguf_header import GGUFError

    replies = _replies(run, settings, hardware)
    if run.file is not None:
        try:
            thinking = declared_capabilities(run.file).thinking
        except GGUFError as exc:
            raise EvalError(str(exc)) from None
    else:  # a remote's model: what the daemon declares
        thinking = "thinking" in (replies.card().get("meta") or {}).get("capabilities", [])
    with replies:
        run.probed = run_probe(replies, thinking=thinking)


def _answer_golden(
    run: EvalRun,
    cases: list[tuple[str, Case]],
    settings: Settings,
    hardware: HardwareProfile,
    progress: TextIO | None,
) -> None:
    replies = _replies(run, settings, hardware)
    with replies:
        if progress is not None:
            progress.write(f"golden set {run.golden or 'built-in'} ({len(cases)} cases):\n")
        for case_id, case in cases:
            try:
                outcome = judge(case_id, case, replies.reply(case))
            except CaseError as exc:
                outcome = Outcome(case_id, False, "", f"error: {exc}")
            run.outcomes.append(outcome)
            if progress is not None:
                progress.write(_outcome_line(outcome) + "\n")
                progress.flush()


def _drift_plans(run: EvalRun, settings: Settings, hardware: HardwareProfile) -> dict[str, Plan]:
    """Both models planned for one sequence of a chunk, before anything loads."""
    assert run.against is not None
    return {
        which: _local(settings, hardware, target, n_ctx=run.chunk, n_parallel=1)
        for which, target in (("model", run.model), ("against", run.against))
    }


def _measure_drift(
    run: EvalRun, text: str, plans: dict[str, Plan], settings: Settings, hardware: HardwareProfile
) -> None:
    from appliance.engine.llama import LlamaModel
    from appliance.errors import ModelLoadFailed
    from appliance.evaluation.drift import DriftError, measure  # numpy: only when drift is measured
    from appliance.planning import load_options

    run.file = Path(plans["model"].model.path)
    run.against_file = Path(plans["against"].model.path)
    run.against_quant = plans["against"].model.quant
    by_path = {Path(p.model.path): p for p in plans.values()}

    @contextlib.contextmanager
    def open_model(path: Path) -> Iterator[LlamaModel]:
        try:
            model = LlamaModel(path, load_options(by_path[path], hardware, settings.model))
        except ModelLoadFailed as exc:
            raise EvalError(exc.message) from None
        try:
            yield model
        finally:
            model.close()

    scratch = settings.dirs.cache
    scratch.mkdir(parents=True, exist_ok=True)
    try:
        run.drift = measure(
            open_model, run.file, run.against_file, text, chunk=run.chunk, scratch_dir=scratch
        )
    except DriftError as exc:
        raise EvalError(str(exc)) from None


def run_eval(run: EvalRun, settings: Settings, progress: TextIO | None = None) -> EvalRun:
    """Answer the golden set, then (with ``against``) measure drift; ``progress`` gets a line a case."""
    from appliance.hardware.detect import detect_hardware

    if run.chunk < 16:
        raise EvalError("--chunk must be at least 16 tokens")
    if run.probe:
        if run.against is not None or run.golden is not None:
            raise EvalError("--probe runs the probe set alone: drop --golden and --against")
        from appliance.hardware.detect import detect_hardware as detect

        _probe(run, settings, detect())
        _store(run, settings)
        return run
    try:
        cases = load_golden(run.golden or builtin_golden())
    except GoldenError as exc:
        raise EvalError(str(exc)) from None
    text = ""
    if run.against is not None:
        text_path = run.text or builtin_text()
        try:
            text = text_path.read_text(encoding="utf-8")
        except OSError as exc:
            raise EvalError(f"cannot read {text_path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise EvalError(f"{text_path} is not UTF-8 text") from None
    hardware = detect_hardware()
    plans = _drift_plans(run, settings, hardware) if run.against is not None else {}
    _answer_golden(run, cases, settings, hardware, progress)
    if run.against is not None:
        _measure_drift(run, text, plans, settings, hardware)
    _store(run, settings)
    return run


def _store(run: EvalRun, settings: Settings) -> None:
    """Keep the results with the model file, when it is known here."""
    from appliance.evaluation.results import save_results
    from models.gguf_header import GGUFError

    if run.file is None:
        return  # a remote's model, or a daemon elsewhere: nothing here to keep them with
    sections: dict[str, dict[str, Any]] = {}
    if run.probed is not None:
        sections["probe"] = run.probed.to_json()
    if run.outcomes:
        passed = sum(o.passed for o in run.outcomes)
        sections["golden"] = {"passed": passed, "total": len(run.outcomes), "pass_rate": pass_rate(run),
                              "golden": str(run.golden or "built-in")}  # fmt: skip
    if run.drift is not None:
        drift = run.drift.to_json()
        sections["drift"] = {"against": run.against, "against_quant": run.against_quant,
                             **{k: drift[k] for k in ("kld_mean", "top1_agreement", "ppl")}}  # fmt: skip
    try:
        run.stored = save_results(settings.dirs.data, run.file, run.model, **sections)
    except (OSError, GGUFError) as exc:
        raise EvalError(f"cannot keep the results: {exc}") from None


def pass_rate(run: EvalRun) -> float:
    return sum(o.passed for o in run.outcomes) / len(run.outcomes)


def _outcome_line(outcome: Outcome) -> str:
    if outcome.passed:
        return f"  pass  {outcome.case}"
    reply = " ".join(outcome.reply.split())
    reply = reply if len(reply) <= 60 else reply[:57] + "..."
    return f"  FAIL  {outcome.case}: {outcome.why} in {reply!r}"


def eval_json(run: EvalRun) -> dict[str, Any]:
    if run.probed is not None:
        return {"model": run.model, "file": str(run.file) if run.file else None, "url": run.url,
                "probe": run.probed.to_json(), "stored": str(run.stored) if run.stored else None}  # fmt: skip
    data: dict[str, Any] = {
        "model": run.model,
        "file": str(run.file) if run.file else None,
        "url": run.url,
        "golden": str(run.golden or builtin_golden()),
        "cases": [o.to_json() for o in run.outcomes],
        "passed": sum(o.passed for o in run.outcomes),
        "pass_rate": pass_rate(run),
    }
    if run.drift is not None:
        data.update(
            against=run.against,
            against_file=str(run.against_file),
            text=str(run.text or builtin_text()),
            **run.drift.to_json(),
        )
    return data


def eval_summary(run: EvalRun) -> str:
    """What follows the per-case lines in text output."""
    where = f"served at {run.url}" if run.url else f"{run.file.name if run.file else run.model}, loaded here"
    if run.probed is not None:
        from appliance.evaluation.results import results_summary

        lines = [f"{run.model} ({where}): {results_summary({'probe': run.probed.to_json()})}"]
        lines += [f"  {why}" for why in run.probed.failures]
        return "\n".join(lines + ([f"kept in {run.stored}"] if run.stored else []))
    lines = [
        f"{run.model} ({where}): {sum(o.passed for o in run.outcomes)} of {len(run.outcomes)} golden cases "
        f"passed, pass rate {pass_rate(run):.2f}"
    ]
    d = run.drift
    if d is not None:
        assert run.against_file is not None
        lines += [
            f"drift against {run.against} ({run.against_file.name}), {d.tokens} tokens scored in {d.chunks} "
            f"chunks of {d.chunk}:",
            f"  KL divergence  mean {d.kld_mean:.4f}, median {d.kld_median:.4f}, p99 {d.kld_p99:.4f}, "
            f"max {d.kld_max:.4f}",
            f"  top-1 agreement {d.top1_agreement:.1%}",
            f"  perplexity     {d.ppl:.3f} (the reference: {d.ppl_against:.3f})",
        ]
    return "\n".join(lines)


def main(run: EvalRun, settings: Settings, as_json: bool) -> int:
    run_eval(run, settings, None if as_json else sys.stdout)
    show(eval_json(run), as_json=as_json, text=lambda: eval_summary(run))
    return 0


def register(commands: argparse._SubParsersAction, common: argparse.ArgumentParser,
             budget_flags: argparse.ArgumentParser) -> None:  # fmt: skip
    """Add `eval`."""
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
    evaluate.add_argument(
        "--probe",
        action="store_true",
        help="run the capability probe instead: valid tool calls, JSON for a schema, thinking split",
    )
    evaluate.add_argument("--json", action="store_true", help="print the results as JSON")
    evaluate.set_defaults(run=run_command)


def run_command(args: argparse.Namespace) -> int:
    """Evaluate; the exit status."""
    loaded = settings(args)
    key = api_key(args, loaded)
    run = EvalRun(args.model, args.golden, args.against, base_url(args.url), key, args.text, args.chunk,
                  probe=args.probe)  # fmt: skip
    try:
        return main(run, loaded, args.json)
    except EvalError as exc:
        raise UserError(str(exc)) from None
