"""cpu_threads: one torch thread per core on a free machine, 4 per core while another process keeps a core busy."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
import torch

from bg2vec.config import MNTPConfig
from bg2vec.errors import ConfigError
from bg2vec.recipes import cpu_threads
from bg2vec.recipes.cpu_threads import CpuThreads, OtherLoad, threads_for
from bg2vec.recipes.run import run_callbacks


@pytest.fixture
def busy_loop():
    """Another process spinning on one core."""
    process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    time.sleep(0.5)
    yield process
    process.kill()
    process.wait()


@pytest.fixture
def restore_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_threads_for_has_hysteresis():
    assert threads_for(2, 0.0, 2) == 2
    assert threads_for(2, 1.0, 2) == 8
    assert threads_for(2, 0.3, 8) == 8  # between the two thresholds nothing changes
    assert threads_for(2, 0.3, 2) == 2
    assert threads_for(2, 0.05, 8) == 2


def thread_callbacks(config: MNTPConfig) -> list:
    """The thread-count callbacks among those every training run gets."""
    return [callback for callback in run_callbacks(config) if isinstance(callback, CpuThreads)]


def test_other_load_sees_a_busy_process(busy_loop):
    load = OtherLoad()
    time.sleep(1.0)  # this process sleeps: what is busy is the other one
    assert load() >= 0.6


def test_auto_oversubscribes_while_a_core_is_busy_and_returns(restore_threads, busy_loop):
    torch.set_num_threads(2)
    (callback,) = thread_callbacks(MNTPConfig(model_name_or_path="m", train_file="t", output_dir="o"))
    assert isinstance(callback, CpuThreads) and callback.fixed is None
    assert torch.get_num_threads() == 2 * cpu_threads.THREADS_PER_CORE_WHEN_BUSY  # the first look, before step 1
    busy_loop.kill()
    busy_loop.wait()
    callback.load = lambda: 0.0  # the machine free again (whatever else this machine runs meanwhile)
    callback.check()
    assert torch.get_num_threads() == 2
    torch.set_num_threads(5)
    callback.on_train_end(None, None, None)
    assert torch.get_num_threads() == 2  # the count from before the run


def test_a_number_is_set_and_omp_num_threads_wins(restore_threads, monkeypatch):
    torch.set_num_threads(2)
    (callback,) = thread_callbacks(MNTPConfig(model_name_or_path="m", train_file="t", output_dir="o", cpu_threads=1))
    assert callback.fixed == 1 and torch.get_num_threads() == 1
    callback.on_train_end(None, None, None)
    assert torch.get_num_threads() == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert thread_callbacks(MNTPConfig(model_name_or_path="m", train_file="t", output_dir="o", cpu_threads=1)) == []


@pytest.mark.parametrize("value", [0, -1, "many", True, 1.5])
def test_bad_cpu_threads(value):
    with pytest.raises(ConfigError, match="cpu_threads"):
        MNTPConfig(model_name_or_path="m", train_file="t", output_dir="o", cpu_threads=value)
