#!/bin/sh
# The kernel-matrix scenario, run as root by `cargo xtask vm-test` on this machine's kernel and in
# VMs booted from Debian's kernels. POSIX sh + busybox applets only. The daemon reports which
# paths it took (open/exec deny: BPF-LSM or the kill fallback; syscall observation: fentry/fexit
# or tracepoints); every later check expects what that path does. EXPECT says which paths the
# kernel offers, from the kernel's own config (VM), or `auto` (this machine: whatever the daemon
# reports, printed). A parity run repeats one workload with `--observe tracepoint` and the two
# event streams must be the same.
#   scenario.sh MCPMON RULES_DIR WORK_DIR DENY/OBSERVE [TESTKIT]
#     DENY: lsm | fallback | auto      OBSERVE: fentry | tracepoint | auto
#     TESTKIT: mcpmon-testkit (victims and attackers; default: next to MCPMON)
# Prints "VMTEST PASS <name>" / "VMTEST FAIL <name>: <why>" lines, then "VMTEST DONE <failures>".
MCPMON=$1 RULES=$2 WORK=$3 TESTKIT=${5:-$(dirname "$1")/mcpmon-testkit}
WANT_DENY=${4%/*} WANT_OBS=${4#*/}
fails=0
pass() { echo "VMTEST PASS $1"; }
fail() { echo "VMTEST FAIL $1: $2"; fails=$((fails + 1)); }

mkdir -p "$WORK/home/.ssh" "$WORK/state"
HOME_DIR=$WORK/home
printf 'KEY-MATERIAL-vm\n' > "$HOME_DIR/.ssh/id_ed25519"
printf '# rc\n' > "$HOME_DIR/.bashrc"
printf 'machine 127.0.0.1 login tok password LOGIN-vm\n' > "$HOME_DIR/.netrc"
printf 'root:x:0:0:root:/root:/bin/sh\nvictim:x:4242:4242::%s:/bin/sh\n' "$HOME_DIR" > "$WORK/passwd"
# The shipped rules, with the SSH-key rule switched to deny (EPERM on BPF-LSM, kill elsewhere).
mkdir -p "$WORK/rules"
cp "$RULES"/*.yaml "$WORK/rules/"
# deny_rule ID FILE: the shipped rule ID switched from kill to deny.
deny_rule() {
  awk -v id="$1" 'BEGIN{r=0} $0 ~ "- id: " id "$" {r=1} r==1 && /^    action: kill/{sub("action: kill","action: deny"); r=0} {print}' \
    "$RULES/$2" > "$WORK/rules/$2"
}
deny_rule ssh-private-key-read credential_access.yaml
# A site-listed executable under the network-tool rule, switched to deny as well.
mkdir -p "$WORK/bin"
cp /bin/true "$WORK/bin/evil-tool"
deny_rule network-tool-exec execution.yaml
sed -e "s|extra_denied_executables: \[\]|extra_denied_executables: [\"$WORK/bin/evil-tool\"]|" \
    -e "s|^grants: {}|grants: {uringok: [io-uring-by-server]}|" "$RULES/local.yaml" > "$WORK/rules/local.yaml"
# A stand-in for a container engine's API socket, in the shipped list (test 1f).
awk -v p="$WORK/engine.sock" '{print} /^  container_engine_sockets:$/{print "    - " p}' "$RULES/lists.yaml" > "$WORK/rules/lists.yaml"

SOCK=$WORK/mcpmon.sock
# How long `mcpmon exec` waits for the daemon's acknowledgement: under TCG attaching the 75
# fentry/fexit hooks takes about 3 s (2 ms on the host), and a handshake candidate exec'd just
# before (a pipeline of this script) can have the daemon attaching them when the request comes.
# The default 3 s is for real machines; an exec that times out runs unwatched.
ACK_MS=30000
# start_daemon EVENTS LOG [run options]: sets DAEMON once the control socket is up.
start_daemon() {
  ev=$1 log=$2; shift 2
  rm -f "$SOCK"
  "$MCPMON" run --events "$ev" --socket "$SOCK" --state-dir "$WORK/state" --passwd "$WORK/passwd" \
    --rules "$WORK/rules" --metrics-addr none "$@" 2> "$log" &
  DAEMON=$!
  start=$(date +%s)
  while ! grep -q "ready: control socket" "$log" 2>/dev/null; do
    if ! kill -0 $DAEMON 2>/dev/null || [ $(( $(date +%s) - start )) -gt 600 ]; then
      fail start "daemon did not come up"; cat "$log"; echo "VMTEST DONE 1"; exit 1
    fi
    sleep 1
  done
  echo "VMTEST INFO daemon ready after $(( $(date +%s) - start )) s"
}
EV=$WORK/events.jsonl
start_daemon "$EV" "$WORK/daemon.log"
# What the daemon reports it took: its first record (sensors_loaded) and its start-up log agree.
while ! grep -q '"kind":"sensors_loaded"' "$EV" 2>/dev/null && kill -0 $DAEMON 2>/dev/null; do sleep 0.2; done
loaded=$(grep -m1 '"kind":"sensors_loaded"' "$EV")
case "$loaded" in *'"open_deny":"lsm"'*) path=lsm;; *'"open_deny":"kill"'*) path=fallback;; *) path=unreported;; esac
case "$loaded" in *'"observe":"fentry"'*) obs=fentry;; *'"observe":"tracepoint"'*) obs=tracepoint;; *) obs=unreported;; esac
echo "VMTEST INFO paths: deny=$path observe=$obs ia32=$(echo "$loaded" | sed -n 's/.*"ia32":"\([a-z_]*\)".*/\1/p') connect=$(echo "$loaded" | sed -n 's/.*"connect_deny":"\([a-z]*\)".*/\1/p')"
if grep -q "BPF-LSM file_open available" "$WORK/daemon.log"; then logged=lsm; else logged=fallback; fi
case "$WANT_DENY" in
  auto) [ "$path" = "$logged" ] && pass "path-$path (reported)" || fail "path-reported" "record says $path, log says $logged";;
  *) [ "$path" = "$WANT_DENY" ] && [ "$logged" = "$WANT_DENY" ] && pass "path-$WANT_DENY" || fail "path-$WANT_DENY" "daemon took $path: $(grep -i 'open.* deny' "$WORK/daemon.log")";;
