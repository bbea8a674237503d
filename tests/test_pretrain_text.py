"""Text pretraining: WordPiece vocabulary, BERT masking, next-token targets, LM losses, tasks, shipped checkpoints."""
import math, warnings
from collections import Counter

import pytest
import torch
import torch.nn.functional as F

from tlcourse.learner import set_seed
from tlcourse.models import TinyTransformer
from tlcourse.pretrain_text import (CLS_ID, MASK_ID, PAD_ID, SEP_ID, SPECIAL_TOKENS, UNK_ID, LanguageModel,
                                    MaskedLMBatch, NextTokenBatch, TextTokenizer, fill_mask, heldout_perplexity,
                                    lm_loss, load_text_tokenizer, mask_tokens, mlm_task, next_token_targets,
                                    next_token_task, pad_sequences, rotten_tomatoes_text_splits, sentiment_benchmark,
                                    text_classifier,
                                    text_tokenizer, unigram_log_probs, wordpiece_encode)

N_SPECIAL = len(SPECIAL_TOKENS)


@pytest.fixture(scope="module")
def splits():
    return rotten_tomatoes_text_splits()


@pytest.fixture(scope="module")
def small_tokenizer():
    return TextTokenizer.from_corpus(["the film is good", "the film is bad", "a good film"], max_size=20, min_count=1)


def test_splits_keep_test_reviews_out_of_pretraining(splits):
    from tlcourse.data import load_rotten_tomatoes
    df = load_rotten_tomatoes()
    film_of = dict(zip(df["text"], df["movie"]))
    assert not set(splits["test_texts"]) & set(splits["pretrain_texts"])
    test_films = {film_of[t] for t in splits["test_texts"]}
    assert not test_films & {film_of[t] for t in splits["pretrain_texts"]}  # split by film, not by review
    assert len(splits["test_texts"]) == len(splits["test_labels"]) > 1000
    assert set(splits["train_labels"].tolist()) == {0, 1}
    with pytest.raises(ValueError, match="test_fraction"):
        rotten_tomatoes_text_splits(test_fraction=1.5)


def test_vocabulary_round_trip_and_unknown(small_tokenizer, tmp_path):
    tok = small_tokenizer
    assert tok.vocab_size == N_SPECIAL + len(set(wordpiece_encode(["the film is good a bad"])[0]))
    wp = wordpiece_encode(["a good film is bad"])[0]
    ours = tok.encode(["a good film is bad"])[0]
    assert tok.wordpiece_ids[ours].tolist() == wp  # every piece is in the vocabulary: exact round trip
    assert tok.decode(ours) == "a good film is bad"
    ours = tok.encode(["the zebra is good"])[0]
    kept = set(tok.wordpiece_ids.tolist())
    expected = [tok.lookup[i].item() if i in kept else UNK_ID for i in wordpiece_encode(["the zebra is good"])[0]]
    assert ours == expected and UNK_ID in ours
    sha = tok.save(tmp_path / "vocab.json")
    assert len(sha) == 64 and TextTokenizer.load(tmp_path / "vocab.json").wordpiece_ids.tolist() == tok.wordpiece_ids.tolist()


def test_vocabulary_errors(small_tokenizer, tmp_path):
    with pytest.raises(ValueError, match="special tokens"):
        TextTokenizer([1, 2, 3, 4, 5])
    with pytest.raises(ValueError, match="duplicates"):
        TextTokenizer(small_tokenizer.wordpiece_ids.tolist() + [small_tokenizer.wordpiece_ids[-1].item()])
    with pytest.raises(TypeError, match="list of strings"):
        small_tokenizer.encode("a single string")
    with pytest.raises(FileNotFoundError, match="No vocabulary file"):
        TextTokenizer.load(tmp_path / "missing.json")


def test_long_text_is_truncated_with_a_warning(small_tokenizer):
    long_text = " ".join(["good film"] * 30)
    with pytest.warns(UserWarning, match="1 of 2 texts .* truncated"):
        batch = small_tokenizer(["good film", long_text], max_len=10)
    assert batch.shape == (2, 10)
    assert batch[1, 0] == CLS_ID and batch[1, -1] == SEP_ID and batch[0, 4:].eq(PAD_ID).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # short texts: no warning
        small_tokenizer(["good film"], max_len=10)
    with pytest.raises(ValueError, match="max_len must be at least 3"):
        small_tokenizer(["good"], max_len=2)
    pieces = small_tokenizer.chunks([long_text], max_len=10)
    assert [i for p in pieces for i in p[1:-1].tolist()] == small_tokenizer.encode([long_text])[0]
    assert all(len(p) <= 10 and p[0] == CLS_ID and p[-1] == SEP_ID for p in pieces)


