#!/bin/sh
# The fast-path benchmark, run inside the VM by `cargo xtask bench` (Debian's kernel, qemu TCG):
# the cost mcpmon puts on an untracked process while one server is tracked (so the on-demand
# hooks are attached), with syscalls observed by fentry/fexit and by tracepoints, against no
# monitor. Each round runs the three configurations in a rotated order; the host computes ratios
# per round. POSIX sh + busybox only.
#   bench.sh MCPMON RULES_DIR WORK_DIR ROUNDS N
# Prints "VMBENCH <round> <config> <loop> <ns per op>" lines, then "VMBENCH DONE".
MCPMON=$1 RULES=$2 WORK=$3 ROUNDS=$4 N=$5
mkdir -p "$WORK/state"
SOCK=$WORK/mcpmon.sock
printf 'hello\n' > "$WORK/file"

measure() {
  for loop in open connect; do
    if [ $loop = open ]; then ns=$("$MCPMON" bench-loop open "$N" "$WORK/file"); else ns=$("$MCPMON" bench-loop connect $((N / 10))); fi
    echo "VMBENCH $1 $2 $loop $ns"
  done
}

# with_daemon ROUND CONFIG OBSERVE: a daemon observing through OBSERVE, one tracked server alive.
with_daemon() {
  rm -f "$SOCK"
  "$MCPMON" run --events /dev/null --socket "$SOCK" --state-dir "$WORK/state" --rules "$RULES" \
    --metrics-addr none --observe "$3" 2> "$WORK/daemon-$2.log" &
  d=$!
  while ! grep -q "ready: control socket" "$WORK/daemon-$2.log" 2>/dev/null; do
    kill -0 $d 2>/dev/null || { echo "VMBENCH FAIL $2: daemon died"; cat "$WORK/daemon-$2.log"; return; }
    sleep 1
  done
  "$MCPMON" exec --name idle --socket "$SOCK" -- /bin/sleep 100000 &
  s=$!
  while ! grep -q "tracking server idle" "$WORK/daemon-$2.log"; do sleep 1; done
  grep -o "syscall observation: [a-z/]*" "$WORK/daemon-$2.log" | sed "s/^/VMBENCH INFO $2 /"
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
