#!/usr/bin/env bash
# Build InfluxDB OSS 2.x `influxd` from source for the native local stack.
#
#   build-influxdb2.sh [VERSION] [PREFIX]
#     VERSION  2.x release, with or without a leading "v" (default 2.7.12)
#     PREFIX   install prefix; the binary lands in $PREFIX/bin/influxd
#              (default $HOME/.cache/clustertwin/influxdb-$VERSION)
#
# What it does, and why (each step is a problem the plain `go install` route hits):
#  * `go install ...@version` cannot build influxdb v2: its go.mod has a replace directive.
#    So the module source is fetched with `go mod download` and built in a writable copy.
#  * Flux needs the Rust static library libflux (in the github.com/influxdata/flux module,
#    under libflux/). Upstream builds it through its own pkg-config wrapper, which runs cargo
#    out of sight during cgo. We build it ourselves with cargo (crates from the Rust registry)
#    and write a flux.pc for the system pkg-config: the failures are visible, and
#    CARGO_TARGET_DIR can live in the cache.
#  * flux pins Rust 1.72 in rust-toolchain.toml; we build with the toolchain that is
#    installed (stable) instead, overriding the pin with RUSTUP_TOOLCHAIN.
#  * flux-core's default "strict" feature turns every warning into an error
#    (deny(warnings)); newer compilers have new lints, so lints are capped to warnings
#    (RUSTFLAGS=--cap-lints=warn). That is also why cargo runs without --target: with
#    --target, RUSTFLAGS do not reach the build script's copy of flux-core.
#  * No UI: building without the `assets` tag compiles the no-assets stub of the static
#    package. The API (/api/v2, /health, /ping, /metrics) is complete; `/` answers 404.
#  * Go's build cache does not key cgo packages on pkg-config output, so the libflux
#    directory and build id are also put into CGO_CFLAGS/CGO_LDFLAGS (see below).
#  * influxd 2.x shuts down cleanly on SIGINT; on SIGTERM it dies at once (its WAL is
#    replayed on the next start).
#
# Caches (all under ${CLUSTERTWIN_CACHE:-$HOME/.cache/clustertwin}, never in the repo):
#   go/mod, go/build   Go module and build caches (shared with the 1.x build)
#   cargo              CARGO_HOME: the Rust registry cache (toolchains stay with rustup)
#   build/influxdb2    writable sources, cargo target dir, libflux + flux.pc
#
# Idempotent: exits at once when $PREFIX/bin/influxd already reports VERSION.
set -euo pipefail

