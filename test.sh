#!/usr/bin/env bash
# Installs what the tests need (Debian packages) and runs every test.
# Usage: ./test.sh            (as root, or with sudo available)
set -euo pipefail
cd "$(dirname "$0")"

# Real components the end-to-end tests start themselves; a missing one is a test failure, so
# install them all up front.
PACKAGES=(redis-server openssh-server openssh-client nginx wrk asciinema curl openssl chromium)
# The browser test drives Chromium with playwright-core, and the SSO tests run an OpenID
# provider (oidc-provider), both from the npm registry.
command -v npm >/dev/null || PACKAGES+=(nodejs npm)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  echo "test.sh: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# Debian starts the packaged services on install; the tests run their own instances on free
# loopback ports, so the system ones are not needed (and must not hold ports 8443/9443).
for svc in redis-server nginx ssh; do
  (command -v systemctl >/dev/null && systemctl stop "$svc" 2>/dev/null) || true
done

# playwright-core, pinned by tests/browser/package-lock.json (it downloads no browser: the
# test uses Debian's Chromium).
npm ci --prefix tests/browser --no-audit --no-fund --loglevel=error
# The SSO tests' OpenID provider: panva's oidc-provider, pinned by tests/oidc/package-lock.json.
npm ci --prefix tests/oidc --no-audit --no-fund --loglevel=error

export CARGO_TERM_COLOR=never
# Incremental state is for edit-compile loops; a one-shot run only pays its disk (GBs) for it.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo test --workspace --locked --no-fail-fast
