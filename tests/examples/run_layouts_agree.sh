#!/usr/bin/env bash
# `troupe run` with the example job under several parallel layouts, 6 steps each, all
# seeing the same microbatches in the same order:
#   - pp = 1, 2, 4 (1F1B) and pp = 2 GPipe must write identical losses to --metrics-out,
#     to the last printed digit: each stage runs the single model's kernels on the same
#     microbatch shapes and sums gradients over microbatches in the same order.
#   - dp = 2 (4 microbatches per replica) against dp = 1 (8 microbatches) must agree
#     within 1e-6 relative, not bitwise: the replicas' gradients are summed as
#     (replica 0's sum) + (replica 1's sum), a different association of the same terms.
# Layouts not built yet are refused with a message naming the field.
source "$(dirname "$0")/common.sh"
job=examples/jobs/austen_pp2.toml
run() { "$troupe" run "$job" --set train.steps=6 --set model.n_layer=4 "$@" >/dev/null; }
run --set parallel.pp=1 --metrics-out "$out/pp1"
run --set parallel.pp=2 --metrics-out "$out/pp2" --trace-out "$out/trace.json"
run --set parallel.pp=4 --metrics-out "$out/pp4"
run --set parallel.pp=2 --set parallel.schedule=gpipe --metrics-out "$out/gpipe"
test "$(wc -l < "$out/pp1")" -eq 6 || { echo "FAIL: expected 6 metrics lines"; exit 1; }
for f in pp2 pp4 gpipe; do
  if ! diff <(losses "$out/pp1") <(losses "$out/$f"); then echo "FAIL: $f losses differ from pp=1"; exit 1; fi
done
run --set parallel.dp=1 --set parallel.microbatches=8 --metrics-out "$out/dp1"
run --set parallel.dp=2 --set parallel.microbatches=4 --metrics-out "$out/dp2"
paste <(losses "$out/dp1") <(losses "$out/dp2") | awk '{
  d = $1 - $2; if (d < 0) d = -d
  if (d > 1e-6 * $1) { print "FAIL: dp=2 loss " $2 " vs dp=1 " $1 " at step " NR; bad = 1 }
  if (d > worst) worst = d } END { if (bad) exit 1; print "dp=2 vs dp=1: largest loss difference " worst }'
if "$troupe" run "$job" --set parallel.virtual_stages=2 --set parallel.schedule=interleaved 2>"$out/err"; then
  echo "FAIL: interleaved execution should be refused until stages run model chunks"; exit 1
fi
grep -q "parallel.schedule" "$out/err" || { echo "FAIL: error does not name parallel.schedule:"; cat "$out/err"; exit 1; }
# The trace is valid Chrome-trace JSON with every microbatch's forward and backward on
# both stage tracks for each step, and the metrics carry a bubble fraction in [0, 1).
python3 - "$out/trace.json" "$out/pp2" <<'PY'
import json, sys
ev = json.load(open(sys.argv[1]))["traceEvents"]
spans = [e for e in ev if e["ph"] == "X"]
names = {e["tid"]: e["args"]["name"] for e in ev if e["ph"] == "M"}
assert names == {0: "stage0", 1: "stage1"}, names
for tid in (0, 1):
    got = sorted((e["args"]["step"], e["name"]) for e in spans if e["tid"] == tid)
    want = sorted((s, f"{op}{m}") for s in range(6) for op in "FB" for m in range(4))
    assert got == want, (tid, got[:5])
for line in open(sys.argv[2]):
    b = json.loads(line)["bubble_fraction"]
    assert 0 <= b < 1, b
PY
echo "PASS: pp=1/2/4 and gpipe losses identical: $(losses "$out/pp1" | tr '\n' ' ')"
