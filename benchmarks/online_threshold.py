"""Online cascade thresholds replayed on logged eval outcomes, through a shift of the task mix.

Per-item outcomes of `edgellm eval` for both bundled models (SmolLM2-135M = first tier, Gemma-3-270M
= escalation tier) on ARC-Easy, BoolQ and WinoGrande are joined by item. Each item's score is the
small model's confidence in its answer as `benchmarks/cascade_quality.py` defines it for eval
items ("cascade max-prob": the log of the chosen choice's probability normalised over the
choices, `training.eval_confidence(...).mean_logprob`). Even items are the offline calibration
sample, odd items the stream's pool.

A stream of --requests requests draws items (with replacement, seeded) from the pool by a task
mix that changes at the midpoint, e.g. mostly ARC-Easy and then mostly BoolQ. For each of
--seeds streams the cascade decides each request with

- fixed: the threshold calibrated offline for the target rate, on a calibration sample drawn
  by the mix before the shift (what `edgellm router train` gives today);
- target_rate: `gateway.thresholds.target_rate` (the quantile of the last --window scores),
  started from the fixed threshold;
- feedback: `gateway.thresholds.feedback`, first fed the calibration sample's outcomes (an eval
  run knows both models'), with the escalation price at which its threshold is the fixed one;
  then told the outcome of every served answer (the small model's if kept, the large one's if
  escalated), as clients' `POST /v1/feedback` would.

Reported: the realised escalation rate over the last 100 requests against time (mean over
streams), the requests after the shift until it is back within 5 points of the target for
good, accuracy, and regret against the best fixed threshold in hindsight, per 1000 requests
(positive = worse than it): at the budget (the threshold, chosen knowing the whole stream, with
the most right answers among those escalating at most the target rate; in right answers) and at
the price (the threshold with the least wrong answers + price x escalations; in that cost).

Outcomes must exist first (CPU-heavy; resumable; --limit caps items per task):

    for t in arc-easy boolq winogrande; do for m in smollm2-135m-instruct gemma3-270m; do
      nice -n 10 .venv/bin/edgellm eval $t --model $m --threads 1 --limit 400 \\
          --out runs/accuracy/$t-$m; done; done
    .venv/bin/python benchmarks/online_threshold.py --evals-dir runs/accuracy
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from edgellm.config import FeedbackThresholdConfig, TargetRateThresholdConfig
from edgellm.gateway.thresholds.base import ThresholdRule
from edgellm.gateway.thresholds.feedback import FeedbackRule
from edgellm.gateway.thresholds.target_rate import TargetRateRule
from edgellm.gateway.training import calibrate, eval_confidence, read_jsonl

SMALL, LARGE = "smollm2-135m-instruct", "gemma3-270m"
TASKS = ("arc-easy", "boolq", "winogrande")
ROOT = Path(__file__).resolve().parent.parent
ROLLING = 100  # requests the realised rate is measured over
TOLERANCE = 0.05

Floats = NDArray[np.float64]


@dataclass
class Pool:
    """One task's items: the small model's score, and whether each model is right."""

    score: Floats
    small: Floats
    large: Floats

    def take(self, idx: NDArray[np.int64]) -> Pool:
        return Pool(self.score[idx], self.small[idx], self.large[idx])


def load_task(evals_dir: Path, task: str) -> tuple[Pool, Pool]:
    """(calibration pool, stream pool) of a task: even and odd items of both models' outcomes."""
    small = {r["item_id"]: r for r in read_jsonl(evals_dir / f"{task}-{SMALL}" / "items.jsonl")}
    large = {r["item_id"]: r for r in read_jsonl(evals_dir / f"{task}-{LARGE}" / "items.jsonl")}
    ids = [i for i in small if i in large]  # the task's order (the eval's, resumed or not)
    if len(ids) < 20:
        raise SystemExit(f"{task}: {len(ids)} items scored by both models; run the evals first")
    pool = Pool(
        np.array([eval_confidence(small[i]).mean_logprob for i in ids]),
        np.array([float(small[i]["correct"]) for i in ids]),
        np.array([float(large[i]["correct"]) for i in ids]),
    )
    n = len(ids)
    return pool.take(np.arange(0, n, 2)), pool.take(np.arange(1, n, 2))


