"""tlcourse.harms (lecture 0): the WEAT effect size and permutation test against the formula worked by hand and a plain
itertools enumeration; greedy completion and the memorisation rate against a step-by-step reference; clear errors."""
import itertools, math, statistics

import pytest
import torch

from tlcourse.harms import (association, greedy_continuation, memorisation_rate, provenance_table, weat_effect_size,
                            weat_test)
from tlcourse.models import TinyTransformer


def cos(u, v):
    return sum(a * b for a, b in zip(u, v)) / math.sqrt(sum(a * a for a in u) * sum(b * b for b in v))


def s_by_hand(w, A, B):
    return statistics.mean(cos(w, a) for a in A) - statistics.mean(cos(w, b) for b in B)


def random_sets(n=5, m=4, dim=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(k, dim, generator=g, dtype=torch.float64) for k in (n, n, m, m + 1)]


def test_effect_size_equals_the_formula_by_hand():
    X = [[1.0, 0.2, 0.0], [0.8, 0.1, 0.3]]
    Y = [[0.1, 1.0, 0.2], [0.0, 0.7, 0.9]]
    A = [[1.0, 0.0, 0.0], [0.9, 0.1, 0.1], [0.7, 0.0, 0.2]]
    B = [[0.0, 1.0, 0.0], [0.2, 0.8, 0.3]]
    sx, sy = [s_by_hand(w, A, B) for w in X], [s_by_hand(w, A, B) for w in Y]
    expected = (statistics.mean(sx) - statistics.mean(sy)) / statistics.stdev(sx + sy)
    got = weat_effect_size(torch.tensor(X), torch.tensor(Y), torch.tensor(A), torch.tensor(B))
    assert math.isclose(got, expected, rel_tol=1e-9)
    assert torch.allclose(association(torch.tensor(X), torch.tensor(A), torch.tensor(B)), torch.tensor(sx, dtype=torch.float64))