esac
if [ "$obs" = fentry ]; then logged_obs=fentry/fexit; else logged_obs=tracepoints; fi
grep -q "syscall observation path=$logged_obs" "$WORK/daemon.log" || fail "observe-logged" "record says $obs: $(grep -i 'syscall observation' "$WORK/daemon.log")"
case "$WANT_OBS" in
  auto) pass "observe-$obs (reported)";;
  *) [ "$obs" = "$WANT_OBS" ] && pass "observe-$WANT_OBS" || fail "observe-$WANT_OBS" "daemon took $obs: $(grep -i 'fallback\|fentry' "$WORK/daemon.log" | head -3)";;
esac

# The open gate (fanotify permission events) refuses read-protected opens before an fd exists
# on every kernel that has fanotify: deny rules then give EPERM on both paths.
if grep -q "open gate: read-protected" "$WORK/daemon.log"; then gate=1; pass open-gate; else gate=0; fail open-gate "$(grep -i 'gate' "$WORK/daemon.log")"; fi
if [ "$path" = lsm ] || [ $gate = 1 ]; then read_deny=eperm; else read_deny=kill; fi

# 1. SSH key under a deny rule: EPERM and the process lives (LSM or gate), or killed (neither).
out=$("$MCPMON" exec --timeout-ms "$ACK_MS" --name keyreader --socket "$SOCK" -- /bin/sh -c "cat $HOME_DIR/.ssh/id_ed25519; echo rc=\$?" 2>&1)
case "$out" in *KEY-MATERIAL*) fail key-not-read "the key was read: $out";; *) pass key-not-read;; esac
if [ "$read_deny" = eperm ]; then
  case "$out" in *rc=1*) pass deny-eperm-process-lives;; *) fail deny-eperm-process-lives "$out";; esac
