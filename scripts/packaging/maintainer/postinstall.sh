#!/bin/sh
# {{.Name}} postinstall (deb postinst: configure [old-version]; rpm %post: 1|2).
# First install: enable {{.Unit}} but do not start it, the config is not
# edited yet. Upgrade: restart it if it is running, keep the admin's
# enable/disable choice.
set -e
upgrade=
case "$1" in
configure) [ -z "$2" ] || upgrade=1 ;;
[0-9]*) [ "$1" -lt 2 ] || upgrade=1 ;;
abort-*) exit 0 ;;
esac
{{- if .StateDir}}
# The state directory: spool, session journal, outputs, models.
install -d -m 0750 -o {{.User}} -g {{.User}} {{.StateDir}} {{.StateDir}}/models
{{- end}}
booted=
[ -d /run/systemd/system ] && booted=1
if [ -n "$booted" ]; then
	systemctl daemon-reload || true
fi
if [ -z "$upgrade" ]; then
	if command -v systemctl >/dev/null 2>&1; then
		# Works without a running systemd too (image builds, chroots).
		systemctl enable {{.Unit}} >/dev/null 2>&1 || echo "{{.Name}}: could not enable {{.Unit}}" >&2
	fi
	echo "{{.Name}}: edit {{.Config}}, then: systemctl enable --now {{.Unit}}"
elif [ -n "$booted" ]; then
	systemctl try-restart {{.Unit}} || true
fi
exit 0
