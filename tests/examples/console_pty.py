#!/usr/bin/env python3
"""The console in a pseudo-terminal against a running job, as a person would use it.

    python3 tests/examples/console_pty.py TROUPE_BINARY SOURCE_ROOT

A small job (pp=2 on the Austen tokens) starts paused with --listen. `troupe console`
runs in a pty (readline, so Tab completion and the prompt are real), and this script
types into it: help (completed from "he<Tab>"), ps, resume then pause, an actor name
completed by Tab, kill stage1 (and sees it restarted in ps), scale dp 2, set lr, a typo,
logs -f (ended by Enter), resume. It asserts on what the
console printed, on a one-shot `-c ... --json` run beside it, on the refusal of a wrong
token, on the report of the lost connection when the job ends, and on the job's
--metrics-out: every step once and in order, the restart recorded, dp 1 then 2, and the
new learning rate from the set onwards."""
import atexit
import json
import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

troupe, root = sys.argv[1], sys.argv[2]
os.chdir(root)
tmp = tempfile.mkdtemp(prefix="troupe_console_pty.")
STEPS = 30
ANSI = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]|\x1b[=>]|\x07|\r")


children = []  # processes to stop however the script ends


def cleanup():
    for p in children:
        try:
            p.kill() if hasattr(p, "kill") else os.kill(p, signal.SIGKILL)
        except (ProcessLookupError, OSError):
            pass


atexit.register(cleanup)


def fail(msg):
    print("FAIL:", msg)
    sys.exit(1)


job = os.path.join(tmp, "job.toml")
with open(job, "w") as f:
    f.write(f"""
[model]
arch = "llama"
n_layer = 2
n_head = 2
n_kv_head = 1
d_model = 32
d_ff = 64
max_seq_len = 32
[data]
tokens = "data/austen.tok"
batch_size = 8
seq_len = 32
[optimizer]
lr = 1e-3
min_lr = 1e-4
warmup_steps = 5
[train]
steps = {STEPS}
[parallel]
pp = 2
microbatches = 4
[checkpoint]
dir = "{tmp}/ckpt"
snapshot_every = 2
""")
console_file = os.path.join(tmp, "console.json")
metrics = os.path.join(tmp, "metrics.jsonl")
job_log = open(os.path.join(tmp, "job.log"), "w")
proc = subprocess.Popen([troupe, "run", job, "--listen", "127.0.0.1:0", "--paused", "--console-file", console_file,
                         "--metrics-out", metrics], stdout=job_log, stderr=subprocess.STDOUT)
children.append(proc)
for _ in range(600):
    if os.path.exists(console_file) or proc.poll() is not None:
        break
    time.sleep(0.05)
if not os.path.exists(console_file):
    fail("the job wrote no console file:\n" + open(job_log.name).read())
if os.stat(console_file).st_mode & 0o077:
    fail("the console file is readable by others")
address = json.load(open(console_file))["address"]

# --- the console in a pseudo-terminal ---------------------------------------------------
env = dict(os.environ, TERM="xterm", HOME=tmp, INPUTRC="/dev/null")
pid, fd = pty.fork()
if pid == 0:
    os.execvpe(troupe, [troupe, "console", "--console-file", console_file, "--retries", "2"], env)
children.append(pid)
screen = ""  # everything the console printed, escape sequences removed


def read_until(pattern, timeout=60):
    """Reads the pty until the text since the last call matches `pattern`; returns it."""
    global screen
    start = len(screen)
    deadline = time.time() + timeout
    while time.time() < deadline:
        m = re.search(pattern, screen[start:])
        if m:
            return screen[start:start + m.end()]
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                data = os.read(fd, 65536).decode(errors="replace")
            except OSError:
                break
            screen += ANSI.sub("", data)
    fail(f"waited {timeout} s for {pattern!r}; the console printed:\n{screen[start:]}")


def type_line(text, expect):
    os.write(fd, text.encode() + b"\r")
    return read_until(expect)


read_until(r"troupe> ")
# Tab completes the command: "he<Tab>" becomes "help ".
os.write(fd, b"he\t")
read_until(r"help ")
out = type_line("", r"scale dp N.*\n(.*\n)*troupe> ")
if "kill ACTOR" not in out:
    fail("help lists no kill")
out = type_line("ps", r"checkpoint writer.*\n(.*\n)*troupe> ")
if not re.search(r"stage1\s+pipeline stage\s+cpu\s+idle\s+0\s+0\s+1-1", out):
    fail("ps shows no idle stage1 with 0 restarts:\n" + out)
