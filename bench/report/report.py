#!/usr/bin/env python3
"""Writes DIR/REPORT.md and its plots (DIR/*.svg, gnuplot) from the JSON
files scripts/bench.sh leaves in DIR. Python standard library only.

    python3 bench/report/report.py DIR

Each scenario file is {"scenario", "date", "machine", "repetitions",
"metrics": [{"name", "unit", "baseline", "value", "ratio", "target",
"met"}]} with baseline/value/ratio as {"median", "min", "max", "reps"}
(bench/conn/results.hpp). A file that has "results" instead of "metrics"
(rows with a plain "value") is shown as it is.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile

SCENARIOS = [
    ("1", "Per-packet cost of the enforcement programs", ["packet_cost", "packet_inplace"]),
    ("2", "Connection rate", ["conn_rate"]),
    ("3", "Time to first byte", ["ttfb"]),
    ("4", "Bulk throughput", ["bulk"]),
    ("5", "Scale", ["scale"]),
    ("6", "Reload cost", ["reload"]),
    ("7", "HTTP keep-alive requests (wrk)", ["http"]),
]

NOTES = {
    "packet_cost": "Under `BPF_PROG_TEST_RUN` (the kernel's own timer), against an empty "
    "`cgroup_skb` program, rounds interleaved; the hit path runs the test build that reads "
    "the cookie from `skb->mark`, and the estimate adds what the real cookie helper costs "
    "on the miss path.",
    "packet_inplace": "In place: the kernel's BPF statistics (`BPF_ENABLE_STATS`, "
    "run_time_ns / run_cnt) of the agents' attached `tf_egress`/`tf_ingress` during an "
    "iperf3 run, against an empty program attached the same way to the baseline's cgroups "
    "under the same traffic, so the statistics' own clock reads cancel out.",
    "conn_rate": "Connect, 1-byte request, 1-byte reply, close, several client threads, "
    "client in node 0, server in node 1 (network namespaces over a bridge), one agent per "
    "node. No enforcement = the same nodes and agents, client and server in cgroups outside "
    "the enforced ones. Cold peers = both agents restarted just before the window, so it "
    "starts with the channel handshake.",
    "ttfb": "Sequential connections, `connect()` to the reply byte. Cold = both agents "
    "restarted before each sample (channel handshake on the connection's path). The baseline "
    "and value columns are the percentile over all samples pooled; min–max is the range of "
    "the per-repetition percentiles.",
    "bulk": "iperf3 across the two network namespaces, client and server each in its node's "
    "enforced cgroup, against plain cgroups of the same nodes. **trustfence does not "
    "encrypt**: it authenticates and authorizes connections and leaves the bytes as the "
    "workloads send them. The stunnel pair encrypts, so its figure is a reference point, "
    "not a like-for-like alternative.",
    "http": "Debian's `wrk` (`--latency`, HTTP/1.1 keep-alive, one request in flight per "
    "connection) in node 0 against the benchmark's own small HTTP responder in node 1 (a "
    "fixed 3-byte 200 response to every GET). No enforcement = plain cgroups; trustfence = "
    "both ends in the enforced cgroups, channel warm: the connections are attested once, "
    "so this is the per-request cost once allowed. The stunnel and haproxy pairs carry the "
    "same keep-alive connections over mTLS (they encrypt). Latency percentiles are wrk's, "
    "median over the repetitions. For context: no target.",
}


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def num(v, unit=""):
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v)
    if not isinstance(v, (int, float)):
        return str(v)
    a = abs(v)
    if a >= 1000:
        s = f"{v:,.0f}"
    elif a >= 100:
        s = f"{v:.0f}"
    elif a >= 10:
        s = f"{v:.1f}"
    elif a >= 1:
        s = f"{v:.2f}"
    elif a == 0:
        s = "0"
    else:
        s = f"{v:.3f}"
    return s


def med(spread):
    return None if not spread else spread.get("median")


def spread_text(spread, show_range=True):
    if not spread:
        return "–"
    text = num(spread.get("median"))
    if show_range and spread.get("min") is not None and spread.get("max") is not None:
        if len(spread.get("reps", [])) > 1:
            text += f" ({num(spread['min'])}–{num(spread['max'])})"
    return text


def met_text(met):
    return "–" if met is None else ("**met**" if met else "**missed**")


def metrics_table(doc):
    rows = ["| metric | unit | baseline | value (min–max) | ratio (min–max) | target | |",
            "|---|---|---|---|---|---|---|"]
    for m in doc.get("metrics", []):
        ratio = m.get("ratio")
        ratio_text = "–"
        if ratio:
            ratio_text = f"{ratio['median']:.3f}" if ratio.get("median") is not None else "–"
            if len(ratio.get("reps", [])) > 1:
                ratio_text += f" ({ratio['min']:.3f}–{ratio['max']:.3f})"
        rows.append(f"| {m['name']} | {m['unit']} | {spread_text(m.get('baseline'), False)} | "
                    f"{spread_text(m.get('value'))} | {ratio_text} | {m.get('target') or ''} | "
                    f"{met_text(m.get('met'))} |")
    return rows


def results_table(doc):
    """The other shape: rows of name, value, unit, target, met."""
    rows = ["| metric | value | unit | target | |", "|---|---|---|---|---|"]
    for r in doc.get("results", []):
        value = r.get("value")
        if isinstance(value, dict):
            value = spread_text(value)
        else:
            value = num(value)
        rows.append(f"| {r.get('name', r.get('metric', '?'))} | {value} | {r.get('unit', '')} | "
                    f"{r.get('target') or ''} | {met_text(r.get('met'))} |")
    return rows


def all_metrics(doc):
    if "metrics" in doc:
        return doc["metrics"]
    return [{"name": r.get("name", r.get("metric", "?")), "target": r.get("target"),
             "met": r.get("met")} for r in doc.get("results", [])]


# --- plots -----------------------------------------------------------------


class Plotter:
    def __init__(self, out_dir, smoke):
        self.out_dir = out_dir
        self.smoke = smoke
        self.tmp = tempfile.mkdtemp(prefix="tf-report-")
        self.gnuplot = shutil.which("gnuplot")
        self.errors = []

    def close(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def title(self, text):
        return text + (" (smoke run: rough)" if self.smoke else "")

    def run(self, name, script, data):
        """Writes data files, runs gnuplot; returns the SVG's name or None."""
        if not self.gnuplot:
            self.errors.append("gnuplot is not installed (apt-get install gnuplot-nox)")
            return None
        for fname, text in data.items():
            with open(os.path.join(self.tmp, fname), "w") as f:
                f.write(text)
        svg = name + ".svg"
        head = ("set terminal svg size 760,420 dynamic font 'sans,11' background rgb 'white'\n"
                f"set output '{os.path.join(self.out_dir, svg)}'\n"
                "set grid ytics lc rgb '#dddddd'\nset key top left\n")
        proc = subprocess.run([self.gnuplot], input=head + script, text=True, cwd=self.tmp,
                              capture_output=True)
        if proc.returncode != 0:
            self.errors.append(f"gnuplot {name}: {proc.stderr.strip()}")
            return None
        return svg

    def bars(self, name, title, ylabel, groups, series):
        """groups: [(label, [spread per series])]; series: names."""
        lines = []
        for label, spreads in groups:
            cols = [f'"{label}"']
            for s in spreads:
                if s and s.get("median") is not None:
                    cols += [str(s["median"]), str(s.get("min", s["median"])),
                             str(s.get("max", s["median"]))]
                else:
                    cols += ["NaN", "NaN", "NaN"]
            lines.append(" ".join(cols))
        plots = []
        for i, sname in enumerate(series):
            c = 2 + 3 * i
            using = f"{c}:{c + 1}:{c + 2}" + (":xtic(1)" if i == 0 else "")
            plots.append(f"'bars-{name}.dat' using {using} title '{sname}'")
        script = (f"set title '{self.title(title)}'\nset ylabel '{ylabel}'\n"
                  "set style data histogram\nset style histogram errorbars gap 1 lw 1\n"
                  "set style fill solid 0.7 border -1\nset yrange [0:*]\nset boxwidth 0.9\n"
                  "set xtics noenhanced\nset key noenhanced\n"
                  + ("set key off\n" if len(series) == 1 else "") +
                  "plot " + ", ".join(plots) + "\n")
        return self.run(name, script, {f"bars-{name}.dat": "\n".join(lines) + "\n"})

    def cdf(self, name, title, curves):
        """curves: [(label, [[x, fraction], ...])]"""
        data, plots = {}, []
        for i, (label, points) in enumerate(curves):
            if not points:
                continue
            fname = f"cdf-{i}.dat"
            data[fname] = "\n".join(f"{x} {y}" for x, y in points) + "\n"
            plots.append(f"'{fname}' using 1:2 with steps lw 2 title '{label}'")
        if not plots:
            return None
        script = (f"set title '{self.title(title)}'\nset xlabel 'time to first byte (ms, log)'\n"
                  "set ylabel 'fraction of connections'\nset logscale x\nset yrange [0:1.02]\n"
                  "set key bottom right noenhanced\nset grid xtics\n"
                  "plot " + ", ".join(plots) + "\n")
        return self.run(name, script, data)