def draw(pools: dict[str, Pool], mix: dict[str, float], n: int, rng: np.random.Generator) -> Pool:
    tasks = list(mix)
    which = rng.choice(len(tasks), size=n, p=np.array([mix[t] for t in tasks]))
    parts = {"score": np.empty(n), "small": np.empty(n), "large": np.empty(n)}
    for k, task in enumerate(tasks):
        at = np.flatnonzero(which == k)
        pick = rng.integers(0, pools[task].score.size, at.size)
        for name in parts:
            parts[name][at] = getattr(pools[task], name)[pick]
    return Pool(parts["score"], parts["small"], parts["large"])


def concat(a: Pool, b: Pool) -> Pool:
    return Pool(
        *(np.concatenate([getattr(a, k), getattr(b, k)]) for k in ("score", "small", "large"))
    )


def warm_feedback(calib: Pool, fixed: float) -> tuple[FeedbackRule, float]:
    """The feedback rule fed the calibration sample's outcomes (an eval run knows both models'),
    and the escalation price at which its threshold is the fixed one: the price the offline
    calibration for the target rate implies under the rule's own model."""
    config = FeedbackThresholdConfig(forgetting=1.0)
    warm = FeedbackRule(config, fixed)
    for s, small, large in zip(calib.score, calib.small, calib.large, strict=True):
        warm.observe(float(s))
        warm.learn(float(s), kept=True, outcome=float(small))
        warm.learn(float(s), kept=False, outcome=float(large))
    p_small = float(warm.p_right(np.array([fixed]), optimism=config.optimism)[0])
    price = min(max(warm.escalated_accuracy - p_small, 0.0), 1.0)
    rule = FeedbackRule(FeedbackThresholdConfig(escalation_cost=price), fixed)
    rule.restore(warm.state())
    return rule, price


def best_fixed(
    s: Pool, utility: Callable[[Floats, Floats], Floats], max_rate: float = 1.0
) -> tuple[float, float, float]:
    """The fixed threshold with the highest total utility(escalated, right) on this stream
    among those escalating at most `max_rate`; (threshold, accuracy, its utility), utility
    counting wrong answers: utility(k escalated, r right) - n."""
    order = np.argsort(s.score, kind="stable")
    score = s.score[order]
    # escalating the k lowest scores (k = 0..n): the large model's answers on those, the small
    # one's on the rest
    right = np.concatenate([[0.0], np.cumsum(s.large[order] - s.small[order])]) + s.small.sum()
    k = np.arange(score.size + 1)
    # only cut between distinct scores (a threshold cannot separate equal scores)
    valid = np.concatenate([[True], score[1:] > score[:-1], [True]])
    valid &= k <= max_rate * score.size + 1e-9
    value = np.where(valid, utility(k.astype(np.float64), right), -np.inf)
    kb = int(np.argmax(value))
    if kb == 0:
        t = float(score[0])
    elif kb == score.size:
        t = float(np.nextafter(score[-1], np.inf))
    else:
        t = float((score[kb - 1] + score[kb]) / 2)
    return t, float(right[kb] / score.size), float(value[kb] - score.size)


@dataclass
class Run:
    escalated: Floats
    right: Floats


def replay(stream: Pool, rule: ThresholdRule | None, fixed: float) -> Run:
    n = stream.score.size
    esc, right = np.zeros(n), np.zeros(n)
    for i in range(n):
        s = float(stream.score[i])
        t = fixed if rule is None else rule.threshold()
        e = s < t
        esc[i] = e
        right[i] = stream.large[i] if e else stream.small[i]
        if rule is not None:
            rule.observe(s)
            rule.learn(s, kept=not e, outcome=float(right[i]))
    return Run(esc, right)


def rolling(x: Floats, w: int = ROLLING) -> Floats:
    c = np.concatenate([[0.0], np.cumsum(x)])
    out = np.full(x.size, np.nan)
    out[w - 1 :] = (c[w:] - c[:-w]) / w
    return out


def recovery(mean_rate: Floats, shift: int, target: float) -> int | None:
    """Requests after the shift until the (mean) rolling rate is within TOLERANCE of the
    target and stays there to the end; None if it never settles."""
    off = np.abs(mean_rate[shift:] - target) > TOLERANCE
    if off[-1]:
        return None
    bad = np.flatnonzero(off)
    return 0 if bad.size == 0 else int(bad[-1] + 1)


@dataclass
class Result:
    rates: list[Floats] = field(default_factory=list)  # rolling rate per stream
    acc: list[float] = field(default_factory=list)
    acc_after: list[float] = field(default_factory=list)
    rate_before: list[float] = field(default_factory=list)
    rate_after: list[float] = field(default_factory=list)  # after the recovery allowance
    regret: list[float] = field(default_factory=list)  # answers per 1000 requests
    cost_regret: list[float] = field(default_factory=list)  # with the price: per 1000 requests


