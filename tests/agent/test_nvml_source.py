"""The NVML source against a stand-in ``pynvml`` (real error classes, real NVML names and encodings)."""

from __future__ import annotations

import pynvml
import pytest

from chutes.agent.sources import NO_GPU, NvmlSource, describe_health, probe_local

from . import fake_nvml
from .fake_nvml import H100_SXM, NOT_SUPPORTED, RTX_3090, FakeDevice


def test_reads_every_field_of_a_healthy_h100_node() -> None:
    devices = [H100_SXM(i, used_mib=512, util_gpu=37, temperature_c=41, power_mw=123_456) for i in range(8)]
    reading = NvmlSource(fake_nvml.build(devices)).read()

    assert reading.error is None and reading.found
    assert reading.driver_version == "550.90.07"
    assert reading.cuda_version == "12.4"
    assert len(reading.gpus) == 8
    g = reading.gpus[3]
    assert g.index == 3
    assert g.uuid == devices[3].uuid
    assert g.name == "NVIDIA H100 80GB HBM3"
    assert g.model == "h100_sxm"
    assert (g.memory_total_mib, g.memory_used_mib, g.memory_free_mib) == (81559, 512, 81047)
    assert g.utilization_pct == 37.0
    assert g.temperature_c == 41.0
    assert g.power_w == 123.5  # NVML reports milliwatts
    assert g.power_limit_w == 700.0
    assert g.ecc_enabled is True and g.ecc_errors == 0
    assert g.compute_capability == "9.0"
    assert g.mig_enabled is False
    assert g.healthy is True and g.problem is None


def test_not_supported_fields_are_none_and_not_fatal() -> None:
    reading = NvmlSource(fake_nvml.build([RTX_3090(0, power_limit_mw=NOT_SUPPORTED)])).read()
    g = reading.gpus[0]
    assert g.model == "3090"
    assert g.ecc_enabled is None and g.ecc_errors is None
    assert g.mig_enabled is None
    assert g.power_limit_w is None
    assert g.compute_capability == "8.6"
    assert g.healthy is True


def test_volatile_uncorrected_ecc_errors_make_a_gpu_unhealthy() -> None:
    devices = [H100_SXM(0), H100_SXM(1, ecc_volatile_uncorrected=2)]
    reading = NvmlSource(fake_nvml.build(devices)).read()
    assert [g.healthy for g in reading.gpus] == [True, False]
    assert reading.gpus[1].ecc_errors == 2
    assert "2 volatile uncorrected ECC error" in (reading.gpus[1].problem or "")
    ok, summary = describe_health(reading)
    assert not ok
    assert devices[1].uuid in summary and "1 of 2" in summary


def test_a_hard_nvml_error_on_one_field_marks_the_gpu_unhealthy() -> None:
    dev = H100_SXM(0, errors={"nvmlDeviceGetTemperature": pynvml.NVML_ERROR_UNKNOWN})
    g = NvmlSource(fake_nvml.build([dev])).read().gpus[0]
    assert g.temperature_c is None
    assert g.healthy is False
    assert "temperature" in (g.problem or "") and "Unknown Error" in (g.problem or "")
    # A field the driver does not support is not a health problem.
    dev2 = H100_SXM(0, errors={"nvmlDeviceGetTemperature": pynvml.NVML_ERROR_NOT_SUPPORTED})
    g2 = NvmlSource(fake_nvml.build([dev2])).read().gpus[0]
    assert g2.temperature_c is None and g2.healthy is True


def test_unknown_model_keeps_its_nvml_name() -> None:
    dev = FakeDevice("GPU-11112222-3333-4444-5555-666677778888", "Tesla T4", 15360, compute_capability=(7, 5))
    g = NvmlSource(fake_nvml.build([dev])).read().gpus[0]
    assert g.model is None
    assert g.name == "Tesla T4"
    assert g.healthy is True


def test_mig_enabled_gpu_is_reported_as_such() -> None:
    dev = FakeDevice(
        "GPU-a100a100-0000-0000-0000-000000000001",
        "NVIDIA A100-SXM4-80GB",
        81920,
        mig_mode=[1, 1],
        compute_capability=(8, 0),
    )
    g = NvmlSource(fake_nvml.build([dev])).read().gpus[0]
    assert g.model == "a100_sxm" and g.mig_enabled is True and g.compute_capability == "8.0"


def test_lost_gpus_stay_in_the_reading_as_unhealthy() -> None:
    devices = [H100_SXM(i) for i in range(4)]
    source = NvmlSource(fake_nvml.build(devices))
    assert all(g.healthy for g in source.read().gpus)

    devices[2].errors["nvmlDeviceGetHandleByIndex"] = pynvml.NVML_ERROR_GPU_IS_LOST
    reading = source.read()
    assert len(reading.gpus) == 4
    lost = reading.gpus[2]
    assert lost.uuid == devices[2].uuid and lost.model == "h100_sxm"
    assert lost.healthy is False and "GPU is lost" in (lost.problem or "")

    del devices[3]  # fell off the bus: NVML lists one device fewer
    reading = source.read()
    assert len(reading.gpus) == 4
    assert reading.gpus[3].healthy is False and "no longer lists" in (reading.gpus[3].problem or "")


@pytest.mark.parametrize(
    ("code", "hint"),
    [
        (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, "libnvidia-ml.so.1"),
        (pynvml.NVML_ERROR_DRIVER_NOT_LOADED, "driver is not loaded"),
        (pynvml.NVML_ERROR_NO_PERMISSION, "/dev/nvidia"),
        (pynvml.NVML_ERROR_UNKNOWN, "failed to initialise"),
    ],
)
def test_no_nvml_is_a_clear_no_gpu_result(code: int, hint: str) -> None:
    reading = NvmlSource(fake_nvml.build([], init_error=code)).read()
    assert not reading.found and reading.gpus == []
    assert reading.error is not None and reading.error.startswith(NO_GPU) and hint in reading.error
    assert probe_local(nvml=fake_nvml.build([], init_error=code)) is None


def test_zero_devices_is_no_gpu() -> None:
    reading = NvmlSource(fake_nvml.build([])).read()
    assert reading.error == f"{NO_GPU}: NVML lists no devices"


def test_nvml_is_retried_after_init_failure() -> None:
    devices: list[FakeDevice] = []
    source = NvmlSource(fake_nvml.build(devices))
    assert not source.read().found
    devices.append(H100_SXM(0))  # the driver finished loading
    assert source.read().found


def test_probe_local_returns_an_inventory_and_shuts_nvml_down() -> None:
    mod = fake_nvml.build([H100_SXM(0), H100_SXM(1)])
    inv = probe_local("node-a", nvml=mod)
    assert inv is not None
    assert inv.node_id == "node-a" and inv.hostname
    assert [g.model for g in inv.gpus] == ["h100_sxm", "h100_sxm"]
    assert inv.driver_version == "550.90.07" and inv.cuda_version == "12.4"
    assert mod.calls == {"init": 1, "shutdown": 1}


def test_probe_local_on_this_machine_does_not_crash() -> None:
    # The test machines have no NVIDIA driver: the real pynvml must give None, not an exception.
    inv = probe_local()
    assert inv is None or inv.gpus
