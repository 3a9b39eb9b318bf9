#!/usr/bin/env bash
# Supervision: `troupe run` with injected failures (in forward, backward, the optimizer
# step, several in one run, and with data-parallel replicas) must restart the stage
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
  grep -q "recovered: restarted the stage actors" "$out/$1.log" || { echo "FAIL: $1: no recovery reported"; cat "$out/$1.log"; exit 1; }
  grep -q "injected fault" "$out/$1.log" || { echo "FAIL: $1: root cause not reported"; cat "$out/$1.log"; exit 1; }
  diff <(losses "$out/$2") <(losses "$out/$1") || { echo "FAIL: $1: losses differ from the run without failures"; exit 1; }
  echo "ok: $1 ($(grep -c recovered "$out/$1.log") recoveries)"
}
run_case forward ref '["stage0@step2:forward"]'
run_case backward ref '["stage1@step5:backward"]'
run_case optimizer ref '["stage1@step4:optimizer"]'
run_case several ref '["stage0@step2:backward", "stage1@step7:forward", "stage0@step8:optimizer"]'
run_case dp2 ref_dp2 '["stage1.replica1@step5:backward"]' --set parallel.dp=2
if "$troupe" run "${job[@]}" --set supervision.max_restarts=0 --set 'fault.kill=["stage1@step3:forward"]' \
    >"$out/esc.log" 2>&1; then
  echo "FAIL: a fault beyond the restart intensity must fail the run"; exit 1
fi
grep -q "restart intensity exceeded" "$out/esc.log" || { echo "FAIL: no escalation message"; cat "$out/esc.log"; exit 1; }
echo "PASS: every injected failure recovered with the fault-free losses; intensity escalates"