def find(doc, name):
    for m in (doc or {}).get("metrics", []):
        if m["name"] == name:
            return m
    return None


def plot_packet(plotter, docs):
    groups = []
    for key, how in (("packet_cost", "test run"), ("packet_inplace", "in place")):
        for m in (docs.get(key) or {}).get("metrics", []):
            if m["unit"] != "ns/packet" or "estimate" in m["name"]:
                continue
            prog = m["name"].split()[0]
            groups.append((f"{prog}, {how}", [m.get("baseline"), m.get("value")]))
    if not groups:
        return None
    return plotter.bars("packet_cost", "Per-packet cost (median, min-max)", "ns per packet",
                        groups, ["empty program", "trustfence"])


def plot_rate(plotter, doc):
    metrics = [m for m in doc.get("metrics", []) if m["name"].startswith("conn/s, ") and
               " vs " not in m["name"]]
    if not metrics:
        return None
    groups = [("no enforcement", [metrics[0].get("baseline")])]
    groups += [(m["name"][len("conn/s, "):], [m.get("value")]) for m in metrics]
    return plotter.bars("conn_rate", "Connections per second (median, min-max)", "conn/s",
                        groups, ["conn/s"])


def plot_ttfb(plotter, doc):
    cdf = doc.get("cdf", {})
    keys = [k for k in ("none", "warm", "cold", "stunnel", "haproxy") if k in cdf]
    keys += [k for k in cdf if k not in keys]
    curves = [(cdf[k].get("label", k), cdf[k].get("points", [])) for k in keys]
    return plotter.cdf("ttfb_cdf", "Time to first byte, CDF", curves)


