"""bench/gpu_use.py: the GPU's utilization sampled by nvidia-smi over a measured stretch, null where there is none."""

import shutil
import time

import pytest

from bit_trt.bench.cpu_use import CpuMeter


def test_a_cpu_host_s_gpu_figure_is_null(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)  # as on a host without nvidia-smi
    meter = CpuMeter(gpu=True)
    with meter:
        time.sleep(0.05)
    assert meter.record(1)["gpu"] is None
    assert CpuMeter().record(1)["gpu"] is None  # not a GPU backend: not sampled at all


@pytest.mark.gpu
def test_nvidia_smi_is_sampled_over_the_stretch():
    meter = CpuMeter(gpu=True)
    with meter:
        time.sleep(1.0)  # nvidia-smi samples every 100 ms; its first reading comes at once
    gpu = meter.record(1)["gpu"]
    assert gpu is not None and gpu["samples"] >= 1 and gpu["devices"]
    assert 0 <= gpu["utilization_mean_percent"] <= gpu["utilization_max_percent"] <= 100
    assert gpu["memory_used_max_mib"] >= 0
