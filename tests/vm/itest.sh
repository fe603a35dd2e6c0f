#!/bin/sh
# The privileged integration tests inside the VM (`cargo xtask vm-test`, on the kernel that has
# fentry and BPF-LSM): the host's root filesystem read-only over virtio 9p, with tmpfs where
# tests write (/tmp, /run, and a copy of /etc for useradd); each listed test runs in its prebuilt
# test binary, chrooted there, with MCPMON_REQUIRE_PRIVILEGED=1 (so a skip fails) and the
# harness's waits stretched for emulation (MCPMON_TEST_SLOWDOWN).
#   itest.sh LIST      LIST: lines "BINARY TEST-NAME", paths as on the host
# Prints "VMITEST PASS|FAIL <test> (<s> s)", a failure's output as "VMITEST LOG" lines, then
# "VMITEST DONE <failures>". POSIX sh + busybox applets only.
LIST=$1
fails=0
done_with() { echo "VMITEST DONE $1"; exit 0; }

# 9p over virtio-pci: modules where the kernel has them as modules (the initramfs carries them
# for this kernel, dependencies first).
mods=/lib/modules/$(uname -r)
for m in $(cat "$mods/order" 2>/dev/null); do
  insmod "$mods/$m.ko" 2>&1 | sed 's/^/VMITEST INFO insmod: /'
done
H=/host
mkdir -p $H /rw
if ! mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=512000 hostroot $H 2>/tmp/mount.err; then
  echo "VMITEST FAIL mount-hostroot: $(cat /tmp/mount.err)"; done_with 1
fi
mount -t proc proc $H/proc
mount -t sysfs sys $H/sys
mount -t securityfs none $H/sys/kernel/security
mount -t cgroup2 none $H/sys/fs/cgroup
mount -t devtmpfs dev $H/dev
mkdir -p $H/dev/pts $H/dev/shm
mount -t devpts devpts $H/dev/pts
mount -t tmpfs shm $H/dev/shm
mount -t tmpfs tmp $H/tmp
chmod 1777 $H/tmp
mount -t tmpfs run $H/run
# useradd writes /etc: a writable copy of the host's.
mount -t tmpfs rw /rw
cp -a $H/etc /rw/etc && mount -o bind /rw/etc $H/etc
echo "VMITEST INFO host root mounted; $(wc -l < "$LIST") tests"

while read -r bin name; do
  [ -n "$name" ] || continue
  start=$(date +%s)
  chroot $H /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    MCPMON_REQUIRE_PRIVILEGED=1 MCPMON_TEST_SLOWDOWN=10 "$bin" --exact --test-threads=1 "$name" < /dev/null > /tmp/itest.out 2>&1
  st=$?
  took=$(( $(date +%s) - start ))
  if [ $st -eq 0 ] && grep -q "test result: ok. 1 passed" /tmp/itest.out; then
    echo "VMITEST PASS $name ($took s)"
  else
    echo "VMITEST FAIL $name ($took s, exit $st)"
    # Why it failed (the panic), then the end of its output; lines cut to keep the console short.
    { grep -A3 'panicked at' /tmp/itest.out; echo ...; tail -n 60 /tmp/itest.out; } | cut -c1-1500 | sed 's/^/VMITEST LOG /'
    # The VM's state then: memory, processes left over, what the kernel said last.
    { free; ps -o pid,stat,rss,comm 2>/dev/null | tail -n 25; dmesg | tail -n 25; } | cut -c1-300 | sed 's/^/VMITEST LOG vm: /'
    fails=$((fails + 1))
  fi
done < "$LIST"
done_with $fails
