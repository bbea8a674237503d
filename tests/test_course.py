"""Experiment profiles and claims (tlcourse.evaluate, the evaluation protocol): profile choice, sizes, claims against scipy, never raising."""
import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tlcourse.evaluate import Claims, experiment_profile, experiment_sizes


@pytest.fixture
def clean_env(monkeypatch):
    monkeypatch.delenv("TLCOURSE_PROFILE", raising=False)
    monkeypatch.delenv("IN_TEST", raising=False)
    monkeypatch.delenv("TLCOURSE_CLAIMS_FILE", raising=False)
    return monkeypatch


def test_profile_defaults_to_lecture_and_quick_under_the_test_runner(clean_env):
    assert experiment_profile() == "lecture"
    clean_env.setenv("IN_TEST", "1")
    assert experiment_profile() == "quick"


def test_profile_variable_overrides_and_is_checked(clean_env):
    clean_env.setenv("IN_TEST", "1")
    clean_env.setenv("TLCOURSE_PROFILE", " Lecture ")
    assert experiment_profile() == "lecture"
    clean_env.setenv("TLCOURSE_PROFILE", "fast")
    with pytest.raises(ValueError, match="TLCOURSE_PROFILE must be one of lecture, quick"):
        experiment_profile()


def test_sizes_pick_one_profile(clean_env):
    lecture, quick = dict(steps=300, seeds=[0, 1, 2]), dict(steps=5, seeds=[0, 1])
    sizes = experiment_sizes(lecture=lecture, quick=quick)
    assert (sizes.profile, sizes.steps, sizes.seeds) == ("lecture", 300, [0, 1, 2])
    clean_env.setenv("TLCOURSE_PROFILE", "quick")
    sizes = experiment_sizes(lecture=lecture, quick=quick)
    assert (sizes.profile, sizes.steps, sizes.as_dict()) == ("quick", 5, quick)
    assert "profile 'quick'" in repr(sizes)


@pytest.mark.parametrize("lecture, quick, error, match", [
    (dict(steps=3, seeds=[0]), dict(steps=1), ValueError, "only in lecture: \\['seeds'\\]"),
    ({}, dict(steps=1), TypeError, "non-empty dict"),
    (dict(steps=3), [("steps", 1)], TypeError, "`quick` must be a non-empty dict"),
    (dict(profile=3), dict(profile=1), ValueError, "reserved"),
])
def test_sizes_refuse_bad_declarations(clean_env, lecture, quick, error, match):
    with pytest.raises(error, match=match):
        experiment_sizes(lecture=lecture, quick=quick)


def test_sizes_refuse_unknown_profile():
    with pytest.raises(ValueError, match="profile must be one of"):
        experiment_sizes(lecture=dict(a=1), quick=dict(a=0), profile="full")


def test_better_matches_scipys_paired_interval():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.normal(0.8, 0.05, 4)
        b = a - rng.normal(0.02, 0.02, 4)
        claims = Claims(profile="lecture")
        holds = claims.better("a beats b", a, b)
        ci = stats.ttest_rel(a, b).confidence_interval(0.95)
        assert holds == (ci.low > 0)
        assert f"[{ci.low:+.3f}, {ci.high:+.3f}]" in claims.rows[0]["measured"]
        assert claims.no_clear_difference("level", a, b) == (ci.low <= 0 <= ci.high)


def test_better_with_margin_and_series_aligned_by_seed():
    a = pd.Series([0.90, 0.85, 0.88], index=[2, 0, 1])
    b = pd.Series([0.80, 0.83, 0.84], index=[0, 1, 2])  # seed 0: 0.85-0.80, seed 1: 0.88-0.83, seed 2: 0.90-0.84
    claims = Claims(profile="lecture")
    assert claims.better("a beats b", a, b)
    assert not claims.better("a beats b by 0.1", a, b, margin=0.1)
    diffs = np.array([0.05, 0.05, 0.06])
    assert f"{diffs.mean():+.3f}" in claims.rows[0]["measured"]


def test_claims_never_raise_and_record_why():
    claims = Claims(profile="lecture")
    assert not claims.better("one seed", [0.9], [0.8])
    assert not claims.better("mismatched", [0.9, 0.8], [0.8])
    assert not claims.greater("nan", float("nan"), 0.5)
    assert not claims.less("not a number", "abc", 0.5)
    assert not claims.better("different seeds", pd.Series([1.0, 2.0], index=[0, 1]), pd.Series([1.0, 2.0], index=[0, 2]))
    assert all(r["measured"].startswith("not computable") for r in claims.rows)
    assert claims.failed == ["one seed", "mismatched", "nan", "not a number", "different seeds"]
    with pytest.raises(TypeError, match="non-empty string"):
        claims.check("", True, "x")  # a claim without words is a programming error, not a finding


def test_margins_and_rerun_replaces_a_claim():
    claims = Claims(profile="lecture")
    assert claims.greater("x above y", 0.8, 0.7, margin=0.05)
    assert not claims.greater("x above y", 0.8, 0.78, margin=0.05)
    assert claims.less("x below y", 0.1, 0.3, margin=0.1) and not claims.less("x below y", 0.25, 0.3, margin=0.1)
    assert [r["claim"] for r in claims.rows] == ["x above y", "x below y"]
    assert claims.failed == ["x above y", "x below y"]


def test_verdicts_by_profile():
    quick = Claims(profile="quick"); quick.check("c", False, "m")
    assert quick.verdict().startswith("Quick profile: 0 of 1 claims hold")
    lecture = Claims(profile="lecture"); lecture.check("c", True, "m")
    assert lecture.verdict() == "All 1 claims hold on this run."
    lecture.check("d", False, "m")
    assert lecture.verdict().startswith("1 of 2 claims do not hold on this run.")


def test_report_writes_the_claims_file(clean_env, tmp_path, capsys):
    target = tmp_path / "claims" / "lecture.json"
    clean_env.setenv("TLCOURSE_CLAIMS_FILE", str(target))
    claims = Claims()
    claims.greater("up", 2.0, 1.0)
    claims.report()
    data = json.loads(target.read_text())
    assert data["profile"] == "lecture"
    assert data["claims"] == [dict(claim="up", measured="2.000 vs 1.000", test="greater", holds=True)]
    assert "All 1 claims hold" in capsys.readouterr().out
