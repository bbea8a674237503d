"""Chapter 0h's explorers (tlcourse.explore): the widget redraws on a value change and carries a static picture; every
lecture's view draws exactly the numbers of its table, checked against computations made here by hand."""
import base64, math

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from tlcourse.explore import (SCHEDULE_KINDS, explorer, learning_curve_view, lora_layer_shapes, lora_trainable,
                              lora_view, probe_layer_view, render_view, schedule_view, surgical_view)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def tagged_artist(fig, gid):
    "The one artist of `fig` that a view named `gid`."
    found = fig.findobj(lambda artist: artist.get_gid() == gid)
    assert len(found) == 1, f"expected one artist tagged {gid!r}, found {len(found)}"
    return found[0]


def png_of(data) -> bytes:
    return base64.b64decode(data["image/png"])


# --- the explorer -----------------------------------------------------------------------------------------------------

def line_view(slope=1.0, colour="C0"):
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [0, slope], color=colour)
    return fig


def test_render_view_turns_a_figure_into_a_png_and_closes_it():
    fig = line_view()
    data = render_view(fig)
    assert png_of(data).startswith(b"\x89PNG") and "text/plain" in data
    assert not plt.fignum_exists(fig.number)
    table = render_view(pd.DataFrame({"a": [1, 2]}))
    assert "<table" in table["text/html"]
    assert render_view("just text") == {"text/plain": "just text"}
    with pytest.raises(TypeError, match="must return a matplotlib Figure"):
        render_view(42)


def test_explorer_redraws_when_a_value_changes_and_keeps_memory_flat():
    import ipywidgets as widgets
    ex = explorer(line_view, slope=widgets.FloatSlider(value=1, min=-2, max=2), colour=["C0", "C1"])
    assert ex.controls["slope"].continuous_update is False
    assert isinstance(ex.controls["colour"], widgets.Dropdown) and ex.values == {"slope": 1.0, "colour": "C0"}
    first = ex.output.outputs[0]["data"]["image/png"]
    ex.controls["slope"].value = -1.5
    second = ex.output.outputs[0]["data"]["image/png"]
    assert second != first and ex.shown["image/png"] == second
    # the new picture is the view drawn at the new value, not merely a different image
    assert second == render_view(line_view(-1.5))["image/png"]
    for value in np.linspace(-2, 2, 9): ex.controls["slope"].value = float(value)
    assert plt.get_fignums() == []


def test_explorer_display_carries_the_widget_and_a_static_picture():
    ex = explorer(line_view, colour=["C0", "C1"])
    bundle = ex._repr_mimebundle_()
    assert bundle["application/vnd.jupyter.widget-view+json"]["model_id"] == ex.box.model_id
    assert png_of(bundle).startswith(b"\x89PNG") and bundle["image/png"] == render_view(line_view())["image/png"]
    assert bundle["text/plain"].startswith("Explorer(line_view") and "colour='C0'" in bundle["text/plain"]
    assert "tlcourse-explorer" in ex.box._dom_classes and ex.output in ex.box.children


def test_explorer_shows_a_failing_view_in_place_of_the_picture():
    def view(n):
        if n < 0: raise ValueError("n must be >= 0")
        return line_view(n)
    ex = explorer(view, n=[1, -1])
    ex.controls["n"].value = -1
    assert ex.output.outputs[0]["data"] == {"text/plain": "ValueError: n must be >= 0"}
    with pytest.raises(ValueError, match="n must be >= 0"):   # but a broken first view fails where it is built
        explorer(view, n=[-1, 1])


@pytest.mark.parametrize("view, controls, error, match", [
    ("not a function", dict(n=[1]), TypeError, "view must be a function"),
    (line_view, {}, ValueError, "at least one control"),
    (line_view, dict(slope=3), TypeError, "must be an ipywidgets control .* or a non-empty list"),
    (line_view, dict(slope=[]), TypeError, "non-empty list of options"),
])
def test_explorer_refuses_bad_arguments(view, controls, error, match):
    with pytest.raises(error, match=match):
        explorer(view, **controls)


