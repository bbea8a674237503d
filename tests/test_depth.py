"""tlcourse.models: the VGG-style PlainNet and the ResidualNet of the models chapter's depth section."""
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tlcourse.models import ConvPair, PlainNet, ResidualNet, count_parameters, pad_channels, stage_summary


@pytest.fixture(autouse=True)
def seeded(one_torch_thread):
    torch.manual_seed(0)


def weighted_layers(model):
    return sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())


# --- pad_channels and ConvPair -------------------------------------------------------------------------------------

def test_pad_channels_appends_zero_channels():
    x = torch.randn(2, 3, 5, 5)
    padded = pad_channels(x, 7)
    assert torch.equal(padded, torch.cat([x, torch.zeros(2, 4, 5, 5)], dim=1))
    assert pad_channels(x, 3) is x


def test_pad_channels_refuses_to_narrow():
    with pytest.raises(ValueError, match="only adds channels"):
        pad_channels(torch.randn(1, 8, 2, 2), 4)


@pytest.mark.parametrize("in_channels,out_channels", [(8, 8), (4, 8)])
def test_residual_pair_with_a_zeroed_branch_is_the_identity(in_channels, out_channels):
    block = ConvPair(in_channels, out_channels, shortcut=True).eval()
    nn.init.zeros_(block.conv2[1].weight)  # the last BatchNorm's scale: the branch outputs its bias, 0
    x = torch.rand(3, in_channels, 6, 6)   # non-negative, as after the ReLU that precedes every block
    with torch.no_grad(): out = block(x)
    assert torch.equal(out, pad_channels(x, out_channels))


def test_pair_with_all_weights_zeroed():
    "Zero every conv weight: the residual pair passes its input through, the plain pair outputs zeros."
    x = torch.rand(2, 6, 5, 5)
    for shortcut, expected in ((True, x), (False, torch.zeros_like(x))):
        block = ConvPair(6, 6, shortcut=shortcut).eval()
        for module in block.modules():
            if isinstance(module, nn.Conv2d): nn.init.zeros_(module.weight)
        with torch.no_grad(): assert torch.equal(block(x), expected)


def test_pair_computes_its_formula():
    "relu(conv2(relu(conv1(x))) [+ x padded]), written out with the block's own layers."
    x = torch.randn(2, 4, 6, 6)
    for shortcut in (False, True):
        block = ConvPair(4, 8, shortcut=shortcut).eval()
        with torch.no_grad():
            branch = block.conv2(F.relu(block.conv1(x)))
            skip = torch.cat([x, torch.zeros(2, 4, 6, 6)], dim=1) if shortcut else 0
            assert torch.allclose(block(x), F.relu(branch + skip), atol=1e-6)
            assert block(x).shape == (2, 8, 6, 6)


def test_pair_refuses_a_narrowing_shortcut():
    with pytest.raises(ValueError, match="fewer channels"):
        ConvPair(8, 4, shortcut=True)
    assert ConvPair(8, 4).conv2[0].out_channels == 4  # a plain pair may narrow


# --- PlainNet and ResidualNet --------------------------------------------------------------------------------------

@pytest.mark.parametrize("family", [PlainNet, ResidualNet])
def test_shapes_and_stages(family):
    model = family(depth=8, widths=(4, 8, 16), num_classes=5).eval()
    x = torch.rand(3, 1, 28, 28)
    assert model.stage_names == ["stem", "stage1", "stage2", "stage3", "head"]
    assert model(x).shape == (3, 5) and model.features(x).shape == (3, 16) and model.feature_dim == 16
    shapes = stage_summary(model, (1, 1, 28, 28))["output_shape"].tolist()
    assert shapes[:4] == [(1, 4, 14, 14), (1, 4, 14, 14), (1, 8, 7, 7), (1, 16, 3, 3)]  # 2x2 max pools halve


@pytest.mark.parametrize("family", [PlainNet, ResidualNet])
@pytest.mark.parametrize("widths,depth", [((16, 32, 64), 8), ((16, 32, 64), 20), ((16, 32, 64), 32), ((4, 8), 10)])
def test_depth_counts_the_weighted_layers(family, widths, depth):
    model = family(depth=depth, widths=widths)
    assert weighted_layers(model) == depth and model.depth == depth


