"""appliance.hardware: /proc/cpuinfo parsing and cgroup memory limits, from recorded files."""

from __future__ import annotations

import platform
import struct
from pathlib import Path

import pytest

from appliance.hardware.cpu import arm_features_from_auxv, detect_cpu, parse_cpuinfo
from appliance.hardware.memory import cgroup_limit

X86_CPUINFO = """\
processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 85
model name\t: Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz
stepping\t: 7
microcode\t: 0x5003302
cpu MHz\t\t: 2500.000
cache size\t: 28160 KB
physical id\t: 0
siblings\t: 40
core id\t\t: 0
cpu cores\t: 20
fpu\t\t: yes
fpu_exception\t: yes
cpuid level\t: 22
wp\t\t: yes
flags\t\t: fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush dts acpi \
mmx fxsr sse sse2 ss ht tm pbe syscall nx pdpe1gb rdtscp lm constant_tsc pni pclmulqdq ssse3 fma cx16 \
pcid sse4_1 sse4_2 x2apic movbe popcnt aes xsave avx f16c rdrand lahf_lm abm 3dnowprefetch avx2 smep \
bmi2 erms invpcid avx512f avx512dq rdseed adx smap clflushopt clwb avx512cd avx512bw avx512vl xsaveopt \
xsavec xgetbv1 xsaves arat pku ospke
vmx flags\t: vnmi preemption_timer posted_intr invvpid ept_x_only ept_ad ept_1gb flexpriority
bugs\t\t: spectre_v1 spectre_v2 spec_store_bypass swapgs taa itlb_multihit mmio_stale_data
bogomips\t: 5000.00
clflush size\t: 64
address sizes\t: 46 bits physical, 48 bits virtual
power management:

processor\t: 1
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz
flags\t\t: fpu sse sse2
"""

AMD_CPUINFO = """\
processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model name\t: AMD Ryzen 9 7950X 16-Core Processor
flags\t\t: fpu sse sse2 avx f16c fma avx2 avx512f avx512bw avx512_vnni avx512_bf16 avx_vnni
"""

OLD_X86_CPUINFO = """\
processor\t: 0
model name\t: Intel(R) Core(TM)2 Duo CPU     E8400  @ 3.00GHz
flags\t\t: fpu sse sse2 ssse3 sse4_1
"""

AARCH64_CPUINFO = """\
processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma \
lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg dcpodp \
sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svebf16 i8mm bf16 dgh rng
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x1
CPU part\t: 0xd40
CPU revision\t: 1

processor\t: 1
BogoMIPS\t: 50.00
Features\t: fp asimd
CPU implementer\t: 0x41
CPU part\t: 0xd40
"""

RASPBERRY_PI_5_CPUINFO = """\
processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x4
CPU part\t: 0xd0b
CPU revision\t: 1

Hardware\t: BCM2835
Revision\t: d04170
Serial\t\t: 6e5c3a2f1b9d0a47
Model\t\t: Raspberry Pi 5 Model B Rev 1.0
"""

# (cpuinfo text, arch, model name, features)
CPUINFOS = [
    pytest.param(
        X86_CPUINFO,
        "x86_64",
        "Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz",
        ("avx", "avx2", "avx512f", "avx512bw", "f16c", "fma"),
        id="x86-xeon",
    ),
    pytest.param(
        OLD_X86_CPUINFO, "x86_64", "Intel(R) Core(TM)2 Duo CPU     E8400  @ 3.00GHz", (), id="x86-no-avx"
    ),
    pytest.param(
        X86_CPUINFO.replace("avx512f", ""),
        "AMD64",
        "Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz",
        ("avx", "avx2", "avx512bw", "f16c", "fma"),
        id="x86-arch-spelled-amd64",
    ),
    pytest.param(
        AARCH64_CPUINFO, "aarch64", "", ("neon", "dotprod", "sve", "i8mm"), id="aarch64-neoverse-v1"
    ),
    pytest.param(RASPBERRY_PI_5_CPUINFO, "aarch64", "BCM2835", ("neon", "dotprod"), id="raspberry-pi-5"),
    pytest.param("", "x86_64", "", (), id="empty"),
    pytest.param("garbage without colons\n\n:::\n", "aarch64", "", (), id="garbage"),
]


@pytest.mark.parametrize(("text", "arch", "model", "features"), CPUINFOS)
def test_parse_cpuinfo(text: str, arch: str, model: str, features: tuple[str, ...]) -> None:
    assert parse_cpuinfo(text, arch.lower()) == (model, features)


def test_parse_cpuinfo_sees_avx512_vnni() -> None:
    _, features = parse_cpuinfo(AMD_CPUINFO, "x86_64")
    assert {"avx512vnni", "avx512_vnni"} & set(features)


