"""tlcourse.distributed: the sharded sampler deals out single-process batches, and `torchrun --nproc_per_node 2 -m
tlcourse.cli pretrain ...` (gloo on the CPU, 127.0.0.1 only) gives the same training as one process with the same global
batch."""
import json, os, socket, subprocess, sys

import pytest
import torch
from safetensors.torch import load_file

import tlcourse.cli as C
import tlcourse.distributed as D
from tlcourse.learner import Callback, Learner
from tlcourse.pretrain import pretrain_loader


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def torchrun(args, n_processes=2, timeout=900):
    "Run `tlcourse pretrain ARGS` in `n_processes` CPU processes; returns rank 0's JSON result."
    # `timeout` only guards against a hang: on a loaded 2-core machine three fresh interpreters importing torch, plus
    # gloo start-up and shutdown, took more than 150 s in CI even though the job itself had finished.
    env = dict(os.environ, OMP_NUM_THREADS="1", MASTER_ADDR="127.0.0.1")
    if sys.platform.startswith("linux"): env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # gloo on the loopback device only
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(n_processes),
               "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "-m", "tlcourse.cli", "pretrain", *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    results = [json.loads(l) for l in done.stdout.splitlines() if l.startswith("{")]
    assert len(results) == 1, "only rank 0 prints its result"
    return results[0]


def test_batch_size_must_split_over_processes():
    assert D.per_rank_batch_size(128, 4) == 32
    with pytest.raises(ValueError, match="global batch size 100 cannot be split evenly over 3 processes.*--batch-size 99"):
        D.per_rank_batch_size(100, 3)


class RecordOrder(Callback):
    "Collects the inputs of every training batch, per epoch."
    def __init__(self): self.epochs = []
    def before_epoch(self, learn): self.epochs.append([])
    def before_batch(self, learn): self.epochs[-1].append(learn.xb.clone())


def test_reference_order_is_the_learners_order():
    "reference_order(n, seed, epoch) is the order in which the Learner visits a shuffled pretrain_loader."
    n, seed = 50, 7
    positions = torch.utils.data.TensorDataset(torch.arange(n).float()[:, None], torch.zeros(n, dtype=torch.long))
    recorder = RecordOrder()
    learn = Learner(torch.nn.Linear(1, 1), pretrain_loader(positions, 16, shuffle=True, seed=seed), metrics=(),
                    loss_func=lambda pred, y: pred.mean(), seed=seed, callbacks=[recorder], device="cpu", progress=False)
    learn.fit(3)
    for epoch, batches in enumerate(recorder.epochs):
        seen = torch.cat(batches)[:, 0].long()
        assert torch.equal(seen, D.reference_order(n, seed, epoch))
    assert not torch.equal(D.reference_order(n, seed, 0), D.reference_order(n, seed, 1))


@pytest.mark.parametrize("n,batch,world,drop_last", [(50, 8, 2, False), (50, 12, 3, False), (50, 12, 4, True), (5, 4, 4, False)])
def test_sharded_batches_union_is_the_global_batch(n, batch, world, drop_last):
    "Step k's local batches over all ranks hold exactly single-process batch k (the last one padded by wrap-around)."
    dataset = list(range(n))
    loaders = [D.sharded_loader(dataset, batch, rank, world, shuffle=True, seed=1, drop_last=drop_last) for rank in range(world)]
    for loader in loaders: loader.sampler.set_epoch(2)
    order = D.reference_order(n, 1, 2).tolist()
    if drop_last: order = order[:n // batch * batch]
    single = [order[i:i + batch] for i in range(0, len(order), batch)]
    steps = list(zip(*[list(loader) for loader in loaders]))
    assert len(steps) == len(single) == len(loaders[0])
    for k, local_batches in enumerate(steps):
        last = k == len(steps) - 1
        assert all(len(b) == (len(local_batches[0]) if last else batch // world) for b in local_batches)
        together = sorted(i for b in local_batches for i in b.tolist())
        if k < len(single) - 1 or len(single[k]) == batch: assert together == sorted(single[k])
        else: assert set(together) >= set(single[k])  # the padded last batch repeats a few examples


def test_torchrun_command_runs_the_command_line():
    one = D.torchrun_command("simclr", 1, 2, "127.0.0.1:29500", "--seed", "0")
    assert one.startswith("torchrun --nnodes 1 --nproc_per_node 2 --master_addr 127.0.0.1 --master_port 29500")
    assert one.endswith("-m tlcourse.cli pretrain simclr --seed 0")
    assert "--rdzv_endpoint node0:29500" in D.torchrun_command("simclr", 2, 4, "node0:29500")


def single(objective, settings, tmp_path, **overrides):
    return C.run_pretraining(objective, seed=0, settings=settings, out=tmp_path / "single.safetensors", progress=False,
                             **overrides)


def test_two_processes_match_one_process(tmp_path):
    "An MLP (no BatchNorm): 2 processes x 32 examples per step == 1 process x 64, up to float rounding."
    settings = dict(n_train=512, n_valid=256)
    one = single("tlcourse.distributed:fashion_mlp_task", settings, tmp_path, epochs=2, batch_size=64)
    two = torchrun(["tlcourse.distributed:fashion_mlp_task", "--set", "n_train=512", "--set", "n_valid=256", "--epochs", "2",
                    "--batch-size", "64", "--out", str(tmp_path / "ddp.safetensors")])
    assert two["world_size"] == 2 and one["world_size"] == 1
    for name, value in one["metrics"].items():
        assert two["metrics"][name] == pytest.approx(value, rel=1e-4, abs=1e-5), name
    a, b = load_file(tmp_path / "single.safetensors"), load_file(tmp_path / "ddp.safetensors")
    initial = C.build_task("tlcourse.distributed:fashion_mlp_task", seed=0, settings=dict(n_train=64, n_valid=0)).model.state_dict()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-4), k
        assert not torch.allclose(a[k], initial[k], atol=1e-4), f"{k} did not train"


def test_registered_objective_under_torchrun(tmp_path):
    """The registered `supervised` objective (SmallCNN) through make_task under torchrun. Its BatchNorm layers normalise
    each process's 32 examples instead of all 64 (SyncBatchNorm needs GPUs), so the result is close, not equal."""
    settings = dict(n_train=256, n_valid=128)
    one = single("supervised", settings, tmp_path, epochs=1, batch_size=64)
    two = torchrun(["supervised", "--set", "n_train=256", "--set", "n_valid=128", "--epochs", "1", "--batch-size", "64",
                    "--out", str(tmp_path / "ddp.safetensors")])
    assert two["objective"] == "supervised" and two["world_size"] == 2
    assert two["metrics"]["train_loss"] == pytest.approx(one["metrics"]["train_loss"], rel=0.05)
    assert (tmp_path / "ddp.safetensors").exists()
