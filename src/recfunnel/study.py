"""The experiment layer between the models and the chapters: runs, comparisons, verdicts.

Every experiment of the book and of ``benchmarks/`` goes through three steps:

1. **Run**: train named variants over seeds with ``run_variants``; each training gives one
   ``Run`` record (model, variant, seed, profile, config, aggregate metrics, per-user or
   per-group metric arrays, epochs, best epoch, seconds, package version and git commit),
   saved and loaded as JSON with ``save_runs`` / ``load_runs``.
2. **Compare**: ``compare(runs, a, b, metric)`` pairs variant ``a`` with ``b`` seed by seed
   and user by user, and returns a ``Gap``: the mean difference and a standard error that
   counts both sources of noise, the test users and the training seeds.
3. **Judge**: ``Verdict.better`` and ``Verdict.not_worse`` apply the book's one rule to a
   gap; ``Verdict.all_of`` joins the parts of a composite claim; ``claims_table`` renders
   a chapter's verdicts. No chapter or benchmark writes a verdict word itself.

The rule. With ``Z = 2``, the interval ``gap ± Z se``:

* a claim "a beats b (by more than a threshold)" **held** when the whole interval lies
  above the threshold, **did not hold** when it lies below, and is **not resolved** when
  it straddles it;
* a non-inferiority claim "a is not worse than b by more than a declared margin" is
  **not worse** when the interval lies above ``-margin``, **did not hold** when it lies
  below, and is **not resolved** otherwise. It is never reported as "held": showing that
  a model is not much worse is a different, weaker statement than showing it is better;
* a gap whose noise was not measured (one seed and no per-user values) is not resolved.

The noise. For ``S`` seeds evaluated on the same ``U`` test users, with ``d[s, u]`` the
per-user difference, the standard error is
``se^2 = var_u(mean_s d[s, u]) / U + var_s(mean_u d[s, u]) / S``:
the first term is the test-set sampling noise (which does not shrink with more seeds,
since every seed sees the same users), the second the training noise. The first term also
holds a share 1/S of the seed-by-user interaction, so the sum is slightly conservative.
When the users differ between seeds (a world drawn anew per seed), the seed means are
independent and their spread already holds both kinds of noise; the larger of that and the
pooled user term is used. With aggregate metrics only (AUC over all impressions), the noise
is the spread of the paired per-seed differences.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from recfunnel import checks

Z = 2.0  # half-width of the interval, in standard errors, for every verdict of the book


# --------------------------------------------------------------------------- runs


def package_version() -> str:
    """The installed version of ``recfunnel`` ("unknown" when run from a bare checkout)."""
    try:
        return metadata.version("recfunnel")
    except metadata.PackageNotFoundError:
        return "unknown"


def results_dir() -> Path:
    """The committed benchmark results the chapters read: ``benchmarks/results/`` of the
    checkout the package runs from, else the copy that a non-editable install (Colab's
    ``pip install git+...``) puts under ``sys.prefix/share/recfunnel/results``."""
    checkout = Path(__file__).resolve().parents[2] / "benchmarks" / "results"
    if checkout.is_dir():
        return checkout
    return Path(sys.prefix) / "share" / "recfunnel" / "results"


def git_commit(root: str | Path | None = None) -> str:
    """The commit of the checkout the package runs from, with "+dirty" when tracked files
    other than committed results (``benchmarks/results/``, which one benchmark may rewrite
    while the next starts) differ from it; "unknown" outside a git checkout (an installed
    wheel, Colab's copy)."""
    root = Path(root) if root is not None else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ":/", ":(exclude,top)benchmarks/results"],
                               cwd=root, capture_output=True, text=True, check=True,
                               timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return commit + ("+dirty" if dirty else "")


def provenance() -> dict[str, str]:
    """Where a result comes from: the command line, the package version and the git commit
    (take it when the runs start, so that later edits do not mark the result dirty)."""
    return {"command": " ".join(["python", *sys.argv]), "version": package_version(),
            "commit": git_commit()}


def report_commit(report: Mapping[str, Any] | None) -> str:
    """The first 12 digits of the commit a committed report ran at, for a chapter to
    print beside its numbers; older reports, written before benchmarks recorded it, say
    so."""
    if report is None:
        return "n/a"
    commit = str(report.get("commit", "not recorded (older code)"))
    return commit[:12] + ("+dirty" if commit.endswith("+dirty") else "")


