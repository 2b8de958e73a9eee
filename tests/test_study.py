"""The study layer: run records, paired gaps with user and seed noise, the one verdict rule."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np
import pytest

from recfunnel.metrics import paired_difference
from recfunnel.study import (
    Gap,
    Measurement,
    Outcome,
    Run,
    Verdict,
    claims_table,
    compare,
    exact_gap,
    git_commit,
    judge_better,
    ledger_record,
    load_runs,
    paired_gap,
    report_commit,
    run_variants,
    save_runs,
    seed_gap,
)


def make_run(variant: str, seed: int, ndcg: np.ndarray | None = None, auc: float = 0.7) -> Run:
    per_user = {} if ndcg is None else {"ndcg@10": ndcg}
    metrics = {"auc": auc} | ({"ndcg@10": float(ndcg.mean())} if ndcg is not None else {})
    return Run(model="toy", variant=variant, seed=seed, profile="smoke", config={"d": 8},
               metrics=metrics, per_user=per_user, version="0", commit="abc")


def test_one_seed_gap_is_the_classic_paired_test():
    rng = np.random.default_rng(0)
    a, b = rng.random(500), rng.random(500)
    gap = paired_gap(a, b)
    assert (gap.mean, gap.se) == pytest.approx(paired_difference(a, b))
    assert gap.n_seeds == 1 and gap.n_users == 500
    assert gap.noise == "500 users and one seed"
    assert paired_gap(a, b, unit="requests").noise == "500 requests and one seed"


def test_the_standard_error_adds_the_seed_term_to_the_user_term():
    rng = np.random.default_rng(1)
    a = rng.random((3, 400))
    b = a - np.array([[0.05], [-0.03], [0.01]]) + 0.01 * rng.standard_normal((3, 400))
    gap = paired_gap(a, b)
    diff = a - b
    expected = math.sqrt(diff.mean(0).var(ddof=1) / 400 + diff.mean(1).var(ddof=1) / 3)
    assert gap.se == pytest.approx(expected)
    # the seeds disagree far more than the users within a seed: the user term alone would
    # claim a significant gap that the seed term correctly calls noise
    assert gap.se > 5 * diff.mean(0).std(ddof=1) / math.sqrt(400)
    assert Verdict.better("a beats b", gap).outcome is Outcome.NOT_RESOLVED


def test_under_no_true_difference_the_rule_rarely_claims_one():
    """Training noise shifts every user of a seed together: a rule that ignores it claims a
    difference in most such null experiments, the book's rule in few."""
    rng = np.random.default_rng(2)
    claims, naive_claims = 0, 0
    for _ in range(400):
        shift = 0.02 * rng.standard_normal((3, 1))  # per-seed training noise, no true gap
        diff = shift + 0.2 * rng.standard_normal((3, 943))  # plus per-user noise
        gap = paired_gap(diff, np.zeros_like(diff))
        claims += Verdict.better("", gap).outcome is not Outcome.NOT_RESOLVED
        naive_se = diff.mean(0).std(ddof=1) / math.sqrt(943)
        naive_claims += abs(diff.mean()) > 2 * naive_se
    assert claims / 400 < 0.15
    assert naive_claims / 400 > 0.4


@pytest.mark.parametrize(("mean", "se", "outcome"), [
    (0.05, 0.01, Outcome.HELD), (-0.05, 0.01, Outcome.NOT_HELD),
    (0.015, 0.01, Outcome.NOT_RESOLVED), (0.05, math.nan, Outcome.NOT_RESOLVED),
])
def test_superiority_rule(mean, se, outcome):
    assert Verdict.better("claim", Gap("a", "b", "m", mean, se)).outcome is outcome


def test_a_threshold_moves_the_bar():
    gap = Gap("a", "b", "slope", 0.9, 0.05)
    assert Verdict.better("", gap, threshold=0.5).outcome is Outcome.HELD
    assert Verdict.better("", gap, threshold=1.2).outcome is Outcome.NOT_HELD


def test_non_inferiority_is_never_called_held():
    far_ahead = Verdict.not_worse("not worse", Gap("a", "b", "m", 0.3, 0.01), margin=0.02)
    assert far_ahead.outcome is Outcome.NOT_WORSE and "held" not in far_ahead.text
    assert far_ahead.text == "not worse (margin 0.02)"
    assert Verdict.not_worse("", Gap("a", "b", "m", -0.1, 0.01), 0.02).outcome is Outcome.NOT_HELD
    assert Verdict.not_worse("", Gap("a", "b", "m", -0.02, 0.01), 0.02).outcome \
        is Outcome.NOT_RESOLVED
    with pytest.raises(ValueError, match="margin"):
        Verdict.not_worse("", Gap("a", "b", "m", 0, 0.01), margin=0)


