"""The loss-landscape tools of lecture 1 (tlcourse.learner): lines, planes and barriers checked against hand formulas."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tlcourse.learner import (barrier_height, check_same_architecture, distance_travelled, interpolate_weights,
                              loss_along_line, loss_on_plane, move_weights, random_direction, recompute_batchnorm,
                              weights_difference)


def quadratic_problem(dim=4):
    """A linear model w -> x @ w on the identity inputs with targets t: its MSE loss is mean((w - t)^2), a quadratic
    bowl with its minimum at t, so every loss below has a formula."""
    inputs, targets = torch.eye(dim), torch.linspace(-1, 2, dim)[:, None]
    return torch.utils.data.TensorDataset(inputs, targets), targets.ravel()


def linear_with(weights):
    model = nn.Linear(len(weights), 1, bias=False)
    with torch.no_grad(): model.weight.copy_(torch.as_tensor(weights, dtype=torch.float32)[None])
    return model


def test_interpolate_weights_is_the_weighted_mix_and_leaves_inputs_alone():
    torch.manual_seed(0)
    a, b = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2)), nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    before_a = {k: v.clone() for k, v in a.state_dict().items()}
    for alpha in (0.0, 0.3, 1.0, 1.5, -0.5):
        mixed = interpolate_weights(a, b, alpha).state_dict()
        for key, value in a.state_dict().items():
            assert torch.allclose(mixed[key], (1 - alpha) * value + alpha * b.state_dict()[key], atol=1e-6)
    assert all(torch.equal(v, before_a[k]) for k, v in a.state_dict().items())


def test_loss_along_a_line_of_a_quadratic_equals_the_formula_and_has_no_barrier():
    data, t = quadratic_problem()
    w0, w1 = torch.tensor([3.0, -2.0, 0.5, 4.0]), torch.tensor([-1.0, 0.0, 1.0, 2.0])
    alphas = torch.linspace(-0.5, 1.5, 9)
    line = loss_along_line(linear_with(w0), linear_with(w1), data, alphas, loss_func=F.mse_loss)
    expected = [float((((1 - a) * w0 + a * w1 - t) ** 2).mean()) for a in alphas.tolist()]
    assert list(line.columns) == ["alpha", "loss"]
    assert line["loss"].tolist() == pytest.approx(expected, rel=1e-5)
    # a convex function never rises above its chord
    assert barrier_height(line["alpha"], line["loss"]) == pytest.approx(0.0, abs=1e-6)


def test_loss_along_a_line_takes_several_named_datasets():
    data, t = quadratic_problem()
    line = loss_along_line(linear_with(torch.zeros(4)), linear_with(t), {"a": data, "b": data}, [0, 1], loss_func=F.mse_loss)
    assert list(line.columns) == ["alpha", "a", "b"]
    assert line["a"].tolist() == pytest.approx([float((t ** 2).mean()), 0.0], abs=1e-6)


def test_loss_on_a_plane_of_a_quadratic_equals_the_formula():
    data, t = quadratic_problem()
    origin = torch.tensor([1.0, 1.0, 1.0, 1.0])
    dx = {"weight": torch.tensor([[1.0, 0.0, -1.0, 0.0]])}
    dy = {"weight": torch.tensor([[0.0, 2.0, 0.0, 1.0]])}
    xs, ys = [-1.0, 0.0, 0.5], [0.0, 1.0]
    plane = loss_on_plane(linear_with(origin), dx, dy, data, xs, ys, loss_func=F.mse_loss)
    assert len(plane) == len(xs) * len(ys)
    for row in plane.itertuples():
        w = origin + row.x * dx["weight"][0] + row.y * dy["weight"][0]
        assert row.loss == pytest.approx(float(((w - t) ** 2).mean()), rel=1e-5)


def test_barrier_height_against_hand_computed_lines():
    assert barrier_height([0, 0.5, 1], [2.0, 1.5, 1.0]) == 0.0                     # on the chord
    assert barrier_height([0, 0.5, 1], [2.0, 2.5, 1.0]) == pytest.approx(1.0)      # chord 1.5 at the middle
    assert barrier_height([0, 0.25, 0.5, 1], [1.0, 3.0, 1.0, 1.0]) == pytest.approx(2.0)
    # points beyond the segment do not count
    assert barrier_height([-0.5, 0, 1, 1.5], [9.0, 1.0, 1.0, 9.0]) == 0.0


def test_distance_travelled_is_the_norm_of_the_parameter_difference():
    torch.manual_seed(1)
    a, b = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)), nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    with torch.no_grad(): b[1].running_mean.fill_(100.0)     # statistics are not parameters: they must not count
    flat = lambda m: torch.cat([p.detach().flatten() for p in m.parameters()])
    result = distance_travelled(a, b)
    assert result["distance"] == pytest.approx(float((flat(b) - flat(a)).norm()), rel=1e-5)
    assert result["start_norm"] == pytest.approx(float(flat(a).norm()), rel=1e-5)
    assert result["relative"] == pytest.approx(result["distance"] / result["start_norm"])
    assert distance_travelled(a, a)["distance"] == 0.0


def test_random_direction_is_normalised_filter_wise_and_reproducible():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(1, 6, 3), nn.BatchNorm2d(6), nn.Flatten(), nn.Linear(6 * 4 * 4, 3))
    direction = random_direction(model, seed=5)
    for key, weight in model.named_parameters():
        if weight.ndim >= 2:
            assert torch.allclose(direction[key].flatten(1).norm(dim=1), weight.detach().flatten(1).norm(dim=1), rtol=1e-5)
        else:
            assert torch.count_nonzero(direction[key]) == 0      # biases and BatchNorm parameters stay put
    assert all(torch.equal(direction[k], random_direction(model, seed=5)[k]) for k in direction)
    assert not torch.equal(direction["0.weight"], random_direction(model, seed=6)["0.weight"])
    scaled = random_direction(model, seed=5, length=2.5)
    assert math.sqrt(sum(float((d ** 2).sum()) for d in scaled.values())) == pytest.approx(2.5, rel=1e-5)


def test_move_weights_walks_along_two_directions():
    data, t = quadratic_problem()
    start, end = linear_with(torch.zeros(4)), linear_with(t)
    dy = random_direction(end, seed=0)
    moved = move_weights(start, [weights_difference(end, start), dy], [0.5, -2.0])
    assert torch.allclose(moved.weight, 0.5 * end.weight - 2.0 * dy["weight"], atol=1e-6)


def bn_net():
    return nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))


def images(n=20, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.utils.data.TensorDataset(torch.randn(n, 1, 6, 6, generator=g) * 3 + 1, torch.randint(0, 2, (n,), generator=g))


def test_recompute_batchnorm_sets_the_statistics_of_the_data():
    torch.manual_seed(3)
    model, data = bn_net(), images()
    with torch.no_grad(): conv_out = model[0](data.tensors[0])            # what the BatchNorm layer sees
    for batch_size in (1000, 5):                         # one batch, or the average of four equal batches
        recompute_batchnorm(model, data, batch_size=batch_size)
        assert not model.training and model[1].momentum == 0.1              # eval mode, momentum restored
        assert torch.allclose(model[1].running_mean, conv_out.mean(dim=(0, 2, 3)), atol=1e-5)
    recompute_batchnorm(model, data, batch_size=1000)
    # BatchNorm stores the unbiased variance (divided by count - 1), which is also what Tensor.var computes
    assert torch.allclose(model[1].running_var, conv_out.var(dim=(0, 2, 3), unbiased=True), rtol=1e-4)


def test_batchnorm_is_recomputed_at_every_point_of_a_line_and_mixed_without_bn_data():
    torch.manual_seed(4)
    a, b, data = bn_net(), bn_net(), images()
    for model in (a, b): recompute_batchnorm(model, images(seed=9))         # statistics of other data at the ends
    # without bn_data the statistics are mixed like the weights
    half = interpolate_weights(a, b, 0.5)
    assert torch.allclose(half[1].running_mean, (a[1].running_mean + b[1].running_mean) / 2)
    mixed = loss_along_line(a, b, data, [0.5])["loss"].item()
    assert mixed == pytest.approx(F.cross_entropy(half.eval()(data.tensors[0]), data.tensors[1]).item(), rel=1e-5)
    # with bn_data they are re-estimated on it at each point
    fresh = loss_along_line(a, b, data, [0.0, 0.5], bn_data=data)
    for alpha, loss in zip(fresh["alpha"], fresh["loss"]):
        reference = recompute_batchnorm(interpolate_weights(a, b, alpha), data)
        assert loss == pytest.approx(F.cross_entropy(reference(data.tensors[0]), data.tensors[1]).item(), rel=1e-5)
    assert fresh["loss"].iloc[1] != pytest.approx(mixed)
    # the ends' own statistics are left alone
    assert not torch.allclose(a[1].running_mean, recompute_batchnorm(bn_net(), data)[1].running_mean)


def test_different_architectures_get_a_clear_error():
    with pytest.raises(ValueError, match="different architectures.*shape"):
        interpolate_weights(nn.Linear(3, 2), nn.Linear(4, 2), 0.5)
    with pytest.raises(ValueError, match="different architectures.*only in"):
        loss_along_line(nn.Linear(3, 2), nn.Sequential(nn.Linear(3, 2)), images())
    with pytest.raises(ValueError, match="different architectures"):
        distance_travelled(nn.Linear(3, 2), nn.Linear(3, 3))
    with pytest.raises(TypeError, match="nn.Module"):
        check_same_architecture(nn.Linear(3, 2), {"weight": torch.zeros(2, 3)})
    with pytest.raises(ValueError, match="matches no floating-point weight"):
        move_weights(nn.Linear(3, 2), [{"weight": torch.zeros(4, 3)}], [1.0])


def test_other_bad_inputs_get_clear_errors():
    data, _ = quadratic_problem()
    a, b = linear_with(torch.zeros(4)), linear_with(torch.ones(4))
    with pytest.raises(ValueError, match="one step per direction"):
        move_weights(a, [weights_difference(b, a)], [1.0, 2.0])
    with pytest.raises(ValueError, match="alphas is empty"):
        loss_along_line(a, b, data, [], loss_func=F.mse_loss)
    with pytest.raises(ValueError, match="empty"):
        loss_along_line(a, b, {"empty": torch.utils.data.TensorDataset(torch.zeros(0, 4), torch.zeros(0, 1))}, loss_func=F.mse_loss)
    with pytest.raises(ValueError, match="xs and ys"):
        loss_on_plane(a, weights_difference(b, a), weights_difference(b, a), data, [], [0.0], loss_func=F.mse_loss)
    with pytest.raises(ValueError, match="empty"):
        recompute_batchnorm(bn_net(), torch.utils.data.TensorDataset(torch.zeros(0, 1, 6, 6), torch.zeros(0)))
    with pytest.raises(ValueError, match="include both ends"):
        barrier_height([0.0, 0.5], [1.0, 2.0])
    with pytest.raises(ValueError, match="strictly increasing"):
        barrier_height([0.0, 1.0, 0.5], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="one loss per alpha"):
        barrier_height([0.0, 1.0], [1.0])
    with pytest.raises(ValueError, match="finite"):
        barrier_height([0.0, 1.0], [1.0, float("nan")])
    with pytest.raises(ValueError, match="length must be"):
        random_direction(a, length=-1.0)