# --- chapter 0h: schedules --------------------------------------------------------------------------------------------

def by_hand(kind, p, warmup, steps):
    "Each schedule's multiplier at progress p, from its paper's formula."
    if kind == "constant": return 1.0
    if kind == "warm-up + cosine":
        return p / warmup if p < warmup else 0.5 * (1 + math.cos(math.pi * (p - warmup) / (1 - warmup)))
    if kind == "one-cycle":   # fastai: cosine from 1/25 up to 1, then cosine down to 1/1e4
        cos = lambda start, end, x: end + (start - end) * 0.5 * (1 + math.cos(math.pi * x))
        return cos(1 / 25, 1, p / warmup) if p < warmup else cos(1, 1e-4, (p - warmup) / (1 - warmup))
    if kind == "slanted triangular":   # Howard & Ruder 2018, eq. 3, ratio 32
        t, cut = round(p * steps), math.floor(steps * warmup)
        q = t / cut if t < cut else 1 - (t - cut) / (cut * (1 / warmup - 1))
        return (1 + q * 31) / 32
    raise AssertionError(kind)


@pytest.mark.parametrize("warmup", [0.1, 0.3])
def test_schedule_view_draws_each_schedule_as_its_formula(warmup):
    peak, steps = 3e-3, 200
    fig = schedule_view(SCHEDULE_KINDS, peak_lr=peak, warmup=warmup, gamma=4.0, steps=steps)
    for kind in SCHEDULE_KINDS:
        x, y = tagged_artist(fig, f"lr {kind}").get_data()
        assert len(x) == steps + 1
        for i in range(0, steps + 1, 7):
            assert y[i] == pytest.approx(peak * by_hand(kind, x[i], warmup, steps), rel=1e-9, abs=1e-15), (kind, x[i])
    x, y = tagged_artist(fig, "lambda").get_data()
    assert np.allclose(y, 2 / (1 + np.exp(-4.0 * np.asarray(x))) - 1)


def test_schedule_view_draws_only_the_chosen_schedules():
    fig = schedule_view("one-cycle")
    assert [line.get_gid() for line in fig.axes[0].get_lines()] == ["lr one-cycle"]


@pytest.mark.parametrize("settings, error, match", [
    (dict(kinds=["cosine warmup"]), ValueError, "Unknown schedule 'cosine warmup'; the schedules are \\['constant'"),
    (dict(kinds=[]), ValueError, "at least one schedule"),
    (dict(peak_lr=0.0), ValueError, "peak_lr must be a finite number in \\(0"),
    (dict(warmup=1.2), ValueError, "warmup must be a fraction of training in \\[0, 1\\)"),
    (dict(gamma=-1.0), ValueError, "gamma must be a finite number in \\[0"),
])
def test_schedule_view_bad_settings_say_what_is_wrong(settings, error, match):
    with pytest.raises(error, match=match):
        schedule_view(**settings)


# --- lecture 1: the probe's layer -----------------------------------------------------------------------------------

def runs_table(methods, ns=(1, 5, 10, 50), seeds=(0, 1, 2), seed=0, **extra):
    "A label_efficiency-like table of made-up accuracies: one row per (method, n, seed)."
    rng = np.random.default_rng(seed)
    return pd.DataFrame([dict(extra, method=m, n=n, seed=s, accuracy=float(rng.uniform(0.1, 0.95)), seconds=0.0)
                         for m in methods for n in ns for s in seeds])


def test_probe_layer_view_shows_that_layers_runs_and_their_mean():
    layers = ["stem, 4x4 grid", "stage1, 4x4 grid", "stage3, pooled"]
    results = runs_table(layers)
    for layer in layers:
        fig = probe_layer_view(results, layer)
        mine = results[results.method == layer]
        x, y = tagged_artist(fig, "mean").get_data()
        for n, mean in zip(x, y):
            assert mean == pytest.approx(np.mean([r.accuracy for r in mine.itertuples() if r.n == n]))
        assert sorted(x) == [1, 5, 10, 50]
        dots = tagged_artist(fig, "seeds").get_offsets()
        assert sorted(map(tuple, np.asarray(dots))) == sorted(zip(mine.n.astype(float), mine.accuracy))
        assert layer in fig.axes[0].get_title()
    # every choice draws a different picture (the browser test moves this widget and expects a change)
    pictures = {render_view(probe_layer_view(results, layer))["image/png"] for layer in layers}
    assert len(pictures) == len(layers)


