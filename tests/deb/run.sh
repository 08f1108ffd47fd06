#!/usr/bin/env bash
# The .deb on a fresh Debian 12: build it (from the release binary already
# built, unless told otherwise), check it with lintian, install it with
# dpkg into a debootstrap --variant=minbase bookworm root, run
# `hookci check` there against the shipped config, and start the daemon
# there until /healthz answers. Needs root (chroot), debootstrap, lintian
# and cargo-deb. Run from .ci/run; not part of `cargo test`.
#
#   tests/deb/run.sh               package target/release/hookci (built already)
#   tests/deb/run.sh --build       let cargo-deb build the release binary first
#   tests/deb/run.sh --test-build  package target/debug/hookci, the binary
#                                  `cargo test` already built (what .ci/run
#                                  does: no second compile; cargo-deb strips it)
#
# The minbase root is cached (a tarball under $HOOKCI_DEB_CACHE, default
# /var/cache/hookci-ci), so a rerun costs seconds, not a download.
set -euo pipefail
cd "$(dirname "$0")/../.."

cache=${HOOKCI_DEB_CACHE:-/var/cache/hookci-ci}
mirror=${HOOKCI_DEB_MIRROR:-http://deb.debian.org/debian}
port=${HOOKCI_DEB_PORT:-8787}
step() { printf '==> %s\n' "$*"; }
fail() { printf 'deb test: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || fail "needs root (dpkg --root and chroot)"
command -v debootstrap >/dev/null || fail "debootstrap is missing (apt-get install debootstrap)"
command -v lintian >/dev/null || fail "lintian is missing (apt-get install lintian)"
command -v cargo-deb >/dev/null || fail "cargo-deb is missing (cargo install cargo-deb --locked)"

step "cargo deb"
if [ "${1:-}" = "--build" ]; then
  cargo deb --locked --output target/debian/
elif [ "${1:-}" = "--test-build" ]; then
  [ -x target/debug/hookci ] || fail "target/debug/hookci is missing; run cargo test --locked first"
  cargo deb --no-build --profile dev --fast --output target/debian/ 2>&1 \
    | grep -v -e 'dev profile is not supported' -e 'To enable debug symbols' || true
else
  [ -x target/release/hookci ] || fail "target/release/hookci is missing; run cargo build --release --locked first, or pass --build"
  cargo deb --no-build --output target/debian/
fi
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
arch=$(dpkg --print-architecture)
deb=target/debian/hookci_${version}-1_${arch}.deb
[ -f "$deb" ] || deb=$(ls -t target/debian/hookci_*.deb | head -n1)
[ -f "$deb" ] || fail "no .deb was built"
echo "built $deb ($(du -h "$deb" | cut -f1))"

step "lintian"
# Errors fail the test; warnings are shown.
lintian --tag-display-limit 0 --fail-on error "$deb"

step "a fresh bookworm minbase root"
mkdir -p "$cache"
# The cache is keyed by what it includes, so a new dependency makes a new root.
include=bubblewrap,ca-certificates,libssl3,systemd-standalone-sysusers
tarball=$cache/bookworm-minbase-$(echo "$include" | tr , -).tar
work=$(mktemp -d /tmp/hookci-deb.XXXXXX)
root=$work/root
daemon=""
cleanup() {
  if [ -n "$daemon" ]; then kill "$daemon" 2>/dev/null || true; wait "$daemon" 2>/dev/null || true; fi
  umount "$root/proc" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
# The package's dependencies beyond minbase come in with the root, so the
# cached root installs the .deb without a network.
if [ ! -s "$tarball" ]; then
  debootstrap --variant=minbase --include="$include" bookworm "$work/fresh" "$mirror" \
    >"$work/debootstrap.log" 2>&1 \
    || { tail -n 20 "$work/debootstrap.log"; fail "debootstrap failed"; }
  tar -C "$work/fresh" -cf "$tarball.tmp" . && mv "$tarball.tmp" "$tarball"
  rm -rf "$work/fresh"
fi
mkdir -p "$root"
tar -C "$root" -xf "$tarball"

step "dpkg -i"
cp "$deb" "$root/tmp/hookci.deb"
mount -t proc proc "$root/proc"
if ! chroot "$root" dpkg -i /tmp/hookci.deb; then
  # A dependency the cached root lacks: fetch it as apt would.
  cp /etc/resolv.conf "$root/etc/resolv.conf" 2>/dev/null || true
  chroot "$root" sh -c "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get -f install -y -qq --no-install-recommends" \
    || fail "the package's dependencies did not install"
fi
chroot "$root" dpkg -s hookci | grep -q '^Status: install ok installed' || fail "hookci is not installed"
chroot "$root" getent passwd hookci >/dev/null || fail "the package did not create the hookci user"
for f in /usr/bin/hookci /etc/hookci/hookci.toml /lib/systemd/system/hookci.service \
         /lib/systemd/system/hookci.socket /usr/lib/sysusers.d/hookci.conf \
         /usr/share/doc/hookci/systemd.md; do
  [ -e "$root$f" ] || fail "$f is not installed"
done
grep -q '^/etc/hookci/hookci.toml$' "$root/var/lib/dpkg/info/hookci.conffiles" \
  || fail "/etc/hookci/hookci.toml is not a conffile"

step "hookci check in the root"
chroot "$root" /usr/bin/hookci check --config /etc/hookci/hookci.toml

step "hookci serve in the root, against the shipped config"
chroot "$root" /usr/bin/hookci serve --config /etc/hookci/hookci.toml >"$work/serve.log" 2>&1 &
daemon=$!
ok=""
for _ in $(seq 1 300); do
  if ! kill -0 "$daemon" 2>/dev/null; then cat "$work/serve.log"; fail "hookci serve exited"; fi
  if grep -q 'listening' "$work/serve.log"; then ok=1; break; fi
  sleep 0.1
done
[ -n "$ok" ] || { cat "$work/serve.log"; fail "hookci serve did not start listening"; }
exec 3<>"/dev/tcp/127.0.0.1/$port"
printf 'GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n' >&3
answer=$(cat <&3)
exec 3>&-
case "$answer" in
  *'"status":"ok"'*) echo "healthz: ok" ;;
  *) echo "$answer"; fail "/healthz did not answer ok" ;;
esac
kill "$daemon"; wait "$daemon" || true; daemon=""
[ -f "$root/var/lib/hookci/hookci.db" ] || fail "the store was not created in /var/lib/hookci"
step "deb test passed"
