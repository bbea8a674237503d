"""Lecture 5's library: LoRA, adapters, BitFit, prompt tuning and their save/load, checked against peft and the definitions."""
import copy

import pytest
import torch
from torch import nn

from tlcourse.efficient_tuning import (AdapterFileError, LoRALinear, UpperLayers, apply_adapters, apply_bitfit, apply_lora,
                                       apply_prompt_tuning, base_fingerprint, hidden_states_below, load_trainable,
                                       lora_layers, merge_lora, save_trainable, trainable_parameters, training_memory,
                                       trim_states, unmerge_lora)
from tlcourse.models import MiniLM, load_minilm

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def minilm():
    "The real pretrained all-MiniLM-L6-v2 (eval mode) and its tokenizer; tests take deep copies."
    return load_minilm(num_classes=2)


def tiny_minilm(seed=0, max_len=40):
    "A randomly initialised 2-layer BERT of width 32 in the MiniLM wrapper: the same code paths, a hundredth of the cost."
    from transformers import BertConfig, BertModel
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                        max_position_embeddings=max_len)
    return MiniLM(BertModel(config), num_classes=2).eval()


def batch(seed=0, n=6, length=9):
    "Token ids [n, length] with rows of different real lengths (right padding) and their attention mask."
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 100, (n, length), generator=g)
    mask = (torch.arange(length) < torch.randint(3, length + 1, (n, 1), generator=g)).long()
    mask[0] = 1
    return ids * mask, mask


def one_step(model, ids, mask, lr=1e-2):
    "One SGD step on a fixed loss, so every trainable parameter with a gradient moves."
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    loss = nn.functional.cross_entropy(model(ids, mask), torch.arange(len(ids)) % 2)
    opt.zero_grad(); loss.backward(); opt.step()


def parameters(model):
    return {n: p.detach().clone() for n, p in model.named_parameters()}


# --- LoRA against peft and against its formula ---------------------------------------------------------------------

def peft_and_ours(minilm, r=4, alpha=8):
    "peft's LoRA on the Hugging Face BERT and ours on the same weights, with the same random A and nonzero B in both."
    from peft import LoraConfig, get_peft_model
    model, tokenizer = minilm
    from transformers import AutoModel
    from tlcourse.registry import registered_file
    bert = AutoModel.from_pretrained(str(registered_file("weights", "minilm").parent), local_files_only=True)
    reference = get_peft_model(bert.eval(), LoraConfig(r=r, lora_alpha=alpha, target_modules=["query", "value"],
                                                       lora_dropout=0.0)).eval()
    ours = apply_lora(copy.deepcopy(model), r=r, alpha=alpha).eval()
    wrapped = {name: m for name, m in ours.named_modules() if isinstance(m, LoRALinear)}
    torch.manual_seed(1)
    copied = 0
    for name, module in reference.named_modules():
        if isinstance(getattr(module, "lora_A", None), nn.ModuleDict):
            nn.init.normal_(module.lora_B["default"].weight, std=0.05)   # as if trained: B no longer zero
            layer, rest = name.split("encoder.layer.")[1].split(".", 1)
            target = wrapped[f"stages.layer{int(layer) + 1}.{rest}"]
            target.lora_A.data.copy_(module.lora_A["default"].weight)
            target.lora_B.data.copy_(module.lora_B["default"].weight)
            copied += 1
    assert copied == len(wrapped) == 12   # query and value of 6 layers
    return reference, ours, tokenizer


def test_lora_equals_peft(minilm):
    reference, ours, tokenizer = peft_and_ours(minilm)
    inputs = tokenizer(["a warm, funny and wise film", "nothing in it works"], padding=True, return_tensors="pt")
    with torch.no_grad():
        expected = reference(**inputs).last_hidden_state
        assert torch.allclose(ours.encode(inputs["input_ids"], inputs["attention_mask"]), expected, atol=1e-5)
        merge_lora(ours)
        # merged, x(W + sBA) rounds differently from xW + s(xA)B in float32: about 2e-5 on outputs of size 6 after six layers
        assert torch.allclose(ours.encode(inputs["input_ids"], inputs["attention_mask"]), expected, atol=1e-4, rtol=1e-5)
        merged_reference = reference.merge_and_unload()
    # the merged weights are peft's merged weights
    assert torch.allclose(ours.stages["layer3"].attention.self.value.base.weight,
                          merged_reference.encoder.layer[2].attention.self.value.weight, atol=1e-6)


def test_lora_merge_is_w_plus_scaled_ba_and_unmerge_restores_w():
    model = apply_lora(tiny_minilm(), r=4, alpha=12)
    ids, mask = batch()
    for layer in lora_layers(model): nn.init.normal_(layer.lora_B, std=0.1)
    layer = model.stages["layer2"].attention.self.query
    W = layer.base.weight.detach().clone()
    model.eval()
    with torch.no_grad():
        before = model(ids, mask)
        merge_lora(model)
        assert torch.allclose(layer.base.weight, W + (12 / 4) * layer.lora_B @ layer.lora_A, atol=1e-6)
        assert torch.allclose(model(ids, mask), before, atol=1e-5)
        unmerge_lora(model)
        assert torch.equal(layer.base.weight, W)
        assert torch.allclose(model(ids, mask), before, atol=1e-6)


