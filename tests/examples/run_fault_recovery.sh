#!/usr/bin/env bash
# Supervision: `troupe run` with injected failures (in forward, backward, the optimizer
# step, during a checkpoint write, several in one run, a seeded random plan, and with
# data-parallel replicas) must restart the stage
# actors, restore the latest in-memory snapshot, replay, and write exactly the losses of
# the run without failures to --metrics-out (bitwise: replay recomputes the same steps
# from the same state). Recovery must be reported, and a fault the supervisor cannot
# absorb (restart intensity exceeded) must end the run with an error.
source "$(dirname "$0")/common.sh"
job=(examples/jobs/austen_pp2.toml --set train.steps=8 --set checkpoint.snapshot_every=3)
"$troupe" run "${job[@]}" --metrics-out "$out/ref" >/dev/null
"$troupe" run "${job[@]}" --set parallel.dp=2 --metrics-out "$out/ref_dp2" >/dev/null
run_case() {  # name, reference, fault list
  "$troupe" run "${job[@]}" "${@:4}" --set "fault.kill=$3" --metrics-out "$out/$1" > "$out/$1.log"
  grep -q "recovered: the supervisor restarted the stage actors" "$out/$1.log" || { echo "FAIL: $1: no recovery reported"; cat "$out/$1.log"; exit 1; }
  grep -q "injected fault" "$out/$1.log" || { echo "FAIL: $1: root cause not reported"; cat "$out/$1.log"; exit 1; }
  diff <(losses "$out/$2") <(losses "$out/$1") || { echo "FAIL: $1: losses differ from the run without failures"; exit 1; }
  echo "ok: $1 ($(grep -c recovered "$out/$1.log") recoveries)"
}
run_case forward ref '["stage0@step2:forward"]'
run_case backward ref '["stage1@step5:backward"]'
run_case optimizer ref '["stage1@step4:optimizer"]'
run_case several ref '["stage0@step2:backward", "stage1@step7:forward", "stage0@step8:optimizer"]'
run_case dp2 ref_dp2 '["stage1.replica1@step5:backward"]' --set parallel.dp=2
run_case random ref '[]' --set fault.random_count=2 --set fault.random_seed=11
grep -q "fault injection: stage" "$out/random.log" || { echo "FAIL: random plan not printed"; cat "$out/random.log"; exit 1; }
# A crash of the checkpoint writer half-way through a write (after its first shard):
# nothing half-written is published, the writer is restarted and writes the same host
# copy again, training never waits for it, and the losses are those of the plain run.
# Then, in one run, a stage failure too; the surviving checkpoints must load (--resume).
ck=(--set checkpoint.disk_every=4 --set checkpoint.keep=5)
"$troupe" run "${job[@]}" "${ck[@]}" --set checkpoint.dir="$out/ck1" --set 'fault.kill=["stage0@step4:checkpoint"]' \
  --metrics-out "$out/ckfault" > "$out/ckfault.log"
grep -q "checkpoint writer: checkpoint writer died: injected fault stage0@step4:checkpoint" "$out/ckfault.log" ||
  { echo "FAIL: checkpoint writer crash not reported"; cat "$out/ckfault.log"; exit 1; }
diff <(losses "$out/ref") <(losses "$out/ckfault") || { echo "FAIL: losses changed by a checkpoint crash"; exit 1; }
test -f "$out/ck1/step-00000004/manifest.json" && test -f "$out/ck1/step-00000008/manifest.json" ||
  { echo "FAIL: checkpoints missing after the writer's restart:"; ls "$out/ck1"; exit 1; }
if ls -d "$out"/ck1/*.tmp 2>/dev/null; then echo "FAIL: a half-written checkpoint was left behind"; exit 1; fi
"$troupe" run "${job[@]}" "${ck[@]}" --set checkpoint.dir="$out/ck2" \
  --set 'fault.kill=["checkpoint@step4:checkpoint", "stage1@step6:backward"]' --metrics-out "$out/ckmixed" > "$out/ckmixed.log"
diff <(losses "$out/ref") <(losses "$out/ckmixed") || { echo "FAIL: losses changed (checkpoint + stage faults)"; exit 1; }
grep -q "recovered: the supervisor restarted the stage actors" "$out/ckmixed.log" || { echo "FAIL: stage recovery"; exit 1; }
"$troupe" run "${job[@]}" "${ck[@]}" --set checkpoint.dir="$out/ck2" --set train.steps=10 --resume --metrics-out "$out/ckmixed" >/dev/null
test "$(wc -l < "$out/ckmixed")" -eq 10 || { echo "FAIL: resume from a rewritten checkpoint"; exit 1; }
echo "ok: checkpoint writer crash (alone, and with a stage failure) and resume from its checkpoints"
if "$troupe" run "${job[@]}" --set supervision.max_restarts=0 --set 'fault.kill=["stage1@step3:forward"]' \
    >"$out/esc.log" 2>&1; then
  echo "FAIL: a fault beyond the restart intensity must fail the run"; exit 1
fi
grep -q "training exceeded restart intensity 0 in 60 s: child stage1 failed: .*injected fault" "$out/esc.log" || { echo "FAIL: no escalation message"; cat "$out/esc.log"; exit 1; }
echo "PASS: every injected failure recovered with the fault-free losses; intensity escalates"