def plot_bulk(plotter, doc):
    groups = []
    one = find(doc, "iperf3 1 stream, trustfence (no encryption)")
    eight = find(doc, "iperf3 8 streams, trustfence (no encryption)")
    stunnel = find(doc, "iperf3 1 stream, stunnel mTLS pair (encrypts)")
    if one:
        groups.append(("1 stream", [one.get("baseline"), one.get("value"),
                                    stunnel.get("value") if stunnel else None]))
    if eight:
        groups.append(("8 streams", [eight.get("baseline"), eight.get("value"), None]))
    if not groups:
        return None
    return plotter.bars("bulk", "iperf3 throughput (median, min-max)", "Gbit/s", groups,
                        ["no enforcement", "trustfence", "stunnel (encrypts)"])


def plot_http(plotter, doc):
    prefix = "HTTP requests/s, "
    metrics = [m for m in doc.get("metrics", []) if m["name"].startswith(prefix)]
    if not metrics:
        return None
    groups = [("no enforcement", [metrics[0].get("baseline")])]
    groups += [(m["name"][len(prefix):], [m.get("value")]) for m in metrics]
    return plotter.bars("http", "HTTP keep-alive requests per second, wrk (median, min-max)",
                        "requests/s", groups, ["req/s"])


# --- the report ------------------------------------------------------------


def machine_line(doc):
    m = doc.get("machine", {})
    return (f"{m.get('cpu', '?')}, {m.get('cores', '?')} cores, {m.get('memory', '?')} memory, "
            f"Linux {m.get('kernel', '?')}")


