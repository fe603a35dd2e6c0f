#!/bin/sh
# The kernel-matrix scenario, run as root by `cargo xtask vm-test`: inside a VM booted from
# Debian's kernel with the BPF LSM (expect=lsm), and on this machine's kernel through the
# fallbacks (expect=fallback). POSIX sh + busybox applets only.
#   scenario.sh MCPMON RULES_DIR WORK_DIR EXPECT
# Prints "VMTEST PASS <name>" / "VMTEST FAIL <name>: <why>" lines, then "VMTEST DONE <failures>".
MCPMON=$1 RULES=$2 WORK=$3 EXPECT=$4
fails=0
pass() { echo "VMTEST PASS $1"; }
fail() { echo "VMTEST FAIL $1: $2"; fails=$((fails + 1)); }

mkdir -p "$WORK/home/.ssh" "$WORK/state"
HOME_DIR=$WORK/home
printf 'KEY-MATERIAL-vm\n' > "$HOME_DIR/.ssh/id_ed25519"
printf '# rc\n' > "$HOME_DIR/.bashrc"
printf 'root:x:0:0:root:/root:/bin/sh\nvictim:x:4242:4242::%s:/bin/sh\n' "$HOME_DIR" > "$WORK/passwd"
# The shipped rules, with the SSH-key rule switched to deny (EPERM on BPF-LSM, kill elsewhere).
mkdir -p "$WORK/rules"
cp "$RULES"/*.yaml "$WORK/rules/"
awk 'BEGIN{r=0} /- id: ssh-private-key-read/{r=1} r==1 && /^    action: kill/{sub("action: kill","action: deny"); r=0} {print}' \
  "$RULES/credential_access.yaml" > "$WORK/rules/credential_access.yaml"

SOCK=$WORK/mcpmon.sock
EV=$WORK/events.jsonl
"$MCPMON" run --events "$EV" --socket "$SOCK" --state-dir "$WORK/state" --passwd "$WORK/passwd" \
  --rules "$WORK/rules" --metrics-addr none 2> "$WORK/daemon.log" &
DAEMON=$!
start=$(date +%s)
while ! grep -q "ready: control socket" "$WORK/daemon.log" 2>/dev/null; do
  if ! kill -0 $DAEMON 2>/dev/null || [ $(( $(date +%s) - start )) -gt 600 ]; then
    fail start "daemon did not come up"; cat "$WORK/daemon.log"; echo "VMTEST DONE 1"; exit 1
  fi
  sleep 1
done
echo "VMTEST INFO daemon ready after $(( $(date +%s) - start )) s"
if grep -q "BPF-LSM file_open available" "$WORK/daemon.log"; then path=lsm; else path=fallback; fi
[ "$path" = "$EXPECT" ] && pass "path-$EXPECT" || fail "path-$EXPECT" "daemon took $path: $(grep -i 'open deny' "$WORK/daemon.log")"

# 1. SSH key under a deny rule: EPERM and the process lives (LSM), or killed (fallback).
out=$("$MCPMON" exec --name keyreader --socket "$SOCK" -- /bin/sh -c "cat $HOME_DIR/.ssh/id_ed25519; echo rc=\$?" 2>&1)
case "$out" in *KEY-MATERIAL*) fail key-not-read "the key was read: $out";; *) pass key-not-read;; esac
if [ "$EXPECT" = lsm ]; then
  case "$out" in *rc=1*) pass deny-eperm-process-lives;; *) fail deny-eperm-process-lives "$out";; esac
else
  case "$out" in *rc=137*) pass deny-falls-back-to-kill;; *) fail deny-falls-back-to-kill "$out";; esac
fi

# 2. A kill rule still kills (persistence write), and the file is unchanged.
"$MCPMON" exec --name rcwriter --socket "$SOCK" -- /bin/sh -c "echo evil >> $HOME_DIR/.bashrc" > /dev/null 2>&1
st=$?
if [ $st -eq 137 ] && [ "$(cat "$HOME_DIR/.bashrc")" = "# rc" ]; then pass kill-still-works; else fail kill-still-works "status $st, rc: $(cat "$HOME_DIR/.bashrc")"; fi

# 3. Events and alerts are the same stream on both paths.
sleep 2
kill -TERM $DAEMON; wait $DAEMON
grep -q '"kind":"open".*"server":"keyreader"' "$EV" && pass open-event || fail open-event "no open event"
if [ "$EXPECT" = lsm ]; then want='denied_in_kernel'; else want='killed_in_kernel'; fi
grep '"kind":"alert"' "$EV" | grep '"id":"ssh-private-key-read"' | grep -q "$want" && pass "alert-$want" || fail "alert-$want" "$(grep '"kind":"alert"' "$EV" | head -3)"
grep '"kind":"alert"' "$EV" | grep '"id":"persistence-write"' | grep -q killed_in_kernel && pass alert-kill || fail alert-kill "no persistence alert"
grep -q '"kind":"exit".*"signal":9' "$EV" && pass exit-event || fail exit-event "no SIGKILL exit event"
[ $fails -gt 0 ] && { echo "--- daemon log"; cat "$WORK/daemon.log"; }
echo "VMTEST DONE $fails"