def _random_batch(n=2000, length=40, vocab=500, seed=0):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(3, length + 1, (n,), generator=g)
    seqs = [torch.cat([torch.tensor([CLS_ID]), torch.randint(N_SPECIAL, vocab, (int(L) - 2,), generator=g),
                       torch.tensor([SEP_ID])]) for L in lengths]
    return pad_sequences(seqs)


def test_masking_statistics_follow_bert():
    tokens = _random_batch()
    inputs, labels = mask_tokens(tokens, 500, generator=torch.Generator().manual_seed(0))
    real, chosen = tokens >= N_SPECIAL, labels != -100
    assert (chosen <= real).all()  # never padding, [CLS] or [SEP]
    per_row = chosen.sum(1)
    assert torch.equal(per_row, (real.sum(1) * 0.15).round().long().clamp(min=1))  # BERT's count per sequence
    assert abs(chosen.sum() / real.sum() - 0.15) < 0.01
    masked = (inputs[chosen] == MASK_ID).float().mean()
    kept = (inputs[chosen] == tokens[chosen]).float().mean()
    replaced = ((inputs[chosen] != MASK_ID) & (inputs[chosen] != tokens[chosen])).float().mean()
    assert abs(masked - 0.8) < 0.015 and abs(kept - 0.1) < 0.015 and abs(replaced - 0.1) < 0.015
    assert (inputs[chosen & (inputs != MASK_ID)] >= N_SPECIAL).all()  # random replacements are real tokens
    assert torch.equal(labels[chosen], tokens[chosen]) and (labels[~chosen] == -100).all()
    assert torch.equal(inputs[~chosen], tokens[~chosen])
    again, _ = mask_tokens(tokens, 500, generator=torch.Generator().manual_seed(0))
    assert torch.equal(inputs, again)  # seeded: reproducible
    with pytest.raises(ValueError, match="mask_prob"):
        mask_tokens(tokens, 500, mask_prob=1.5)


def test_next_token_targets_by_hand():
    tokens = _random_batch(n=5, length=8, vocab=50)
    targets = next_token_targets(tokens)
    for b in range(tokens.shape[0]):
        for t in range(tokens.shape[1]):
            nxt = tokens[b, t + 1].item() if t + 1 < tokens.shape[1] else PAD_ID
            assert targets[b, t].item() == (-100 if nxt == PAD_ID else nxt)


def _direct_loss(logits, labels):
    "Mean of -log softmax(logits)[label] over the scored positions, with explicit loops."
    total, count = 0.0, 0
    for b in range(labels.shape[0]):
        for t in range(labels.shape[1]):
            if labels[b, t] != -100:
                row = logits[b, t].double()
                total += (torch.log(torch.exp(row).sum()) - row[labels[b, t]]).item()
                count += 1
    return total / count


@pytest.mark.parametrize("causal", [False, True])
def test_lm_losses_match_direct_computation(causal):
    set_seed(0)
    tokens = _random_batch(n=6, length=12, vocab=60)
    lm = LanguageModel(TinyTransformer(60, None, d_model=16, n_heads=2, max_len=16, causal=causal)).eval()
    set_seed(1)
    batch = (NextTokenBatch() if causal else MaskedLMBatch(60))(list(tokens))
    set_seed(1)
    inputs, labels = (tokens, next_token_targets(tokens)) if causal else mask_tokens(tokens, 60)
    assert torch.equal(batch["tokens"], inputs) and torch.equal(batch["labels"], labels[labels != -100])
    logits = lm(batch["tokens"])
    assert logits.shape == (*batch["tokens"].shape, 60)
    assert lm_loss(logits, labels).item() == pytest.approx(_direct_loss(logits, labels), abs=1e-5)
    sparse = lm(batch["tokens"], predict_at=batch["predict_at"])
    assert sparse.shape == (int((labels != -100).sum()), 60)
    assert lm_loss(sparse, labels).item() == pytest.approx(lm_loss(logits, labels).item(), abs=1e-5)
    assert lm_loss(sparse, batch["labels"]).item() == pytest.approx(lm_loss(logits, labels).item(), abs=1e-5)
    with pytest.raises(ValueError, match="no position is scored"):
        lm_loss(logits, torch.full_like(labels, -100))


def test_causal_prediction_ignores_later_tokens():
    set_seed(0)
    tokens = _random_batch(n=1, length=20, vocab=60)
    tokens[0, -1] = SEP_ID
    changed = tokens.clone()
    changed[0, 8:-1] = torch.randint(N_SPECIAL, 60, (tokens.shape[1] - 9,))
    for causal in (True, False):
        lm = LanguageModel(TinyTransformer(60, None, d_model=16, n_heads=2, max_len=32, causal=causal)).eval()
        with torch.no_grad(): before, after = lm(tokens), lm(changed)
        same_prefix = torch.allclose(before[0, :8], after[0, :8], atol=1e-5)
        assert same_prefix == causal  # only the causal model is blind to the future


