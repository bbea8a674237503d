"""Distributed data parallel: `torchrun --nproc_per_node 2 -m tlcourse.cli pretrain ...` (gloo on the CPU, 127.0.0.1 only)
gives the same training as one process with the same global batch."""
import json, os, socket, subprocess, sys

import pytest
import torch
from safetensors.torch import load_file

import tlcourse.cli as C


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


def single(objective, settings, tmp_path, **overrides):
    return C.run_pretraining(objective, seed=0, settings=settings, out=tmp_path / "single.safetensors", progress=False,
                             **overrides)


def test_two_processes_match_one_process(tmp_path):
    "An MLP (no BatchNorm): 2 processes x 32 examples per step == 1 process x 64, up to float rounding."
    settings = dict(n_train=512, n_valid=256)
    one = single("tlcourse.cli:fashion_mlp_task", settings, tmp_path, epochs=2, batch_size=64)
    two = torchrun(["tlcourse.cli:fashion_mlp_task", "--set", "n_train=512", "--set", "n_valid=256", "--epochs", "2",
                    "--batch-size", "64", "--out", str(tmp_path / "ddp.safetensors")])
    assert two["world_size"] == 2 and one["world_size"] == 1
    for name, value in one["metrics"].items():
        assert two["metrics"][name] == pytest.approx(value, rel=1e-4, abs=1e-5), name
    a, b = load_file(tmp_path / "single.safetensors"), load_file(tmp_path / "ddp.safetensors")
    initial = C.build_task("tlcourse.cli:fashion_mlp_task", seed=0, settings=dict(n_train=64, n_valid=0)).model.state_dict()
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
