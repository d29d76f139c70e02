"""Several GPUs: the planner's layer split, table-tested over recorded shapes of 2- and 4-GPU machines
(tests/fixtures/hardware), and what the engine hands llama.cpp for it."""

from __future__ import annotations

import bisect
import ctypes
import json
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import llama_cpp
import numpy as np
import pytest

import appliance.hardware.detect as detect_module
from appliance import cli
from appliance.config import ModelSettings
from appliance.engine.llama_params import model_params, split_arguments
from appliance.engine.params import LoadOptions
from appliance.errors import ModelLoadFailed
from appliance.loaded import Loaded, gpu_memory
from appliance.planner.memory import LoadSettings, estimate
from appliance.planner.plan import GIB, Plan, PlanRequest, fits_budget, plan, plan_auto_parallel, remaining
from appliance.planning import describe_options, fallback_ladder, load_options, plan_request
from server.metrics import GpuCollector, gpu_memory_metrics
from tests.benchmark_scripts import load_script
from tests.hardware_profiles import FIXTURES, FakeNvml, profile
from tests.unit.test_planner import llama
from tui.panes import hardware_lines, plan_text

MIB = 1 << 20


def test_the_fixtures_pair_each_nvml_gpu_with_llama_cpps_device() -> None:
    # CUDA orders the fastest GPU first: the 3090 in the second slot is llama.cpp's CUDA0.
    gpus = profile("rtx3060-rtx3090").usable_gpus
    assert [(g.index, g.name, g.device) for g in gpus] == [
        (0, "NVIDIA GeForce RTX 3060", "CUDA1"),
        (1, "NVIDIA GeForce RTX 3090", "CUDA0"),
    ]
    assert [g.device for g in profile("quad-a100-40gb").usable_gpus] == ["CUDA0", "CUDA1", "CUDA2", "CUDA3"]