else
  case "$out" in *rc=137*) pass deny-falls-back-to-kill;; *) fail deny-falls-back-to-kill "$out";; esac
fi

# 1a. The same key through the ia32 entry (int $0x80): the same outcome.
out=$("$MCPMON" exec --timeout-ms "$ACK_MS" --name keyreader32 --socket "$SOCK" -- /bin/sh -c "$TESTKIT loop int80-read 1 $HOME_DIR/.ssh/id_ed25519; echo rc=\$?" 2>&1)
case "$out" in *KEY-MATERIAL*) fail ia32-key-not-read "the key was read: $out";; *) pass ia32-key-not-read;; esac
if [ "$read_deny" = eperm ]; then
  case "$out" in *"errno 1"*rc=1*) pass ia32-deny-eperm;; *) fail ia32-deny-eperm "$out";; esac
else
  case "$out" in *rc=137*) pass ia32-deny-falls-back-to-kill;; *) fail ia32-deny-falls-back-to-kill "$out";; esac
fi

# 1c. io_uring: without a grant the server dies at setup, before it submits anything; a server
# granted io_uring reads nothing either: its ring's open meets lsm/file_open or the open gate.
out=$("$MCPMON" exec --timeout-ms "$ACK_MS" --name uringnogrant --socket "$SOCK" -- /bin/sh -c "$TESTKIT loop uring-read-inline 1 $HOME_DIR/.ssh/id_ed25519; echo rc=\$?" 2>&1)
case "$out" in *KEY-MATERIAL*) fail uring-killed-at-setup "the key was read: $out";; *rc=137*) pass uring-killed-at-setup;; *) fail uring-killed-at-setup "$out";; esac
for mode in inline async openat2; do
  out=$("$MCPMON" exec --timeout-ms "$ACK_MS" --name uringok --socket "$SOCK" -- "$TESTKIT" loop "uring-read-$mode" 1 "$HOME_DIR/.ssh/id_ed25519" 2>&1)
  case "$out" in
    *KEY-MATERIAL*) fail "uring-$mode-not-read" "the key was read: $out";;
    *"uring open="*) pass "uring-$mode-not-read";;
    *) fail "uring-$mode-not-read" "the granted ring did not run: $out";;
  esac
done

# 1d. Another process's memory: process_vm_readv/writev from four threads, killed at the
# syscall's entry (fentry here when the VM has trampolines, the tracepoint otherwise) before a
# page moves; the victim, outside any server, keeps its secret.
mkfifo "$WORK/victim.in"
"$TESTKIT" loop hold-secret 0 VICTIM-TOKEN-7c1e <"$WORK/victim.in" >"$WORK/victim.out" &
exec 7>"$WORK/victim.in"
while ! [ -s "$WORK/victim.out" ]; do sleep 0.1; done
read -r vpid vaddr <"$WORK/victim.out"
for attack in vm-read vm-write; do
  out=$("$MCPMON" exec --timeout-ms "$ACK_MS" --name "mem-$attack" --socket "$SOCK" -- /bin/sh -c "$TESTKIT loop $attack $vpid $vaddr; echo rc=\$?" 2>&1)
  case "$out" in
    *VICTIM-TOKEN*|*" wrote "*|*" got "*) fail "$attack-killed" "memory moved: $out";;
    *rc=137*) pass "$attack-killed";;
    *) fail "$attack-killed" "$out";;
  esac
