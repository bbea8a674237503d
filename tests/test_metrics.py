"""tlcourse.metrics: every metric equals its trusted reference (scikit-learn, sacrebleu) or a direct computation."""
import math, warnings
import numpy as np
import pytest
import torch

from tlcourse.learner import accuracy
from tlcourse.metrics import (bleu_score, bleu_statistics, calibration_bins, confusion_matrix,
                              expected_calibration_error, f1_score, perplexity, precision_recall_f1, precision_score,
                              recall_score, reliability_diagram, sentence_bleu, tokenize_13a, top_k_accuracy)

skm = pytest.importorskip("sklearn.metrics")
sacrebleu = pytest.importorskip("sacrebleu")


def random_problems(n_problems=300, seed=0):
    "Random label pairs whose top class (c - 1) never occurs, plus problems where y_true or y_pred miss classes."
    rng = np.random.default_rng(seed)
    for _ in range(n_problems):
        c, n = int(rng.integers(2, 9)), int(rng.integers(1, 40))
        yield c, rng.integers(0, c - 1, n), rng.integers(0, rng.integers(1, c), n)


def test_import_is_light():
    import subprocess, sys
    code = "import sys, tlcourse.metrics; print(sorted(m for m in ('torch', 'sklearn', 'matplotlib', 'pandas', 'scipy', 'sacrebleu') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_accuracy_and_confusion_matrix_equal_sklearn():
    for c, yt, yp in random_problems():
        assert accuracy(yp, yt) == skm.accuracy_score(yt, yp)
        assert np.array_equal(confusion_matrix(yt, yp, num_classes=c), skm.confusion_matrix(yt, yp, labels=range(c)))
    assert accuracy(torch.tensor([0, 1, 1]), torch.tensor([0, 1, 2])) == pytest.approx(2 / 3)
    assert accuracy(torch.tensor([[2., 1.], [0., 3.], [5., 0.]]), [0, 1, 1]) == pytest.approx(2 / 3)  # scores: arg-max


@pytest.mark.parametrize("average", ["macro", "micro", "weighted", None])
def test_precision_recall_f1_equal_sklearn_with_absent_classes(average):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no division warning may leak from our code
        for c, yt, yp in random_problems():
            ours = precision_recall_f1(yt, yp, average, num_classes=c)
            ours_default = precision_recall_f1(yt, yp, average)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ref = skm.precision_recall_fscore_support(yt, yp, labels=range(c), average=average, zero_division=0)[:3]
                ref_default = skm.precision_recall_fscore_support(yt, yp, average=average, zero_division=0)[:3]
            for a, b in zip(ours, ref): assert np.allclose(a, b), (average, yt, yp)
            for a, b in zip(ours_default, ref_default): assert np.allclose(a, b), (average, yt, yp)
            assert np.allclose(f1_score(yt, yp, average, c), ref[2]) and np.allclose(precision_score(yt, yp, average, c), ref[0])
            assert np.allclose(recall_score(yt, yp, average, c), ref[1])