def scenario(
    pools: tuple[dict[str, Pool], dict[str, Pool]],
    mixes: tuple[dict[str, float], dict[str, float]],
    args: argparse.Namespace,
) -> tuple[dict[str, Result], float, float]:
    calib_pools, stream_pools = pools
    rng = np.random.default_rng(args.seed)
    calib = draw(calib_pools, mixes[0], args.calibration, rng)
    fixed = calibrate(calib.score, args.target)
    warm, price = warm_feedback(calib, fixed)
    half = args.requests // 2
    results = {name: Result() for name in ("fixed", "target_rate", "feedback")}
    for _ in range(args.seeds):
        stream = concat(draw(stream_pools, mixes[0], half, rng),
                        draw(stream_pools, mixes[1], args.requests - half, rng))  # fmt: skip
        _, hindsight_acc, _ = best_fixed(stream, lambda esc, right: right, max_rate=args.target)
        hindsight_cost = -best_fixed(stream, lambda esc, right: right - price * esc)[2]
        feedback = FeedbackRule(warm.config, fixed)
        feedback.restore(warm.state())
        rules: dict[str, ThresholdRule | None] = {
            "fixed": None,
            "target_rate": TargetRateRule(
                TargetRateThresholdConfig(rate=args.target, window=args.window), fixed
            ),
            "feedback": feedback,
        }
        for name, rule in rules.items():
            run = replay(stream, rule, fixed)
            r = results[name]
            r.rates.append(rolling(run.escalated))
            r.acc.append(float(run.right.mean()))
            r.acc_after.append(float(run.right[half:].mean()))
            r.rate_before.append(float(run.escalated[:half].mean()))
            r.rate_after.append(float(run.escalated[half + args.allowance :].mean()))
            r.regret.append(1000 * (hindsight_acc - float(run.right.mean())))
            cost = float(np.sum(1 - run.right) + price * np.sum(run.escalated))
            r.cost_regret.append(1000 * (cost - hindsight_cost) / args.requests)
    return results, fixed, price