type_line("resume", r"resumed")
time.sleep(0.3)
out = type_line("pause", r"paus\w+.*\n")
out = type_line("status", r"paused: step \d+/30.*\n")
paused_at = int(re.search(r"paused: step (\d+)/", out).group(1))
# Tab completes a unique actor name: "metrics snap<Tab>" -> "metrics snapshotter ".
os.write(fd, b"metrics snap\t")
read_until(r"metrics snapshotter ")
type_line("", r"metrics are per stage actor")
out = type_line("kill stage1", r"killed stage1; its supervisor restarted it in [\d.]+ ms.*\n")
out = type_line("ps", r"checkpoint writer.*\n(.*\n)*troupe> ")
if not re.search(r"stage1\s+pipeline stage\s+cpu\s+\w+\s+1\s", out):
    fail("ps does not show stage1 restarted once:\n" + out)
if not re.search(r"stage0\s+pipeline stage\s+cpu\s+\w+\s+1\s", out):
    fail("ps does not show stage0 restarted with it (one_for_all):\n" + out)
out = type_line("scale dp 2", r"scaled to dp=2 after step (\d+)")
scaled_at = int(re.search(r"after step (\d+)", out).group(1))
type_line("set lr 3e-3", r"optimizer.lr = 0.003 from the next step")
out = type_line("metrcs", r"unknown command 'metrcs'; did you mean 'metrics'\? \(help lists all\)")
# logs -f follows the log until Enter.
os.write(fd, b"logs coordinator -n 3 -f\r")
read_until(r"coordinator: set after step \d+: optimizer.lr = 0.003")
os.write(fd, b"\r")
read_until(r"troupe> ")
out = type_line("ps", r"checkpoint writer.*\n(.*\n)*troupe> ")
for name in ("stage0.replica0", "stage1.replica0", "stage0.replica1", "stage1.replica1"):
    if name not in out:
        fail(f"ps after scale dp 2 has no {name}:\n" + out)

# --- beside it: one-shot JSON, and a wrong token ------------------------------------------
one = subprocess.run([troupe, "console", address, "--console-file", console_file, "-c", "status; metrics", "--json"],
                     capture_output=True, text=True, timeout=60)
replies = [json.loads(l) for l in one.stdout.splitlines()]
if one.returncode != 0 or len(replies) != 2 or not all(r["ok"] for r in replies):
    fail(f"one-shot --json: rc {one.returncode}\n{one.stdout}\n{one.stderr}")
if replies[0]["state"] != "paused" or replies[0]["dp"] != 2:
    fail(f"status --json: {replies[0]}")
if len(replies[1]["actors"]) != 4:
    fail(f"metrics --json: expected 4 stage actors: {replies[1]}")
bad = subprocess.run([troupe, "console", address, "--token", "not-the-token", "-c", "ps"], capture_output=True,
                     text=True, timeout=60)
if bad.returncode == 0 or "refused: wrong token" not in bad.stderr:
    fail(f"a wrong token was not refused: rc {bad.returncode}\n{bad.stdout}\n{bad.stderr}")

# --- resume to the end; the console reports the lost connection and retries --------------
type_line("resume", r"resumed")
try:
    rc = proc.wait(timeout=300)
except subprocess.TimeoutExpired:
    proc.kill()
    fail("the job did not finish")
job_log.close()
if rc != 0:
    fail(f"the job exited with {rc}:\n" + open(job_log.name).read())
os.write(fd, b"status\r")
read_until(r"connection to [\d.:]+ lost")
read_until(r"attempt 2/2 failed")
type_line("quit", r"")
try:
    os.waitpid(pid, 0)
except ChildProcessError:
    pass

# --- the job's metrics ----------------------------------------------------------------------
rows = [json.loads(l) for l in open(metrics)]
if [r["step"] for r in rows] != list(range(1, STEPS + 1)):
    fail(f"metrics steps are not 1..{STEPS} once each: {[r['step'] for r in rows]}")
if rows[-1]["restarts"] != 1:
    fail(f"the kill is not recorded: restarts {rows[-1]['restarts']}")
dps = [r["dp"] for r in rows]
if dps != [1] * scaled_at + [2] * (STEPS - scaled_at):
    fail(f"dp is not 1 for {scaled_at} steps and 2 after: {dps}")
lrs = [r["lr"] for r in rows]
if any(abs(x - 3e-3) > 1e-9 for x in lrs[scaled_at:]) or any(abs(x - 3e-3) < 1e-6 for x in lrs[:scaled_at]):
    fail(f"lr is not the schedule before step {scaled_at} and 3e-3 after: {lrs}")
if not all(r["loss"] == r["loss"] and r["loss"] < 12 for r in rows):
    fail("a loss is NaN or absurd")
print(f"ok: paused at step {paused_at}, killed stage1 (restarted), scaled to dp=2 and set lr=3e-3 after step "
      f"{scaled_at}; {STEPS} steps in --metrics-out; one-shot --json, token refusal and reconnection reported")
shutil.rmtree(tmp, ignore_errors=True)
