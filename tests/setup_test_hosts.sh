#!/bin/sh
# What the SSH-cluster test (tests/cluster/test_ssh_launch.py) needs on this machine besides the virtualenv:
# Debian's OpenSSH server and client (the test hosts' sshd, Ray's `ray up`) and rsync (Ray's file_mounts).
# Installs what is missing with apt-get when run as root; does nothing when all is there. Without root it says
# so and exits 0: the test then skips, naming the reason. Run by `make test`.
set -e
missing=""
[ -x /usr/sbin/sshd ] || missing="$missing openssh-server"
command -v ssh >/dev/null 2>&1 || missing="$missing openssh-client"
command -v rsync >/dev/null 2>&1 || missing="$missing rsync"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "setup_test_hosts: not root or no apt-get: not installing$missing (the SSH-cluster test will skip)" >&2
    exit 0
fi
echo "setup_test_hosts: installing$missing"
apt-get update -q
# --no-install-recommends: no services, only the programs; the package's own sshd is never started here
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