done
echo "?" >&7
while [ "$(wc -l <"$WORK/victim.out")" -lt 2 ]; do sleep 0.1; done
case "$(tail -n 1 "$WORK/victim.out")" in VICTIM-TOKEN-7c1e) pass victim-memory-unchanged;; *) fail victim-memory-unchanged "$(cat "$WORK/victim.out")";; esac
exec 7>&-

# 1e. Another process's open file, taken with pidfd_getfd (no open happens): killed at the entry.
printf 'VM-TOKEN-91\n' > "$WORK/token.txt"
sh -c "exec 3<$WORK/token.txt; exec sleep 60" &
holder=$!
while ! [ -e "/proc/$holder/fd/3" ]; do sleep 0.1; done
out=$("$MCPMON" exec --timeout-ms "$ACK_MS" --name getfd --socket "$SOCK" -- /bin/sh -c "$TESTKIT loop getfd-read 1 $holder,3; echo rc=\$?" 2>&1)
case "$out" in *VM-TOKEN*) fail getfd-killed "the file was read: $out";; *rc=137*) pass getfd-killed;; *) fail getfd-killed "$out";; esac
kill "$holder" 2>/dev/null

# 1f. A container engine's API socket, reached through a symlink of the server's own: killed in
# the kernel when the connect returns (the socket file's inode, from the connected socket's
# peer), before the request is written; the engine's stand-in gets no byte.
"$TESTKIT" loop unix-serve 0 "$WORK/engine.sock" > "$WORK/engine.out" 2>&1 &
engine=$!
start=$(date +%s)
while ! grep -q "\"kind\":\"protected_changed\".*engine.sock" "$EV" && [ $(( $(date +%s) - start )) -lt 120 ]; do sleep 0.5; done
ln -s "$WORK/engine.sock" "$WORK/engine.link"
out=$("$MCPMON" exec --timeout-ms "$ACK_MS" --name engineuser --socket "$SOCK" -- /bin/sh -c "$TESTKIT loop unix-dial 1 $WORK/engine.link; echo rc=\$?" 2>&1)
case "$out" in *sent*) fail engine-socket-killed "the request was written: $out";; *rc=137*) pass engine-socket-killed;; *) fail engine-socket-killed "$out";; esac
sleep 1
grep -q 'served "[^"]' "$WORK/engine.out" && fail engine-served-nothing "$(cat "$WORK/engine.out")" || pass engine-served-nothing
kill "$engine" 2>/dev/null

# 1b. A denied executable: execve fails with EPERM and the caller lives (LSM), or the new image
# is killed before its first instruction (fallback).
out=$("$MCPMON" exec --timeout-ms "$ACK_MS" --name execer --socket "$SOCK" -- /bin/sh -c "$WORK/bin/evil-tool; echo rc=\$?" 2>&1)
if [ "$path" = lsm ]; then
  case "$out" in *rc=126*) pass exec-deny-eperm-caller-lives;; *) fail exec-deny-eperm-caller-lives "$out";; esac
else
  case "$out" in *rc=137*) pass exec-deny-falls-back-to-kill;; *) fail exec-deny-falls-back-to-kill "$out";; esac
fi

# 1g. A package runner's registry login (`kernel.runner_may_read`, rule registry-token-read): a
# root launched as a runner (a script named `uvx`: its argv says so) reads ~/.netrc at once, with
# the shell's own `read`. The read waits for the daemon's judgement of the exec, on the BPF-LSM
# path as well (lsm/file_open leaves it to the open gate). A root that is no runner is refused.
mkdir -p "$WORK/runner"
printf '#!/bin/sh\nif read -r l < "%s/.netrc"; then echo "READ ${#l}"; else echo REFUSED; fi\n' "$HOME_DIR" > "$WORK/runner/uvx"
chmod 755 "$WORK/runner/uvx"
out=$("$MCPMON" exec --timeout-ms "$ACK_MS" --name runner --socket "$SOCK" -- "$WORK/runner/uvx" some-package 2>&1)
case "$out" in *"READ "*) pass runner-reads-its-login;; *) fail runner-reads-its-login "$out";; esac
out=$("$MCPMON" exec --timeout-ms "$ACK_MS" --name notrunner --socket "$SOCK" -- /bin/sh -c "if read -r l < $HOME_DIR/.netrc; then echo \"LEAK \$l\"; else echo REFUSED; fi; echo rc=\$?" 2>&1)
case "$out" in
  *LEAK*) fail not-a-runner-refused "the login was read: $out";;
  *REFUSED*) pass not-a-runner-refused;;
  *) [ "$read_deny" = kill ] && pass not-a-runner-refused || fail not-a-runner-refused "$out";;