def test_probe_layer_view_refuses_an_unknown_layer():
    with pytest.raises(ValueError, match="Unknown layer 'stage9'; the layers probed are \\['stem', 'stage1'\\]"):
        probe_layer_view(runs_table(["stem", "stage1"]), "stage9")


# --- lecture 2b: learning curves ---------------------------------------------------------------------------------------

def test_learning_curve_view_shows_exactly_the_rows_of_each_method_and_budget():
    methods = ["linear probe (stage1)", "scratch", "fine-tune"]
    results = runs_table(methods, ns=(1, 10, 200), seeds=(0, 1, 2, 3), seed=1)
    fig = learning_curve_view(results, ["scratch", "fine-tune"], 10)
    for method in ["scratch", "fine-tune"]:
        x, y = tagged_artist(fig, f"curve {method}").get_data()
        assert list(x) == [1, 10, 200]
        for n, mean in zip(x, y):
            assert mean == pytest.approx(results.query("method == @method and n == @n").accuracy.mean())
        at_budget = results.query("method == @method and n == 10").accuracy
        assert sorted(np.asarray(tagged_artist(fig, f"seeds {method}").get_offsets())[:, 1]) == pytest.approx(sorted(at_budget))
        assert tagged_artist(fig, f"mean {method}").get_data()[1][0] == pytest.approx(at_budget.mean())
    assert not fig.findobj(lambda a: a.get_gid() == "curve linear probe (stage1)")   # not chosen, not drawn
    assert "10 labels per class" in fig.axes[1].get_title()


@pytest.mark.parametrize("methods, budget, match", [
    (["scratch", "finetune"], 10, "Unknown method\\(s\\) \\['finetune'\\]; choose one or more of \\['scratch', 'fine-tune'\\]"),
    ([], 10, "Choose at least one method of"),
    (["scratch"], 20, "No runs with 20 labels per class; the budgets measured are \\[1, 10, 200\\]"),
])
def test_learning_curve_view_bad_choices_name_the_valid_ones(methods, budget, match):
    with pytest.raises(ValueError, match=match):
        learning_curve_view(runs_table(["scratch", "fine-tune"], ns=(1, 10, 200)), methods, budget)


# --- lecture 4b: surgical fine-tuning ----------------------------------------------------------------------------------

def surgical_table():
    blocks = ["stem", "stage1", "stage2", "stage3", "head", "all"]
    tables = [runs_table(blocks, ns=(50,), seed=i, shift=shift) for i, shift in enumerate(["input: noise", "output: permuted labels"])]
    return pd.concat(tables, ignore_index=True), blocks


def test_surgical_view_reads_the_table_row_of_that_shift():
    results, blocks = surgical_table()
    untouched = {"input: noise": 0.41, "output: permuted labels": 0.09}
    fig = surgical_view(results, "output: permuted labels", "head", untouched)
    rows = results[results["shift"] == "output: permuted labels"]
    for block in blocks:
        bar = tagged_artist(fig, f"bar {block}")
        assert bar.get_height() == pytest.approx(rows[rows.method == block].accuracy.mean())
    highlighted = [b for b in blocks if tagged_artist(fig, f"bar {b}").get_facecolor() != tagged_artist(fig, "bar stem").get_facecolor()]
    assert highlighted == ["head"]
    seeds = np.asarray(tagged_artist(fig, "seeds").get_offsets())
    assert sorted(seeds[:, 1]) == pytest.approx(sorted(rows[rows.method == "head"].accuracy))
    assert set(seeds[:, 0]) == {blocks.index("head")}
    assert tagged_artist(fig, "untouched").get_ydata()[0] == pytest.approx(0.09)