# The body is a function so that bash reads the whole file before running any of it:
# editing or checking out this script during a long build cannot derail the build.
main() {
    VERSION="${1:-2.7.12}"
    VERSION="${VERSION#v}"
    CACHE="${CLUSTERTWIN_CACHE:-$HOME/.cache/clustertwin}"
    PREFIX="${2:-$CACHE/influxdb-$VERSION}"
    MODULE="github.com/influxdata/influxdb/v2"
    BUILD="$CACHE/build/influxdb2"

    log() { printf '[influxdb2] %s\n' "$*"; }
    die() { printf '[influxdb2] ERROR: %s\n' "$*" >&2; exit 1; }
    # Network fetches (Go module proxy, Rust crates) are retried: on a fresh CI machine a cold
    # build makes hundreds of requests, and one dropped connection should not fail the run.
    # Only fetches are retried, never a compile: a compile error is not transient.
    fetch() {
        local attempt
        for attempt in 1 2 3; do
            "$@" && return 0
            ((attempt < 3)) || break
            log "fetch failed (attempt $attempt of 3): $*; retrying in $((attempt * 15)) s"
            sleep $((attempt * 15))
        done
        die "fetch failed 3 times: $*"
    }
    started=$SECONDS

    case "$VERSION" in
        2.*) ;;
        *) die "version $VERSION is not a 2.x release (1.x builds with plain go install)" ;;
    esac

    # -- already built? ------------------------------------------------------------------
    if [[ -x "$PREFIX/bin/influxd" ]]; then
        have="$("$PREFIX/bin/influxd" version 2>/dev/null || true)"
        if [[ "$have" == "InfluxDB v$VERSION "* ]]; then
            log "$PREFIX/bin/influxd is already v$VERSION: nothing to do"
            exit 0
        fi
        log "$PREFIX/bin/influxd reports '${have:-nothing}', rebuilding v$VERSION"
    fi

    # -- tools ---------------------------------------------------------------------------
    # Toolchains installed outside the default PATH on machines of this kind.
    for dir in /usr/local/go/bin "$HOME/go/bin" "${CARGO_HOME:-$HOME/.cargo}/bin" "$HOME/.cargo/bin"; do
        if [[ -d "$dir" && ":$PATH:" != *":$dir:"* ]]; then
            PATH="$PATH:$dir"
        fi
    done
    export PATH

    # Debian packages: cgo needs a C compiler and libc headers (libflux, sqlite), and
    # the flux.pc file is read by the real pkg-config.
    missing=()
    command -v gcc >/dev/null 2>&1 || missing+=(gcc)
    command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
    [[ -e /usr/include/stdio.h ]] || missing+=(libc6-dev)
    if ((${#missing[@]})); then
        if [[ $EUID -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
            die "missing build tools: ${missing[*]} (install the Debian packages and re-run)"
        fi
        log "installing Debian packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}"
    fi

    # Without the toolchains, InfluxDB 1.8 (plain Go, no Rust) is the way to a working stack.
    fallback="or run the stack with CLUSTERTWIN_INFLUXDB_VERSION=1.8.10"
    command -v go >/dev/null 2>&1 ||
        die "go is not installed (need Go >= 1.23; Debian's golang-go is too old), $fallback"
    command -v cargo >/dev/null 2>&1 ||
        die "cargo is not installed (need Rust >= 1.72 via rustup; Debian 12's rustc 1.63 is too old), $fallback"

    # A rust-toolchain.toml in the flux sources pins 1.72; use the installed default instead
    # (set RUSTUP_TOOLCHAIN yourself to choose another one).
    if [[ -z "${RUSTUP_TOOLCHAIN:-}" ]] && command -v rustup >/dev/null 2>&1; then
        RUSTUP_TOOLCHAIN="$(rustup default 2>/dev/null | awk 'NR==1 {print $1}')"
        [[ -n "$RUSTUP_TOOLCHAIN" ]] || RUSTUP_TOOLCHAIN=stable
        export RUSTUP_TOOLCHAIN
    fi
    log "using $(go version | awk '{print $3}'), $(cargo --version | awk '{print $1, $2}')" \
        "${RUSTUP_TOOLCHAIN:+(rustup toolchain $RUSTUP_TOOLCHAIN)}"

    export GOMODCACHE="${GOMODCACHE:-$CACHE/go/mod}"
    export GOCACHE="${GOCACHE:-$CACHE/go/build}"
    export GOTOOLCHAIN=local
    export GOFLAGS="-mod=readonly -buildvcs=false"
    export CGO_ENABLED=1
    export CARGO_HOME="$CACHE/cargo"
    export CARGO_TARGET_DIR="$BUILD/cargo-target"
    export CARGO_TERM_COLOR=never CARGO_TERM_PROGRESS_WHEN=never
    mkdir -p "$BUILD" "$CARGO_HOME" "$GOMODCACHE" "$GOCACHE"
    # Fail rather than prompt if a module would need credentials.
    export GIT_TERMINAL_PROMPT=0

    # -- sources ---------------------------------------------------------------------------
    # Copy a read-only module-cache directory to a writable build directory, once.
    writable_copy() {
        local from="$1" to="$2"
        if [[ ! -f "$to/.complete" ]]; then
            rm -rf "$to" "$to.partial"
            cp -r "$from" "$to.partial"
            chmod -R u+w "$to.partial"
            touch "$to.partial/.complete"
            mv "$to.partial" "$to"
        fi
    }

    log "downloading $MODULE@v$VERSION"
    (cd "$BUILD" && fetch go mod download "$MODULE@v$VERSION")
    src_mod="$(cd "$BUILD" && go mod download -json "$MODULE@v$VERSION" |
        sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')"
    [[ -n "$src_mod" && -d "$src_mod" ]] || die "go mod download of $MODULE@v$VERSION gave no source directory"
    SRC="$BUILD/influxdb-v$VERSION"
    writable_copy "$src_mod" "$SRC"

    # The flux module as influxdb's go.mod resolves it (honouring any replace directive).
    cd "$SRC"
    fetch go mod download github.com/influxdata/flux
    flux_info="$(go list -m \
        -f '{{with .Replace}}{{.Version}} {{.Dir}}{{else}}{{.Version}} {{.Dir}}{{end}}' \
        github.com/influxdata/flux)"
    read -r FLUX_VERSION flux_mod <<<"$flux_info"
    [[ -n "${flux_mod:-}" && -d "$flux_mod/libflux" ]] || die "cannot locate the flux module's libflux sources"
    FLUX="$BUILD/flux-$FLUX_VERSION"
    writable_copy "$flux_mod" "$FLUX"

    # -- libflux (Rust) ----------------------------------------------------------------------
    LIBFLUX="$BUILD/libflux-$FLUX_VERSION"
    log "building libflux (flux $FLUX_VERSION) with cargo: a few minutes the first time"
    t0=$SECONDS
    (
        cd "$FLUX/libflux"
        # for this machine's target only, as the build needs (not every platform's crates)
        fetch cargo fetch --locked --target "$(rustc -vV | sed -n 's/^host: //p')"
        RUSTFLAGS="${RUSTFLAGS:+$RUSTFLAGS }--cap-lints=warn" cargo build --release --locked -p flux
    )
    built="$CARGO_TARGET_DIR/release/libflux.a"
    [[ -f "$built" ]] || die "cargo finished but $built is missing"
    log "libflux built in $((SECONDS - t0)) s"

    # Only the static library goes in libdir (next to libflux.so the linker would pick the
    # shared one); its name carries a content hash so Go's build cache relinks on change.
    buildid="$(sha256sum "$built" | cut -c1-16)"
    mkdir -p "$LIBFLUX/lib" "$LIBFLUX/pkgconfig"
    if [[ ! -f "$LIBFLUX/lib/libflux-$buildid.a" ]]; then
        rm -f "$LIBFLUX"/lib/libflux-*.a
        cp "$built" "$LIBFLUX/lib/libflux-$buildid.a.partial"
        mv "$LIBFLUX/lib/libflux-$buildid.a.partial" "$LIBFLUX/lib/libflux-$buildid.a"
    fi
    rm -rf "$LIBFLUX/include"
    cp -r "$FLUX/libflux/include" "$LIBFLUX/include"
    {
        printf 'prefix=%s\n' "$LIBFLUX"
        printf 'libdir=${prefix}/lib\nincludedir=${prefix}/include\n\n'
        printf 'Name: Flux\nVersion: %s\n' "${FLUX_VERSION#v}"
        printf 'Description: Library for the InfluxData Flux engine (built by build-influxdb2.sh)\n'
        printf 'Libs: -L${libdir} -lflux-%s -ldl -lm\n' "$buildid"
        printf 'Cflags: -I${includedir}\n'
    } >"$LIBFLUX/pkgconfig/flux.pc"
    export PKG_CONFIG_PATH="$LIBFLUX/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}"
    unset PKG_CONFIG
    pkg-config --exists flux || die "pkg-config cannot read $LIBFLUX/pkgconfig/flux.pc"
    # Go's build cache key for a cgo package covers CGO_* flags but not pkg-config's output, so
    # a cached libflux Go package would keep linking a library path or name that no longer
    # exists ("cannot find -lflux-..."). Put the library's directory and build id into the key.
    export CGO_CFLAGS="${CGO_CFLAGS:--O2 -g} -DCLUSTERTWIN_LIBFLUX_BUILDID=$buildid"
    export CGO_LDFLAGS="${CGO_LDFLAGS:--O2 -g} -L$LIBFLUX/lib"

    # -- influxd (Go) ------------------------------------------------------------------------
    # Tags as upstream's GNUmakefile, minus `assets` (the UI, which needs a Node build).
    tags="sqlite_foreign_keys,sqlite_json"
    [[ "$(go env GOARCH)" == amd64 || "$(go env GOARCH)" == s390x ]] || tags="$tags,noasm"
    ldflags="-s -w -X main.version=v$VERSION -X main.commit=source-build"
    ldflags="$ldflags -X main.date=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    log "building influxd v$VERSION with go (tags $tags): a few minutes the first time"
    t0=$SECONDS
    mkdir -p "$PREFIX/bin"
    # Download every module the build needs first (go build would fetch them without retry).
    fetch go list -deps -tags "$tags" ./cmd/influxd >/dev/null
    go build -tags "$tags" -ldflags "$ldflags" -o "$PREFIX/bin/influxd.partial" ./cmd/influxd
    mv "$PREFIX/bin/influxd.partial" "$PREFIX/bin/influxd"
    log "influxd built in $((SECONDS - t0)) s"

    have="$("$PREFIX/bin/influxd" version)"
    [[ "$have" == "InfluxDB v$VERSION "* ]] || die "built binary reports '$have', expected v$VERSION"
    log "done in $((SECONDS - started)) s: $PREFIX/bin/influxd ($have)"
}

main "$@"
