#!/usr/bin/env bash
# Installs Debian packages when a file they provide is absent:
#   e2e/debian-package.sh PATH PACKAGE...
# sudo only when not root; apt-get update only when the plain install fails.
set -euo pipefail
path=$1; shift
if [ -e "$path" ]; then
	echo "==> $* present ($path)"
	exit 0
fi
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo "
install="${sudo}env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $*"
echo "==> $path absent: $install"
if ! $install; then
	echo "==> install failed: ${sudo}apt-get update, then the install again"
	${sudo}env DEBIAN_FRONTEND=noninteractive apt-get update
	$install
fi