def test_binary_equals_sklearn():
    rng = np.random.default_rng(1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for _ in range(200):
            n = int(rng.integers(1, 20))
            yt, yp = rng.integers(0, 2, n), rng.integers(0, 2, n) * rng.integers(0, 2)  # sometimes all-zero predictions
            for pos in (0, 1):
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    ref = skm.precision_recall_fscore_support(yt, yp, average="binary", pos_label=pos, zero_division=0)[:3]
                assert np.allclose(precision_recall_f1(yt, yp, "binary", pos_label=pos), ref)


def test_micro_f1_is_accuracy():
    rng = np.random.default_rng(2)
    yt, yp = rng.integers(0, 5, 100), rng.integers(0, 5, 100)
    assert f1_score(yt, yp, "micro", 5) == pytest.approx(accuracy(yp, yt))


def test_top_k_accuracy_equals_sklearn():
    rng = np.random.default_rng(3)
    for _ in range(50):
        c, n = int(rng.integers(3, 12)), int(rng.integers(1, 60))
        scores, yt = rng.normal(size=(n, c)), rng.integers(0, c, n)
        for k in range(1, c + 1):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # sklearn warns when k >= c
                ref = skm.top_k_accuracy_score(yt, scores, k=k, labels=range(c))
            assert top_k_accuracy(torch.tensor(scores), yt, k) == pytest.approx(ref)


@pytest.mark.parametrize("call, words", [
    (lambda: accuracy([0, 1], [0, 1, 1]), "same examples"),
    (lambda: accuracy([], []), "no examples"),
    (lambda: confusion_matrix([0, 5], [0, 1], num_classes=3), "num_classes=6"),
    (lambda: confusion_matrix([0, -1], [0, 1]), ">= 0"),
    (lambda: f1_score([0, 1], [0, 1], average="avg"), "is not one of"),
    (lambda: f1_score([0, 1, 2], [0, 1, 2], average="binary"), "needs two classes"),
    (lambda: accuracy([0, 1, 1], np.zeros((3, 2))), "not one-hot"),
    (lambda: accuracy(torch.full((3, 2), float("nan")), [0, 1, 1]), "NaN or infinity"),
    (lambda: top_k_accuracy(np.zeros((3, 4)), [0, 1, 4], 2), "num_classes=5"),
    (lambda: top_k_accuracy(np.zeros((3, 4)), [0, 1, 2], 0), "positive integer"),
])
def test_bad_classification_inputs_say_what_is_wrong(call, words):
    with pytest.raises(ValueError, match=words):
        call()


# ---------------- BLEU ----------------

def rotten_snippets(n=1500):
    from tlcourse.data import load_rotten_tomatoes_reviews
    texts, _ = load_rotten_tomatoes_reviews()
    return [t for t in texts[:n] if t.strip()]


def perturb(text, rng):
    words = text.split()
    out = [w for w in words if rng.random() > 0.2] + [w for w in words if rng.random() < 0.1]
    if len(out) > 3 and rng.random() < 0.5:
        i = int(rng.integers(len(out) - 1)); out[i], out[i + 1] = out[i + 1], out[i]
    return " ".join(out)


def streams(refs):
    refs = [[r] if isinstance(r, str) else r for r in refs]
    return [[r[i] if i < len(r) else None for r in refs] for i in range(max(map(len, refs)))]


RANDOM_VOCAB = ["the", "a", "film", "is", "good", "bad", ".", ",", "3.5", "1,000", "3-4", "(", ")", "it's", "&amp;",
                "don't", "$", "!", "?", "--", "-", "x", "y", "10.", "\"", "'", ";", ":", "2-", "e.g."]


def random_sentence(rng, max_len=12):
    words = rng.choice(RANDOM_VOCAB, int(rng.integers(0, max_len)))
    # join sometimes without spaces so the tokenizer must split punctuation from words and numbers
    return "".join(w + (" " if rng.random() < 0.7 else "") for w in words) + (" " if rng.random() < 0.1 else "")


def test_tokenizer_matches_sacrebleu_13a():
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
    reference = Tokenizer13a()
    rng = np.random.default_rng(4)
    lines = rotten_snippets(500) + [random_sentence(rng, 25) for _ in range(500)] + ["a-\nb\nc <skipped> &quot;x&quot; &lt;y&gt;"]
    for line in lines:
        assert tokenize_13a(line) == reference(line.rstrip()).split(), line


def test_corpus_bleu_equals_sacrebleu_on_real_text():
    rng = np.random.default_rng(5)
    snippets = rotten_snippets()
    for _ in range(80):
        idx = rng.integers(0, len(snippets), int(rng.integers(1, 40)))
        hyps = [perturb(snippets[i], rng) if rng.random() < 0.8 else snippets[int(rng.integers(len(snippets)))] for i in idx]
        refs = [[snippets[i]] + [perturb(snippets[i], rng) for _ in range(int(rng.integers(0, 3)))] for i in idx]
        ours, ref = bleu_score(hyps, refs), sacrebleu.corpus_bleu(hyps, streams(refs)).score
        assert abs(ours - ref) < 1e-6, (ours, ref)
        single = [r[0] for r in refs]
        assert abs(bleu_score(hyps, single) - sacrebleu.corpus_bleu(hyps, [single]).score) < 1e-6


def test_corpus_bleu_equals_sacrebleu_on_random_text():
    rng = np.random.default_rng(6)
    for _ in range(300):
        n = int(rng.integers(1, 6))  # small corpora: zero counts and smoothing matter
        hyps = [random_sentence(rng) for _ in range(n)]
        refs = [[random_sentence(rng) for _ in range(int(rng.integers(1, 4)))] for _ in range(n)]
        ours, ref = bleu_score(hyps, refs), sacrebleu.corpus_bleu(hyps, streams(refs)).score
        assert abs(ours - ref) < 1e-6, (hyps, refs, ours, ref)


@pytest.mark.parametrize("smooth, value", [("exp", None), ("floor", None), ("floor", 0.3), ("add-k", None), ("add-k", 2), ("none", None)])
def test_bleu_smoothing_options_equal_sacrebleu(smooth, value):
    rng = np.random.default_rng(7)
    for _ in range(100):
        n = int(rng.integers(1, 4))
        hyps = [random_sentence(rng) for _ in range(n)]
        refs = [random_sentence(rng) for _ in range(n)]
        ref = sacrebleu.corpus_bleu(hyps, [refs], smooth_method=smooth, smooth_value=value).score
        assert abs(bleu_score(hyps, refs, smooth=smooth, smooth_value=value) - ref) < 1e-6


def test_sentence_bleu_equals_sacrebleu():
    rng = np.random.default_rng(8)
    snippets = rotten_snippets()
    for _ in range(300):
        i = int(rng.integers(len(snippets)))
        hyp = perturb(snippets[i], rng) if rng.random() < 0.5 else random_sentence(rng)
        refs = [snippets[i]] + [perturb(snippets[i], rng) for _ in range(int(rng.integers(0, 3)))]
        if rng.random() < 0.3: refs = [random_sentence(rng) for _ in range(int(rng.integers(1, 3)))]
        ref = sacrebleu.sentence_bleu(hyp, refs).score
        assert abs(sentence_bleu(hyp, refs) - ref) < 1e-6, (hyp, refs)
    assert abs(sentence_bleu("the cat", "the cat") - sacrebleu.sentence_bleu("the cat", ["the cat"]).score) < 1e-6


def test_bleu_statistics_clip_and_closest_length():
    s = bleu_statistics("the the the the", ["the cat", "the the dog"])
    assert s == {"hyp_len": 4, "ref_len": 3, "matches": [2, 1, 0, 0], "totals": [4, 3, 2, 1]}
    assert bleu_statistics("a b c", ["a b", "a b c d"])["ref_len"] == 2  # tie: the shorter reference


@pytest.mark.parametrize("call, error, words", [
    (lambda: bleu_score(["a", "b"], ["a"]), ValueError, "2 hypotheses but 1"),
    (lambda: bleu_score([], []), ValueError, "empty corpus"),
    (lambda: bleu_score("a b", ["a b"]), TypeError, "wrap it"),
    (lambda: bleu_score(["a"], [[]]), TypeError, "non-empty list"),
    (lambda: bleu_score(["a"], [3]), TypeError, "reference"),
    (lambda: bleu_score(["a"], ["a"], smooth="laplace"), ValueError, "is not one of"),
    (lambda: sentence_bleu("a", []), TypeError, "non-empty list"),
])
def test_bad_bleu_inputs_say_what_is_wrong(call, error, words):
    with pytest.raises(error, match=words):
        call()


# ---------------- perplexity and calibration ----------------

def test_perplexity_by_hand():
    torch.manual_seed(0)
    logits, targets = torch.randn(3, 5, 11, dtype=torch.float64), torch.randint(0, 11, (3, 5))
    targets[0, 3:] = -100; targets[2, 0] = -100
    nll, count = 0.0, 0
    for b in range(3):
        for t in range(5):
            if targets[b, t] == -100: continue
            row = logits[b, t]
            nll += math.log(sum(math.exp(v) for v in row.tolist())) - row[targets[b, t]].item(); count += 1
    assert perplexity(logits, targets) == pytest.approx(math.exp(nll / count), rel=1e-10)
    assert perplexity(torch.zeros(2, 4, 9), torch.zeros(2, 4, dtype=torch.long)) == pytest.approx(9, rel=1e-6)
    assert perplexity(logits, targets.masked_fill(targets == -100, 0) * 0 + 1, ignore_index=0) > 0


@pytest.mark.parametrize("logits, targets, words", [
    (torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), r"\[B, T, V\]"),
    (torch.zeros(2, 3, 4), torch.zeros(2, 2, dtype=torch.long), r"\[B, T, V\]"),
    (torch.zeros(1, 2, 4), torch.full((1, 2), -100), "no tokens"),
    (torch.zeros(1, 2, 4), torch.tensor([[0, 4]]), r"\[0, 4\)"),
])
def test_perplexity_bad_inputs(logits, targets, words):
    with pytest.raises(ValueError, match=words):
        perplexity(logits, targets)