def test_effect_size_is_antisymmetric_and_ignores_vector_length():
    X, Y, A, B = random_sets()
    d = weat_effect_size(X, Y, A, B)
    assert math.isclose(weat_effect_size(Y, X, A, B), -d, rel_tol=1e-9)
    assert math.isclose(weat_effect_size(X, Y, B, A), -d, rel_tol=1e-9)
    assert math.isclose(weat_effect_size(3 * X, 0.5 * Y, 2 * A, B), d, rel_tol=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_exact_p_value_equals_full_enumeration(seed):
    X, Y, A, B = random_sets(n=5, seed=seed)
    s = [s_by_hand(w.tolist(), A.tolist(), B.tolist()) for w in torch.cat([X, Y])]
    observed = sum(s[:5]) - sum(s[5:])
    splits = list(itertools.combinations(range(10), 5))
    hits = sum(sum(s[i] for i in first) - sum(s[i] for i in range(10) if i not in first) >= observed - 1e-12
               for first in splits)
    result = weat_test(X, Y, A, B)
    assert result["exact"] and result["permutations"] == len(splits) == 252
    assert result["p_value"] == pytest.approx(hits / len(splits), abs=1e-12)
    assert result["statistic"] == pytest.approx(observed, rel=1e-9)
    assert result["effect_size"] == pytest.approx(weat_effect_size(X, Y, A, B))


def test_sampled_p_value_approximates_the_exact_one_and_is_seeded():
    X, Y, A, B = random_sets(n=6, seed=3)
    exact = weat_test(X, Y, A, B)["p_value"]
    sampled = weat_test(X, Y, A, B, n_permutations=20_000, seed=1, exact_limit=0)
    assert not sampled["exact"] and sampled["permutations"] == 20_000
    assert abs(sampled["p_value"] - exact) < 0.02  # the standard error is at most 0.0035
    assert weat_test(X, Y, A, B, n_permutations=500, seed=7, exact_limit=0) == \
        weat_test(X, Y, A, B, n_permutations=500, seed=7, exact_limit=0)
    assert sampled["p_value"] > 0  # (1 + hits) / (1 + draws): never an impossible zero


def test_a_clear_association_is_significant():
    g = torch.Generator().manual_seed(0)
    a, b = torch.eye(8, dtype=torch.float64)[:2]
    X = a + 0.3 * torch.randn(8, 8, generator=g, dtype=torch.float64)
    Y = b + 0.3 * torch.randn(8, 8, generator=g, dtype=torch.float64)
    result = weat_test(X, Y, a[None], b[None])
    assert result["effect_size"] > 1.5 and result["p_value"] < 0.001 and result["exact"]


@pytest.mark.parametrize("change, message", [
    (lambda X, Y, A, B: (X[:0], Y, A, B), "X is empty"),
    (lambda X, Y, A, B: (X, Y, A, B[:0]), "B is empty"),
    (lambda X, Y, A, B: (X, Y[:3], A, B), "equal size"),
    (lambda X, Y, A, B: (X, Y, A[:, :4], B), "same embedding width"),
    (lambda X, Y, A, B: (X[0], Y, A, B), "2-D"),
    (lambda X, Y, A, B: (X, Y.clone().index_fill_(1, torch.tensor([2]), float("nan")), A, B), "NaN or infinite"),
    (lambda X, Y, A, B: (X, Y, A.clone().index_fill_(1, torch.tensor([0]), float("inf")), B), "NaN or infinite"),
    (lambda X, Y, A, B: (X, Y, torch.zeros_like(A), B), "all-zero"),
])
def test_bad_sets_are_refused_with_a_clear_message(change, message):
    sets = change(*random_sets())
    with pytest.raises(ValueError, match=message): weat_effect_size(*sets)
    with pytest.raises(ValueError, match=message): weat_test(*sets)


def test_bad_test_settings_are_refused():
    X, Y, A, B = random_sets()
    with pytest.raises(ValueError, match="n_permutations"): weat_test(X, Y, A, B, n_permutations=0)
    with pytest.raises(ValueError, match="exact_limit"): weat_test(X, Y, A, B, exact_limit=-1)
    same = torch.ones(2, 3, dtype=torch.float64)
    with pytest.raises(ValueError, match="undefined"): weat_effect_size(same, same, A[:, :3], B[:, :3])


@pytest.fixture(scope="module")
def tiny_lm(one_torch_thread):
    torch.manual_seed(0)
    return TinyTransformer(vocab_size=20, num_classes=None, d_model=16, n_layers=1, n_heads=2, max_len=24, causal=True).eval()


def test_greedy_continuation_equals_a_step_by_step_argmax(tiny_lm):
    from tlcourse.pretrain_text import LanguageModel
    prompts = torch.randint(1, 20, (3, 5), generator=torch.Generator().manual_seed(1))
    got = greedy_continuation(tiny_lm, prompts, 4)
    lm = LanguageModel(tiny_lm)
    for row, prompt in enumerate(prompts):
        tokens = prompt.tolist()
        with torch.no_grad():
            for _ in range(4):
                t = torch.tensor([tokens])
                tokens.append(int(lm(t, attention_mask=torch.ones_like(t, dtype=torch.bool))[0, -1].argmax()))
        assert got[row].tolist() == tokens[5:]


def test_memorisation_rate_counts_matches(tiny_lm):
    prompts = torch.randint(1, 20, (6, 4), generator=torch.Generator().manual_seed(2))
    own = torch.cat([prompts, greedy_continuation(tiny_lm, prompts, 3)], dim=1)  # what the model would say: memorised
    other = own.clone()
    other[:, 4] = (own[:, 4] % 19) + 1  # the first continuation token changed: that token can no longer match
    short = [torch.tensor([1, 2, 3])]  # too short for 4 + 3 tokens: left out
    result = memorisation_rate(tiny_lm, list(own) + short, prompt_len=4, continuation_len=3)
    assert result["eligible"] == 6 and result["exact"].all() and (result["overlap"] == 1).all()
    changed = memorisation_rate(tiny_lm, list(other), prompt_len=4, continuation_len=3)
    assert not changed["exact"].any() and (changed["overlap"] <= 2 / 3).all()
    expected = (changed["continuations"] == other[:, 4:]).double().mean(1)
    assert torch.equal(changed["overlap"], expected)
    drawn = memorisation_rate(tiny_lm, list(own), prompt_len=4, continuation_len=3, n=4, seed=0)
    assert len(drawn["exact"]) == 4 and drawn["eligible"] == 6


def test_ignored_tokens_are_not_scored(tiny_lm):
    prompts = torch.randint(1, 20, (4, 4), generator=torch.Generator().manual_seed(3))
    own = torch.cat([prompts, greedy_continuation(tiny_lm, prompts, 3)], dim=1)
    unused = next(i for i in range(20) if i not in own[:, 4:])  # an id the model never says after these prompts
    target = own.clone()
    target[:, 4] = unused  # a wrong first token in every snippet
    plain = memorisation_rate(tiny_lm, list(target), 4, 3)
    assert not plain["exact"].any() and torch.allclose(plain["overlap"], torch.full((4,), 2 / 3, dtype=plain["overlap"].dtype))
    ignored = memorisation_rate(tiny_lm, list(target), 4, 3, ignore_ids=[unused])  # not scored: the rest all match
    assert ignored["exact"].all() and (ignored["overlap"] == 1).all()
    with pytest.raises(ValueError, match="scored token"):
        memorisation_rate(tiny_lm, [torch.tensor([1, 2, 3, 4, 5, 5, 5])], 4, 3, ignore_ids=[5])


def test_memorisation_refuses_bad_input(tiny_lm):
    seqs = [torch.arange(1, 11)] * 3
    with pytest.raises(ValueError, match="None of the 3 sequences has the 30 tokens"):
        memorisation_rate(tiny_lm, seqs, prompt_len=20, continuation_len=10)
    with pytest.raises(ValueError, match="prompt_len"): memorisation_rate(tiny_lm, seqs, prompt_len=0)
    with pytest.raises(ValueError, match="only 3 sequences"): memorisation_rate(tiny_lm, seqs, 4, 3, n=5)
    with pytest.raises(ValueError, match="context of 24"): greedy_continuation(tiny_lm, torch.ones(1, 20, dtype=torch.long), 5)
    with pytest.raises(ValueError, match="steps"): greedy_continuation(tiny_lm, torch.ones(1, 2, dtype=torch.long), 0)
    with pytest.raises(ValueError, match=r"\[N, P\]"): greedy_continuation(tiny_lm, torch.ones(4, dtype=torch.long), 2)
    bidirectional = TinyTransformer(vocab_size=20, num_classes=None, d_model=16, n_layers=1, n_heads=2, max_len=24)
    with pytest.raises(ValueError, match="causal"): greedy_continuation(bidirectional, torch.ones(1, 2, dtype=torch.long), 2)


def test_provenance_table_lists_every_registered_file():
    from tlcourse.registry import read_manifest
    table = provenance_table()
    for kind, label in (("datasets", "dataset"), ("weights", "weights"), ("checkpoints", "checkpoint")):
        assert set(table[table.kind == label].name) == set(read_manifest(kind))
    assert table[["what", "origin", "licence"]].map(lambda v: isinstance(v, str) and bool(v.strip())).all().all()
