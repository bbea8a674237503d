"""Per-step overhead of tlcourse's Learner over a hand-written PyTorch loop.

Run from the repo root: `.venv/bin/python scripts/bench_learner.py`. Both loops train the same small
CNN on the same 128x1x28x28 batches, in pairs of runs that alternate which loop goes first. On a
shared or virtual machine the same run varies by about 10% from one run to the next (other processes,
CPU frequency, caches), so each pair gives a ratio and the median of the pairs' ratios is reported,
with its spread and the load average. The target is a median ratio of at most 1.05 on a quiet machine.
"""
import os, statistics, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import torch
import torch.nn.functional as F
from torch import nn

from tlcourse.learner import Learner, set_seed

STEPS, BATCH, PAIRS = 200, 128, 10


def make_model():
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                         nn.Flatten(), nn.Linear(32 * 7 * 7, 10))


def make_loader():
    g = torch.Generator().manual_seed(0)
    images, labels = torch.rand(STEPS * BATCH, 1, 28, 28, generator=g), torch.randint(0, 10, (STEPS * BATCH,), generator=g)
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, labels), batch_size=BATCH,
                                       shuffle=True, generator=torch.Generator().manual_seed(0))


def hand_written(loader):
    set_seed(0)
    model = make_model()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)  # as the Learner default
    start = time.perf_counter()
    model.train()
    for x, y in loader:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - start) / len(loader)


def with_learner(loader):
    set_seed(0)
    learn = Learner(make_model(), loader, lr=1e-3, device='cpu', progress=False, seed=0)
    start = time.perf_counter()
    learn.fit(1)
    return (time.perf_counter() - start) / len(loader)


def python_overhead_per_step(steps=400, repeats=7):
    "Seconds per step that the Learner adds when the model is tiny, so that the loop's own Python work dominates."
    g = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, 4, generator=g), torch.randint(0, 2, (8,), generator=g)) for _ in range(steps)]
    def hand():
        set_seed(0)
        model = nn.Linear(4, 2)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.0)
        start = time.perf_counter()
        for x, y in batches:
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return time.perf_counter() - start
    def learner():
        set_seed(0)
        learn = Learner(nn.Linear(4, 2), batches, lr=1e-3, device='cpu', progress=False, seed=0)
        start = time.perf_counter()
        learn.fit(1)
        return time.perf_counter() - start
    hand(); learner()
    return (statistics.median(learner() for _ in range(repeats)) - statistics.median(hand() for _ in range(repeats))) / steps


def main():
    torch.set_num_threads(max(1, torch.get_num_threads()))
    loader = make_loader()
    hand_written(loader); with_learner(loader)  # warm-up: allocator, thread pools, first-call costs
    hand, learner = [], []
    for i in range(PAIRS):
        if i % 2: learner.append(with_learner(loader)); hand.append(hand_written(loader))
        else: hand.append(hand_written(loader)); learner.append(with_learner(loader))
    overhead = python_overhead_per_step()
    ratios = sorted(l / h for h, l in zip(hand, learner))
    q1, median, q3 = statistics.quantiles(ratios, n=4)
    print(f'{STEPS} steps of batch {BATCH}x1x28x28, small CNN, {torch.get_num_threads()} threads, {PAIRS} pairs of runs, '
          f'load average {os.getloadavg()[0]:.2f} at the end')
    print(f'hand-written loop: {1000 * statistics.median(hand):.2f} ms/step (median)')
    print(f'Learner.fit:       {1000 * statistics.median(learner):.2f} ms/step (median)')
    print(f'ratio learner/hand: {median:.3f} (median of pairs; middle half {q1:.3f}-{q3:.3f}; target <= 1.05)')
    print(f'the loop\'s own work, timed on a tiny model: {1e6 * overhead:.1f} us/step '
          f'({100 * overhead / statistics.median(hand):.2f}% of a hand-written CNN step)')


if __name__ == '__main__':
    main()
