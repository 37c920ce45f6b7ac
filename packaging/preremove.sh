#!/bin/sh
# hostflow pre-remove (deb: prerm remove|upgrade|...; rpm: %preun 0 or 1).
# Stop and disable only on removal, not on upgrade (postinstall restarts).
set -e
removing=no
case "$1" in
remove | purge | 0) removing=yes ;;
esac
if [ "$removing" = yes ] && [ -d /run/systemd/system ]; then
	systemctl disable --now hostflow.service || true
fi
exit 0