def auxv(*entries: tuple[int, int]) -> bytes:
    """A 64-bit /proc/self/auxv with these (type, value) entries, AT_NULL last."""
    return b"".join(struct.pack("=QQ", kind, value) for kind, value in (*entries, (0, 0)))


# AT_HWCAP (16) and AT_HWCAP2 (26) as an arm64 process saw them under qemu-aarch64 7.2 (Debian
# bookworm), with QEMU_CPU=cortex-a76 (a Raspberry Pi 5's core) and with qemu's default, "max".
CORTEX_A76_AUXV = auxv((6, 4096), (16, 0x119FFB), (26, 0x0))
QEMU_MAX_AUXV = auxv((6, 4096), (16, 0xECFFFFFB), (26, 0x7F877FFF))


def test_arm_features_from_auxv() -> None:
    assert arm_features_from_auxv(CORTEX_A76_AUXV) == ("neon", "dotprod")
    assert arm_features_from_auxv(QEMU_MAX_AUXV) == ("neon", "dotprod", "sve", "i8mm")
    assert arm_features_from_auxv(b"") == ()
    assert arm_features_from_auxv(CORTEX_A76_AUXV[:-5]) == ("neon", "dotprod")  # a cut-off last entry


def test_detect_cpu_under_qemu_user_reads_the_auxv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """qemu-user shows an arm64 process the host's x86 /proc/cpuinfo: the SIMD features come from the
    auxiliary vector, the emulated CPU's, as llama.cpp's own come from getauxval."""
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    (tmp_path / "cpuinfo").write_text(X86_CPUINFO)
    (tmp_path / "auxv").write_bytes(CORTEX_A76_AUXV)
    cpu = detect_cpu(tmp_path / "cpuinfo", system="Linux", auxv_path=tmp_path / "auxv")
    assert (cpu.arch, cpu.features) == ("aarch64", ("neon", "dotprod"))
    assert cpu.model == "Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz"  # what /proc/cpuinfo says


def test_detect_cpu_on_a_board_keeps_cpuinfo_features(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    (tmp_path / "cpuinfo").write_text(RASPBERRY_PI_5_CPUINFO)
    (tmp_path / "auxv").write_bytes(QEMU_MAX_AUXV)  # not read: /proc/cpuinfo names the features
    cpu = detect_cpu(tmp_path / "cpuinfo", system="Linux", auxv_path=tmp_path / "auxv")
    assert cpu.features == ("neon", "dotprod")
    missing = detect_cpu(tmp_path / "cpuinfo", system="Linux", auxv_path=tmp_path / "none")
    assert missing.features == ("neon", "dotprod")


def test_detect_cpu_without_any_arm_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    cpu = detect_cpu(tmp_path / "no-cpuinfo", system="Linux", auxv_path=tmp_path / "no-auxv")
    assert cpu.features == ()


def test_parse_cpuinfo_amd_other_features() -> None:
    model, features = parse_cpuinfo(AMD_CPUINFO, "x86_64")
    assert model == "AMD Ryzen 9 7950X 16-Core Processor"
    assert {"avx", "avx2", "avx512f", "avx512bw", "avx_vnni", "f16c", "fma"} <= set(features)


# (files under the fake cgroup root, limit in bytes)
GIB = 1 << 30
CGROUPS = [
    pytest.param({"memory.max": "max\n"}, None, id="v2-unlimited"),
    pytest.param({"memory.max": "2147483648\n"}, 2 * GIB, id="v2-2GiB"),
    pytest.param({"memory/memory.limit_in_bytes": "9223372036854771712\n"}, None, id="v1-unlimited"),
    pytest.param({"memory/memory.limit_in_bytes": "1073741824\n"}, GIB, id="v1-1GiB"),
    pytest.param({}, None, id="missing"),
    pytest.param({"memory.max": "max", "memory/memory.limit_in_bytes": "1073741824"}, None, id="v2-wins"),
    pytest.param(
        {"memory.max": "bogus", "memory/memory.limit_in_bytes": "1073741824"}, GIB, id="v2-unreadable"
    ),
    pytest.param({"memory.max": ""}, None, id="v2-empty"),
]


@pytest.mark.parametrize(("files", "limit"), CGROUPS)
def test_cgroup_limit(files: dict[str, str], limit: int | None, tmp_path: Path) -> None:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    assert cgroup_limit(tmp_path) == limit


def test_cgroup_limit_of_a_missing_root(tmp_path: Path) -> None:
    assert cgroup_limit(tmp_path / "no-cgroup-fs") is None