def ece_by_loop(probs, labels, n_bins):
    edges, total = np.linspace(0, 1, n_bins + 1), 0.0
    for lo, hi in zip(edges[:-1], edges[1:]):
        members = [i for i in range(len(probs)) if lo < probs[i].max() <= hi]
        if members:
            acc = np.mean([probs[i].argmax() == labels[i] for i in members])
            conf = np.mean([probs[i].max() for i in members])
            total += len(members) / len(probs) * abs(acc - conf)
    return total


def test_ece_equals_direct_loop():
    rng = np.random.default_rng(9)
    for _ in range(30):
        n, c = int(rng.integers(1, 200)), int(rng.integers(2, 10))
        probs = torch.softmax(torch.tensor(rng.normal(size=(n, c)) * rng.uniform(0.1, 5)), -1).numpy()
        labels = rng.integers(0, c, n)
        for n_bins in [1, 5, 15]:
            assert expected_calibration_error(probs, labels, n_bins) == pytest.approx(ece_by_loop(probs, labels, n_bins), abs=1e-12)
    # a bin edge: confidence exactly 0.5 belongs to the bin (0.4, 0.5] with 10 bins
    b = calibration_bins(np.array([[0.5, 0.5], [0.9, 0.1]]), [0, 1], 10)
    assert b["count"][4] == 1 and b["count"][8] == 1 and b["accuracy"][8] == 0