def text_figures(out_dir):
    """The RESULT and target lines of the text-only tools' logs."""
    lines = []
    for tool in ("crr_rate", "conn_memory", "verdict_delay", "verify_rate"):
        path = os.path.join(out_dir, "logs", tool + ".txt")
        if not os.path.exists(path):
            continue
        with open(path, errors="replace") as f:
            text = [l.rstrip() for l in f if l.strip()]
        picked = [l for l in text if "RESULT" in l]
        if not picked:
            picked = [l for l in text if "target" in l.lower()] or text[-10:]
        if len(picked) < 3:
            picked = text[-10:]
        if picked:
            lines.append(f"[`logs/{tool}.txt`](logs/{tool}.txt):")
            lines.append("```")
            lines += [l.strip() for l in picked[:14]]
            lines.append("```")
    return lines


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: report.py RESULTS_DIR")
    out_dir = os.path.abspath(sys.argv[1])
    run = load(os.path.join(out_dir, "run.json")) or {}
    docs = {}
    for _, _, keys in SCENARIOS:
        for key in keys:
            doc = load(os.path.join(out_dir, key + ".json"))
            if doc is not None:
                docs[key] = doc
    smoke = bool(run.get("smoke")) or any(d.get("smoke") for d in docs.values())
    plotter = Plotter(out_dir, smoke)
    plots = {}
    try:
        plots["1"] = plot_packet(plotter, docs)
        if "conn_rate" in docs:
            plots["2"] = plot_rate(plotter, docs["conn_rate"])
        if "ttfb" in docs:
            plots["3"] = plot_ttfb(plotter, docs["ttfb"])
        if "bulk" in docs:
            plots["4"] = plot_bulk(plotter, docs["bulk"])
        if "http" in docs:
            plots["7"] = plot_http(plotter, docs["http"])
    finally:
        plotter.close()

    md = ["# trustfence benchmark report", ""]
    if smoke:
        md += ["> **Smoke run**: tiny counts to check that everything runs; the figures "
               "are rough.", ""]
    first = next(iter(docs.values()), None)
    if first:
        m = first.get("machine", {})
        last_load = [d.get("machine", {}).get("load_end") for d in docs.values()]
        md += [f"- **Date**: {first.get('date', '?')} (UTC), run took "
               f"{run.get('seconds', '?')} s",
               f"- **Machine**: {machine_line(first)}",
               f"- **Load average** at the start {m.get('load_start', '?')}, at the end "
               f"{next((l for l in reversed(last_load) if l), '?')}: other work on the "
               "machine moves every figure, which is why each alternative runs in the same "
               "repetition as its baseline, interleaved (A B A B …), and ratios are taken "
               "repetition by repetition.",
               "- **Repetitions**: as each scenario states; the tables give the median and, "
               "in brackets, min–max over the repetitions."]
    md += ["", "**trustfence authenticates and authorizes connections; it does not encrypt "
           "them.** The stunnel and haproxy pairs it is compared with do encrypt (mTLS "
           "between the nodes), which is part of what they cost.", "",
           "## How to rerun", "", "As root on Debian 12, from the repository root:", "",
           "```sh",
           "bash scripts/bench.sh            # everything, into bench/results (this report)",
           "bash scripts/bench.sh --smoke    # seconds per scenario, into a temporary directory",
           "bash scripts/bench.sh --only attest --reps 9   # scenarios 1 (in place) to 4, 7",
           "```", ""]
    if run.get("failed"):
        md += [f"**Failed steps: {', '.join(run['failed'])}** (see `logs/`).", ""]

    # Summary of every target.
    md += ["## Targets", "", "| scenario | metric | target | |", "|---|---|---|---|"]
    for number, title, keys in SCENARIOS:
        for key in keys:
            for m in all_metrics(docs.get(key, {})):
                if m.get("target") and m.get("met") is not None:
                    md.append(f"| {number} | {m['name']} | {m['target']} | "
                              f"{met_text(m.get('met'))} |")
    md.append("")

    for number, title, keys in SCENARIOS:
        md += [f"## {number}. {title}", ""]
        present = [k for k in keys if k in docs]
        if not present:
            if number in ("5", "6"):
                why = ("scripts/bench-scale.sh was not there" if not run.get("scale_script")
                       else "scripts/bench-scale.sh wrote no " + keys[0] + ".json")
                md += [f"**Not run**: {why}.", ""]
            else:
                md += ["**Not run** in this run.", ""]
            continue
        for key in present:
            doc = docs[key]
            if key in NOTES:
                md += [NOTES[key], ""]
            elif doc.get("method"):
                md += [f"Method: {doc['method']}.", ""]
            reps = doc.get("repetitions")
            if reps:
                md += [f"Repetitions: {reps}" + (", interleaved with the baseline." if
                                                  any(m.get("baseline") for m in
                                                      doc.get("metrics", [])) else "."), ""]
            md += metrics_table(doc) if "metrics" in doc else results_table(doc)
            md.append("")
        if plots.get(number):
            md += [f"![{title}]({plots[number]})", ""]

    extra = text_figures(out_dir)
    if extra:
        md += ["## Other figures (text)", "",
               "The datapath benchmarks of issue 2 (loopback connect rate with the datapath "
               "attached and detached, kernel memory per tracked connection, ALLOW-to-data "
               "delay) and the X.509-SVID verification rate, as their tools print them:", ""]
        md += extra + [""]
    steps = run.get("steps", [])
    if steps:
        md += ["## Steps", "", "| step | seconds | |", "|---|---|---|"]
        md += [f"| {s['name']} | {s['seconds']} | {'ok' if s['ok'] else '**failed**'} |"
               for s in steps]
        md.append("")
    if plotter.errors:
        md += ["Plots not drawn: " + "; ".join(plotter.errors), ""]
    with open(os.path.join(out_dir, "REPORT.md"), "w") as f:
        f.write("\n".join(md))
    print(f"report: {os.path.join(out_dir, 'REPORT.md')}")
    if plotter.errors:
        for e in plotter.errors:
            print("report: " + e, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
