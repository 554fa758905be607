#!/usr/bin/env bash
# Installs bubblewrap (the `bwrap` program the python tool's sandbox runs) when it is missing:
# with apt-get, dnf, yum, zypper, pacman or apk, as root or through passwordless sudo.
# Otherwise prints what to install and exits 1. Does nothing when bwrap is already there.
set -euo pipefail
if command -v bwrap >/dev/null 2>&1; then
  echo "bubblewrap present: $(bwrap --version)"
  exit 0
fi
if [ "$(id -u)" = 0 ]; then
  SUDO=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
  SUDO=(sudo -n)
else
  echo "bubblewrap (bwrap) is missing and this user cannot install packages." >&2
  echo "Install it as root: apt-get install bubblewrap | dnf install bubblewrap | zypper install bubblewrap | pacman -S bubblewrap | apk add bubblewrap" >&2
  exit 1
fi
if command -v apt-get >/dev/null 2>&1; then
  "${SUDO[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y -q bubblewrap
elif command -v dnf >/dev/null 2>&1; then
  "${SUDO[@]}" dnf install -y bubblewrap
elif command -v yum >/dev/null 2>&1; then
  "${SUDO[@]}" yum install -y bubblewrap
elif command -v zypper >/dev/null 2>&1; then
  "${SUDO[@]}" zypper --non-interactive install bubblewrap
elif command -v pacman >/dev/null 2>&1; then
  "${SUDO[@]}" pacman -S --noconfirm bubblewrap
elif command -v apk >/dev/null 2>&1; then
  "${SUDO[@]}" apk add bubblewrap
else
  echo "No known package manager found: install bubblewrap (the bwrap program) by hand." >&2
  exit 1
fi
echo "bubblewrap installed: $(bwrap --version)"