def test_lora_starts_as_the_frozen_model_and_trains_only_a_b_and_head():
    frozen = tiny_minilm()
    model = apply_lora(copy.deepcopy(frozen), r=2, alpha=4).eval()
    ids, mask = batch()
    with torch.no_grad(): assert torch.equal(model(ids, mask), frozen(ids, mask))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n in trainable if n.endswith(("lora_A", "lora_B")) or ".head." in n}
    # 2 targets x 2 layers x r (in + out), plus the head's 32 x 2 + 2
    assert trainable_parameters(model)["trainable"] == 2 * 2 * 2 * (32 + 32) + 66


def test_lora_targets_and_stages():
    model = apply_lora(tiny_minilm(), target_modules=["key"], stages=["layer2"])
    assert [n for n, m in model.named_modules() if isinstance(m, LoRALinear)] == ["stages.layer2.attention.self.key"]


@pytest.mark.parametrize("settings, words", [(dict(target_modules=["querry"]), "querry"), (dict(target_modules=[]), "name no"),
                                             (dict(r=0), "positive int"), (dict(r=-2), "positive int"), (dict(r=2.5), "positive int"),
                                             (dict(alpha=0), "alpha"), (dict(dropout=1.0), "dropout"),
                                             (dict(stages=["layer9"]), "layer1")])
def test_lora_bad_settings_say_what_is_wrong(settings, words):
    with pytest.raises(ValueError, match=words):
        apply_lora(tiny_minilm(), **settings)


def test_methods_refuse_a_model_that_is_not_minilm():
    with pytest.raises(TypeError, match="MiniLM"):
        apply_bitfit(nn.Linear(3, 2))


# --- adapters, BitFit, prompt tuning against their definitions -----------------------------------------------------------

def test_adapters_start_as_identity_and_leave_frozen_weights_alone():
    frozen = tiny_minilm()
    model = apply_adapters(copy.deepcopy(frozen), bottleneck=4)
    ids, mask = batch()
    with torch.no_grad(): assert torch.equal(model.eval()(ids, mask), frozen(ids, mask))
    before = parameters(model)
    model.train()
    one_step(model, ids, mask)
    one_step(model, ids, mask)
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(".adapter." in n or "LayerNorm" in n or ".head." in n for n in changed)
    assert any(".adapter.down" in n for n in changed)   # after B moved, the down projection gets gradient too
    with pytest.raises(ValueError, match="bottleneck"): apply_adapters(tiny_minilm(), bottleneck=0)


def test_bitfit_changes_only_biases():
    model = apply_bitfit(tiny_minilm(), train_head=False).train()
    before = parameters(model)
    one_step(model, *batch())
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and all(n.endswith("bias") for n in changed)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters() if not n.endswith("bias"))


def test_prompt_tuning_changes_no_frozen_parameter():
    tuned = apply_prompt_tuning(tiny_minilm(), k=3)
    before = parameters(tuned.model)
    prompt = tuned.prompt.detach().clone()
    one_step(tuned, *batch())
    assert not torch.equal(tuned.prompt, prompt)
    for name, p in tuned.model.named_parameters():
        if not name.startswith("stages.head."): assert torch.equal(p, before[name]), name
    assert trainable_parameters(tuned)["trainable"] == 3 * 32 + 66


def test_prompt_longer_than_the_model_allows_is_refused():
    with pytest.raises(ValueError, match="maximum length 40"):
        apply_prompt_tuning(tiny_minilm(max_len=40), k=40)
    tuned = apply_prompt_tuning(tiny_minilm(max_len=40), k=35)
    with pytest.raises(ValueError, match="exceeds the model's maximum length 40"):
        tuned(*batch(length=9))
    with pytest.raises(ValueError, match="shape"):
        apply_prompt_tuning(tiny_minilm(), k=3, init=torch.zeros(2, 32))


def test_upper_layers_on_cached_states_equal_the_whole_model():
    model = apply_lora(tiny_minilm(), stages=["layer2"])
    for layer in lora_layers(model): nn.init.normal_(layer.lora_B, std=0.1)
    ids, mask = batch()
    states = hidden_states_below(model, ids, mask, "layer2")
    with torch.no_grad():
        assert torch.allclose(UpperLayers(model.eval(), "layer2")(states, mask), model(ids, mask), atol=1e-5)
        tuned = apply_prompt_tuning(tiny_minilm(), k=2, at="layer2").eval()
        nn.init.normal_(tuned.prompt)
        cached = hidden_states_below(tuned.model, ids, mask, "layer2")
        assert torch.allclose(UpperLayers(tuned, "layer2")(cached, mask), tuned(ids, mask), atol=1e-5)
    with pytest.raises(ValueError, match="below layer2"):
        UpperLayers(apply_prompt_tuning(tiny_minilm(), k=2, at="layer1"), "layer2")


