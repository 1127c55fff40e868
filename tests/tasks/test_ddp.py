"""Two CPU processes on gloo: DDP gradients equal one process on the same global batch; ranks draw disjoint
windows."""

import datetime
import faulthandler
import os
import subprocess
import sys
import warnings

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data.distributed import DistributedSampler

from mambadna.config import tiny
from mambadna.data import GenomeDataModule, GenomeWindowDataset, bundled_path
from mambadna.tasks.lm import LMTask
from mambadna.run_config import OptimSpec

WORLD = 2


def make_task_and_batch():
    torch.manual_seed(0)
    task = LMTask(tiny(d_model=16, d_state=4), OptimSpec())
    ds = GenomeWindowDataset(bundled_path("lambda"), 48, num_windows=8, seed=3)
    batch = {key: torch.stack([ds[i][key] for i in range(len(ds))]) for key in ("input_ids", "targets")}  # (8, 48)
    return task, batch


# A full CI run hung in this test twice (2026-12-06; no output, past 240 s); the stacks put it in a worker's teardown
# (see _worker). Every process dumps its threads' stacks and exits once it passes HANG_S, and the test starts the
# pair once more after such a hang, showing the stacks of the first as a warning: a second hang, or any other
# failure, still fails.
HANG_S = 100


def _worker(rank, out_dir):
    faulthandler.dump_traceback_later(HANG_S, exit=True)
    torch.set_num_threads(1)
    # a file rendezvous: a TCP port picked free and released before the store binds it can be taken meanwhile
    # (a full CI run once hung here past its 240 s); the timeout turns any other stall into an error
    dist.init_process_group("gloo", init_method=f"file://{os.path.join(out_dir, 'rendezvous')}", rank=rank,
                            world_size=WORLD, timeout=datetime.timedelta(seconds=60))
    task, batch = make_task_and_batch()
    ddp = torch.nn.parallel.DistributedDataParallel(task.model)
    local = {k: v[rank::WORLD] for k, v in batch.items()}  # half of the global batch, as a DistributedSampler gives
    logits = ddp(local["input_ids"])  # (4, 48, V)
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), local["targets"].flatten())
    loss.backward()
    mean_loss = loss.detach().clone()
    dist.all_reduce(mean_loss)
    if rank == 0:
        grads = {n: p.grad for n, p in task.model.named_parameters()}
        torch.save({"loss": mean_loss / WORLD, "grads": grads}, os.path.join(out_dir, "ddp.pt"))
    dist.barrier()
    # The hang was here: the stacks showed a worker stuck after _worker returned, in the destructors of its DDP
    # wrapper and gloo group (no Python frame below spawn's call of this function; 2 of 6 runs on a 2-core
    # machine). So the wrapper goes before the group, and the process leaves without running destructors once both
    # ranks have passed the barrier (rank 0's file is written by then).
    del ddp
    dist.destroy_process_group()
    os._exit(0)


def spawn_workers(out_dir: str) -> None:
    mp.spawn(_worker, args=(out_dir,), nprocs=WORLD, join=True)


def run_pair(out_dir) -> tuple[bool, str]:
    """(finished, what it printed) of one run of the two processes; not finished = a hang, stacks in the text."""
    # a fresh interpreter: spawning from inside pytest's process (capture, plugins) can hang the workers
    # (with its own pipes: workers inheriting pytest's captured file descriptors hang)
    try:
        proc = subprocess.run([sys.executable, __file__, str(out_dir)], capture_output=True, text=True,
                              stdin=subprocess.DEVNULL, timeout=HANG_S + 60)
    except subprocess.TimeoutExpired as err:
        return False, f"no exit after {HANG_S + 60} s: {err.stderr!r}"[-3000:]
    hung = "Timeout (" in proc.stderr  # faulthandler's header when it dumped the stacks of a hang
    assert hung or proc.returncode == 0, proc.stderr[-3000:]
    return not hung, proc.stderr[-3000:]


@pytest.mark.timeout(2 * HANG_S + 200)
def test_ddp_gradients_equal_single_process(tmp_path):
    finished, text = run_pair(tmp_path / "first")
    out = tmp_path / "first"
    if not finished:
        warnings.warn(f"DDP pair hung once, started again; its stacks:\n{text}")
        out = tmp_path / "second"
        finished, text = run_pair(out)
        assert finished, f"DDP pair hung twice:\n{text}"
    result = torch.load(out / "ddp.pt", weights_only=True)

    task, batch = make_task_and_batch()
    loss = task.loss(batch)
    loss.backward()
    torch.testing.assert_close(result["loss"], loss.detach(), rtol=1e-5, atol=1e-6)
    for name, param in task.model.named_parameters():
        torch.testing.assert_close(result["grads"][name], param.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_ranks_draw_disjoint_windows():
    dm = GenomeDataModule(bundled_path("lambda"), window_bp=100, batch_size=4, train_windows=64)
    dataset = dm.train_dataloader().dataset
    starts = []
    for rank in range(WORLD):  # what Lightning's DistributedSampler gives each rank under strategy="ddp"
        sampler = DistributedSampler(dataset, num_replicas=WORLD, rank=rank, shuffle=False)
        starts.append({dataset.window(i)[:2] for i in sampler})
    assert len(starts[0]) == len(starts[1]) == 32
    assert not starts[0] & starts[1]


if __name__ == "__main__":
    faulthandler.dump_traceback_later(HANG_S + 10, exit=True)
    os.makedirs(sys.argv[1], exist_ok=True)
    spawn_workers(sys.argv[1])
