#!/usr/bin/env bash
# Install the system packages vidflow's end-to-end tests need: GStreamer's RTSP server (run by
# tests/e2e/rtsp_server.py with the system /usr/bin/python3) and the plugins it uses to encode
# H.264 test streams; Debian's Chromium for the live page's browser test; mosquitto and
# redis-server for the broker sink tests (the tests start their own instances on free ports, so
# the packages' system services are stopped again). Idempotent and quiet: does nothing when
# everything is already there.
# Debian/Ubuntu only (apt-get); needs root or passwordless sudo.
set -euo pipefail

PACKAGES=(
  gir1.2-gst-rtsp-server-1.0
  python3-gst-1.0
  gstreamer1.0-plugins-base
  gstreamer1.0-plugins-good
  gstreamer1.0-plugins-ugly
  gstreamer1.0-plugins-bad
  # the live page's browser test (tests/e2e/test_serve.py): Debian's Chromium, driven by
  # Playwright (pip, the 'test' extra) through executable_path=/usr/bin/chromium; Playwright's
  # own browser download is never used. A font so the page's text renders.
  chromium
  fonts-dejavu-core
  mosquitto
  mosquitto-clients
  redis-server
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  SUDO="sudo -n"
fi
export DEBIAN_FRONTEND=noninteractive
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! { $SUDO apt-get update -qq && \
       $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
  cat "$log" >&2
  echo "install-ci-deps: failed to install ${missing[*]}" >&2
  exit 1
fi
echo "install-ci-deps: installed ${missing[*]}"
# brokers: the tests run their own on free ports; a packaged service left running is harmless
# but not needed, so stop it where a service manager started one
for svc in mosquitto redis-server; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$svc" 2>/dev/null; then
    $SUDO systemctl stop "$svc" >/dev/null 2>&1 || true
  fi
done
