#!/bin/sh
# Installs the Debian packages the interop tests drive (SIPp, Net::SIP, sipsak).
# Runs only as root and only for what is missing; elsewhere it says what to install.
set -eu
missing=""
command -v sipp >/dev/null 2>&1 || missing="$missing sip-tester"
perl -MNet::SIP -e 1 >/dev/null 2>&1 || missing="$missing libnet-sip-perl"
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
else
    echo "install-system-deps: not root; interop tests need:$missing" >&2
fi
