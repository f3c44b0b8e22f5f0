#!/usr/bin/env bash
# `make packages`: .deb and .rpm packages of robot-agent and fleet-relay for
# amd64, arm64 and armhf (armv7), built with nfpm by scripts/packaging (its
# own Go module, so nfpm stays out of the product's go.mod).
#
# Environment (all optional):
#   OUT          output directory (default dist/packages)
#   ARCHES       nfpm architectures (default "amd64 arm64 arm7"; arm7 = deb armhf, rpm armv7hl)
#   FORMATS      deb,rpm (default both)
#   PKG_VERSION  package version; default from the newest vX.Y.Z tag (X.Y.Z,
#                or X.Y.Z+N.gHASH N commits after it), else 0.0.0~gitDATE.HASH
#   VERSION, COMMIT  stamped into the binaries (the Makefile passes them)
#   BIN_DIR      use the binaries in BIN_DIR/<arch>/ instead of building them
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
OUT=${OUT:-dist/packages}
ARCHES=${ARCHES:-amd64 arm64 arm7}
FORMATS=${FORMATS:-deb,rpm}
VERSION=${VERSION:-$(git describe --tags --always --dirty 2>/dev/null || echo dev)}
COMMIT=${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}
if [ -z "${PKG_VERSION:-}" ]; then
  if tag=$(git describe --tags --match 'v[0-9]*' 2>/dev/null); then
    # v1.2.3 -> 1.2.3; v1.2.3-4-gabc -> 1.2.3+4.gabc (sorts after 1.2.3)
    PKG_VERSION=$(echo "${tag#v}" | sed -E 's/-([0-9]+)-g([0-9a-f]+)$/+\1.g\2/')
  else
    # No release tag: order snapshots by commit time.
    PKG_VERSION="0.0.0~git$(git log -1 --format=%cd --date=format:%Y%m%d%H%M%S 2>/dev/null || date -u +%Y%m%d%H%M%S).${COMMIT}"
  fi
fi
# Reproducible file times: the commit's.
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
bin=${BIN_DIR:-"$OUT/.bin"}
ldflags="-s -w -X github.com/robotfleet/fleetlink/internal/version.Version=$VERSION -X github.com/robotfleet/fleetlink/internal/version.Commit=$COMMIT"
for arch in $ARCHES; do
  [ -z "${BIN_DIR:-}" ] || continue
  case "$arch" in
    amd64 | arm64) goarch=$arch goarm= ;;
    arm7) goarch=arm goarm=7 ;;
    *) echo "packages: unknown arch $arch (want amd64, arm64 or arm7)" >&2; exit 2 ;;
  esac
  mkdir -p "$bin/$arch"
  for b in robot-agent fleet-relay; do
    CGO_ENABLED=0 GOOS=linux GOARCH=$goarch GOARM=$goarm \
      go build -trimpath -ldflags "$ldflags" -o "$bin/$arch/$b" "./cmd/$b"
  done
done
(cd scripts/packaging && go run . --root "$root" --bin "$bin" --out "$OUT" --version "$PKG_VERSION" \
  --arch "$(echo $ARCHES | tr ' ' ,)" --format "$FORMATS")
[ -n "${BIN_DIR:-}" ] || rm -rf "$bin"
echo "packages: $PKG_VERSION in $OUT"
