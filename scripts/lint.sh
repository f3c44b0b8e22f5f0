#!/usr/bin/env bash
# gofmt, go vet and staticcheck; exits non-zero on any finding.
set -euo pipefail
cd "$(dirname "$0")/.."
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './node_modules/*'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:"; echo "$unformatted"; exit 1
fi
go vet ./...
STATICCHECK=${STATICCHECK:-$(go env GOPATH)/bin/staticcheck}
if [ ! -x "$STATICCHECK" ]; then
  echo "installing staticcheck"
  go install honnef.co/go/tools/cmd/staticcheck@v0.8.2
fi
"$STATICCHECK" ./...
echo "lint: ok"
