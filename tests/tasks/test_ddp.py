"""Two CPU processes on gloo: DDP gradients equal one process on the same global batch; ranks draw disjoint
windows."""

import datetime
import os
import subprocess
import sys

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


def _worker(rank, out_dir):
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
    dist.destroy_process_group()


def spawn_workers(out_dir: str) -> None:
    mp.spawn(_worker, args=(out_dir,), nprocs=WORLD, join=True)


@pytest.mark.timeout(300)
def test_ddp_gradients_equal_single_process(tmp_path):
    # a fresh interpreter: spawning from inside pytest's process (capture, plugins) can hang the workers
    # (with its own pipes: workers inheriting pytest's captured file descriptors hang)
    proc = subprocess.run([sys.executable, __file__, str(tmp_path)], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = torch.load(tmp_path / "ddp.pt", weights_only=True)

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
    spawn_workers(sys.argv[1])
