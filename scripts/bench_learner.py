"""Per-step overhead of tlcourse's Learner over a hand-written PyTorch loop.

Run from the repo root: `.venv/bin/python scripts/bench_learner.py`. Both loops train the same small
CNN on the same 128x1x28x28 batches; repetitions alternate between the two so that machine noise
hits both equally, and the median time per step is compared. The target is a ratio of at most 1.05.
"""
import statistics, sys, time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import torch
import torch.nn.functional as F
from torch import nn

from tlcourse.learner import Learner, set_seed

STEPS, BATCH, REPEATS = 200, 128, 5


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


def main():
    torch.set_num_threads(max(1, torch.get_num_threads()))
    loader = make_loader()
    hand_written(loader); with_learner(loader)  # warm-up: allocator, thread pools, first-call costs
    hand, learner = [], []
    for _ in range(REPEATS):
        hand.append(hand_written(loader))
        learner.append(with_learner(loader))
    h, l = statistics.median(hand), statistics.median(learner)
    print(f'{STEPS} steps of batch {BATCH}x1x28x28, small CNN, {torch.get_num_threads()} threads, median of {REPEATS}')
    print(f'hand-written loop: {1000 * h:.2f} ms/step')
    print(f'Learner.fit:       {1000 * l:.2f} ms/step')
    print(f'ratio learner/hand: {l / h:.3f} (target <= 1.05)')


if __name__ == '__main__':
    main()
