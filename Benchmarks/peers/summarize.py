#!/usr/bin/env python3
"""Aggregation for run.sh (standard library only).

  summarize.py wrap-hrtrain --key training.events_per_second [--repeat R] < hrtrain-bench-stdout
      Turns the JSON object that `hrtrain bench --json` prints into one normalised
      record line {"framework": "hrtrain", "events_per_second": ..., "raw": {...}}.

  summarize.py brief < one-record-line

  summarize.py report RESULTS.jsonl --markdown last-run.md --command "..."
      Medians per (framework, mode) over the repeats, ratio hrtrain/peer; prints a table,
      appends one {"type": "summary", ...} line to RESULTS.jsonl, writes the markdown.
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time


def dig(obj, path):
    for part in path.split("."):
        if not isinstance(obj, dict) or part not in obj:
            raise KeyError(path)
        obj = obj[part]
    return obj


def parse_json_output(text):
    """The whole stdout as one JSON value, else the last line that parses."""
    text = text.strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    for line in reversed(text.splitlines()):
        try:
            value = json.loads(line)
            if isinstance(value, dict):
                return value
        except ValueError:
            continue
    raise SystemExit("wrap-hrtrain: no JSON object in hrtrain's output")


def wrap_hrtrain(args):
    raw = parse_json_output(sys.stdin.read())
    try:
        eps = float(dig(raw, args.key))
    except KeyError:
        raise SystemExit(f"wrap-hrtrain: key path {args.key!r} not in hrtrain's JSON (top-level keys: {sorted(raw)})")

    def first(*paths):
        for p in paths:
            try:
                return dig(raw, p)
            except KeyError:
                continue
        return None

    hidden = first("options.spec.hiddenSizes")
    rec = {
        "framework": "hrtrain",
        "version": first("hrtrainVersion", "version"),
        "events_per_second": eps,
        "ms_per_step": first("training.ms_per_step", "ms_per_step"),
        "batch": first("options.batch", "training.batch", "batch"),
        "steps": first("training.steps", "options.steps", "steps"),
        "threads": args.threads,
        "layout": first("options.spec.layerOrder", "training.layout", "layout"),
        "device": first("device.name", "backend", "device"),
        "final_loss": first("training.final_loss", "final_loss"),
        "mode": args.mode,
        "hidden": ",".join(map(str, hidden)) if isinstance(hidden, list) else hidden,
        "warmup_steps": first("options.warmupSteps"),
        "profile": first("options.profile"),
        "key": args.key,
        "raw": raw,
        "loadavg": [round(v, 2) for v in os.getloadavg()],
    }
    if rec["ms_per_step"] is None and rec["batch"]:
        rec["ms_per_step"] = 1e3 * float(rec["batch"]) / eps
    print(json.dumps(rec))


def brief(args):
    for line in sys.stdin:
        if line.strip():
            r = json.loads(line)
            print(f"{r['events_per_second']:,.0f} events/s, {r['ms_per_step']:.1f} ms/step, load {r['loadavg'][0]}")


def label(rec):
    mode = rec.get("mode")
    return f"{rec['framework']} ({mode})" if mode else rec["framework"]


def versions(recs):
    out = {}
    for r in recs:
        out.setdefault(r["framework"], r.get("version"))
    return out


def machine():
    model, cores = platform.processor() or "?", os.cpu_count()
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        for line in text.splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "Model name":
                model = value.strip()
            elif key.strip() == "CPU(s)":
                cores = int(value.strip())
    except (OSError, subprocess.CalledProcessError, ValueError):
        pass
    return {"model": model, "cpus": cores, "kernel": platform.release()}


def report(args):
    recs = []
    with open(args.results, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            r = json.loads(line)
            if r.get("type") == "summary" or "events_per_second" not in r:
                continue
            recs.append(r)
    if not recs:
        raise SystemExit(f"{args.results}: no measurements")

    groups = {}
    for r in recs:
        groups.setdefault(label(r), []).append(r)
    order = sorted(groups, key=lambda k: (not k.startswith("hrtrain"), k))
    hrs = [k for k in order if k.startswith("hrtrain")]
    hr = hrs[0] if hrs else None
    hr_medians = {k: statistics.median(r["events_per_second"] for r in groups[k]) for k in hrs}

    rows = []
    for k in order:
        eps = [r["events_per_second"] for r in groups[k]]
        ms = [r["ms_per_step"] for r in groups[k] if r.get("ms_per_step") is not None]
        loads = [r["loadavg"][0] for r in groups[k] if r.get("loadavg")]
        med = statistics.median(eps)
        rows.append({
            "name": k,
            "runs": len(eps),
            "events_per_second_median": med,
            "events_per_second_min": min(eps),
            "events_per_second_max": max(eps),
            "ms_per_step_median": statistics.median(ms) if ms else None,
            "loadavg1_min": min(loads) if loads else None,
            "loadavg1_max": max(loads) if loads else None,
            "hrtrain_over_peer": {h: hr_medians[h] / med for h in hrs if h != k},
        })

    summary = {
        "type": "summary",
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": machine(),
        "versions": versions(recs),
        "command": args.command.strip(),
        "rows": rows,
        "note": args.note,
    }
    with open(args.results, "a", encoding="utf-8") as f:
        f.write(json.dumps(summary) + "\n")

    def fmt(v, spec):
        return format(v, spec) if v is not None else "—"

    header = (
        "| framework (mode) | runs | events/s median | min – max | ms/step median | "
        + "".join(f"{h} / it | " for h in hrs)
        + "load avg (1 min) |"
    )
    lines = [header, "|---|---:|---:|---:|---:|" + "---:|" * len(hrs) + "---:|"]
    for r in rows:
        loads = (f"{r['loadavg1_min']:.2f} – {r['loadavg1_max']:.2f}" if r["loadavg1_min"] is not None else "—")
        lines.append(
            f"| {r['name']} | {r['runs']} | {fmt(r['events_per_second_median'], ',.0f')} | "
            f"{fmt(r['events_per_second_min'], ',.0f')} – {fmt(r['events_per_second_max'], ',.0f')} | "
            f"{fmt(r['ms_per_step_median'], '.1f')} | "
            + "".join(f"{fmt(r['hrtrain_over_peer'].get(h), '.2f')} | " for h in hrs)
            + f"{loads} |"
        )
    table = "\n".join(lines)
    print(table)
    if hr is None:
        print("(no hrtrain measurement: ratios left empty)")

    m = summary["machine"]
    peers = [r for r in recs if r["framework"] != "hrtrain"]
    sample = peers[0] if peers else recs[0]
    md = [
        f"## Peers side by side — {summary['date']}",
        "",
        f"- Machine: {m['model']}, {m['cpus']} CPUs (kernel {m['kernel']})",
        "- Versions: " + "; ".join(f"{k} {v}" for k, v in summary["versions"].items()),
        f"- Network: {sample.get('hidden', '256,256,256')} hidden, layout {sample.get('layout')}, "
        f"batch {sample.get('batch')}, {sample.get('steps')} timed steps after {sample.get('warmup_steps', '?')} warm-up, "
        f"{sample.get('threads')} threads, data {sample.get('data', '?')}",
        f"- Command: `{summary['command']}`",
        f"- Raw lines and this summary: `{os.path.relpath(args.results)}`",
        "",
        table,
        "",
    ]
    if hr is None:
        md += ["No hrtrain measurement (`hrtrain bench` not available): ratios left empty.", ""]
    if args.note:
        md += [args.note, ""]
    md += ["Load average is the 1-minute value right after each run (the machine may be shared)."]
    with open(args.markdown, "w", encoding="utf-8") as f:
        f.write("\n".join(md) + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("wrap-hrtrain")
    w.add_argument("--key", required=True, help="dot path of events/s in hrtrain's JSON")
    w.add_argument("--threads", type=int, default=None)
    w.add_argument("--mode", default="opencl", help="the hrtrain backend measured (cpu, opencl)")
    w.set_defaults(func=wrap_hrtrain)
    b = sub.add_parser("brief", help="one record line on stdin -> one human line")
    b.set_defaults(func=brief)
    r = sub.add_parser("report")
    r.add_argument("results")
    r.add_argument("--markdown", required=True)
    r.add_argument("--command", default="")
    r.add_argument("--note", default="")
    r.set_defaults(func=report)
    args = p.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
