#!/bin/sh
# {{.Name}} preremove (deb prerm: remove|upgrade|...; rpm %preun: 0|1).
# On removal (not upgrade): stop and disable {{.Unit}} while its file is
# still there.
set -e
case "$1" in
remove | 0) ;;
*) exit 0 ;;
esac
if [ -d /run/systemd/system ]; then
	systemctl stop {{.Unit}} || true
fi
if command -v systemctl >/dev/null 2>&1; then
	systemctl disable {{.Unit}} >/dev/null 2>&1 || true
fi
exit 0
