#!/bin/sh
# Installs the Debian packages `make` needs, and only those that are missing.
#
#   sh scripts/install-system-deps.sh [python] [interop] [services]     (no argument: all three)
#
#   python   python3-venv, when `$PYTHON -m venv` cannot work (no venv/ensurepip); gcc and
#            python3-dev, when there is no `cc` or no Python.h (mypyc compiles the core)
#   interop  sip-tester (SIPp), sipsak, baresip, sipvicious (svwar), libnet-sip-perl (Net::SIP),
#            libnet-dns-perl, chromium and npm: the real SIP peers the interop tests drive
#            (the browser phone's own packages come from the npm registry: make browser-deps);
#            and systemd, whose systemd-analyze verifies contrib/sipreg.service
#   services redis-server (and, as its dependency, redis-tools: redis-cli): the servers the
#            Redis store tests start on loopback ports of their own (tests/redis_servers.py)
#
# As root, or with password-less sudo, it runs apt-get.  Otherwise it says what
# to install and exits 0: the interop and Redis tests then skip, or fail when CI=true.
# A failed install of python3-venv is fatal (no venv without it); a failed
# install of the interop or services group is left for the tests to report.
set -eu
PYTHON=${PYTHON:-python3}
groups=${*:-python interop services}

missing=""
fatal=0
for group in $groups; do
    case $group in
    python)
        if ! "$PYTHON" -c 'import ensurepip, venv' >/dev/null 2>&1; then
            missing="$missing python3-venv"
            fatal=1
        fi
        # The C compiler and Python's headers mypyc's build needs (without them sipreg
        # installs as pure Python).
        command -v cc >/dev/null 2>&1 || missing="$missing gcc"
        "$PYTHON" -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
            >/dev/null 2>&1 || missing="$missing python3-dev"
        ;;
    interop)
        command -v sipp >/dev/null 2>&1 || missing="$missing sip-tester"
        command -v sipsak >/dev/null 2>&1 || missing="$missing sipsak"
        command -v baresip >/dev/null 2>&1 || missing="$missing baresip"
        command -v svwar >/dev/null 2>&1 || missing="$missing sipvicious"
        command -v chromium >/dev/null 2>&1 || missing="$missing chromium"
        command -v npm >/dev/null 2>&1 || missing="$missing npm"
        command -v systemd-analyze >/dev/null 2>&1 || missing="$missing systemd"
        perl -MNet::SIP -e 1 >/dev/null 2>&1 || missing="$missing libnet-sip-perl"
        # Net::SIP only recommends Net::DNS, which its dispatcher uses to resolve targets.
        perl -MNet::DNS -e 1 >/dev/null 2>&1 || missing="$missing libnet-dns-perl"
        ;;
    services)
        command -v redis-server >/dev/null 2>&1 || missing="$missing redis-server"
        ;;
    *)
        echo "install-system-deps: unknown group '$group' (python, interop, services)" >&2
        exit 2
        ;;
    esac
done
[ -z "$missing" ] && exit 0

give_up() {
    echo "install-system-deps: $1; install by hand:$missing" >&2
    exit "$fatal"
}

if [ "$(id -u)" = "0" ]; then
    sudo=""
elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
    sudo="sudo"
else
    give_up "not root"
fi
command -v apt-get >/dev/null 2>&1 || give_up "no apt-get"

echo "install-system-deps: apt-get install$missing" >&2
# shellcheck disable=SC2086 # $missing is a list of package names
if ! { $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
    $sudo env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends $missing >/dev/null; }; then
    give_up "apt-get failed"
fi