def write_report(path: str | Path, report: Mapping[str, Any]) -> Path:
    """Write a benchmark's JSON report by way of a temporary file (never half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(_plain(report), indent=1) + "\n")
    partial.replace(path)
    return path


def _plain(value: Any) -> Any:
    """A JSON-ready copy: dataclasses to dicts, tuples to lists, NumPy to Python."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)  # a callable or an object: recorded by name, not by value


@dataclass
class Measurement:
    """What one training of one variant on one seed measured; ``run_variants`` adds the
    bookkeeping (names, seed, config, time, version) and returns it as a ``Run``."""

    metrics: dict[str, float]
    per_user: dict[str, np.ndarray] = field(default_factory=dict)  # metric -> [U]
    epochs: int = 0
    best_epoch: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # anything else worth keeping


@dataclass
class Run:
    """One trained variant on one seed, as recorded for comparisons and the ledger."""

    model: str
    variant: str
    seed: int
    profile: str
    config: dict[str, Any]
    metrics: dict[str, float]
    per_user: dict[str, np.ndarray] = field(default_factory=dict)  # metric -> [U]
    epochs: int = 0
    best_epoch: int | None = None
    seconds: float = 0.0
    version: str = field(default_factory=package_version)
    commit: str = field(default_factory=git_commit)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.per_user = {k: np.asarray(v, dtype=np.float64) for k, v in self.per_user.items()}
        for name, values in self.per_user.items():
            if values.ndim != 1:
                raise ValueError(f"per_user[{name!r}] must be 1-D, got shape {values.shape}")

    def to_dict(self) -> dict[str, Any]:
        return _plain({f.name: getattr(self, f.name) for f in dataclasses.fields(self)})

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> Run:
        names = {f.name for f in dataclasses.fields(cls)}
        missing = {"model", "variant", "seed", "profile", "config", "metrics"} - set(record)
        if missing:
            raise ValueError(f"a run record lacks {sorted(missing)}")
        unknown = set(record) - names
        if unknown:
            raise ValueError(f"a run record has unknown fields {sorted(unknown)}")
        return cls(**dict(record))


def save_runs(path: str | Path, runs: Iterable[Run], **header: Any) -> Path:
    """Write runs (and a header: the command, the profile, ...) as one JSON file, by way of
    a temporary file, so that an interrupted save never leaves half a file behind."""
    return write_report(path, {**_plain(header), "version": package_version(),
                               "commit": git_commit(), "runs": [run.to_dict() for run in runs]})


def load_runs(path: str | Path) -> list[Run]:
    """The runs of a file written by ``save_runs``."""
    document = json.loads(Path(path).read_text())
    if "runs" not in document:
        raise ValueError(f"{path} has no 'runs' list: not written by save_runs")
    return [Run.from_dict(record) for record in document["runs"]]


def run_variants(
    train: Callable[[Any, int], Measurement],  # (config, seed) -> what it measured
    variants: Mapping[str, Any],  # variant name -> its config (a dataclass, usually)
    seeds: Sequence[int],
    *,
    model: str,
    profile: str,
    progress: bool = True,
) -> list[Run]:
    """Train every variant on every seed, in the order seed by seed, and record each as a
    ``Run``. ``train`` seeds its own randomness from the seed it is given."""
    if not variants or not seeds:
        raise ValueError("run_variants needs at least one variant and one seed")
    runs = []
    jobs = [(name, seed) for seed in seeds for name in variants]
    for name, seed in tqdm(jobs, desc=f"{model}: {len(variants)} variants x {len(seeds)} "
                           "seeds", disable=not progress):
        started = time.perf_counter()
        measured = train(variants[name], seed)
        config = _plain(variants[name])
        runs.append(Run(model=model, variant=name, seed=int(seed), profile=profile,
                        config=config if isinstance(config, dict) else {"value": config},
                        metrics={k: float(v) for k, v in measured.metrics.items()},
                        per_user=measured.per_user, epochs=measured.epochs,
                        best_epoch=measured.best_epoch,
                        seconds=time.perf_counter() - started, extra=measured.extra))
    return runs


# --------------------------------------------------------------------------- comparisons


