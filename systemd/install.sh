#!/usr/bin/env bash
# Install edge-agent on a box: a venv under /opt, a system user, the unit and tmpfiles.
# Run from a checkout as root:  sudo bash systemd/install.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PREFIX=/opt/edge-agent
id edge-agent >/dev/null 2>&1 || useradd --system --home-dir /var/lib/edge-agent --shell /usr/sbin/nologin edge-agent
for group in dialout audio gpio video; do
  getent group "$group" >/dev/null || groupadd --system "$group"
done
python3 -m venv "$PREFIX/venv"
"$PREFIX/venv/bin/pip" install --upgrade pip
"$PREFIX/venv/bin/pip" install .
install -m 0644 systemd/edge-agent.service /etc/systemd/system/edge-agent.service
install -m 0644 systemd/edge-agent.tmpfiles.conf /usr/lib/tmpfiles.d/edge-agent.conf
systemd-tmpfiles --create /usr/lib/tmpfiles.d/edge-agent.conf || true
if [ ! -f /etc/edge-agent/config.yaml ]; then
  install -m 0640 -g edge-agent config/example.yaml /etc/edge-agent/config.yaml
  echo "Edit /etc/edge-agent/config.yaml, then: edge-agent check-config /etc/edge-agent/config.yaml"
fi
systemctl daemon-reload
echo "Start with: systemctl enable --now edge-agent"
