#!/usr/bin/env python3
"""Prints a loadgen `--uid-base` whose p2p pairs sit on this server's shards in a chosen way.

loadgen pairs users (base + 2p, base + 2p + 1), and the server's owner shard of a user is a
Fibonacci hash (shards/src/route/routing.rs), so consecutive uids fall into runs: for one base
every pair shares a shard, for another none does, and 1:1 flat out differed 1.6x between such
bases on one build (1,206,738-1,261,163 against 731,664-794,854 deliveries/s, 50 pairs, two
shards). loadgen picks a random base, so the benchmark scripts pin one instead.

  uid_base.py PAIRS mixed   # the share of same-shard pairs random pairing gives (1 / shards)
  uid_base.py 1 same        # the pair on one shard
  uid_base.py 1 cross       # the pair across shards
SHARDS (default: this machine's cores, the server's default) overrides the shard count.
"""
import os
import sys


def owner_of(uid, shards):
    return ((uid * 0x9E3779B97F4A7C15) % 2**64 >> 32) % shards


def same_share(base, pairs, shards):
    return sum(owner_of(base + 2 * p, shards) == owner_of(base + 2 * p + 1, shards) for p in range(pairs)) / pairs


def main():
    pairs, how = int(sys.argv[1]), sys.argv[2]
    shards = int(os.environ.get("SHARDS") or os.cpu_count() or 1)
    want = {"same": 1.0, "cross": 0.0, "mixed": 1.0 / shards}[how]
    if shards == 1:
        want = 1.0
    best = min(range(7_000_000, 7_400_000, 2 * pairs), key=lambda b: abs(same_share(b, pairs, shards) - want))
    print(best)


if __name__ == "__main__":
    main()
