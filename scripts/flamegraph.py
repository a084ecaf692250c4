#!/usr/bin/env python3
"""Folds `perf script` output into stacks and draws a flamegraph SVG, plus a text summary of
the functions where the samples are (self time) and what they sit under (total time).

    perf script -i perf.data | scripts/flamegraph.py OUT_PREFIX [TITLE]

writes OUT_PREFIX.svg (open in a browser: hover shows a frame's share), OUT_PREFIX.folded
(the classic folded format, one `a;b;c count` line per stack, for other tools) and
OUT_PREFIX.top.txt. Used by `scripts/bench` when TALLY_BENCH_PROFILE=1. No dependencies beyond
Python's standard library (the machine has no network to fetch FlameGraph or inferno).
"""

import html
import re
import sys
from collections import Counter, defaultdict

WIDTH = 1600
FRAME_H = 16
MIN_WIDTH_PX = 0.3


def fold(lines):
    """perf script's blank-line separated samples → Counter of root-first stacks."""
    stacks = Counter()
    frames = []
    comm = None
    for raw in lines:
        line = raw.rstrip("\n")
        if not line.strip():
            if frames and comm is not None:
                stacks[";".join([comm] + frames[::-1])] += 1
            frames, comm = [], None
            continue
        if comm is None and not line.startswith((" ", "\t")):
            comm = line.split()[0]
            continue
        parts = line.strip().split(None, 1)
        if len(parts) < 2:
            continue
        symbol = re.sub(r"\s*\([^)]*\)$", "", parts[1])  # drop "(/path/to/binary)"
        symbol = re.sub(r"\+0x[0-9a-f]+$", "", symbol)
        symbol = re.sub(r"::h[0-9a-f]{16}$", "", symbol)  # rustc's hash suffix
        frames.append(symbol or "[unknown]")
    if frames and comm is not None:
        stacks[";".join([comm] + frames[::-1])] += 1
    return stacks


def color(name):
    h = sum(map(ord, name)) % 60
    if "tally" in name:
        return f"rgb(230,{120 + h},60)"
    if "tokio" in name or "actix" in name:
        return f"rgb(90,{140 + h},220)"
    if "sqlx" in name or "postgres" in name:
        return f"rgb(80,{160 + h},110)"
    return f"rgb(220,{90 + h},{60 + h // 2})"


def svg(stacks, title):
    total = sum(stacks.values())
    tree = {}
    for stack, count in stacks.items():
        node = tree
        for frame in stack.split(";"):
            entry = node.setdefault(frame, [0, {}])
            entry[0] += count
            node = entry[1]
    depth_max = max((s.count(";") + 1 for s in stacks), default=1)
    height = (depth_max + 3) * FRAME_H
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'font-family="monospace" font-size="11">',
        f'<text x="8" y="14">{html.escape(title)} — {total} samples</text>',
    ]

    def draw(node, x, depth):
        for name, (count, children) in sorted(node.items()):
            w = WIDTH * count / total
            if w < MIN_WIDTH_PX:
                x += w
                continue
            y = height - (depth + 1) * FRAME_H
            pct = 100.0 * count / total
            label = html.escape(name)
            out.append(
                f'<g><title>{label} ({count} samples, {pct:.2f}%)</title>'
                f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{FRAME_H - 1}" fill="{color(name)}"/>'
            )
            chars = int(w / 7)
            if chars > 3:
                text = name if len(name) <= chars else name[: chars - 2] + ".."
                out.append(f'<text x="{x + 2:.1f}" y="{y + FRAME_H - 4}">{html.escape(text)}</text>')
            out.append("</g>")
            draw(children, x, depth + 1)
            x += w

    draw(tree, 0.0, 0)
    out.append("</svg>")
    return "\n".join(out)


def top(stacks, n=40):
    total = sum(stacks.values()) or 1
    self_time, total_time = Counter(), defaultdict(int)
    for stack, count in stacks.items():
        frames = stack.split(";")
        self_time[frames[-1]] += count
        for frame in set(frames[1:]):
            total_time[frame] += count
    lines = [f"{total} samples", "", "self %  function"]
    lines += [f"{100.0 * c / total:6.2f}  {f}" for f, c in self_time.most_common(n)]
    lines += ["", "total % function (samples with it anywhere on the stack)"]
    lines += [f"{100.0 * c / total:6.2f}  {f}" for f, c in sorted(total_time.items(), key=lambda kv: -kv[1])[:n]]
    return "\n".join(lines) + "\n"


def main():
    if len(sys.argv) < 2:
        sys.exit("usage: perf script | flamegraph.py OUT_PREFIX [TITLE]")
    prefix = sys.argv[1]
    title = sys.argv[2] if len(sys.argv) > 2 else "flamegraph"
    stacks = fold(sys.stdin)
    if not stacks:
        sys.exit("flamegraph.py: no samples in the input")
    with open(prefix + ".folded", "w") as f:
        f.writelines(f"{s} {c}\n" for s, c in stacks.most_common())
    with open(prefix + ".svg", "w") as f:
        f.write(svg(stacks, title))
    with open(prefix + ".top.txt", "w") as f:
        f.write(top(stacks))


if __name__ == "__main__":
    main()
