#!/usr/bin/env bash
# Checkpoints with `troupe run`: a 6-step run writing checkpoints after steps 3 and 6;
# the step-6 checkpoint is then damaged (one byte of a shard); resuming must warn,
# naming that file, fall back to step 3, and write exactly the uninterrupted run's
# losses for steps 4-6 — also when resumed into another layout (pp=1, and pp=1 x dp=2
# within 1e-6 relative, see run_layouts_agree.sh for why dp is not bitwise).
source "$(dirname "$0")/common.sh"
job=(examples/jobs/austen_pp2.toml --set train.steps=6 --set "checkpoint.dir=\"$out/ck\"")
"$troupe" run "${job[@]}" --set checkpoint.disk_every=3 --metrics-out "$out/full" >/dev/null
test -f "$out/ck/step-00000003/manifest.json" && test -f "$out/ck/step-00000006/stage1.safetensors" ||
  { echo "FAIL: checkpoints missing"; ls -R "$out/ck"; exit 1; }
ls "$out/ck" | grep -q tmp && { echo "FAIL: a temporary checkpoint folder was left behind"; exit 1; }
printf 'x' | dd of="$out/ck/step-00000006/stage1.safetensors" bs=1 seek=5000 conv=notrunc 2>/dev/null
for layout in "parallel.pp=2" "parallel.pp=1"; do
  head -3 "$out/full" > "$out/resumed"
  "$troupe" run "${job[@]}" --set "$layout" --resume --metrics-out "$out/resumed" >"$out/log" 2>"$out/err"
  grep -q "step-00000006/stage1.safetensors: checksum" "$out/err" || { echo "FAIL: no warning naming the bad shard"; cat "$out/err"; exit 1; }
  grep -q "resumed from .* at step 3" "$out/log" || { echo "FAIL: did not resume at step 3"; cat "$out/log"; exit 1; }
  diff <(losses "$out/full") <(losses "$out/resumed") || { echo "FAIL: resumed losses differ ($layout)"; exit 1; }
done
head -3 "$out/full" > "$out/resumed"
"$troupe" run "${job[@]}" --set parallel.pp=1 --set parallel.dp=2 --set parallel.microbatches=2 --resume \
  --metrics-out "$out/resumed" >/dev/null 2>&1
paste <(losses "$out/full") <(losses "$out/resumed") | awk '{ d = $1 - $2; if (d < 0) d = -d;
  if (d > 1e-6 * $1) { print "FAIL: dp=2 resume differs at step " NR ": " $1 " vs " $2; exit 1 } }'
echo "PASS: resumed after a damaged checkpoint with the uninterrupted losses (pp=2, pp=1, dp=2)"
