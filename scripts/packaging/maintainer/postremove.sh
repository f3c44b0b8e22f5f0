#!/bin/sh
# {{.Name}} postremove (deb postrm: remove|purge|upgrade|...; rpm %postun: 0|1).
# remove (and rpm erase) keeps the state and the config; deb purge deletes
# them and the {{.User}} user, which owns nothing else.
set -e
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload || true
fi
if [ "$1" = purge ]; then
{{- if .StateDir}}
	rm -rf {{.StateDir}}
{{- end}}
	if getent passwd {{.User}} >/dev/null; then
		userdel {{.User}} || true
	fi
	if getent group {{.User}} >/dev/null; then
		groupdel {{.User}} || true
	fi
fi
exit 0
