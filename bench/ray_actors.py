#!/usr/bin/env python3
"""Ray peer for `troupe bench actors`: a Ray actor round trip with the same payload sizes.

A local Ray instance (num_cpus=2, no dashboard) and one actor whose method does what
Troupe's echo server does: read the payload's last byte, and answer (seq, payload) with
its first byte set to uint8(seq) ^ last byte. Ray pickles the bytes into the call and
back (payloads over ~100 KiB travel through its shared-memory object store), and the
actor runs in a worker process, so this is a cross-process round trip, unlike the
in-process CAF numbers it is compared with.

  latency:    ray.get(actor.echo.remote(...)) one call at a time, after a warm-up;
              median and p99 in microseconds over --iters calls.
  throughput: --window calls in flight (an actor runs its calls in order, so the oldest
              is awaited first and a new one sent); --iters calls, messages/s.

Prints progress on stderr and one JSON object on its last stdout line; on failure the
object is {"error": "..."} and the exit status is 1. Usage:
  python3 bench/ray_actors.py --sizes 8,1024,65536,1048576 --iters 1000 --window 64
"""
import argparse
import collections
import json
import logging
import statistics
import sys
import time


def quantile(xs, q):
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="8,1024,65536,1048576")
    ap.add_argument("--iters", type=int, default=1000)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--warmup", type=int, default=0, help="default: iters / 10, at least 20")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    warmup = args.warmup or max(20, args.iters // 10)

    try:
        import ray
    except Exception as e:  # the caller reports this as "skipped", never as numbers
        print(json.dumps({"error": f"import ray: {e}"}))
        return 1

    @ray.remote
    class Echo:
        def echo(self, seq, payload):
            b = bytearray(payload)  # bytes are immutable: the touch needs a writable copy
            b[0] = (seq & 0xFF) ^ b[-1]
            return seq, bytes(b)

    t0 = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    start_s = time.perf_counter() - t0
    print(f"ray_actors: ray {ray.__version__} started in {start_s:.1f} s", file=sys.stderr, flush=True)
    try:
        actor = Echo.remote()
        ray.get(actor.echo.remote(0, b"\x5a"))  # wait until the actor's process is up

        def check(seq, reply):
            rseq, p = reply
            if rseq != seq or p[0] != (seq & 0xFF) ^ 0x5A:
                raise RuntimeError(f"reply {rseq} does not match request {seq}")

        results = []
        for n in sizes:
            payload = b"\x5a" * n
            for seq in range(warmup):
                check(seq, ray.get(actor.echo.remote(seq, payload)))
            rtt = []
            for seq in range(args.iters):
                t = time.perf_counter()
                reply = ray.get(actor.echo.remote(seq, payload))
                rtt.append((time.perf_counter() - t) * 1e6)
                check(seq, reply)

            def stream(count):
                inflight = collections.deque()
                for seq in range(count):
                    if len(inflight) == args.window:
                        s, ref = inflight.popleft()
                        check(s, ray.get(ref))
                    inflight.append((seq, actor.echo.remote(seq, payload)))
                while inflight:
                    s, ref = inflight.popleft()
                    check(s, ray.get(ref))

            stream(max(warmup, args.window))
            t = time.perf_counter()
            stream(args.iters)
            msgs = args.iters / (time.perf_counter() - t)
            r = {"bytes": n,
                 "latency_us": {"median": statistics.median(rtt), "p99": quantile(rtt, 0.99)},
                 "msgs_per_s": msgs}
            print(f"ray_actors: {n} B: {r['latency_us']['median']:.0f} us median, "
                  f"{r['latency_us']['p99']:.0f} us p99, {msgs:.0f} msg/s", file=sys.stderr, flush=True)
            results.append(r)
    except Exception as e:
        print(json.dumps({"error": f"{type(e).__name__}: {e}"}))
        return 1
    finally:
        ray.shutdown()
    print(json.dumps({"bench": "ray_actors", "ray_version": ray.__version__,
                      "python": sys.version.split()[0], "num_cpus": 2, "iters": args.iters,
                      "warmup": warmup, "window": args.window, "start_s": start_s,
                      "results": results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
