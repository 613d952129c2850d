"""The report's sections on CPU, outputs, batch stages and partition counts (bench/run.py write_report)."""

from __future__ import annotations

from typing import Any

from bench import cpu, outputs, partitions, stages

# The stage breakdown's topics shown in the .md (the JSON has every topic).
SHOWN_TOPICS = ("likes", "creator-events", "all")


def throughput_rows(throughput: dict[str, dict[str, Any]]) -> list[str]:
    """Likes/s of each contender in its 5%..95% window, first to last, and the ratios."""
    lf = next(r["rate"] for name, r in throughput.items() if name.startswith("likeflow"))
    raw = throughput.get("raw aiokafka", {}).get("rate")
    lines = [
        "| contender | likes/s (5%..95% window) | likes/s (first to last) | likeflow / contender | "
        "contender / raw aiokafka |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, r in throughput.items():
        first_to_last = r.get("rate_first_to_last")
        lines.append(
            f"| {name} | {r['rate']:,.0f} | "
            + (f"{first_to_last:,.0f}" if first_to_last else "n/a")
            + f" | {lf / r['rate']:.3g} | "
            + (f"{r['rate'] / raw:.3g}" if raw else "n/a")
            + " |"
        )
    return lines


def sections(results: dict[str, Any]) -> list[str]:
    """CPU per like by contender, outputs per like and stages per likeflow run, latency steps'
    stages and CPU, and the partition counts; empty parts are left out."""
    t = results["throughput"]
    md: list[str] = []
    if table := cpu.markdown(t):
        md += ["", "CPU: user + system time of each process, all threads, /proc/<pid>/stat.", "", *table]
    for name, r in t.items():
        if r.get("outputs"):
            md += ["", *outputs.markdown(r["outputs"], f"{name}: records produced")]
        if r.get("stages"):
            shown = {k: v for k, v in r["stages"].items() if k in SHOWN_TOPICS}
            md += ["", *stages.markdown(shown, f"{name}: batch stages in the 5%..95% window")]
    for rate, step in results.get("latency", {}).items():
        if step.get("cpu_us_per_like"):
            c = step["cpu_us_per_like"]
            md += [
                "",
                f"At {rate} likes/s offered, CPU µs per like sent: worker {c.get('worker', 0):.1f}, "
                f"broker {c.get('broker', float('nan')):.1f}, Redis {c.get('redis', float('nan')):.1f}.",
            ]
        if step.get("stages"):
            shown = {k: v for k, v in step["stages"].items() if k in SHOWN_TOPICS}
            md += ["", *stages.markdown(shown, f"at {rate} likes/s: batch stages")]
    if results.get("partitions"):
        md += ["", *partitions.markdown(results["partitions"])]
    return md
