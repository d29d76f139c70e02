"""Raspberry Pi 4 and 5 (4 and 8 GB) and an RK3588 board (4 big, 4 LITTLE cores): what detection reads
from their recorded files (tests/fixtures/hardware, README.md says where each came from), what the
planner picks for them, the threads it loads with, and the cold start from their SD card or eMMC."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from appliance import cli
from appliance.config import ModelSettings
from appliance.hardware import storage as storage_module
from appliance.hardware.cpu import performance_cores, read_cpu_ratings
from appliance.hardware.storage import StorageInfo, detect_storage, storage_of_disk
from appliance.planner.plan import plan
from appliance.planning import load_options
from models.embedded import embedded_model_path
from tests.hardware_profiles import FIXTURES, profile
from tests.unit.test_planner import _check, all_quants

# board, CPU as named, cores, performance cores, threads (generation, batch), board name, storage
DETECTED = [
    ("rpi4-4gb", "Cortex-A72", 4, 4, (4, 4), "Raspberry Pi 4 Model B Rev 1.4", "sd"),
    ("rpi4-8gb", "Cortex-A72", 4, 4, (4, 4), "Raspberry Pi 4 Model B Rev 1.4", "sd"),
    ("rpi5-4gb", "Cortex-A76", 4, 4, (4, 4), "Raspberry Pi 5 Model B Rev 1.0", "sd"),
    ("rpi5-8gb", "Cortex-A76", 4, 4, (4, 4), "Raspberry Pi 5 Model B Rev 1.0", "sd"),
    # Only the A76s: a thread on an A55 would hold the others back.
    ("orangepi5plus-8gb", "Cortex-A55 + Cortex-A76", 8, 4, (4, 4), "Xunlong Orange Pi 5 Plus", "emmc"),
]


@pytest.mark.parametrize(("board", "cpu", "cores", "performance", "threads", "name", "kind"), DETECTED)
def test_board_detected(
    board: str, cpu: str, cores: int, performance: int, threads: tuple[int, int], name: str, kind: str
) -> None:
    hw = profile(board)
    assert (hw.cpu.model, hw.cpu.cores_physical, hw.cpu.cores_performance) == (cpu, cores, performance)
    assert hw.board == name and hw.gpus == () and not hw.offload.supported
    options = load_options(plan(all_quants("1b"), hw), hw, ModelSettings())
    assert (options.n_threads, options.n_threads_batch) == threads
    assert storage_of_disk(FIXTURES / board / "block" / "mmcblk0") == StorageInfo("mmcblk0", kind)


# board, model size, quant (None: nothing fits), context. The budget is what is available minus 10%
# of RAM (at least 256 MiB) kept for the OS; Pi 5 and RK3588 (dotprod) repack Q4_K, whose file pages
# are then reclaimable, so the 8B Q4_K_M fits 8 GB boards.
PLANS = [
    ("rpi4-4gb", "1b", "Q8_0", 4096),
    ("rpi4-4gb", "3b", "Q4_K_M", 4096),
    ("rpi4-4gb", "8b", None, 4096),
    ("rpi4-8gb", "3b", "Q8_0", 4096),
    ("rpi4-8gb", "8b", "Q4_K_M", 4096),
    ("rpi5-4gb", "1b", "Q8_0", 4096),
    ("rpi5-4gb", "3b", "Q4_K_M", 4096),
    ("rpi5-4gb", "8b", None, 4096),
    ("rpi5-8gb", "3b", "Q8_0", 4096),
    ("rpi5-8gb", "8b", "Q4_K_M", 4096),
    ("orangepi5plus-8gb", "3b", "Q8_0", 4096),
    ("orangepi5plus-8gb", "8b", "Q4_K_M", 4096),
]


@pytest.mark.parametrize(("board", "size", "quant", "n_ctx"), PLANS)
def test_board_plans(board: str, size: str, quant: str | None, n_ctx: int) -> None:
    hw = profile(board)
    chosen = plan(all_quants(size), hw)
    if quant is None:
        assert not chosen.fits and chosen.reasons[0].startswith("does not fit")
        return
    _check(chosen, quant, "cpu", n_ctx)
    # At least 256 MiB of what is available is left to the OS.
    assert chosen.budget.ram_bytes <= hw.memory.available_bytes - 256 * 2**20


def test_mmap_stays_on() -> None:
    # Weights are mapped, not copied: pages the OS can drop and read again, and no second copy in RAM.
    import llama_cpp

    from appliance.engine.llama_params import model_params

    hw = profile("rpi4-4gb")
    params = model_params(load_options(plan(all_quants("1b"), hw), hw, ModelSettings()))
    assert params.load_mode == llama_cpp.LLAMA_LOAD_MODE_MMAP


@pytest.mark.parametrize(
    ("board", "size", "seconds"), [("rpi4-4gb", "3b", 58.4), ("orangepi5plus-8gb", "3b", 25.6)]
)
def test_cold_start_from_the_boards_storage(board: str, size: str, seconds: float) -> None:
    chosen = plan(all_quants(size), profile(board))
    disk = storage_of_disk(FIXTURES / board / "block" / "mmcblk0")
    assert disk is not None
    # Q4_K_M 3B (2.3 GB) from an SD card at 40 MB/s; Q8_0 3B (3.8 GB) from eMMC at 150 MB/s.
    assert round(disk.cold_start_s(chosen.model.file_bytes), 1) == seconds


def test_ratings_fall_back_to_cpufreq(tmp_path: Path) -> None:
    for i, khz in enumerate([1800000] * 4 + [2400000] * 4):  # RK3588's clusters without cpu_capacity
        (tmp_path / f"cpu{i}" / "cpufreq").mkdir(parents=True)
        (tmp_path / f"cpu{i}" / "cpufreq" / "cpuinfo_max_freq").write_text(f"{khz}\n")
    (tmp_path / "cpufreq").mkdir()  # sysfs has cpufreq/ and cpuidle/ beside the cpuN dirs
    assert performance_cores(read_cpu_ratings(tmp_path)) == 4
    assert performance_cores(read_cpu_ratings(tmp_path / "absent")) is None


def test_detect_storage_follows_the_partition_to_its_disk(tmp_path: Path) -> None:
    # This machine's disk is not an SD card: a sysfs laid out as a Pi's (block/mmcblk0/mmcblk0p2, the
    # root partition) answers for the device this file is on.
    st_dev = Path(__file__).stat().st_dev
    disk = tmp_path / "devices" / "platform" / "emmc2bus" / "mmc_host" / "mmc0" / "block" / "mmcblk0"
    (disk / "mmcblk0p2").mkdir(parents=True)
    (disk / "mmcblk0p2" / "partition").write_text("2\n")
    (disk / "device").mkdir()
    (disk / "device" / "type").write_text("SD\n")
    (tmp_path / "dev-block").mkdir()
    (tmp_path / "dev-block" / f"{os.major(st_dev)}:{os.minor(st_dev)}").symlink_to(disk / "mmcblk0p2")
    assert detect_storage(Path(__file__), tmp_path / "dev-block") == StorageInfo("mmcblk0", "sd")
    assert detect_storage(tmp_path / "absent", tmp_path / "dev-block") is None
    assert detect_storage(Path(__file__), tmp_path / "none") is None


def test_plan_shows_the_cold_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    model = embedded_model_path()
    assert model is not None
    # As if the file were on a Pi's SD card (this machine's virtual disk has no known speed).
    monkeypatch.setattr(storage_module, "detect_storage", lambda path: StorageInfo("mmcblk0", "sd"))
    assert cli.main(["plan", str(model), "--no-dry-run"]) == 0
    seconds = model.stat().st_size / 40e6
    line = f"  cold start ~{seconds:.0f} s: 0.1 GiB read from an SD card (mmcblk0) at ~40 MB/s;"
    assert any(out.startswith(line) for out in capsys.readouterr().out.splitlines())