esac

# 2. A kill rule still kills (persistence write), and the file is unchanged.
"$MCPMON" exec --timeout-ms "$ACK_MS" --name rcwriter --socket "$SOCK" -- /bin/sh -c "echo evil >> $HOME_DIR/.bashrc" > /dev/null 2>&1
st=$?
if [ $st -eq 137 ] && [ "$(cat "$HOME_DIR/.bashrc")" = "# rc" ]; then pass kill-still-works; else fail kill-still-works "status $st, rc: $(cat "$HOME_DIR/.bashrc")"; fi

# 3. Events and alerts are the same stream on both paths.
sleep 2
kill -TERM $DAEMON; wait $DAEMON
grep -q '"kind":"open".*"server":"keyreader"' "$EV" && pass open-event || fail open-event "no open event"
if [ "$read_deny" = eperm ]; then rwant='denied_in_kernel'; else rwant='killed_in_kernel'; fi
grep '"kind":"alert"' "$EV" | grep '"id":"ssh-private-key-read"' | grep -q "$rwant" && pass "alert-$rwant" || fail "alert-$rwant" "$(grep '"kind":"alert"' "$EV" | head -3)"
if [ "$path" = lsm ]; then want='denied_in_kernel'; else want='killed_in_kernel'; fi
grep '"kind":"alert"' "$EV" | grep '"id":"persistence-write"' | grep -q killed_in_kernel && pass alert-kill || fail alert-kill "no persistence alert"
grep '"kind":"alert"' "$EV" | grep '"id":"network-tool-exec"' | grep -q "$want" && pass "exec-alert-$want" || fail "exec-alert-$want" "$(grep '"kind":"alert"' "$EV" | grep network-tool | head -3)"
grep -q '"kind":"exit".*"signal":9' "$EV" && pass exit-event || fail exit-event "no SIGKILL exit event"
grep '"kind":"alert"' "$EV" | grep '"id":"container-engine-socket"' | grep -q killed_in_kernel && pass alert-engine-socket || fail alert-engine-socket "$(grep '"kind":"alert"' "$EV" | grep engine | head -3)"