@pytest.mark.parametrize("shift, block, match", [
    ("input: blurr", "head", "Unknown shift 'input: blurr'; the shifts measured are \\['input: noise', 'output: permuted labels'\\]"),
    ("input: noise", "stage4", "Unknown block 'stage4'; the blocks tuned are \\['stem', 'stage1', 'stage2', 'stage3', 'head', 'all'\\]"),
])
def test_surgical_view_refuses_unknown_choices(shift, block, match):
    with pytest.raises(ValueError, match=match):
        surgical_view(surgical_table()[0], shift, block)


# --- lecture 5: LoRA's parameter count on the real MiniLM -------------------------------------------------------------

@pytest.fixture(scope="module")
def minilm():
    from tlcourse.models import load_minilm
    return load_minilm(num_classes=2)[0]


@pytest.fixture(scope="module")
def shapes(minilm):
    return lora_layer_shapes(minilm)


def frozen_total(model):
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("r, targets", [(4, ["query", "value"]), (8, ["query", "key", "value"]), (16, ["key"])])
def test_lora_count_equals_peft(minilm, shapes, r, targets):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModel
    from tlcourse.registry import registered_file
    bert = AutoModel.from_pretrained(str(registered_file("weights", "minilm").parent), local_files_only=True)
    trainable, _ = get_peft_model(bert, LoraConfig(r=r, target_modules=targets)).get_nb_trainable_parameters()
    assert lora_trainable(shapes, r, targets, frozen_total(minilm))["trainable"] == trainable


def test_lora_count_equals_a_hand_count_from_the_matrix_shapes(minilm, shapes):
    import copy
    from tlcourse.efficient_tuning import apply_lora, trainable_parameters
    c = minilm.config
    h, i, layers = c.hidden_size, c.intermediate_size, c.num_hidden_layers
    r = 8
    # per layer: query, key, value and the attention output are h x h; the feed-forward is h -> i -> h
    by_hand = {"query": layers * r * 2 * h, "value": layers * r * 2 * h,
               "dense": layers * r * ((h + h) + (h + i) + (i + h))}
    count = lora_trainable(shapes, r, ["query", "value", "dense"], frozen_total(minilm))
    assert count["by_target"] == by_hand and count["trainable"] == sum(by_hand.values())
    assert count["full_matrices"] == layers * (2 * h * h + h * h + 2 * h * i)
    ours = trainable_parameters(apply_lora(copy.deepcopy(minilm), r=r, target_modules=["query", "value", "dense"], train_head=False))
    assert (count["trainable"], count["total"]) == (ours["trainable"], ours["total"])
    assert count["fraction"] == pytest.approx(ours["fraction"])


def test_lora_view_draws_the_count(minilm, shapes):
    total = frozen_total(minilm)
    fig = lora_view(shapes, 16, ["query", "key"], total)
    count = lora_trainable(shapes, 16, ["query", "key"], total)
    assert tuple(np.asarray(tagged_artist(fig, "chosen").get_offsets())[0]) == (16, count["trainable"])
    for target in ["query", "key"]:
        assert tagged_artist(fig, f"bar {target}").get_height() == count["by_target"][target]
    ranks, counts = tagged_artist(fig, "curve").get_data()
    assert list(counts) == [lora_trainable(shapes, int(k), ["query", "key"], total)["trainable"] for k in ranks]
    assert f"{count['trainable']:,} trainable" in fig.axes[1].get_title()


@pytest.mark.parametrize("r, targets, match", [
    (0, ["query"], "LoRA rank r must be an int in 1..384 for \\['query'\\], got 0"),
    (385, ["query", "dense"], "LoRA rank r must be an int in 1..384"),
    (2.5, ["query"], "must be an int in 1..384"),
    (8, ["querry"], "target modules \\['querry'\\] name no linear layer of the encoder; choose one or more of \\['dense', 'key', 'query', 'value'\\]"),
    (8, [], "choose one or more of"),
])
def test_lora_bad_rank_or_targets_say_what_is_valid(shapes, r, targets, match):
    with pytest.raises(ValueError, match=match):
        lora_trainable(shapes, r, targets, 1000)
