#!/usr/bin/env bash
# Build the Grafana backend (`grafana server`, HTTP API only) from its Go module.
#
# usage: build-grafana.sh VERSION HOME
#   VERSION  the module version of github.com/grafana/grafana, a pseudo-version pinning a commit
#            (the release tags v10.x are not valid module versions: no /v10 suffix in go.mod)
#   HOME     where to install: HOME/bin/grafana (run as `grafana server`), HOME/conf, HOME/public
#
# Why each step:
# - the module zip comes from the Go module proxy like any dependency; the cache is read-only,
#   so the tree is copied to a scratch directory before generating code into it;
# - GOWORK=off: the module must build alone, whatever go.work a parent directory may hold;
# - `wire gen`: the dependency-injection glue (pkg/server/wire_gen.go) is generated, not
#   committed upstream. Not with the wire v0.5.0 that go.mod requires: its golang.org/x/tools
#   v0.7.0 leaves types.Config.Sizes nil (a current go/types panics on that), and x/tools up
#   to v0.24 has an internal/tokeninternal that no longer compiles with a current Go. So wire
#   is built in a tiny module of its own with a current x/tools (WIRE_VERSION, XTOOLS_VERSION);
# - CGO_ENABLED=1: the embedded SQLite store (mattn/go-sqlite3) is C;
# - -checklinkname=0: old dependencies reach into runtime internals with go:linkname, which
#   Go >= 1.23 refuses to link unless told;
# - no frontend build: the HTTP API (datasources, dashboards, alerting, /api/ds/query) is
#   all backend; public/ is copied as source because core plugins are found by the
#   plugin.json files under public/app/plugins.
set -euo pipefail

VERSION="${1:?usage: build-grafana.sh VERSION HOME}"
DEST="${2:?usage: build-grafana.sh VERSION HOME}"
CACHE="${CLUSTERTWIN_CACHE:-$HOME/.cache/clustertwin}"

export GOMODCACHE="$CACHE/go/mod"
export GOCACHE="$CACHE/go/build"
export GOTOOLCHAIN=local
export GOWORK=off
export GOFLAGS=-mod=mod
export CGO_ENABLED=1

MODULE="github.com/grafana/grafana"
SCRATCH="$CACHE/grafana-build/src-$VERSION"

echo "== $(date -u +%FT%TZ) downloading $MODULE@$VERSION"
DIR="$(cd /tmp && go mod download -json "$MODULE@$VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')"
if [ -z "$DIR" ] || [ ! -f "$DIR/go.mod" ]; then
  echo "could not download $MODULE@$VERSION from the module proxy" >&2
  exit 1
fi

if [ ! -f "$SCRATCH/.copied" ]; then
  echo "== $(date -u +%FT%TZ) copying the module to $SCRATCH"
  rm -rf "$SCRATCH"
  mkdir -p "$SCRATCH"
  cp -r "$DIR/." "$SCRATCH/"
  chmod -R u+w "$SCRATCH"
  touch "$SCRATCH/.copied"
fi
cd "$SCRATCH"

WIRE_VERSION="${WIRE_VERSION:-v0.7.0}"
XTOOLS_VERSION="${XTOOLS_VERSION:-v0.52.0}"
WIRE="$CACHE/grafana-build/wire-$WIRE_VERSION-$XTOOLS_VERSION"
if [ ! -x "$WIRE" ]; then
  echo "== $(date -u +%FT%TZ) building wire $WIRE_VERSION with x/tools $XTOOLS_VERSION"
  TOOLMOD="$CACHE/grafana-build/wire-tool"
  rm -rf "$TOOLMOD" && mkdir -p "$TOOLMOD"
  printf 'module clustertwin.invalid/wiretool\n\ngo 1.25\n\nrequire (\n\tgithub.com/google/wire %s\n\tgolang.org/x/tools %s\n)\n' \
    "$WIRE_VERSION" "$XTOOLS_VERSION" > "$TOOLMOD/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/google/wire/cmd/wire"\n' > "$TOOLMOD/tools.go"
  (cd "$TOOLMOD" && go mod tidy && go build -o "$WIRE" github.com/google/wire/cmd/wire)
fi
echo "== $(date -u +%FT%TZ) wire gen (dependency injection)"
"$WIRE" gen -tags oss ./pkg/server

# pkg/cmd/grafana-server only execs `grafana server`: the one binary `grafana` is enough.
echo "== $(date -u +%FT%TZ) go build grafana (cgo for sqlite)"
rm -rf "$DEST.partial"
mkdir -p "$DEST.partial/bin"
RELEASE="$(sed -n 's/^ *"version": "\([^"]*\)",$/\1/p' package.json | head -1)"
COMMIT="${VERSION##*-}"
go build -tags oss -trimpath \
  -ldflags "-checklinkname=0 -s -w -X main.version=$RELEASE -X main.commit=$COMMIT" \
  -o "$DEST.partial/bin/grafana" ./pkg/cmd/grafana

echo "== $(date -u +%FT%TZ) installing conf/ and public/ into $DEST"
cp -r conf "$DEST.partial/conf"
cp -r public "$DEST.partial/public"
echo "$VERSION" > "$DEST.partial/VERSION"
rm -rf "$DEST"
mv "$DEST.partial" "$DEST"
echo "== $(date -u +%FT%TZ) done: $DEST/bin/grafana"
