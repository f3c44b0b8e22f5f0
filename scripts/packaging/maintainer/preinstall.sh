#!/bin/sh
# {{.Name}} preinstall (deb preinst: install|upgrade; rpm %pre: 1|2).
# Creates the {{.User}} system user and group before the files it owns are
# unpacked. Idempotent; an existing user is kept as it is.
set -e
if ! getent group {{.User}} >/dev/null; then
	groupadd --system {{.User}}
fi
if ! getent passwd {{.User}} >/dev/null; then
	nologin=/usr/sbin/nologin
	[ -x "$nologin" ] || nologin=/sbin/nologin
	useradd --system --gid {{.User}} --home-dir {{.Home}} --no-create-home \
		--shell "$nologin" --comment "{{.Comment}}" {{.User}}
fi
exit 0