@dataclass(frozen=True)
class Gap:
    """A measured difference ``a - b`` with its standard error and where the noise came
    from; ``se`` is NaN when the noise could not be measured."""

    a: str
    b: str
    metric: str
    mean: float
    se: float
    n_users: int = 0  # 0: aggregate metrics only
    n_seeds: int = 1
    mean_a: float = math.nan
    mean_b: float = math.nan
    unit: str = "users"  # what the paired values were measured on (users, requests)

    @property
    def noise(self) -> str:
        """In words, which noise the standard error holds."""
        if math.isnan(self.se):
            return "not measured"
        if self.se == 0 and self.n_users == 0 and self.n_seeds == 0:
            return "none (an exact count)"
        users = f"{self.n_users:,} {self.unit}" if self.n_users else ""
        seeds = f"{self.n_seeds} seeds" if self.n_seeds > 1 else "one seed"
        return f"{users} and {seeds}" if users else seeds

    @property
    def relative(self) -> float:
        """The gap as a fraction of b's mean."""
        return self.mean / self.mean_b if self.mean_b else math.nan

    @property
    def summary(self) -> str:
        """The gap, its standard error and its noise, e.g. "+0.0120 ± 0.0040 (3 seeds)"."""
        return f"{self} ({self.noise})"

    def interval(self) -> tuple[float, float]:
        return self.mean - Z * self.se, self.mean + Z * self.se

    def __str__(self) -> str:
        if math.isnan(self.se):
            return f"{self.mean:+.4f} (noise not measured)"
        return f"{self.mean:+.4f} ± {self.se:.4f}"


def paired_gap(a_values, b_values, *, a: str = "a", b: str = "b", metric: str = "",
               unit: str = "users") -> Gap:
    """The gap between two variants' per-user values on the same users: arrays [U] (one
    seed) or [S, U] (seed s of ``a`` paired with seed s of ``b``); ``unit`` names what was
    paired when it is not users (requests, say)."""
    a_values = np.atleast_2d(checks.finite(a_values, f"per-user values of {a!r}"))
    b_values = np.atleast_2d(checks.finite(b_values, f"per-user values of {b!r}"))
    if a_values.shape != b_values.shape or a_values.ndim != 2:
        raise ValueError(f"per-user values must have equal shapes [S, U] or [U], got "
                         f"{a_values.shape} and {b_values.shape}")
    S, U = a_values.shape
    if U < 2:
        raise ValueError("a paired gap needs at least two users")
    diff = a_values - b_values  # [S, U]
    user_term = diff.mean(0).var(ddof=1) / U
    seed_term = diff.mean(1).var(ddof=1) / S if S > 1 else 0.0
    return Gap(a, b, metric, float(diff.mean()), float(math.sqrt(user_term + seed_term)),
               n_users=U, n_seeds=S, mean_a=float(a_values.mean()),
               mean_b=float(b_values.mean()), unit=unit)


def seed_gap(a_values, b_values, *, a: str = "a", b: str = "b", metric: str = "") -> Gap:
    """The gap between two variants' aggregate metrics, paired seed by seed ([S] each);
    its noise is the spread of the per-seed differences (not measured with one seed)."""
    a_values = checks.finite(a_values, f"per-seed values of {a!r}").ravel()
    b_values = checks.finite(b_values, f"per-seed values of {b!r}").ravel()
    if a_values.shape != b_values.shape or len(a_values) == 0:
        raise ValueError(f"need one value per seed for both, got {len(a_values)} and "
                         f"{len(b_values)}")
    diff = a_values - b_values
    S = len(diff)
    se = float(diff.std(ddof=1) / math.sqrt(S)) if S > 1 else math.nan
    return Gap(a, b, metric, float(diff.mean()), se, n_users=0, n_seeds=S,
               mean_a=float(a_values.mean()), mean_b=float(b_values.mean()))


def exact_gap(value: float, *, a: str, b: str = "", metric: str = "") -> Gap:
    """A difference with no sampling noise (an operation count, a closed form)."""
    return Gap(a, b, metric, float(value), 0.0, n_users=0, n_seeds=0)


def estimate(value: float, se: float, *, a: str, b: str = "", metric: str = "") -> Gap:
    """A difference whose standard error was obtained otherwise (a regression slope)."""
    return Gap(a, b, metric, float(value), float(se), n_users=0, n_seeds=1)


def _select(runs: Sequence[Run], variant: str) -> dict[int, Run]:
    chosen = {}
    for run in runs:
        if run.variant == variant:
            if run.seed in chosen:
                raise ValueError(f"variant {variant!r} has two runs on seed {run.seed}")
            chosen[run.seed] = run
    if not chosen:
        known = sorted({run.variant for run in runs})
        raise KeyError(f"no run of variant {variant!r}; the runs have {known}")
    return chosen


