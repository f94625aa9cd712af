"""Summarise a py-spy ``--format raw`` profile (collapsed stacks) from ``bench/run --profile``.

``python bench/profile_summary.py bench/out/profile-traffic-framed.txt`` prints the share of
samples per function, inclusive (anywhere on the stack) and by itself (top of the stack).
"""

from __future__ import annotations

import sys
from collections import Counter


def main(path: str, top: int = 30) -> None:
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            n = int(count)
            total += n
            frames = [fr.split(" (")[0] + " (" + fr.split(" (")[-1].split(":")[0].rsplit(
                "/", 1)[-1] + ")" for fr in stack.split(";")]
            for fr in set(frames):
                inclusive[fr] += n
            own[frames[-1]] += n
    print(f"{total} samples")
    print("inclusive:")
    for fr, n in inclusive.most_common(top):
        print(f"  {100 * n / total:5.1f}%  {fr}")
    print("own:")
    for fr, n in own.most_common(top):
        print(f"  {100 * n / total:5.1f}%  {fr}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 30)
