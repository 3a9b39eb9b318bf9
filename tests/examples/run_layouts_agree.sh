#!/usr/bin/env bash
# `troupe run` with the example job: the same 6 steps with pp = 1, 2 and 4 (1F1B and
# GPipe) must write identical losses to --metrics-out, to the last printed digit:
# each stage runs the single model's kernels on the same microbatch shapes and sums
# gradients in the same order, so the layouts are bitwise equal. Also: layouts that
# are not built yet are refused with a message naming the field.
set -euo pipefail
troupe=$1
root=$2
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
cd "$root"
job=examples/jobs/austen_pp2.toml
run() { "$troupe" run "$job" --set train.steps=6 --set model.n_layer=4 "$@" >/dev/null; }
losses() { sed -e 's/.*"loss":\([^,]*\),.*/\1/' "$1"; }
run --set parallel.pp=1 --metrics-out "$out/pp1"
run --set parallel.pp=2 --metrics-out "$out/pp2"
run --set parallel.pp=4 --metrics-out "$out/pp4"
run --set parallel.pp=2 --set parallel.schedule=gpipe --metrics-out "$out/gpipe"
test "$(wc -l < "$out/pp1")" -eq 6 || { echo "FAIL: expected 6 metrics lines"; exit 1; }
for f in pp2 pp4 gpipe; do
  if ! diff <(losses "$out/pp1") <(losses "$out/$f"); then echo "FAIL: $f losses differ from pp=1"; exit 1; fi
done
if "$troupe" run "$job" --set parallel.dp=2 --set data.batch_size=8 2>"$out/err"; then
  echo "FAIL: dp=2 should be refused until replicas exist"; exit 1
fi
grep -q "parallel.dp" "$out/err" || { echo "FAIL: error does not name parallel.dp:"; cat "$out/err"; exit 1; }
echo "PASS: pp=1/2/4 and gpipe losses identical: $(losses "$out/pp1" | tr '\n' ' ')"