def test_parameter_count_by_hand():
    "widths (4, 8), depth 6: stem conv, one pair per stage, linear; convs have no bias, each BatchNorm 2 per channel."
    stem = 1 * 4 * 9 + 2 * 4
    stage1 = (4 * 4 * 9 + 2 * 4) + (4 * 4 * 9 + 2 * 4)
    stage2 = (4 * 8 * 9 + 2 * 8) + (8 * 8 * 9 + 2 * 8)
    head = 8 * 10 + 10
    hand = stem + stage1 + stage2 + head
    for family in (PlainNet, ResidualNet):
        assert count_parameters(family(depth=6, widths=(4, 8))) == dict(total=hand, trainable=hand)


def test_plain_and_residual_share_every_weight_and_differ_only_by_the_shortcuts():
    plain, residual = PlainNet(depth=14, widths=(4, 8)).eval(), ResidualNet(depth=14, widths=(4, 8)).eval()
    residual.load_state_dict(plain.state_dict())  # the same keys and shapes
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert not torch.allclose(plain(x), residual(x))
        for block in residual.modules():
            if isinstance(block, ConvPair): block.shortcut = False
        assert torch.allclose(plain(x), residual(x), atol=1e-6)


def test_residual_net_with_zeroed_branches_is_stem_then_head():
    "Every branch at zero: the body is identities, max pools and zero channels, so the logits come from the stem alone."
    model = ResidualNet(depth=6, widths=(4, 8)).eval()
    for block in model.modules():
        if isinstance(block, ConvPair): nn.init.zeros_(block.conv2[1].weight)
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        h = model.stage("stem")(x)            # [2, 4, 14, 14]
        h = F.max_pool2d(h, 2)                # stage2's pool; stage1's pair is the identity
        pooled = torch.cat([h.mean(dim=(2, 3)), torch.zeros(2, 4)], dim=1)
        assert torch.allclose(model(x), model.stage("head").classifier(pooled), atol=1e-5)


@pytest.mark.parametrize("depth", [7, 10, 2, 0, -4, 8.0, True, "20"])
def test_bad_depth_says_which_depths_exist(depth):
    with pytest.raises(ValueError, match=r"depth must be 2 \+ 6n") as error:
        PlainNet(depth=depth)
    assert "8, 14, 20, 26" in str(error.value)


@pytest.mark.parametrize("widths", [(), (16, 0), (16, 3.5), [True, 8], (-4,)])
def test_bad_widths(widths):
    with pytest.raises(ValueError, match="widths must be a non-empty sequence of positive ints"):
        ResidualNet(depth=8, widths=widths)


def test_residual_net_needs_non_decreasing_widths():
    with pytest.raises(ValueError, match="non-decreasing widths"):
        ResidualNet(depth=8, widths=(32, 16, 64))
    assert PlainNet(depth=8, widths=(32, 16, 64))(torch.rand(1, 1, 28, 28)).shape == (1, 10)


def test_wrong_images_get_a_clear_error():
    model = PlainNet(depth=8)
    with pytest.raises(ValueError, match=r"Expected images of shape \[B, 1, H, W\]"):
        model(torch.rand(2, 28, 28))
    with pytest.raises(ValueError, match="float images"):
        model(torch.randint(0, 255, (2, 1, 28, 28)))
    assert PlainNet(depth=8, in_channels=3)(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_trains_on_a_tiny_batch():
    "A few AdamW steps on one fixed batch lower the loss of both families (the nets can learn)."
    x, y = torch.rand(16, 1, 28, 28), torch.arange(16) % 4
    for family in (PlainNet, ResidualNet):
        torch.manual_seed(0)
        model = family(depth=8, widths=(4, 8, 8), num_classes=4)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
        losses = []
        for _ in range(15):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(); loss.backward(); opt.step()
            losses.append(loss.item())
        assert losses[-1] < losses[0]