def test_trim_states_drops_only_padding():
    states, mask = torch.randn(3, 7, 4), torch.tensor([[1, 1, 0, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0, 0], [1, 0, 0, 0, 0, 0, 0]])
    inputs, labels = trim_states([(states[i], mask[i], torch.tensor(i)) for i in range(3)])
    assert inputs["hidden"].shape == (3, 3, 4) and torch.equal(inputs["attention_mask"], mask[:, :3])
    assert torch.equal(labels, torch.arange(3))
    with pytest.raises(ValueError, match="hidden"):
        trim_states([(torch.zeros(7), mask[0], 0)])


def test_training_memory_grows_with_what_trains():
    ids, mask = batch()
    inputs = dict(input_ids=ids, attention_mask=mask)
    labels = torch.arange(len(ids)) % 2
    lora = training_memory(apply_lora(tiny_minilm()).train(), inputs, labels)
    full = tiny_minilm().train()
    assert 0 < lora < training_memory(full, inputs, labels)


# --- saving and loading only the trained parameters ---------------------------------------------------------------------

def trained_lora(seed=0):
    model = apply_lora(tiny_minilm(), r=2)
    one_step(model.train(), *batch())
    one_step(model, *batch())
    return model.eval()


def test_save_and_load_restore_exactly(tmp_path):
    model = trained_lora()
    path = save_trainable(model, tmp_path / "lora.safetensors")
    restored = load_trainable(apply_lora(tiny_minilm(), r=2).eval(), path)
    ids, mask = batch(1)
    with torch.no_grad(): assert torch.equal(restored(ids, mask), model(ids, mask))
    assert all(torch.equal(p, dict(model.named_parameters())[n]) for n, p in restored.named_parameters())
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        assert set(f.keys()) == {n for n, p in model.named_parameters() if p.requires_grad}


def test_the_real_lora_file_is_small(minilm, tmp_path):
    path = save_trainable(apply_lora(copy.deepcopy(minilm[0])), tmp_path / "lora.safetensors")
    assert path.stat().st_size < 0.01 * sum(p.numel() * 4 for p in minilm[0].parameters())


def test_loading_onto_a_different_base_model_is_refused(tmp_path):
    path = save_trainable(trained_lora(), tmp_path / "lora.safetensors")
    other = apply_lora(tiny_minilm(seed=1), r=2)
    before = parameters(other)
    with pytest.raises(AdapterFileError, match="different base model"):
        load_trainable(other, path)
    assert all(torch.equal(p, before[n]) for n, p in other.named_parameters())   # nothing was changed


def test_loading_into_another_method_or_setting_is_refused(tmp_path):
    path = save_trainable(trained_lora(), tmp_path / "lora.safetensors")
    with pytest.raises(AdapterFileError, match="Apply the same method"):
        load_trainable(apply_lora(tiny_minilm(), r=4), path)
    with pytest.raises(AdapterFileError, match="Apply the same method"):
        load_trainable(apply_bitfit(tiny_minilm()), path)


def test_missing_tampered_and_foreign_files_are_refused(tmp_path):
    with pytest.raises(AdapterFileError, match="No file"):
        load_trainable(apply_lora(tiny_minilm(), r=2), tmp_path / "nothing.safetensors")
    path = save_trainable(trained_lora(), tmp_path / "lora.safetensors")
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF                                     # flip bits inside the last tensor
    (tmp_path / "tampered.safetensors").write_bytes(bytes(data))
    with pytest.raises(AdapterFileError, match="damaged"):
        load_trainable(apply_lora(tiny_minilm(), r=2), tmp_path / "tampered.safetensors")
    (tmp_path / "cut.safetensors").write_bytes(bytes(data[:len(data) // 2]))
    with pytest.raises(AdapterFileError, match="not a readable"):
        load_trainable(apply_lora(tiny_minilm(), r=2), tmp_path / "cut.safetensors")
    from tlcourse.models import save_weights
    save_weights(nn.Linear(2, 2), tmp_path / "plain.safetensors")
    with pytest.raises(AdapterFileError, match="not written by save_trainable"):
        load_trainable(apply_lora(tiny_minilm(), r=2), tmp_path / "plain.safetensors")


def test_saving_a_merged_or_untrainable_model_is_refused(tmp_path):
    model = merge_lora(trained_lora())
    with pytest.raises(ValueError, match="unmerge_lora"):
        save_trainable(model, tmp_path / "merged.safetensors")
    unmerge_lora(model)
    assert base_fingerprint(model) == base_fingerprint(apply_lora(tiny_minilm(), r=2))   # unmerging restores the base
    frozen = tiny_minilm()
    for p in frozen.parameters(): p.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        save_trainable(frozen, tmp_path / "none.safetensors")
