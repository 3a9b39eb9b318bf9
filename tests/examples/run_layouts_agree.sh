#!/usr/bin/env bash
# `troupe run` with the example job under several parallel layouts, 6 steps each, all
# seeing the same microbatches in the same order:
#   - pp = 1, 2, 4 (1F1B), pp = 2 GPipe and pp = 2 x 2 chunks interleaved must write
#     identical losses to --metrics-out,
#     to the last printed digit: each stage runs the single model's kernels on the same
#     microbatch shapes and sums gradients over microbatches in the same order.
#   - dp = 2 (4 microbatches per replica) against dp = 1 (8 microbatches) must agree
#     within 1e-6 relative, not bitwise: the replicas' gradients are summed as
#     (replica 0's sum) + (replica 1's sum), a different association of the same terms.
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
run --set parallel.dp=2 --set parallel.microbatches=4 --metrics-out "$out/dp2" --trace-out "$out/trace_dp.json"
python3 - "$out/trace_dp.json" <<'PY'
import json, sys
ev = json.load(open(sys.argv[1]))["traceEvents"]
comm = [e for e in ev if e["ph"] == "X" and e["cat"] == "communication"]
# pp=2 x dp=2: every stage actor runs one gradient all-reduce per step.
assert sorted({e["tid"] for e in comm}) == [0, 1, 2, 3], comm[:3]
assert len(comm) == 4 * 6, len(comm)
PY
# The graph changes between steps: dp 1 -> 2 after step 2, back to 1 after step 4 (the
# microbatch size stays, so replicas take 4 microbatches each): the same tolerance.
"$troupe" run "$job" --set train.steps=6 --set model.n_layer=4 --set parallel.dp=1 --set parallel.microbatches=8 \
  --scale-dp 2@2 --scale-dp 1@4 --metrics-out "$out/scaled" > "$out/scaled.log"
grep -q "scaled to dp=2 after step 2 in .* ms: 4 actors, 4 microbatches per replica" "$out/scaled.log" ||
  { echo "FAIL: scale-up not reported"; cat "$out/scaled.log"; exit 1; }
grep -q "scaled to dp=1 after step 4" "$out/scaled.log" || { echo "FAIL: scale-down not reported"; exit 1; }
if "$troupe" run "$job" --scale-dp two@2 2>"$out/err" >/dev/null; then echo "FAIL: bad --scale-dp accepted"; exit 1; fi
grep -q "\-\-scale-dp 'two@2': expected N@STEP" "$out/err" || { echo "FAIL: bad --scale-dp not named:"; cat "$out/err"; exit 1; }
paste <(losses "$out/dp1") <(losses "$out/scaled") | awk '{
  d = $1 - $2; if (d < 0) d = -d
  if (d > 1e-6 * $1) { print "FAIL: scaled loss " $2 " vs dp=1 " $1 " at step " NR; bad = 1 } } END { exit bad }'
paste <(losses "$out/dp1") <(losses "$out/dp2") | awk '{
  d = $1 - $2; if (d < 0) d = -d
  if (d > 1e-6 * $1) { print "FAIL: dp=2 loss " $2 " vs dp=1 " $1 " at step " NR; bad = 1 }
  if (d > worst) worst = d } END { if (bad) exit 1; print "dp=2 vs dp=1: largest loss difference " worst + 0 }'
# Interleaved 1F1B: 2 stages x 2 model chunks of one layer each, and the 4 chunks of
# pp = 4 (1F1B) hold the same layers: identical losses to pp = 1 as well (each chunk's
# backwards run in microbatch order; the norm is summed per chunk in model order).
run --set parallel.pp=2 --set parallel.virtual_stages=2 --set parallel.schedule=interleaved --metrics-out "$out/il" \
  --graph-out "$out/il.json"
diff <(losses "$out/pp1") <(losses "$out/il") || { echo "FAIL: interleaved losses differ from pp=1"; exit 1; }
python3 - "$out/il.json" <<'PY'
import json, sys
g = json.load(open(sys.argv[1]))
layers = {n["name"]: n["layers"] for n in g["nodes"]}
assert layers == {"stage0": [[0, 1], [2, 3]], "stage1": [[1, 2], [3, 4]]}, layers
# 3 chunk edges, each a pair of channels; the wrap-around stage1 -> stage0 carries chunk 1.
acts = sorted((e["from"], e["to"], e["kind"]) for e in g["edges"] if e["kind"].startswith("activations"))
assert acts == [("stage0", "stage1", "activations (chunk 0)"), ("stage0", "stage1", "activations (chunk 2)"),
                ("stage1", "stage0", "activations (chunk 1)")], acts
PY
if "$troupe" run "$job" --set parallel.pp=4 --set parallel.virtual_stages=2 --set parallel.schedule=interleaved \
    --set model.n_layer=4 2>"$out/err" >/dev/null; then
  echo "FAIL: 4 layers cannot fill 4 stages x 2 chunks"; exit 1
fi
grep -q "8 pipeline chunks need at least as many layers" "$out/err" || { echo "FAIL: layer shortage not named:"; cat "$out/err"; exit 1; }
# The trace is valid Chrome-trace JSON with every microbatch's forward and backward on
# both stage tracks for each step, and the metrics carry a bubble fraction in [0, 1).
python3 - "$out/trace.json" "$out/pp2" <<'PY'
import json, sys
ev = json.load(open(sys.argv[1]))["traceEvents"]
spans = [e for e in ev if e["ph"] == "X" and e["cat"] in ("forward", "backward")]
names = {e["tid"]: e["args"]["name"] for e in ev if e["ph"] == "M"}
assert names == {0: "stage0", 1: "stage1"}, names
for tid in (0, 1):
    got = sorted((e["args"]["step"], e["name"]) for e in spans if e["tid"] == tid)
    want = sorted((s, f"{op}{m}") for s in range(6) for op in "FB" for m in range(4))
    assert got == want, (tid, got[:5])
# 1F1B with p = 2: stage 0 waits for stage 1's first backward each step, so both tracks
# show idle spans, and no span overlaps the next one on its track.
for tid in (0, 1):
    track = sorted((e["ts"], e["ts"] + e["dur"], e["cat"]) for e in ev if e["ph"] == "X" and e["tid"] == tid)
    assert any(c == "idle" for _, _, c in track), tid
    for a, b in zip(track, track[1:]):
        assert a[1] <= b[0] + 1e-3, (tid, a, b)
for line in open(sys.argv[2]):
    b = json.loads(line)["bubble_fraction"]
    assert 0 <= b < 1, b
PY
echo "PASS: pp=1/2/4, gpipe and interleaved losses identical: $(losses "$out/pp1" | tr '\n' ' ')"
