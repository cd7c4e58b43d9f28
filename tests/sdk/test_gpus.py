import pytest

from chutes import gpus

REAL_NVML_NAMES = [
    ("NVIDIA H100 80GB HBM3", 81559, "h100_sxm"),
    ("NVIDIA H100 PCIe", 81559, "h100"),
    ("NVIDIA H100 NVL", 95830, "h100_nvl"),
    ("NVIDIA A100-SXM4-80GB", 81920, "a100_sxm"),
    ("NVIDIA A100 80GB PCIe", 81920, "a100"),
    ("NVIDIA A100-PCIE-40GB", 40960, "a100_40gb"),
    ("NVIDIA A100-SXM4-40GB", 40960, "a100_40gb_sxm"),
    ("NVIDIA GeForce RTX 4090", 24564, "4090"),
    ("NVIDIA GeForce RTX 3090", 24576, "3090"),
    ("NVIDIA GeForce RTX 5090", 32607, "5090"),
    ("NVIDIA RTX A6000", 49140, "a6000"),
    ("NVIDIA RTX 6000 Ada Generation", 49140, "a6000_ada"),
    ("NVIDIA RTX A4000", 16376, "a4000"),
    ("NVIDIA RTX 4000 Ada Generation", 20475, "a4000_ada"),
    ("NVIDIA L40S", 46068, "l40s"),
    ("NVIDIA L40", 46068, "l40"),
    ("NVIDIA L4", 23034, "l4"),
    ("NVIDIA A10", 23028, "a10"),
    ("NVIDIA A40", 46068, "a40"),
    ("NVIDIA H200", 143771, "h200"),
    ("NVIDIA H20", 97871, "h20"),
    ("NVIDIA H800 PCIe", 81559, "h800"),
    ("NVIDIA B200", 183359, "b200"),
    ("NVIDIA RTX PRO 6000 Blackwell Server Edition", 97887, "pro_6000"),
]


@pytest.mark.parametrize(("name", "memory", "expected"), REAL_NVML_NAMES)
def test_identify_real_nvml_names(name: str, memory: int, expected: str) -> None:
    assert gpus.identify(name, memory) == expected
    assert gpus.identify(name) == expected


@pytest.mark.parametrize(
    "name",
    [
        "NVIDIA A100-SXM4-40GB MIG 1g.5gb",
        "NVIDIA H100 80GB HBM3 MIG 3g.40gb",
        "Tesla T4",
        "NVIDIA A10G",
        "NVIDIA GeForce GTX 1080",
        "",
    ],
)
def test_mig_slices_and_unknown_names_are_not_identified(name: str) -> None:
    assert gpus.identify(name) is None


def test_memory_far_below_nominal_is_not_that_model() -> None:
    assert gpus.identify("NVIDIA H100 80GB HBM3", 10240) is None


def test_every_catalog_entry_identifies_its_own_typical_name() -> None:
    for gpu in gpus.CATALOG.values():
        if gpu.nvml_pattern is not None:
            assert gpus.identify(gpu.nvml_name, gpu.memory_mib) == gpu.id, gpu.id


def test_get_is_case_insensitive_and_lists_valid_ids_on_error() -> None:
    assert gpus.get("H100_SXM").id == "h100_sxm"
    with pytest.raises(gpus.UnknownGPUError, match=r"did you mean .h100.\?.*use one of: .*h100_sxm"):
        gpus.get("h1000")


def test_prices_and_sizes_match_the_chutes_table() -> None:
    assert (gpus.get("a100").vram_gb, gpus.get("a100").hourly_usd) == (80, 1.20)
    assert (gpus.get("h100").vram_gb, gpus.get("h100").hourly_usd) == (80, 1.79)
    assert (gpus.get("h200").vram_gb, gpus.get("h200").hourly_usd) == (140, 2.75)
    assert len(gpus.CATALOG) == 26
