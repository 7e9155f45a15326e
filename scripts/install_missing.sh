#!/usr/bin/env bash
# Installs the Debian packages named on the command line that are not installed yet (apt-get, with
# sudo when not root); prints what it installs under the label given first.
# Usage: scripts/install_missing.sh LABEL PACKAGE...      (scripts/setup.sh, scripts/fuzz.sh)
set -euo pipefail
label="$1"
shift
missing=()
for p in "$@"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ "${#missing[@]}" -gt 0 ] || exit 0
echo "$label: installing ${missing[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