def compare(runs: Sequence[Run], a: str, b: str, metric: str) -> Gap:
    """The gap ``a - b`` in ``metric`` over the seeds both variants ran on: per user when
    both runs hold per-user values of the metric, else from the aggregate metrics."""
    runs_a, runs_b = _select(runs, a), _select(runs, b)
    seeds = sorted(set(runs_a) & set(runs_b))
    if not seeds:
        raise ValueError(f"{a!r} and {b!r} share no seed")
    pairs = [(runs_a[s], runs_b[s]) for s in seeds]
    if all(metric in x.per_user and metric in y.per_user for x, y in pairs):
        lengths = {len(x.per_user[metric]) for pair in pairs for x in pair}
        if len(lengths) == 1:
            return paired_gap([x.per_user[metric] for x, _ in pairs],
                              [y.per_user[metric] for _, y in pairs], a=a, b=b, metric=metric)
        return _gap_over_worlds(pairs, a, b, metric)
    for x, y in pairs:
        for run in (x, y):
            if metric not in run.metrics:
                raise KeyError(f"run {run.variant!r} (seed {run.seed}) has no metric "
                               f"{metric!r}; it has {sorted(run.metrics)}")
    return seed_gap([x.metrics[metric] for x, _ in pairs], [y.metrics[metric] for _, y in pairs],
                    a=a, b=b, metric=metric)


def _gap_over_worlds(pairs, a: str, b: str, metric: str) -> Gap:
    """Per-user gaps on seeds whose test users differ: the seed means are independent."""
    per_seed = [paired_gap(x.per_user[metric], y.per_user[metric]) for x, y in pairs]
    means = np.array([g.mean for g in per_seed])
    S = len(per_seed)
    pooled = math.sqrt(sum(g.se ** 2 for g in per_seed)) / S
    spread = float(means.std(ddof=1) / math.sqrt(S)) if S > 1 else 0.0
    return Gap(a, b, metric, float(means.mean()), max(pooled, spread),
               n_users=int(np.mean([g.n_users for g in per_seed])), n_seeds=S,
               mean_a=float(np.mean([g.mean_a for g in per_seed])),
               mean_b=float(np.mean([g.mean_b for g in per_seed])))


# --------------------------------------------------------------------------- verdicts


def _check_gap(claim: str, gap: Gap) -> None:
    """A NaN gap (a NaN metric upstream) can support no verdict; a NaN standard error is
    allowed: it means the noise was not measured, and the claim is not resolved."""
    if not isinstance(gap, Gap):
        raise checks.InvalidInputError(f"claim {claim!r}: expected a Gap, got "
                                       f"{type(gap).__name__}")
    if not math.isfinite(gap.mean):
        raise checks.InvalidInputError(f"claim {claim!r}: the gap {gap.a} - {gap.b} in "
                                       f"{gap.metric or 'the metric'} is {gap.mean}; a NaN "
                                       "metric upstream cannot be judged")
    if gap.se < 0 or math.isinf(gap.se):
        raise checks.InvalidInputError(f"claim {claim!r}: standard error {gap.se} is not a "
                                       "standard error")


class Outcome(enum.Enum):
    """The four outcomes of a claim, weakest first (a composite is its weakest part)."""

    NOT_HELD = "did not hold"
    NOT_RESOLVED = "not resolved"
    NOT_WORSE = "not worse"
    HELD = "held"


_STRENGTH = list(Outcome)


