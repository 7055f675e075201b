#!/usr/bin/env bash
# Build the edge-agent Debian package: a plain venv under /opt/edge-agent packed with dpkg-deb.
#
#   bash packaging/build-deb.sh [--out DIR] [--version V] [--no-deps] [--wheelhouse DIR]
#
# The venv holds the agent and its dependencies as wheels for the machine that builds it, so the
# package is for that architecture and that Python (3.x of the build machine): build it on (or in a
# container of) the target: arm64 for a Raspberry Pi OS (bookworm, Python 3.11) or a Jetson's Ubuntu
# 22.04 (Python 3.10). `--wheelhouse DIR` installs from a folder of wheels (no network);
# `--no-deps` packs the agent alone (for tests of the packaging itself: it will not run).
#
# What the package does: the unit, the tmpfiles rule, the service user `edge-agent` in the groups
# dialout, audio, gpio and video, /etc/edge-agent/config.yaml as a conffile (from config/example.yaml),
# /usr/bin/edge-agent and /usr/bin/edge-fw. An upgrade replaces /opt/edge-agent and keeps
# /var/lib/edge-agent and the config; `dpkg --purge` removes the data dir, the config dir and the user.
# The maintainer scripts honour DPKG_ROOT (dpkg --root ... --force-script-chrootless), which is how
# tests/test_deb.py installs, upgrades and purges it in a throw-away root.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=dist
VERSION=""
DEPS=1
WHEELHOUSE=""
# The system's Python: the venv's interpreter is a link to it, so it must be the one the target has
# (/usr/bin/python3 from Debian's python3 package), not a pyenv or conda one.
PYTHON=${PYTHON:-/usr/bin/python3}
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --version) VERSION=$2; shift 2 ;;
    --no-deps) DEPS=0; shift ;;
    --wheelhouse) WHEELHOUSE=$2; shift 2 ;;
    *) echo "build-deb.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
case "$("$PYTHON" -c 'import sys; print(sys.base_prefix)')" in
  /usr) ;;
  *) echo "build-deb.sh: warning: $PYTHON is not the system's Python (/usr): the venv will not run on a box" >&2 ;;
esac
VERSION=${VERSION:-$(sed -n 's/^__version__ = "\(.*\)"/\1/p' edge_agent/__init__.py)}
ARCH=$(dpkg --print-architecture)
PYVER=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
PYNEXT=$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1] + 1}")')
PREFIX=/opt/edge-agent
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
PKG="$STAGE/pkg"
mkdir -p "$PKG/DEBIAN" "$PKG$PREFIX" "$PKG/usr/bin" "$PKG/lib/systemd/system" "$PKG/usr/lib/tmpfiles.d" \
  "$PKG/etc/edge-agent" "$PKG/usr/share/doc/edge-agent"

# The venv, built in the staging tree, then pointed at its installed path.
"$PYTHON" -m venv "$PKG$PREFIX/venv"
PIP=("$PKG$PREFIX/venv/bin/python" -m pip install --quiet --no-compile --disable-pip-version-check)
[ -n "$WHEELHOUSE" ] && PIP+=(--no-index --find-links "$WHEELHOUSE")
[ "$DEPS" = 0 ] && PIP+=(--no-deps)
"${PIP[@]}" .
rm -rf "$PKG$PREFIX/venv/lib/python$PYVER/site-packages/pip" "$PKG$PREFIX/venv/lib/python$PYVER/site-packages/"pip-* \
  "$PKG$PREFIX/venv/bin/"pip*
find "$PKG$PREFIX/venv" -name __pycache__ -prune -exec rm -rf {} +
grep -rlI --null "$PKG$PREFIX" "$PKG$PREFIX/venv/bin" "$PKG$PREFIX/venv/pyvenv.cfg" 2>/dev/null \
  | xargs -0 -r sed -i "s|$PKG$PREFIX|$PREFIX|g"
ln -s "$PREFIX/venv/bin/edge-agent" "$PKG/usr/bin/edge-agent"
ln -s "$PREFIX/venv/bin/edge-fw" "$PKG/usr/bin/edge-fw"

install -m 0644 systemd/edge-agent.service "$PKG/lib/systemd/system/edge-agent.service"
install -m 0644 systemd/edge-agent.tmpfiles.conf "$PKG/usr/lib/tmpfiles.d/edge-agent.conf"
install -m 0640 config/example.yaml "$PKG/etc/edge-agent/config.yaml"
install -m 0644 README.md "$PKG/usr/share/doc/edge-agent/README.md"
for script in postinst prerm postrm; do
  install -m 0755 "packaging/debian/$script" "$PKG/DEBIAN/$script"
done
echo /etc/edge-agent/config.yaml > "$PKG/DEBIAN/conffiles"
SIZE=$(du -sk --exclude=DEBIAN "$PKG" | cut -f1)
cat > "$PKG/DEBIAN/control" <<CONTROL
Package: edge-agent
Version: $VERSION
Architecture: $ARCH
Maintainer: edge-agent developers <edge-agent@localhost>
Installed-Size: $SIZE
Depends: python3 (>= $PYVER), python3 (<< $PYNEXT), adduser | passwd, systemd
Recommends: mosquitto-clients, ffmpeg, libportaudio2, alsa-utils
Section: net
Priority: optional
Homepage: https://github.com/edge-agent/edge-agent
Description: construction-site noise, dust and video supervision for crane boxes
 Reads RS-485 noise and dust meters and RTSP cameras, computes the legal figures,
 warns the crew over a loudspeaker, and sends readings, violations and signed
 evidence to the bureau over MQTT. Runs as the systemd service edge-agent.
CONTROL
mkdir -p "$OUT"
DEB="$OUT/edge-agent_${VERSION}_${ARCH}.deb"
dpkg-deb --root-owner-group -Zgzip --build "$PKG" "$DEB" >/dev/null
echo "$DEB"
