#!/bin/sh
# The fast-path benchmark, run inside the VM by `cargo xtask bench` (Debian's kernel, qemu TCG):
# the cost mcpmon puts on an untracked process while one server is tracked (so the on-demand
# hooks are attached): opens and connects (hooked), and getppid (never hooked: what every other
# syscall pays), with syscalls observed by fentry/fexit and by tracepoints, against no
# monitor. Each round runs the three configurations in a rotated order; the host computes ratios
# per round. POSIX sh + busybox only.
#   bench.sh MCPMON RULES_DIR WORK_DIR ROUNDS N [TESTKIT]
# TESTKIT is mcpmon-testkit (the loops; default: next to MCPMON).
# Prints "VMBENCH <round> <config> <loop> <ns per op>" lines, then "VMBENCH DONE".
MCPMON=$1 RULES=$2 WORK=$3 ROUNDS=$4 N=$5 TESTKIT=${6:-$(dirname "$1")/mcpmon-testkit}
mkdir -p "$WORK/state"
SOCK=$WORK/mcpmon.sock
printf 'hello\n' > "$WORK/file"

# One figure per loop: a warm-up run (TCG translates code on first use, so a cold run is slow
# for reasons that have nothing to do with mcpmon), then the fastest of three runs.
once() {
  case $1 in
    open) "$TESTKIT" loop open "$2" "$WORK/file";;
    connect) "$TESTKIT" loop connect $(($2 / 10));;
    getppid) "$TESTKIT" loop getppid $(($2 * 10));;
  esac
}
measure() {
  for loop in open connect getppid; do
    once $loop $((N / 10)) > /dev/null
    best=
    for _ in 1 2 3; do
      ns=$(once $loop "$N")
      if [ -z "$best" ] || awk "BEGIN{exit !($ns < $best)}"; then best=$ns; fi
    done
    echo "VMBENCH $1 $2 $loop $best"
  done
}

# with_daemon ROUND CONFIG OBSERVE: a daemon observing through OBSERVE, one tracked server alive.
with_daemon() {
  rm -f "$SOCK"
  log=$WORK/daemon-$1-$2.log
  "$MCPMON" run --events /dev/null --socket "$SOCK" --state-dir "$WORK/state" --rules "$RULES" \
    --metrics-addr none --observe "$3" 2> "$log" &
  d=$!
  waited=0
  until grep -q "ready: control socket" "$log" 2>/dev/null; do
    kill -0 $d 2>/dev/null && [ $waited -lt 300 ] || { echo "VMBENCH FAIL $2: daemon did not come up"; cat "$log"; echo "VMBENCH DONE"; exit 1; }
    sleep 1; waited=$((waited + 1))
  done
  "$MCPMON" exec --require-monitor --name idle --socket "$SOCK" -- /bin/sleep 100000 &
  s=$!
  waited=0
  until grep -q "tracking server server=idle" "$log"; do
    [ $waited -lt 60 ] || { echo "VMBENCH FAIL $2: the server was not tracked"; cat "$log"; echo "VMBENCH DONE"; exit 1; }
    sleep 1; waited=$((waited + 1))
  done
  grep -o "syscall observation path=[a-z/]*" "$log" | sed "s/^/VMBENCH INFO $2 /"
  measure "$1" "$2"
  kill $s; wait $s 2>/dev/null
  kill -TERM $d; wait $d
}

r=1
while [ $r -le "$ROUNDS" ]; do
  case $((r % 3)) in
    0) order="none fentry tracepoint";;
    1) order="fentry tracepoint none";;
    2) order="tracepoint none fentry";;
  esac
  for c in $order; do
    case $c in
      none) measure $r none;;
      fentry) with_daemon $r fentry fentry;;
      tracepoint) with_daemon $r tracepoint tracepoint;;
    esac
  done
  r=$((r + 1))
done
echo "VMBENCH DONE"