# 4. Parity: one workload (a successful and a failed open, an open through the ia32 entry
# `int $0x80`, a failed exec, a refused connect, a JSON-RPC line through the server's stdio pipes) under the default path and under tracepoints.
# Fields that differ between any two runs (times, a folded run's first/last, pids, procfs-derived
# names) are dropped. An
# event whose user memory was not paged in yet (a probe cannot fault pages in; either path may
# meet one, at random) has no path: each event one run has and the other lacks must be matched
# by such an event of the other run. The workload runs without a locale (no locale files).
workload() {
  printf '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"vm","version":"1"}}}\n' |
    env -i PATH=/usr/bin:/bin "$MCPMON" exec --timeout-ms "$ACK_MS" --name parity --socket "$SOCK" -- /bin/sh -c \
      "cat $HOME_DIR/.bashrc > /dev/null; $TESTKIT loop int80-read 1 $HOME_DIR/.bashrc > /dev/null; cat $WORK/no-such-file 2>/dev/null; $WORK/no-such-binary 2>/dev/null; nc -w 1 127.0.0.1 1 < /dev/null 2>/dev/null; cat" | cat > /dev/null
}
normalize() {
  grep -v '"kind":"\(alert\|stats\|rules_loaded\|server_[a-z]*\)"' "$1" | grep -E '"kind":"(exec|open|connect|send|exit|fork|mcp_[a-z]*)"' |
    sed -E 's/"(time|ts_mono_ns|pid|tid|ppid|child_pid|exe|resolved_path|first|last)":("[^"]*"|[0-9]+),?//g; s/"(mcp|inode)":\{[^}]*\},?//g; s/,}/}/g' | sort
}
for obs in auto tracepoint; do
  # Folding off: the two runs' fold windows could split a run differently; parity is per event.
  start_daemon "$WORK/parity-$obs.jsonl" "$WORK/parity-$obs.log" --observe $obs --fold-window-ms 0
  workload
  sleep 2
  kill -TERM $DAEMON; wait $DAEMON
  normalize "$WORK/parity-$obs.jsonl" > "$WORK/parity-$obs.txt"
  echo "VMTEST INFO parity $obs: $(wc -l < "$WORK/parity-$obs.txt") events, $(grep -o 'syscall observation path=[a-z/]*' "$WORK/parity-$obs.log"), ia32 $(grep -m1 -o '"ia32":"[a-z_]*"' "$WORK/parity-$obs.jsonl") $(grep -m1 -o 'ia32 syscalls[^"]*' "$WORK/parity-$obs.log")"
done
n=$(wc -l < "$WORK/parity-auto.txt")
kinds=$(grep -o '"kind":"[a-z_]*"' "$WORK/parity-auto.txt" | sort -u | tr '\n' ' ')
case "$kinds" in
  *'"exec"'*'"mcp_initialize"'*'"open"'*) pass "parity-workload-seen";;
  *) fail "parity-workload-seen" "kinds seen: $kinds";;
esac
grep '"compat_syscall":true' "$WORK/parity-auto.txt" | grep -q '"path":"[^"]*/.bashrc"' && pass ia32-open-seen || fail ia32-open-seen "no int \$0x80 open event: $(grep -c compat "$WORK/parity-auto.txt")"
unreadable() { grep -c user_memory_unreadable "$1"; }
for f in auto tracepoint; do grep -v user_memory_unreadable "$WORK/parity-$f.txt" > "$WORK/parity-$f.read"; done
# extra A B: lines of B (as a multiset) that A does not have.
extra() { awk 'NR == FNR { c[$0]++; next } { if (c[$0] > 0) c[$0]--; else x++ } END { print x + 0 }' "$1" "$2"; }
only_auto=$(extra "$WORK/parity-tracepoint.read" "$WORK/parity-auto.read")
only_tp=$(extra "$WORK/parity-auto.read" "$WORK/parity-tracepoint.read")
u_auto=$(unreadable "$WORK/parity-auto.txt"); u_tp=$(unreadable "$WORK/parity-tracepoint.txt")
if [ "$only_auto" -le "$u_tp" ] && [ "$only_tp" -le "$u_auto" ] && [ "$n" -eq "$(wc -l < "$WORK/parity-tracepoint.txt")" ]; then
  pass "events-match-tracepoint-path ($n events: $(grep -o '"kind":"[a-z_]*"' "$WORK/parity-auto.txt" | sort | uniq -c | tr -s ' \n' ' '); unreadable paths: $u_auto / $u_tp)"
else
  diff "$WORK/parity-auto.txt" "$WORK/parity-tracepoint.txt" > "$WORK/parity.diff"
  fail "events-match-tracepoint-path" "$only_auto only with fentry, $only_tp only with tracepoints, unreadable $u_auto / $u_tp: $(head -20 "$WORK/parity.diff")"
fi
[ $fails -gt 0 ] && { echo "--- daemon log"; cat "$WORK/daemon.log"; }
echo "VMTEST DONE $fails"
