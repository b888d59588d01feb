"""Which later turns of `benchmarks/affinity.py --json` shared their replica, and what it cost.

    .venv/bin/python benchmarks/affinity_sharing.py turns.json

For each mode (the ordinary rounds only, not the skewed ones): the later turns by how many other
requests were running on their replica when they were sent, with their median TTFT, and of those
sharing with one other request, whether that one was still in its prefill (before its first
token) or decoding. A turn runs from its start to the next turn of its conversation (the client
sends it at once); a conversation's last turn is taken to end after its first token plus
`DECODE_S` per completion token, an estimate (SmolLM2 on one thread decodes at about that pace).
Also: the new conversations that went to a replica running more requests than another did.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

DECODE_S = 0.04
Turn = dict[str, Any]


def ends_of(turns: list[Turn]) -> dict[int, float]:
    by_conversation: defaultdict[int, list[Turn]] = defaultdict(list)
    for t in turns:
        by_conversation[t["conversation"]].append(t)
    ends: dict[int, float] = {}
    for conv in by_conversation.values():
        conv.sort(key=lambda t: t["turn"])
        for i, t in enumerate(conv):
            last = t["start_s"] + t["ttft_s"] + t["completion_tokens"] * DECODE_S
            ends[id(t)] = conv[i + 1]["start_s"] if i + 1 < len(conv) else last
    return ends


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("json", help="the file benchmarks/affinity.py --json wrote")
    args = p.parse_args()
    runs = json.loads(Path(args.json).read_text())
    # the ordinary rounds come first, then the skewed ones (rr and affinity only)
    n_rounds = sum(1 for r in runs if r["mode"] == "pinned")
    print("| routing | others on the replica | later turns | TTFT median s | TTFT max s |")
    print("| --- | --- | ---: | ---: | ---: |")
    notes: list[str] = []
    for mode in ("pinned", "rr", "affinity"):
        rows: list[tuple[int, float]] = []
        phases: defaultdict[str, list[float]] = defaultdict(list)
        placed: Counter[str] = Counter()
        for run in [r for r in runs if r["mode"] == mode][:n_rounds]:
            turns = run["turns"]
            ends = ends_of(turns)
            replicas = {t["replica"] for t in turns}
            for t in turns:
                s = t["start_s"]
                running = [u for u in turns if u is not t and u["start_s"] <= s < ends[id(u)]]
                here = [u for u in running if u["replica"] == t["replica"]]
                if t["turn"] == 0:
                    least = min(sum(u["replica"] == r for u in running) for r in replicas)
                    placed["least loaded" if len(here) == least else "busier"] += 1
                    continue
                rows.append((len(here), t["ttft_s"]))
                if len(here) == 1:
                    u = here[0]
                    phase = "prefilling" if s < u["start_s"] + u["ttft_s"] else "decoding"
                    phases[phase].append(t["ttft_s"])
        for k in sorted({n for n, _ in rows}):
            v = [x for n, x in rows if n == k]
            print(f"| {mode} | {k} | {len(v)} | {statistics.median(v):.2f} | {max(v):.2f} |")
        split = ", ".join(
            f"other {ph}: {len(v)} turns, TTFT median {statistics.median(v):.2f} s"
            for ph, v in sorted(phases.items())
        )
        notes.append(
            f"{mode}: sharing with one other request: {split or '-'}; new conversations: "
            + ", ".join(f"{k} {v}" for k, v in sorted(placed.items()))
        )
    print()
    for line in notes:
        print(line)


if __name__ == "__main__":
    main()