def test_tasks_train_and_reduce_loss():
    from tlcourse.pretrain import make_task, pretrain
    for objective, causal in (("mlm", False), ("next_token", True)):
        task = make_task(objective, seed=0, n_train=128, epochs=2, batch_size=32, d_model=32, n_valid=32, lr=5e-3)
        assert task.objective == objective and task.model.causal == causal
        assert task.architecture["vocab_size"] == task.model.vocab_size
        history = pretrain(task, seed=0, progress=False).history
        losses = history.train_loss
        assert sum(losses[-3:]) < sum(losses[:3]) - 0.1
    with pytest.raises(ValueError, match="Unknown setting"):
        mlm_task(n_layer=3)


def test_unigram_baseline_by_hand():
    seqs = [torch.tensor([CLS_ID, 7, 8, 7, SEP_ID]), torch.tensor([CLS_ID, 9, UNK_ID, SEP_ID])]
    log_p = unigram_log_probs(seqs, "next_token", 10)
    counts = Counter([7, 8, 7, SEP_ID, 9, UNK_ID, SEP_ID])
    assert log_p.exp().sum().item() == pytest.approx(1.0, abs=1e-5)
    assert log_p[7].exp().item() == pytest.approx((counts[7] + 1) / (7 + 10), abs=1e-6)
    log_p = unigram_log_probs(seqs, "mlm", 10)
    assert torch.isinf(log_p[:N_SPECIAL]).all() and log_p[7].exp().item() == pytest.approx(3 / (4 + 5), abs=1e-6)


def test_heldout_perplexity_is_exp_of_mean_loss():
    set_seed(0)
    model = TinyTransformer(60, None, d_model=16, n_heads=2, max_len=16, causal=True).eval()
    seqs = list(_random_batch(n=10, length=12, vocab=60))
    seqs = [s[s != PAD_ID] for s in seqs]
    result = heldout_perplexity(model, seqs, "next_token", unigram=torch.full((60,), -math.log(60)), batch_size=4)
    tokens = pad_sequences(seqs)
    with torch.no_grad(): loss = lm_loss(LanguageModel(model)(tokens), next_token_targets(tokens)).item()
    assert result["model"] == pytest.approx(math.exp(loss), rel=1e-4)
    assert result["unigram"] == pytest.approx(60, rel=1e-4)  # a uniform guess over 60 tokens
    with pytest.raises(ValueError, match="objective"):
        heldout_perplexity(model, seqs, "gpt")


def test_shipped_text_checkpoints(splits):
    from tlcourse.registry import load_pretrained
    tokenizer = load_text_tokenizer()
    assert tokenizer.wordpiece_ids.tolist() == text_tokenizer(tokenizer.vocab_size).wordpiece_ids.tolist()
    chunks = tokenizer.chunks(splits["test_texts"][:300])
    pretrain_chunks = tokenizer.chunks(splits["pretrain_texts"][:3000])
    for name, objective in (("mlm_transformer", "mlm"), ("next_token_transformer", "next_token")):
        model = load_pretrained(name)
        assert model.causal == (objective == "next_token")
        unigram = unigram_log_probs(pretrain_chunks, objective, tokenizer.vocab_size)
        result = heldout_perplexity(model, chunks, objective, unigram)
        assert result["model"] < 0.8 * result["unigram"]
    classifier = text_classifier("next_token_transformer")
    assert classifier(tokenizer(["a fine film"], max_len=64)).shape == (1, 2)
    assert text_classifier(None)(tokenizer(["a fine film"])).shape == (1, 2)
    with pytest.raises(KeyError, match="not a shipped text checkpoint"):
        load_text_tokenizer("fashion_cnn")
    with pytest.raises(ValueError, match="needs a text with a \\[MASK\\]"):
        fill_mask(load_pretrained("mlm_transformer"), tokenizer, "no blank here")


def test_sentiment_benchmark_is_balanced_and_keeps_films_apart(splits, small_tokenizer):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # long reviews are cut, with a warning
        bench = sentiment_benchmark(small_tokenizer, pool_per_class=50, test_per_class=30, max_len=16)
    labels, pool, test = bench["labels"], bench["pool_idx"], bench["test_idx"]
    assert len(bench["texts"]) == len(labels) == len(bench["tokens"]) == 160
    assert labels[pool].bincount().tolist() == [50, 50] and labels[test].bincount().tolist() == [30, 30]
    texts = bench["texts"]
    assert {texts[i] for i in pool.tolist()} <= set(splits["train_texts"])
    assert {texts[i] for i in test.tolist()} <= set(splits["test_texts"])
    assert bench["tokens"].shape[1] <= 16 and (bench["tokens"][:, 0] == CLS_ID).all()
    with pytest.raises(ValueError):
        sentiment_benchmark(small_tokenizer, pool_per_class=10**6)
