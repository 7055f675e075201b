#!/usr/bin/env bash
# System packages the tests (and the demo) need: a real broker, pty pairs, audio, video, RTSP,
# and a headless browser for the bureau console's tests (Debian's chromium and its chromedriver).
# Idempotent; run as root (or with sudo).
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends \
  python3-venv mosquitto mosquitto-clients socat libportaudio2 alsa-utils espeak-ng ffmpeg \
  gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-base gstreamer1.0-plugins-good \
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly systemd fonts-wqy-microhei \
  chromium chromium-driver >/dev/null
# The bureau's city store tests: a throw-away PostgreSQL cluster (tests/pg.py runs initdb/pg_ctl
# from /usr/lib/postgresql/*/bin; Debian's own service cluster is not used).
$SUDO apt-get install -y -qq --no-install-recommends postgresql >/dev/null
