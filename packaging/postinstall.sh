#!/bin/sh
# hostflow post-install (deb: postinst configure; rpm: %post 1 or 2).
set -e

# The system user the service runs as.
if command -v systemd-sysusers >/dev/null 2>&1; then
	systemd-sysusers /usr/lib/sysusers.d/hostflow.conf
elif ! getent passwd hostflow >/dev/null 2>&1; then
	nologin=/usr/sbin/nologin
	[ -x "$nologin" ] || nologin=/sbin/nologin
	useradd --system --user-group --no-create-home --home-dir / \
		--shell "$nologin" --comment "hostflow flow probe" hostflow
fi

# Only where systemd is the running init: enable the service and (re)start
# it so an upgrade runs the new binary. In a container or chroot without
# systemd there is nothing to do.
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
	systemctl enable hostflow.service || true
	systemctl restart hostflow.service || true
fi
exit 0
