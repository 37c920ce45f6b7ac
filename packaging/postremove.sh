#!/bin/sh
# hostflow post-remove (deb: postrm; rpm: %postun). The hostflow user is
# kept, as Debian policy advises for system users: files it owned may remain.
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
exit 0
