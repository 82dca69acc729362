"""Turn a load test's request log and metric samples into a summary and plots."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

PEAK_RATE = 25_000 / 3600  # images per second at the 2020 peak
REJECTED = (429, 503)


def server_timing(header: str) -> dict[str, float]:
    """A Server-Timing header as {name: milliseconds}."""
    timings = {}
    for entry in header.split(","):
        name, _, duration = entry.strip().partition(";dur=")
        if duration:
            timings[name] = float(duration)
    return timings


def load_records(folder: Path) -> list[dict]:
    records = []
    for path in sorted(folder.glob("requests.*.jsonl")):
        records += [json.loads(line) for line in path.read_text().splitlines() if line]
    return sorted(records, key=lambda r: r["t"])


def percentiles(values) -> dict[str, float | None]:
    if len(values) == 0:
        return {"p50": None, "p95": None, "p99": None}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3), "p99": round(float(p99), 3)}


def is_ok(record: dict) -> bool:
    return record["status"] == 200 or (record["status"] == 422 and "no-face" in record["photo"])


def binned(records: list[dict], t0: float, width: float) -> dict[str, np.ndarray]:
    """Per time bin: sent, ok, rejected per second and ok latency percentiles."""
    end = max(r["t"] + r["latency"] for r in records)
    count = max(1, math.ceil((end - t0) / width))
    sent, ok, reduced, rejected = (np.zeros(count) for _ in range(4))
    latencies: list[list[float]] = [[] for _ in range(count)]
    for r in records:
        index = min(count - 1, int((r["t"] - t0) // width))
        sent[index] += 1
        done = min(count - 1, int((r["t"] + r["latency"] - t0) // width))
        if is_ok(r):
            ok[done] += 1
            reduced[done] += r.get("level") == "reduced"
            latencies[index].append(r["latency"])
        elif r["status"] in REJECTED:
            rejected[done] += 1
    p50 = np.array([np.percentile(v, 50) if v else np.nan for v in latencies])
    p95 = np.array([np.percentile(v, 95) if v else np.nan for v in latencies])
    return {
        "t": (np.arange(count) + 0.5) * width,
        "sent": sent / width,
        "ok": ok / width,
        "reduced": reduced / width,
        "rejected": rejected / width,
        "p50": p50,
        "p95": p95,
    }


def capacity_from_steps(records, t0, step_seconds, step_rate, p95_bound) -> tuple[float, list]:
    """Highest step whose answers kept up (>= 95% answered ok) with p95 under the bound."""
    steps: dict[int, list[dict]] = {}
    for r in records:
        steps.setdefault(int((r["t"] - t0) // step_seconds), []).append(r)
    table, capacity = [], 0.0
    for index in sorted(steps):
        rows = steps[index]
        ok = [r for r in rows if is_ok(r)]
        p95 = float(np.percentile([r["latency"] for r in ok], 95)) if ok else math.inf
        kept_up = len(ok) >= 0.95 * len(rows) and p95 <= p95_bound
        offered = (index + 1) * step_rate
        table.append(
            {
                "offered": offered,
                "sent": len(rows),
                "ok": len(ok),
                "p95": round(p95, 3),
                "sustained": kept_up,
            }
        )
        if kept_up:
            capacity = max(capacity, len(ok) / step_seconds)
        else:
            break
    return capacity, table


def summarise(mode: str, records: list[dict], samples: list[dict], options: dict) -> dict:
    if not records:
        raise SystemExit("no requests were recorded: did Locust reach the service?")
    t0 = records[0]["t"]
    duration = max(r["t"] + r["latency"] for r in records) - t0
    ok = [r for r in records if is_ok(r)]
    rejected = [r for r in records if r["status"] in REJECTED]
    statuses: dict[str, int] = {}
    for r in records:
        statuses[str(r["status"])] = statuses.get(str(r["status"]), 0) + 1
    width = options.get("bin_seconds", 10.0)
    bins = binned(records, t0, width)
    summary = {
        "mode": mode,
        "options": options,
        "duration_s": round(duration, 1),
        "requests_sent": len(records),
        "offered_rate_mean": round(len(records) / duration, 3),
        "offered_rate_peak": round(float(bins["sent"].max()), 3),
        "achieved_rate_mean": round(len(ok) / duration, 3),
        "achieved_rate_peak": round(float(bins["ok"].max()), 3),
        "status_counts": statuses,
        "ok": len(ok),
        # Images answered at each level of the degrade ladder (header X-Service-Level).
        "ok_by_level": {
            level: sum(1 for r in ok if r.get("level") == level) for level in ("full", "reduced")
        },
        "rejected": len(rejected),
        "latency_ok_s": percentiles([r["latency"] for r in ok]),
        "latency_rejected_s": percentiles([r["latency"] for r in rejected]),
        "rejected_max_s": round(max((r["latency"] for r in rejected), default=0.0), 3),
        "rejected_over_100ms": sum(1 for r in rejected if r["latency"] > 0.1),
        # Measured by the server (Server-Timing), free of the load generator's own delays.
        "rejected_server_ms": percentiles(
            [r["server_ms"]["gateway"] for r in rejected if "gateway" in r.get("server_ms", {})]
        ),
    }
    if samples:
        first, last = samples[0], samples[-1]
        served = last["ok"] - first["ok"]
        usd = last["usd"] - first["usd"]
        summary["cost_per_1000_images_usd"] = round(1000 * usd / served, 5) if served else None
        summary["billed_usd"] = round(usd, 6)
        summary["cost_profile"] = last.get("profile")
        cpu = [s["cpu_s"] for s in samples if s.get("cpu_s") is not None]
        if len(cpu) >= 2 and served:
            # CPU seconds the server spent per image it answered: cost, free of the load
            # generator's share of the cores.
            summary["server_cpu_s"] = round(cpu[-1] - cpu[0], 1)
            summary["server_cpu_s_per_image"] = round((cpu[-1] - cpu[0]) / served, 4)
        rss = [s["rss_mb"] for s in samples if s.get("rss_mb")]
        summary["server_peak_rss_mb"] = round(max(rss), 1) if rss else None
        if len(rss) >= 6:  # flat or growing: the mean of the first and of the last third
            third = len(rss) // 3
            summary["server_rss_first_third_mb"] = round(float(np.mean(rss[:third])), 1)
            summary["server_rss_last_third_mb"] = round(float(np.mean(rss[-third:])), 1)
    if options.get("jobs"):
        summary |= jobs_summary(records, samples, t0)
    if mode == "capacity":
        capacity, steps = capacity_from_steps(
            records, t0, options["step_seconds"], options["step_rate"], options["p95_bound"]
        )
        summary["steps"] = steps
    else:
        # Saturated throughput: the best 30 s of answers. A lower bound if nothing was refused.
        window = max(1, round(30 / width))
        smoothed = np.convolve(bins["ok"], np.ones(window) / window, mode="valid")
        capacity = float(smoothed.max()) if len(smoothed) else float(bins["ok"].max())
        summary["capacity_is_lower_bound"] = not rejected
    summary["capacity_images_per_s"] = round(capacity, 3)
    summary["instances_for_25k_per_hour"] = math.ceil(PEAK_RATE / capacity) if capacity else None
    return summary


def jobs_summary(records: list[dict], samples: list[dict], t0: float) -> dict:
    """With --jobs each record is a visitor, from submission to result: how many got their
    cartoon, how long they waited, and (from /metrics samples) the line's peak and when it
    emptied."""
    answered = [r for r in records if r["status"] in (200, 422)]
    summary = {
        "jobs_submitted": len(records),
        "jobs_answered": len(answered),
        "jobs_answered_share": round(len(answered) / len(records), 4),
        "jobs_refused_at_submission": sum(1 for r in records if r["status"] in REJECTED),
        "jobs_lost": sum(1 for r in records if r["status"] in (0, 202)),
        "wait_s": percentiles([r["latency"] for r in answered])
        | {"max": round(max((r["latency"] for r in answered), default=0.0), 3)},
    }
    queue = [(s["t"] - t0, s["queue"]) for s in samples if "queue" in s and s["t"] >= t0]
    if queue and max(depth for _, depth in queue) > 0:
        peak_at, peak = max(queue, key=lambda sample: sample[1])
        summary["queue_peak"] = int(peak)
        summary["queue_peak_at_s"] = round(peak_at, 1)
        after = [t for t, depth in queue if t > peak_at and depth == 0]
        summary["queue_drained_at_s"] = round(after[0], 1) if after else None
    return summary


def plot(records: list[dict], samples: list[dict], folder: Path, width: float = 10.0) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t0 = records[0]["t"]
    bins = binned(records, t0, width)
    written = []

    figure, axis = plt.subplots(figsize=(9, 4))
    axis.plot(bins["t"], bins["sent"], label="offered (sent/s)")
    axis.plot(bins["t"], bins["ok"], label="achieved (answered ok/s)")
    if bins["reduced"].any():
        axis.plot(bins["t"], bins["reduced"], label="of which at the reduced level/s")
    axis.plot(bins["t"], bins["rejected"], label="rejected/s")
    axis.set(xlabel="seconds into the run", ylabel="images per second", title="Rate")
    axis.legend()
    written.append(_save(figure, folder / "rate.png"))

    figure, axis = plt.subplots(figsize=(9, 4))
    axis.plot(bins["t"], bins["p50"], label="p50")
    axis.plot(bins["t"], bins["p95"], label="p95")
    axis.set(
        xlabel="seconds into the run (by send time)",
        ylabel="seconds",
        title="Latency of answered images",
    )
    axis.legend()
    written.append(_save(figure, folder / "latency.png"))

    if samples:
        ts = [s["t"] - t0 for s in samples]
        figure, (cost, memory) = plt.subplots(1, 2, figsize=(11, 4))
        cost.plot(ts, [s["gauge"] for s in samples], label="live gauge (rolling window)")
        cost.set(xlabel="seconds into the run", ylabel="USD per 1000 images", title="Cost")
        cost.legend()
        memory.plot(ts, [s.get("rss_mb") or np.nan for s in samples])
        memory.set(
            xlabel="seconds into the run", ylabel="MB", title="Server memory (RSS, all workers)"
        )
        written.append(_save(figure, folder / "cost_memory.png"))
    return written


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    import matplotlib.pyplot as plt

    plt.close(figure)
    return path


def markdown(summary: dict) -> str:
    lines = [f"# Load test: {summary['mode']}", "", "| figure | value |", "|---|---|"]
    for key, value in summary.items():
        if key not in ("options", "steps", "recovery"):
            lines.append(f"| {key} | {value} |")
    if "recovery" in summary:
        lines += [
            "",
            "Lone requests after the load stopped (server-side total ms):",
            "",
            "| seconds after | ms |",
            "|---|---|",
        ]
        lines += [f"| {t} | {ms} |" for t, ms in summary["recovery"]]
    if "steps" in summary:
        lines += ["", "| offered/s | sent | ok | p95 s | sustained |", "|---|---|---|---|---|"]
        lines += [
            f"| {s['offered']} | {s['sent']} | {s['ok']} | {s['p95']} | {s['sustained']} |"
            for s in summary["steps"]
        ]
    return "\n".join(lines) + "\n"


# --- with and without the degrade ladder -----------------------------------------------------

COMPARED = ("achieved_rate_mean", "cost_per_1000_images_usd", "rejected", "requests_sent")


def compare_degrade(rounds: dict[str, list[dict]]) -> dict:
    """Overload runs with the ladder off and on (alternating rounds of the same run): the median
    of each figure per setting, and on/off ratios."""
    medians = {
        setting: {
            key: float(np.median([r[key] for r in runs if r.get(key) is not None]))
            for key in (*COMPARED, "offered_rate_mean", "server_cpu_s_per_image", "loadgen_cpu_s")
            if any(r.get(key) is not None for r in runs)
        }
        | {
            "latency_ok_p50_s": float(np.median([r["latency_ok_s"]["p50"] for r in runs])),
            "latency_ok_p95_s": float(np.median([r["latency_ok_s"]["p95"] for r in runs])),
            "ok_reduced_share": float(
                np.median([r["ok_by_level"]["reduced"] / max(1, r["ok"]) for r in runs])
            ),
            "rounds": len(runs),
        }
        for setting, runs in rounds.items()
    }
    off, on = medians["off"], medians["on"]
    ratios = {
        "answered_images_per_s": round(on["achieved_rate_mean"] / off["achieved_rate_mean"], 3),
        "cost_per_1000_images": round(
            on["cost_per_1000_images_usd"] / off["cost_per_1000_images_usd"], 3
        ),
        "refused": round(on["rejected"] / off["rejected"], 3) if off["rejected"] else None,
    }
    if "server_cpu_s_per_image" in on and "server_cpu_s_per_image" in off:
        ratios["server_cpu_s_per_image"] = round(
            on["server_cpu_s_per_image"] / off["server_cpu_s_per_image"], 3
        )
    goals = {
        "answered_images_per_s >= 2x": ratios["answered_images_per_s"] >= 2.0,
        "cost per 1000 answered lower": ratios["cost_per_1000_images"] < 1.0,
        "fewer refusals": on["rejected"] < off["rejected"],
    }
    return {
        "mode": "overload, degrade off vs on",
        "off": off,
        "on": on,
        "ratios": ratios,
        "goals_met": goals,
    }


def comparison_markdown(comparison: dict, machine: str = "") -> str:
    off, on = comparison["off"], comparison["on"]
    lines = [f"# {comparison['mode']}", ""]
    if machine:
        lines += [f"Machine: {machine}", ""]
    lines += [
        f"Medians over {on['rounds']} round(s) each, alternating.",
        "",
        "| figure | degrade off | degrade on | on / off |",
        "|---|---|---|---|",
    ]
    ratio_of = {
        "achieved_rate_mean": "answered_images_per_s",
        "cost_per_1000_images_usd": "cost_per_1000_images",
        "rejected": "refused",
        "server_cpu_s_per_image": "server_cpu_s_per_image",
    }
    names = {
        "offered_rate_mean": "offered uploads/s",
        "achieved_rate_mean": "answered images/s",
        "cost_per_1000_images_usd": "cost per 1000 answered (USD)",
        "rejected": "refused",
        "requests_sent": "uploads sent",
        "latency_ok_p50_s": "answered p50 (s)",
        "latency_ok_p95_s": "answered p95 (s)",
        "ok_reduced_share": "share answered at reduced",
        "server_cpu_s_per_image": "server CPU-s per answered image",
        "loadgen_cpu_s": "Locust's CPU-s (same cores)",
    }
    for key, name in names.items():
        if key not in off or key not in on:
            continue
        ratio = comparison["ratios"].get(ratio_of.get(key, ""), "")
        lines.append(f"| {name} | {off[key]:.4g} | {on[key]:.4g} | {ratio} |")
    lines += ["", "| goal | met |", "|---|---|"]
    lines += [f"| {goal} | {met} |" for goal, met in comparison["goals_met"].items()]
    return "\n".join(lines) + "\n"


def plot_comparison(runs: dict[str, list[dict]], folder: Path, width: float = 10.0) -> Path:
    """Answered and refused images per second over time, one line per setting (first round)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (answered, refused) = plt.subplots(1, 2, figsize=(12, 4), sharex=True)
    for setting, records in runs.items():
        bins = binned(records, records[0]["t"], width)
        answered.plot(bins["t"], bins["ok"], label=f"degrade {setting}: answered/s")
        if bins["reduced"].any():
            answered.plot(bins["t"], bins["reduced"], "--", label=f"degrade {setting}: reduced/s")
        refused.plot(bins["t"], bins["rejected"], label=f"degrade {setting}")
    answered.set(xlabel="seconds into the run", ylabel="images per second", title="Answered")
    refused.set(xlabel="seconds into the run", ylabel="uploads per second", title="Refused (503)")
    answered.legend()
    refused.legend()
    return _save(figure, folder / "degrade_rate.png")