def mean_sd(xs: list[float], fmt: str = "{:.3f}") -> str:
    return f"{fmt.format(np.mean(xs))} ± {fmt.format(np.std(xs))}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--evals-dir", type=Path, default=ROOT / "runs" / "accuracy")
    ap.add_argument("--target", type=float, default=0.3, help="target escalation rate")
    ap.add_argument("--requests", type=int, default=2000, help="stream length (shift midway)")
    ap.add_argument("--seeds", type=int, default=20, help="streams drawn")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--window", type=int, default=100, help="scores the target_rate rule keeps")
    ap.add_argument("--calibration", type=int, default=1000, help="offline sample size")
    ap.add_argument("--allowance", type=int, default=200, help="requests allowed to recover")
    ap.add_argument("--docs", type=Path, default=ROOT / "docs")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()

    calib_pools, stream_pools = {}, {}
    for task in TASKS:
        calib_pools[task], stream_pools[task] = load_task(args.evals_dir, task)

    def heavy(task: str) -> dict[str, float]:
        """80 % of the requests from `task`, 10 % from each other one."""
        return {t: 0.8 if t == task else 0.1 for t in TASKS}

    scenarios = {
        "ARC-Easy → WinoGrande": (heavy("arc-easy"), heavy("winogrande")),
        "WinoGrande → ARC-Easy": (heavy("winogrande"), heavy("arc-easy")),
        "ARC-Easy → BoolQ": (heavy("arc-easy"), heavy("boolq")),
    }
    command = " ".join([".venv/bin/python", "benchmarks/online_threshold.py", *sys.argv[1:]])
    lines = report_head(args, calib_pools, stream_pools, command)
    figures: dict[str, object] = {}
    curves = {}
    for title, mixes in scenarios.items():
        results, fixed, price = scenario((calib_pools, stream_pools), mixes, args)
        curves[title] = results
        lines += [f"## {title}", "",
                  f"Mix before the shift {fmt_mix(mixes[0])}, after it {fmt_mix(mixes[1])}. "
                  f"Fixed threshold {fixed:.4f} (calibrated for {args.target:.0%}); escalation "
                  f"price given to `feedback` {price:.3f} wrong answers.", "",
                  "| rule | rate before shift | rate after shift + "
                  f"{args.allowance} | back within 5 pt after | accuracy | accuracy after shift "
                  "| regret at the budget (answers / 1000) | regret at the price (/ 1000) |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        half = args.requests // 2
        figures[title] = {}
        for name, r in results.items():
            mean_rate = np.nanmean(np.array(r.rates), axis=0)
            back = recovery(mean_rate, half, args.target)
            back_s = "never" if back is None else f"{back} requests"
            lines.append(
                f"| {name} | {mean_sd(r.rate_before)} | {mean_sd(r.rate_after)} | {back_s} | "
                f"{mean_sd(r.acc)} | {mean_sd(r.acc_after)} | {mean_sd(r.regret, '{:.1f}')} | "
                f"{mean_sd(r.cost_regret, '{:.1f}')} |"
            )
            figures[title][name] = {  # type: ignore[index]
                "rate_before": float(np.mean(r.rate_before)),
                "rate_after": float(np.mean(r.rate_after)),
                "recovery": back,
                "accuracy": float(np.mean(r.acc)),
                "accuracy_after": float(np.mean(r.acc_after)),
                "regret_per_1000": float(np.mean(r.regret)),
                "cost_regret_per_1000": float(np.mean(r.cost_regret)),
            }
        lines.append("")
    plot(curves, args, args.docs / "online_thresholds.png")
    lines += ["![realised escalation rate over the stream](online_thresholds.png)", ""]
    text = "\n".join(lines)
    (args.docs / "online_thresholds.md").write_text(text)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    print(text)
    return 0


def fmt_mix(mix: dict[str, float]) -> str:
    return ", ".join(f"{t} {p:.0%}" for t, p in mix.items())


def report_head(
    args: argparse.Namespace,
    calib: dict[str, Pool],
    stream: dict[str, Pool],
    command: str,
) -> list[str]:
    evals = args.evals_dir.resolve()
    shown = evals.relative_to(ROOT) if evals.is_relative_to(ROOT) else evals
    rows = [
        f"| {t} | {calib[t].score.size + stream[t].score.size} | "
        f"{np.mean(np.concatenate([calib[t].small, stream[t].small])):.3f} | "
        f"{np.mean(np.concatenate([calib[t].large, stream[t].large])):.3f} | "
        f"{calibrate(np.concatenate([calib[t].score, stream[t].score]), args.target):.4f} |"
        for t in TASKS
    ]
    return [
        "# Online cascade thresholds, replayed on logged eval outcomes",
        "",
        f"Generated by `{command}`. Outcomes: `edgellm eval` per-item records in `{shown}` "
        f"(small tier {SMALL}, escalation tier {LARGE}); how to regenerate them is in the "
        "script's docstring.",
        "",
        "| task | items | small accuracy | large accuracy | threshold for "
        f"{args.target:.0%} on this task alone |",
        "| --- | --- | --- | --- | --- |",
        *rows,
        "",
        f"Streams of {args.requests} requests, the task mix changing at request "
        f"{args.requests // 2}; {args.seeds} streams (mean ± standard deviation over them). "
        f"Target escalation rate {args.target:.0%}; `target_rate` keeps {args.window} scores. "
        f"'Rate after shift + {args.allowance}' is the realised rate from request "
        f"{args.requests // 2 + args.allowance} on; 'back within 5 pt' is when the rate over "
        f"the last {ROLLING} requests (mean over the streams) is within 5 points of the target "
        "and stays there. Regret is against the best fixed threshold in hindsight for each "
        "stream: 'at the budget', the one with the most right answers among those escalating "
        "at most the target rate (in right answers; negative: better than it, which a rule "
        "can only be by escalating more than the target); 'at the price', the one with the "
        "least wrong answers + price x escalations (in that cost), the objective of "
        "`feedback`, which is first fed the calibration sample's outcomes and priced so that "
        "it starts at the fixed threshold.",
        "",
    ]


def plot(curves: dict[str, dict[str, Result]], args: argparse.Namespace, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(6 * len(curves), 4.2), squeeze=False)
    x = np.arange(args.requests)
    for ax, (title, results) in zip(axes[0], curves.items(), strict=True):
        for name, r in results.items():
            rates = np.array(r.rates)
            mean = np.nanmean(rates, axis=0)
            (line,) = ax.plot(x, mean, label=name)
            lo, hi = np.nanpercentile(rates, [10, 90], axis=0)
            ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.15)
        ax.axhspan(args.target - TOLERANCE, args.target + TOLERANCE, color="grey", alpha=0.2,
                   label=f"target ± {TOLERANCE:.0%}")  # fmt: skip
        ax.axvline(args.requests // 2, color="black", linestyle=":", label="mix shifts")
        ax.set_title(title)
        ax.set_xlabel("request")
        ax.set_ylabel(f"escalation rate, last {ROLLING} requests")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