def test_a_composite_claim_is_its_weakest_part():
    held = Verdict.better("", exact_gap(1.0, a="x"))
    not_worse = Verdict.not_worse("", Gap("a", "b", "m", 0.0, 0.001), margin=0.01)
    failed = Verdict.better("", exact_gap(-1.0, a="x"))
    assert Verdict.all_of("", [held, held]).outcome is Outcome.HELD
    assert Verdict.all_of("", [held, not_worse]).outcome is Outcome.NOT_WORSE
    assert Verdict.all_of("", [held, not_worse]).text == "not worse (margin 0.01)"
    assert Verdict.all_of("", [held, held]).margin is None
    assert Verdict.all_of("", [held, not_worse, failed]).outcome is Outcome.NOT_HELD


def test_compare_pairs_runs_by_seed_and_user():
    rng = np.random.default_rng(3)
    runs = []
    for seed in (0, 1, 2):
        base = rng.random(300)
        runs += [make_run("new", seed, base + 0.1), make_run("old", seed, base)]
    gap = compare(runs, "new", "old", "ndcg@10")
    assert gap.mean == pytest.approx(0.1) and gap.n_seeds == 3 and gap.n_users == 300
    assert Verdict.better("new beats old", gap).outcome is Outcome.HELD


def test_compare_falls_back_to_seed_pairs_for_aggregate_metrics():
    runs = [make_run("new", s, auc=0.70 + 0.01 * s + 0.02) for s in range(3)]
    runs += [make_run("old", s, auc=0.70 + 0.01 * s) for s in range(3)]
    gap = compare(runs, "new", "old", "auc")
    assert gap.mean == pytest.approx(0.02) and gap.se == pytest.approx(0.0)
    assert gap.n_users == 0 and gap.noise == "3 seeds"
    one_seed = compare(runs[:1] + runs[3:4], "new", "old", "auc")
    assert math.isnan(one_seed.se)
    assert Verdict.better("", one_seed).outcome is Outcome.NOT_RESOLVED


def test_compare_names_what_is_missing():
    runs = [make_run("new", 0, auc=0.7), make_run("old", 1, auc=0.6)]
    with pytest.raises(KeyError, match="'nope'.*'new', 'old'"):
        compare(runs, "nope", "old", "auc")
    with pytest.raises(ValueError, match="share no seed"):
        compare(runs, "new", "old", "auc")
    with pytest.raises(KeyError, match="no metric 'gauc'"):
        compare([make_run("new", 0), make_run("old", 0)], "new", "old", "gauc")


def test_worlds_drawn_per_seed_use_the_independent_seed_means():
    rng = np.random.default_rng(4)
    runs = []
    for seed, n_users in ((0, 200), (1, 250), (2, 300)):
        base = rng.random(n_users)
        runs += [make_run("new", seed, base + 0.05 * (seed + 1)), make_run("old", seed, base)]
    gap = compare(runs, "new", "old", "ndcg@10")
    assert gap.mean == pytest.approx(0.1)
    assert gap.se == pytest.approx(np.std([0.05, 0.10, 0.15], ddof=1) / math.sqrt(3))


def test_runs_survive_a_json_round_trip(tmp_path):
    runs = [make_run("new", 0, np.linspace(0, 1, 7)), make_run("old", 0, np.zeros(7))]
    path = save_runs(tmp_path / "runs.json", runs, command="python bench.py")
    assert json.loads(path.read_text())["command"] == "python bench.py"
    loaded = load_runs(path)
    assert [r.variant for r in loaded] == ["new", "old"]
    np.testing.assert_array_equal(loaded[0].per_user["ndcg@10"], np.linspace(0, 1, 7))
    assert loaded[0].metrics == runs[0].metrics and loaded[0].config == {"d": 8}
    assert not list(tmp_path.glob("*.partial"))


def test_a_malformed_record_is_refused_by_field(tmp_path):
    record = make_run("new", 0).to_dict()
    with pytest.raises(ValueError, match="unknown fields \\['colour'\\]"):
        Run.from_dict(record | {"colour": "red"})
    del record["metrics"]
    with pytest.raises(ValueError, match="lacks \\['metrics'\\]"):
        Run.from_dict(record)
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ValueError, match="no 'runs' list"):
        load_runs(tmp_path / "x.json")


