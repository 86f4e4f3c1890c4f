#!/usr/bin/env bash
# Install FerretDB v1.24.2 (the MongoDB-wire test server) into $(go env GOPATH)/bin.
# Reuses an existing binary of that version. Needs Go and the Go module proxy.
set -euo pipefail
VERSION=v1.24.2
GOBIN_DIR="$(go env GOPATH)/bin"
BIN="$GOBIN_DIR/ferretdb"
# (Capture --version output first: piping it into grep -q can SIGPIPE under pipefail.)
version_of() { "$1" --version 2>/dev/null || true; }
if [ -x "$BIN" ] && [[ "$(version_of "$BIN")" == *"version: $VERSION"* ]]; then
  echo "ferretdb $VERSION already at $BIN"; exit 0
fi
if command -v ferretdb >/dev/null 2>&1 && [[ "$(version_of ferretdb)" == *"version: $VERSION"* ]]; then
  echo "ferretdb $VERSION already on PATH"; exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
go mod init ferretdb-build >/dev/null 2>&1
# The proxy serves the exact version but not a version list, so fetch it as a tool
# dependency of a throwaway module (what `go install …@version` would do).
go get -tool "github.com/FerretDB/FerretDB/cmd/ferretdb@$VERSION"
src="$(go list -m -f '{{.Dir}}' github.com/FerretDB/FerretDB)"
# A module download lacks build/version/version.txt (generated in FerretDB's own
# build); without it the binary panics at start. Build from a copy that has it.
cp -r "$src" "$work/src"
chmod -R u+w "$work/src"
echo "$VERSION" > "$work/src/build/version/version.txt"
mkdir -p "$GOBIN_DIR"
(cd "$work/src" && go build -o "$BIN" ./cmd/ferretdb)
echo "installed $(version_of "$BIN" | sed -n 1p) at $BIN"