@pytest.mark.parametrize("machine", ["dual-rtx3090", "rtx3060-rtx3090", "quad-a100-40gb"])
def test_appliance_hw_lists_every_gpu(
    machine: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(detect_module, "detect_hardware", lambda: profile(machine))
    assert cli.main(["hw"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("GPU ")]
    assert len(lines) == len(profile(machine).gpus) >= 2
    assert all("llama.cpp CUDA" in line for line in lines)


def _llama_cpp_layers(tensor_split: tuple[float, ...], n_devices: int, n_gpu: int) -> list[int]:
    """How many offloaded positions each device gets under llama.cpp's rule (llama-model.cpp,
    load_tensors: cumulative float32 shares, upper_bound of i / n_gpu)."""
    sums = np.cumsum(np.array(tensor_split[:n_devices], dtype=np.float32), dtype=np.float32)
    splits = [float(np.float32(s) / np.float32(sums[-1])) for s in sums]
    counts = [0] * n_devices
    for i in range(n_gpu):
        counts[bisect.bisect_right(splits, float(np.float32(i) / np.float32(n_gpu)))] += 1
    return counts


def _check_split(chosen: Plan, machine: str) -> None:
    """What every plan over several GPUs must hold."""
    s, mem = chosen.settings, chosen.memory
    budgets = chosen.budget.gpu_budgets()
    assert [d.gpu for d in mem.devices] == list(s.gpus)
    for device in mem.devices:
        assert device.vram_bytes <= budgets[device.gpu], chosen.reasons
    # The main GPU (the largest budget of those used) is last: it holds the output layer.
    assert budgets[s.gpus[-1]] == max(budgets[g] for g in s.gpus)
    # The per-GPU figures add up to the plan's totals.
    assert sum(d.vram_bytes for d in mem.devices) == mem.vram_bytes
    assert sum(d.weights_bytes for d in mem.devices) == mem.weights_gpu
    assert sum(d.kv_bytes for d in mem.devices) == mem.kv_gpu
    n_gpu = chosen.model.n_layer + 1 if s.n_gpu_layers < 0 else s.n_gpu_layers
    assert sum(d.layers for d in mem.devices) == n_gpu
    data = chosen.to_json()
    assert data["memory"]["vram_bytes"] == sum(d["vram_bytes"] for d in data["devices"])
    assert [d["output_layer"] for d in data["devices"]] == [False] * (len(s.gpus) - 1) + [True]
    # What the engine passes llama.cpp gives each GPU exactly the planned layers.
    options = load_options(chosen, profile(machine), ModelSettings())
    names = {g.index: g.device for g in profile(machine).gpus}
    assert options.devices == tuple(names[g] for g in s.gpus)
    assert options.main_gpu == len(s.gpus) - 1
    if len(s.gpus) > 1:
        assert _llama_cpp_layers(options.tensor_split, len(s.gpus), n_gpu) == list(s.split)


# machine, model, --gpus, the GPUs used in llama.cpp's order, all layers on GPUs?, context
TABLE = [
    # 70B Q4_K_M (40 GiB): not one 24 GiB card, but two, with 2 slots of 4096 tokens.
    ("dual-rtx3090", "70b", None, (0, 1), True, 8192),
    ("dual-rtx3090", "70b", (1,), (1,), False, 4096),  # restricted to one card: the CPU takes the rest
    ("dual-rtx3090", "8b", None, (1,), True, 16384),  # fits one card: one card (the one with more free)
    # 12 + 24 GiB hold 61 of its 81 layers; the 3090 (GPU 1) takes the output layer.
    ("rtx3060-rtx3090", "70b", None, (0, 1), False, 4096),
    ("rtx3060-rtx3090", "8b", None, (1,), True, 16384),
    ("rtx3060-rtx3090", "8b", (0,), (0,), True, 16384),
    ("quad-a100-40gb", "70b", None, (1, 0), True, 16384),  # two of the four suffice
    ("quad-a100-40gb", "70b", (2, 3), (3, 2), True, 16384),
]


@pytest.mark.parametrize(("machine", "size", "gpus", "used", "whole", "n_ctx"), TABLE)
def test_split_table(
    machine: str, size: str, gpus: tuple[int, ...] | None, used: tuple[int, ...], whole: bool, n_ctx: int
) -> None:
    chosen = plan_auto_parallel([llama(size, "Q4_K_M")], profile(machine), PlanRequest(gpus=gpus))
    assert chosen.fits, chosen.reasons
    assert chosen.settings.gpus == used, chosen.reasons
    assert (chosen.settings.n_gpu_layers < 0) == whole, chosen.reasons
    assert chosen.settings.n_ctx == n_ctx, chosen.reasons
    _check_split(chosen, machine)
    if len(used) > 1:
        assert any(r.startswith(f"layers split across {len(used)} GPUs") for r in chosen.reasons)


def test_a_70b_model_fits_two_cards_and_not_one() -> None:
    model = [llama("70b", "Q4_K_M")]
    one = plan(model, profile("dual-rtx3090"), PlanRequest(gpus=(0,)))
    assert 0 < one.settings.n_gpu_layers < one.model.n_layer  # the CPU holds what one card cannot
    two = plan(model, profile("dual-rtx3090"))
    assert two.settings.n_gpu_layers < 0 and two.reasons[0].startswith("Q4_K_M (5.1 bits/weight, the only")
    assert "fully on 2 GPUs" in two.reasons[0]
    assert two.memory.vram_bytes > max(g.vram_bytes for g in two.budget.gpus)  # more than one card holds


def test_unequal_cards_get_layers_in_proportion_to_their_room() -> None:
    chosen = plan([llama("70b", "Q8_0")], profile("quad-a100-40gb"), PlanRequest(n_ctx=131072))
    assert len(chosen.settings.gpus) == 3  # 128k tokens of KV (40 GiB) need a third card
    _check_split(chosen, "quad-a100-40gb")
    mixed = plan([llama("70b", "Q4_K_M")], profile("rtx3060-rtx3090"))
    small, large = mixed.memory.devices
    assert large.layers > 2 * small.layers - 4  # the 24 GiB card holds about twice the 12 GiB card's
    # Each card is filled to within one layer of its budget.
    layer = mixed.model.layer_bytes[-1]
    budgets = mixed.budget.gpu_budgets()
    for device in mixed.memory.devices:
        assert device.gpu is not None and budgets[device.gpu] - device.vram_bytes < 2 * layer


def test_only_the_gpu_with_the_output_layer_holds_the_logits() -> None:
    chosen = plan([llama("70b", "Q4_K_M")], profile("dual-rtx3090"))
    first, last = chosen.memory.devices
    model = chosen.model
    logits = 4 * chosen.settings.n_ubatch * model.n_vocab
    assert (
        last.compute_bytes - first.compute_bytes >= logits - 4 * chosen.settings.n_ubatch * model.n_embd * 8
    )
    assert last.weights_bytes - first.weights_bytes >= model.output_bytes - 2 * model.layer_bytes[0]


def test_one_gpu_plans_are_unchanged_by_naming_the_gpu() -> None:
    model = llama("8b", "Q4_K_M")
    base = LoadSettings(n_ctx=8192, n_gpu_layers=-1, gpu_backend="cuda")
    named = estimate(model, replace(base, gpus=(1,)))
    anonymous = estimate(model, base)
    assert named.vram_bytes == anonymous.vram_bytes and named.ram_bytes == anonymous.ram_bytes
    assert named.devices[0].gpu == 1 and anonymous.devices[0].gpu is None


def test_gpus_that_are_not_there_are_refused_with_the_ones_that_are() -> None:
    chosen = plan([llama("8b", "Q4_K_M")], profile("dual-rtx3090"), PlanRequest(gpus=(0, 7)))
    assert not chosen.fits
    assert chosen.reasons == (
        "GPU 7 cannot be used (--gpus / model.gpus): the GPUs this llama.cpp build can use are 0, 1 "
        "(see appliance hw)",
    )
    # The H100 machine's build cannot use its GPU: a restriction to it names none usable.
    assert (
        "are none" in plan([llama("8b", "Q4_K_M")], profile("h100-device"), PlanRequest(gpus=(0,))).reasons[0]
    )


def test_max_vram_caps_the_sum_and_each_gpu_keeps_its_share() -> None:
    chosen = plan([llama("70b", "Q4_K_M")], profile("rtx3060-rtx3090"), PlanRequest(max_vram_bytes=20 * GIB))
    assert chosen.budget.vram_bytes <= 20 * GIB and chosen.memory.vram_bytes <= 20 * GIB
    shares = {g.index: g.vram_bytes for g in chosen.budget.gpus}
    assert 1.9 < shares[1] / shares[0] < 2.3  # 23.5 and 11.1 GiB free: the same proportion
    _check_split(chosen, "rtx3060-rtx3090")


def test_loaded_models_leave_room_per_gpu() -> None:
    machine = profile("dual-rtx3090")
    big = plan([llama("70b", "Q4_K_M")], machine)
    left = remaining(big.budget, [big.memory])
    assert {g.index for g in left.gpus} == {0, 1}
    assert all(g.vram_bytes < 2 * GIB for g in left.gpus)  # the split fills both cards
    small = plan([llama("1b", "Q4_K_M")], machine)
    assert small.fits and small.memory.vram_bytes < 2 * GIB
    # The two cards' leftovers together would hold it, but neither card alone does.
    assert left.vram_bytes >= small.memory.vram_bytes
    assert not fits_budget(small.memory, left, unified=False)  # no card has room for it beside the 70B


def test_the_engine_passes_devices_split_mode_main_gpu_and_tensor_split() -> None:
    options = LoadOptions(n_gpu_layers=-1, devices=("CUDA1", "CUDA0"), tensor_split=(19.0, 42.0), main_gpu=1)
    arguments = split_arguments(options)
    assert arguments["devices"] == ["CUDA1", "CUDA0"]
    assert arguments["split_mode"] == llama_cpp.LLAMA_SPLIT_MODE_LAYER
    assert arguments["main_gpu"] == 1
    max_devices = llama_cpp.llama_max_devices()
    assert arguments["tensor_split"] == [19.0, 42.0] + [0.0] * (max_devices - 2)  # llama.cpp reads them all
    # One GPU: that device, no split; the CPU: none (llama.cpp is kept off every GPU).
    assert split_arguments(replace(options, devices=("CUDA0",), tensor_split=()))["tensor_split"] is None
    assert split_arguments(replace(options, n_gpu_layers=0)) == {}


def test_model_params_carry_the_devices_and_the_split_to_llama_cpp() -> None:
    # This build's only device is the CPU: enough to see the arrays llama_model_params points to.
    options = LoadOptions(n_gpu_layers=-1, devices=("CPU", "CPU"), tensor_split=(3.0, 5.0), main_gpu=1)
    mparams = model_params(options)
    assert mparams.split_mode == llama_cpp.LLAMA_SPLIT_MODE_LAYER and mparams.main_gpu == 1
    devices = ctypes.cast(mparams.devices, ctypes.POINTER(ctypes.c_void_p))
    assert devices[0] and devices[0] == devices[1] and not devices[2]  # NULL-terminated
    assert [mparams.tensor_split[i] for i in range(3)] == [3.0, 5.0, 0.0]
    with pytest.raises(ModelLoadFailed, match="no device CUDA7"):
        model_params(replace(options, devices=("CUDA7",)))


def test_the_oom_ladder_keeps_the_split_until_the_cpu_rung() -> None:
    machine = profile("rtx3060-rtx3090")
    chosen = plan([llama("70b", "Q4_K_M")], machine)
    options = load_options(chosen, machine, ModelSettings())
    assert options.devices == ("CUDA1", "CUDA0") and len(options.tensor_split) == 2
    ladder = fallback_ladder(options, chosen.model)
    # Fewer layers keep the devices and the shares: llama.cpp spreads the fewer layers the same way.
    assert all(o.devices == options.devices for o in ladder if o.n_gpu_layers != 0)
    assert any(o.n_gpu_layers < options.n_gpu_layers for o in ladder[1:-1])
    assert ladder[-1].n_gpu_layers == 0 and ladder[-1].devices == ()
    assert "split across CUDA1 19, CUDA0 42" in describe_options(options)


@pytest.fixture
def split_plan() -> Plan:
    return plan_auto_parallel([llama("70b", "Q4_K_M")], profile("dual-rtx3090"))


def test_status_metrics_and_the_tui_show_memory_per_gpu(split_plan: Plan) -> None:
    entry = cast(Loaded, SimpleNamespace(plan=split_plan, model=SimpleNamespace(id="llama-70b")))
    per_gpu = gpu_memory(split_plan.budget, [entry])
    assert [g["index"] for g in per_gpu] == [1, 0]  # the main GPU first
    for gpu, device in zip(per_gpu, reversed(split_plan.memory.devices), strict=True):
        assert gpu["models_bytes"] == device.vram_bytes and gpu["budget_bytes"] >= device.vram_bytes
    samples = {
        (s.name, s.labels.get("gpu"), s.labels.get("model")): s.value
        for family in gpu_memory_metrics([entry])
        for s in family.samples
    }
    for device in split_plan.memory.devices:
        assert (
            samples[("appliance_gpu_memory_planned_bytes", str(device.gpu), "llama-70b")] == device.vram_bytes
        )
    assert ("appliance_gpu_memory_budget_bytes", "0", None) in samples
    status: dict[str, Any] = {
        "hardware": profile("dual-rtx3090").to_json(),
        "memory": {"gpus": per_gpu, "budget_ram_bytes": 1, "models_ram_bytes": 1},
    }
    lines = hardware_lines(status).splitlines()
    gpu_lines = [line for line in lines if line.startswith("GPU ")]
    assert len(gpu_lines) == 2 and all("models " in line and "budget" in line for line in gpu_lines)
    text = plan_text({"id": "llama-70b", "plan": json.loads(json.dumps(split_plan.to_json()))})
    assert "per GPU: GPU 0 40 layers" in text and "GPU 1 41 layers" in text


def test_plan_and_serve_take_gpus(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import appliance.cli.plan as plan_cli

    # A 40 GiB file cannot exist here: its header stands in for it (the dry run needs the file: skipped).
    monkeypatch.setattr(detect_module, "detect_hardware", lambda: profile("dual-rtx3090"))
    monkeypatch.setattr(plan_cli, "candidates_for", lambda target, settings: [llama("70b", "Q4_K_M")])
    assert cli.main(["plan", "llama-70b", "--json", "--no-dry-run"]) == 0
    both = json.loads(capsys.readouterr().out)
    assert [d["index"] for d in both["devices"]] == [0, 1] and both["n_gpu_layers"] == -1
    assert both["memory"]["vram_bytes"] == sum(d["vram_bytes"] for d in both["devices"])
    assert cli.main(["plan", "llama-70b", "--json", "--no-dry-run", "--gpus", "1"]) == 0
    one = json.loads(capsys.readouterr().out)
    assert [d["index"] for d in one["devices"]] == [1] and one["n_gpu_layers"] > 0
    assert cli.main(["plan", "llama-70b", "--no-dry-run"]) == 0
    out = capsys.readouterr().out
    assert "GPU 1    NVIDIA GeForce RTX 3090: 41 layers, with the output layer" in out
    with pytest.raises(SystemExit) as usage:
        cli.main(["serve", "--gpus", "0,x"])
    assert usage.value.code == 2
    assert "not a list of GPU indices" in capsys.readouterr().err


def test_the_benchmark_gives_llama_server_the_same_split_and_checks_each_gpu() -> None:
    bench = load_script("multi_gpu")
    machine = profile("rtx3060-rtx3090")
    chosen = plan([llama("70b", "Q4_K_M")], machine)
    options = load_options(chosen, machine, ModelSettings(n_threads=8))
    command = bench.llama_server_command("llama-server", "m.gguf", options, 8080)
    flags = dict(zip(command[1::2], command[2::2], strict=False))
    assert flags["--device"] == "CUDA1,CUDA0" and flags["--split-mode"] == "layer"
    assert flags["--tensor-split"] == ",".join(f"{n}" for n in chosen.settings.split)
    assert flags["-ngl"] == str(chosen.settings.n_gpu_layers) and flags["--fit"] == "off"
    assert flags["--main-gpu"] == "1" and flags["-ctk"] == flags["-ctv"] == "f16"
    predicted = {d.gpu: d.vram_bytes for d in chosen.memory.devices}
    layers = {d.gpu: d.layers for d in chosen.memory.devices}
    close = {0: predicted[0] * 100 // 104, 1: predicted[1]}  # 4% over: within the goal
    rows, problems = bench.memory_rows(predicted, layers, close, {})
    assert not problems and [r["gpu"] for r in rows] == [0, 1]
    under = {0: predicted[0] * 100 // 90, 1: predicted[1], 2: 700 * MIB}  # 10% under; a GPU not planned
    _, problems = bench.memory_rows(predicted, layers, under, {})
    assert [p.split(":")[0] for p in problems] == ["GPU 0", "GPU 2 is outside the plan but took 700 MiB"]
    table = bench.markdown(
        "llama-70b", 4096, rows, options, {"decode_tok_s": 20.0}, {"decode_tok_s": 25.0}, {}
    )
    assert "| llama-70b | CUDA1,CUDA0 | CUDA1 19, CUDA0 42 | 20.0 | 25.0 | 0.80x | - |" in table


def test_a_gpu_llama_cpp_does_not_list_gets_no_layers() -> None:
    # CUDA_VISIBLE_DEVICES=0: NVML still reports both cards, llama.cpp's registry only the first.
    machine = profile("dual-rtx3090")
    hidden = replace(machine, gpus=(machine.gpus[0], replace(machine.gpus[1], device=None)))
    chosen = plan([llama("70b", "Q4_K_M")], hidden)
    assert chosen.settings.gpus == (0,) and [d.gpu for d in chosen.memory.devices] == [0]
    assert load_options(chosen, hidden, ModelSettings()).devices == ("CUDA0",)


def test_model_gpus_in_config_must_be_distinct_indices(tmp_path: Path) -> None:
    from pydantic import ValidationError

    from appliance.config import load_settings

    config = tmp_path / "config.toml"
    config.write_text("[model]\ngpus = [1, 0]\n")
    settings = load_settings(config)
    assert settings.model.gpus == [1, 0] and plan_request(settings).gpus == (1, 0)
    for bad in ("[0, 0]", "[-1]", "[]"):
        config.write_text(f"[model]\ngpus = {bad}\n")
        with pytest.raises(ValidationError, match="GPU indices must be distinct"):
            load_settings(config)


def test_metrics_read_each_gpus_memory_from_nvml() -> None:
    recorded = json.loads((FIXTURES / "rtx3060-rtx3090" / "nvml.json").read_text())
    samples = {
        (s.name, s.labels["gpu"], s.labels["name"]): s.value
        for family in GpuCollector(FakeNvml(recorded)).collect()
        for s in family.samples
    }
    for index, device in enumerate(recorded["devices"]):
        key = (str(index), device["name"])
        assert samples[("appliance_gpu_memory_total_bytes", *key)] == device["memory"]["total"]
        assert samples[("appliance_gpu_memory_free_bytes", *key)] == device["memory"]["free"]