@dataclass(frozen=True)
class Verdict:
    """A claim, the gap that tests it, and the outcome of the book's one rule."""

    claim: str
    outcome: Outcome
    gap: Gap | None = None
    threshold: float = 0.0  # superiority: a - b must exceed this
    margin: float | None = None  # non-inferiority: a - b must stay above -margin
    parts: tuple[Verdict, ...] = ()
    reason: str = ""  # why a claim could not be tested (no data, not run at this profile)

    @classmethod
    def better(cls, claim: str, gap: Gap, threshold: float = 0.0) -> Verdict:
        """"a beats b (by more than ``threshold``)": held, did not hold or not resolved."""
        _check_gap(claim, gap)
        checks.real("threshold", threshold)
        low, high = gap.interval()
        if math.isnan(gap.se):
            outcome = Outcome.NOT_RESOLVED
        elif low > threshold:
            outcome = Outcome.HELD
        elif high < threshold:
            outcome = Outcome.NOT_HELD
        else:
            outcome = Outcome.NOT_RESOLVED
        return cls(claim, outcome, gap, threshold=threshold)

    @classmethod
    def not_worse(cls, claim: str, gap: Gap, margin: float) -> Verdict:
        """"a is not worse than b by more than ``margin``" (declared before looking):
        not worse, did not hold or not resolved; never held."""
        _check_gap(claim, gap)
        if not margin > 0:
            raise ValueError(f"a non-inferiority margin must be positive, got {margin}")
        checks.real("margin", margin)
        low, high = gap.interval()
        if math.isnan(gap.se):
            outcome = Outcome.NOT_RESOLVED
        elif low > -margin:
            outcome = Outcome.NOT_WORSE
        elif high < -margin:
            outcome = Outcome.NOT_HELD
        else:
            outcome = Outcome.NOT_RESOLVED
        return cls(claim, outcome, gap, margin=margin)

    @classmethod
    def all_of(cls, claim: str, parts: Sequence[Verdict]) -> Verdict:
        """A claim made of several parts is as strong as its weakest part; when that is
        "not worse", the composite names the margin its non-inferiority parts declared (when
        they declared one margin)."""
        if not parts:
            raise ValueError("a composite claim needs at least one part")
        weakest = min((part.outcome for part in parts), key=_STRENGTH.index)
        margins = {part.margin for part in parts if part.outcome is Outcome.NOT_WORSE}
        margin = margins.pop() if weakest is Outcome.NOT_WORSE and len(margins) == 1 else None
        return cls(claim, weakest, parts=tuple(parts), margin=margin)

    @classmethod
    def untested(cls, claim: str, reason: str) -> Verdict:
        """A claim this run could not test (its data is missing, its sweep not run)."""
        return cls(claim, Outcome.NOT_RESOLVED, reason=reason)

    @property
    def text(self) -> str:
        """The outcome as the book prints it; a non-inferiority result names its margin."""
        if self.outcome is Outcome.NOT_WORSE and self.margin is not None:
            return f"not worse (margin {self.margin:.4g})"
        if self.reason:
            return f"{self.outcome.value} ({self.reason})"
        return self.outcome.value

    @property
    def measured(self) -> str:
        if self.gap is not None:
            return str(self.gap)
        return "; ".join(f"{part.gap}" for part in self.parts if part.gap is not None)

    def to_dict(self) -> dict[str, Any]:
        return {"claim": self.claim, "verdict": self.text, "outcome": self.outcome.value,
                "gap": None if self.gap is None else _plain(self.gap),
                "noise": None if self.gap is None else self.gap.noise,
                "threshold": self.threshold, "margin": self.margin,
                "parts": [part.to_dict() for part in self.parts], "reason": self.reason}

    def __str__(self) -> str:
        return self.text


def judge_better(runs: Sequence[Run], claim: str, a: str, b: str, metric: str,
                 threshold: float = 0.0) -> Verdict:
    """``Verdict.better`` on ``compare(runs, a, b, metric)``, or untested (saying which)
    when the runs do not cover one of the two variants."""
    missing = [v for v in (a, b) if v not in {run.variant for run in runs}]
    if missing:
        return Verdict.untested(claim, f"the runs do not cover {missing[0]}")
    return Verdict.better(claim, compare(runs, a, b, metric), threshold)


def _claim_rows(verdicts: Mapping[str, Verdict], paper: Mapping[str, str]) -> list[dict]:
    unknown = sorted(set(paper) - set(verdicts))
    if unknown:
        raise KeyError(f"paper statements for claims that were not judged: {unknown}")
    rows = []
    for key, v in verdicts.items():
        gaps = [v.gap] if v.gap is not None else [p.gap for p in v.parts if p.gap is not None]
        rows.append({"key": key, "paper": paper.get(key, "(the course's own check)"),
                     "claim": v.claim, "measured": v.measured,
                     "noise": "; ".join(dict.fromkeys(g.noise for g in gaps)) or "—",
                     "verdict": v.text})
    return rows


def claims_table(verdicts: Mapping[str, Verdict], paper: Mapping[str, str] | None = None):
    """One row per claim: what the paper says (when given), what this book tests, what was
    measured, with which noise, and the verdict."""
    import pandas as pd

    rows = _claim_rows(verdicts, paper or {})
    table = pd.DataFrame(rows).set_index("key").rename_axis(None).rename(columns={
        "paper": "the paper", "claim": "this book tests", "measured": "measured (a - b ± se)"})
    return table if paper else table.drop(columns="the paper")


def ledger_record(title: str, scale: str, verdicts: Mapping[str, Verdict],
                  paper: Mapping[str, str]) -> str:
    """A chapter's claims as one JSON string, which the chapter glues under ``ledger`` and
    the book's reproduction ledger collects (``recfunnel.book``)."""
    return json.dumps({"title": title, "scale": scale,
                       "claims": _claim_rows(verdicts, paper)})