@dataclass(frozen=True)
class ToyConfig:
    offset: float


def test_run_variants_trains_every_variant_on_every_seed():
    def train(cfg: ToyConfig, seed: int) -> Measurement:
        users = np.random.default_rng(seed).random(50)
        return Measurement({"ndcg@10": users.mean() + cfg.offset}, {"ndcg@10": users + cfg.offset},
                           epochs=3, best_epoch=2)

    runs = run_variants(train, {"plus": ToyConfig(0.2), "zero": ToyConfig(0.0)}, [0, 1],
                        model="toy", profile="smoke", progress=False)
    assert [(r.variant, r.seed) for r in runs] == [("plus", 0), ("zero", 0), ("plus", 1),
                                                   ("zero", 1)]
    assert runs[0].config == {"offset": 0.2} and runs[0].best_epoch == 2
    gap = compare(runs, "plus", "zero", "ndcg@10")
    assert gap.mean == pytest.approx(0.2) and gap.se == pytest.approx(0.0, abs=1e-12)


def test_claims_table_renders_verdicts():
    verdicts = {"1": Verdict.better("a beats b", Gap("a", "b", "m", 0.1, 0.01, n_users=9)),
                "2": Verdict.not_worse("a near b", seed_gap([0.5, 0.6], [0.5, 0.6]), 0.01)}
    table = claims_table(verdicts)
    assert list(table["verdict"]) == ["held", "not worse (margin 0.01)"]
    assert table.loc["1", "measured (a - b ± se)"] == "+0.1000 ± 0.0100"
    assert table.loc["1", "noise"] == "9 users and one seed"
    assert "the paper" not in table


def test_claims_table_and_ledger_carry_the_papers_statement():
    verdicts = {"1": Verdict.better("a beats b", Gap("a", "b", "m", 0.1, 0.01, n_users=9)),
                "2": Verdict.untested("c beats d", "not run")}
    paper = {"1": "a is 3 % better (Table 2)"}
    table = claims_table(verdicts, paper)
    assert table.loc["1", "the paper"] == "a is 3 % better (Table 2)"
    assert table.loc["2", "the paper"] == "(the course's own check)"
    record = json.loads(ledger_record("Ch", "400M users", verdicts, paper))
    assert [c["key"] for c in record["claims"]] == ["1", "2"]
    assert record["claims"][1]["verdict"] == "not resolved (not run)"
    with pytest.raises(KeyError, match="'3'"):
        claims_table(verdicts, {"3": "a claim nobody judged"})


def test_an_untested_claim_says_why():
    v = Verdict.untested("a beats b", "MovieLens-100K unavailable")
    assert v.outcome is Outcome.NOT_RESOLVED
    assert v.text == "not resolved (MovieLens-100K unavailable)"


def test_judge_better_says_which_variant_the_runs_lack():
    runs = [make_run("new", s, auc=0.8) for s in range(2)] + [make_run("old", s, auc=0.7)
                                                              for s in range(2)]
    assert judge_better(runs, "new beats old", "new", "old", "auc").outcome is Outcome.HELD
    missing = judge_better(runs, "new beats other", "new", "other", "auc")
    assert missing.text == "not resolved (the runs do not cover other)"


def test_git_commit_is_dirty_for_code_but_not_for_rewritten_results(tmp_path):
    """A benchmark that rewrites a committed result must not mark the next one's commit
    dirty; a changed source file must."""
    import subprocess

    def git(*args):
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
                       cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "benchmarks" / "results").mkdir(parents=True)
    (tmp_path / "src").mkdir()
    (tmp_path / "benchmarks" / "results" / "r.json").write_text("{}")
    (tmp_path / "src" / "m.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("commit", "-qm", "first")
    clean = git_commit(tmp_path / "src")
    assert len(clean) == 40 and not clean.endswith("+dirty")
    (tmp_path / "benchmarks" / "results" / "r.json").write_text('{"new": 1}')
    assert git_commit(tmp_path / "src") == clean
    (tmp_path / "src" / "m.py").write_text("x = 2\n")
    assert git_commit(tmp_path / "src") == clean + "+dirty"
    assert report_commit({"commit": clean + "+dirty"}) == clean[:12] + "+dirty"
    assert report_commit({"commit": clean}) == clean[:12]
