"""Process topology (bg2vec.processes): one process without a launcher, the launcher's environment read in one
place, and two gloo processes set up as torchrun sets them up: main-process-first ordering and the gather
whose backward sums every process's gradient into this process's rows."""

import os
import socket
import tempfile
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from bg2vec import processes

LAUNCHER_VARIABLES = ("RANK", "LOCAL_RANK", "WORLD_SIZE")


@pytest.fixture
def no_launcher(monkeypatch):
    for name in LAUNCHER_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_one_process_without_a_launcher(no_launcher):
    assert (processes.rank(), processes.local_rank(), processes.world_size()) == (0, 0, 1)
    assert processes.is_main_process()
    processes.barrier()  # nothing to wait for
    ran = []
    with processes.main_process_first():
        ran.append(True)
    assert ran == [True]
    rows = torch.randn(3, 4, requires_grad=True)  # (n, H)
    assert processes.all_gather_with_gradient(rows) is rows


def test_the_launchers_environment_says_who_this_process_is(monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert (processes.rank(), processes.local_rank(), processes.world_size()) == (3, 1, 4)
    assert not processes.is_main_process()
    said = []
    processes.quiet_unless_main(said.append)("only the main process reports")
    assert said == []
    monkeypatch.setenv("RANK", "0")
    processes.quiet_unless_main(said.append)("the main process reports")
    assert said == ["the main process reports"]


def test_each_process_trains_on_its_own_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert processes.training_device() == torch.device("cuda", 1)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert processes.training_device() == torch.device("cpu")


# --- two processes ----------------------------------------------------------------------------------------------

SIZES = [3, 2]  # rows per process: deliberately unequal


def _worker(rank, folder, port):
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(len(SIZES)),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    report = {"who": (processes.rank(), processes.world_size(), processes.is_main_process())}
    with processes.main_process_first():  # sets the process group up, as before a Trainer exists
        if processes.is_main_process():
            time.sleep(1.0)  # a follower that did not wait would look before this file exists
            Path(folder, "main-was-here").touch()
        else:
            report["saw_main"] = Path(folder, "main-was-here").exists()
    local = torch.full((SIZES[rank], 2), float(rank + 1), requires_grad=True)  # (n_r, 2)
    gathered = processes.all_gather_with_gradient(local)  # (N, 2)
    weights = torch.arange(gathered.numel(), dtype=torch.float).reshape(gathered.shape) * (rank + 1)  # (N, 2)
    (gathered * weights).sum().backward()
    report.update(gathered=gathered.detach(), grad=local.grad)
    torch.save(report, f"{folder}/{rank}.pt")
    os._exit(0)  # without tearing gloo down (see test_simcse.py: its teardown deadlocks now and then)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_processes_main_first_and_gather_with_gradient():
    with tempfile.TemporaryDirectory() as folder:
        workers = mp.spawn(_worker, args=(folder, _free_port()), nprocs=len(SIZES), join=False)
        deadline = time.monotonic() + 240
        while not workers.join(timeout=5):
            if time.monotonic() > deadline:
                for process in workers.processes:
                    process.kill()
                pytest.fail("the two processes did not finish within 240 s")
        reports = [torch.load(f"{folder}/{rank}.pt") for rank in range(len(SIZES))]
    assert [r["who"] for r in reports] == [(0, 2, True), (1, 2, False)]
    assert reports[1]["saw_main"]  # the follower entered after the main process had left the block
    every_row = torch.cat([torch.full((n, 2), float(r + 1)) for r, n in enumerate(SIZES)])  # (N, 2) in rank order
    summed = torch.arange(every_row.numel(), dtype=torch.float).reshape(every_row.shape) * sum(range(1, len(SIZES) + 1))
    for rank, report in enumerate(reports):
        assert torch.equal(report["gathered"], every_row)
        mine = slice(sum(SIZES[:rank]), sum(SIZES[: rank + 1]))
        assert torch.equal(report["grad"], summed[mine])  # every process's gradient for these rows, summed