def test_ece_of_perfectly_calibrated_and_overconfident():
    probs = np.array([[1.0, 0.0]] * 10)
    assert expected_calibration_error(probs, [0] * 10) == 0
    assert expected_calibration_error(probs, [0] * 7 + [1] * 3) == pytest.approx(0.3)


def test_calibration_bad_inputs():
    with pytest.raises(ValueError, match="softmax"):
        expected_calibration_error(np.array([[2.0, -1.0]]), [0])
    with pytest.raises(ValueError, match="same examples"):
        expected_calibration_error(np.array([[0.5, 0.5]]), [0, 1])
    with pytest.raises(ValueError, match="num_classes=3"):
        expected_calibration_error(np.array([[0.5, 0.5]]), [2])
    with pytest.raises(ValueError, match="n_bins"):
        expected_calibration_error(np.array([[0.5, 0.5]]), [0], n_bins=0)


def test_reliability_diagram_draws_on_given_axes():
    import matplotlib; matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rng = np.random.default_rng(10)
    probs = torch.softmax(torch.tensor(rng.normal(size=(100, 4))), -1)
    fig, ax = plt.subplots()
    assert reliability_diagram(probs, rng.integers(0, 4, 100), n_bins=10, ax=ax) is ax
    assert "ECE" in ax.get_title() and len(ax.patches) == 20
    plt.close(fig)


# ---------------------------------------------------------------- issue 13: empty and non-finite input is refused
def test_top_k_refuses_nan_and_inf_scores_but_allows_masked_classes():
    with pytest.raises(ValueError, match=r"NaN or \+inf"):
        top_k_accuracy(np.full((3, 4), np.nan), [0, 1, 2], k=1)  # used to answer 1.0
    with pytest.raises(ValueError, match=r"NaN or \+inf"):
        top_k_accuracy(torch.tensor([[math.inf, 0.0, 1.0]]), [1], k=1)
    with pytest.raises(ValueError, match="no examples"):
        top_k_accuracy(np.zeros((0, 4)), [], k=1)
    masked = np.array([[2.0, -math.inf, 1.0], [0.0, 3.0, -math.inf]])  # -inf marks a class that cannot be predicted
    assert top_k_accuracy(masked, [2, 0], k=1) == 0.0 and top_k_accuracy(masked, [2, 0], k=2) == 1.0


def test_perplexity_refuses_nan_and_inf_logits():
    targets = torch.zeros(1, 2, dtype=torch.long)
    for bad in (math.nan, math.inf):
        logits = torch.zeros(1, 2, 3)
        logits[0, 1, 2] = bad
        with pytest.raises(ValueError, match=r"perplexity: logits hold 1 NaN or \+inf"):
            perplexity(logits, targets)
    with pytest.raises(ValueError, match="no tokens"):
        perplexity(torch.zeros(0, 3, 5), torch.zeros(0, 3, dtype=torch.long))  # an empty batch
    masked = torch.tensor([[[0.0, 0.0, -math.inf]]])
    assert perplexity(masked, torch.zeros(1, 1, dtype=torch.long)) == pytest.approx(2.0)
    assert perplexity(torch.zeros(1, 2, 4, dtype=torch.bfloat16), targets) == pytest.approx(4.0, rel=1e-2)  # bfloat16 rounding


def test_calibration_refuses_empty_and_non_finite_probabilities():
    for probs in (np.array([[np.nan, np.nan], [0.5, 0.5]]), np.array([[np.inf, 0.0]])):
        with pytest.raises(ValueError, match="NaN or inf"):
            expected_calibration_error(probs, [0, 1][:len(probs)])  # NaN used to give ECE nan
        with pytest.raises(ValueError, match="NaN or inf"):
            calibration_bins(probs, [0, 1][:len(probs)])
    with pytest.raises(ValueError, match="no examples"):
        expected_calibration_error(np.zeros((0, 3)), [])
