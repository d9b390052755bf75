#!/usr/bin/env bash
# Benchmark: memory per idle TLS keep-alive connection of the gateway.
#
# Opens N TLS connections to a release build of `gatehouse serve`; each does a handshake and one
# HTTP/1.1 request and then stays open and silent. Prints the gateway's resident memory before,
# with the N connections idle, and after they close, and the growth per connection
# ((RSS with N idle - RSS before) / N). "Idle" is measured once the gateway has parked them
# (gatehouse_parked_connections, a few seconds after their last byte; at most 30 s waited).
#   anon: the request has no session (a 401): the connection holds TLS and HTTP state only.
#   auth: the request carries a session from a real password + TOTP login and is proxied, so
#         the connection also keeps its upstream keep-alive connection (two sockets each).
#
# Usage: benches/idle.sh [N] [anon|auth|both]   (default 10000 both; auth is capped at 9000
#        connections: the gateway needs two descriptors for each and the limit here is 20000)
# Needs: nginx, openssl, curl, python3. Everything listens on 127.0.0.1 (clients come from
# 127.0.1.x, so no source nears the pre-authentication bound) and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-10000}
MODE=${2:-both}
for tool in nginx openssl curl python3; do
  command -v "$tool" >/dev/null || { echo "benches/idle.sh: $tool is missing" >&2; exit 1; }
done
# Two descriptors per authenticated connection in the gateway, one per connection here.
ulimit -n "$(ulimit -Hn)"

cargo build --release --quiet
BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/gatehouse
WORK=$(mktemp -d /tmp/gatehouse-idle.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/upstream.pid" ] && kill "$(cat "$WORK/upstream.pid")" 2>/dev/null || true
  sleep 0.2
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP_PORT=$(free_port); GH_PORT=$(free_port)
HOST=bench.gatehouse.localhost
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=$HOST" \
  -addext "subjectAltName=DNS:$HOST,IP:127.0.0.1" -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null

mkdir -p "$WORK/ng-up"
cat > "$WORK/upstream.conf" <<CONF
worker_processes 1;
worker_rlimit_nofile 20000;
pid $WORK/upstream.pid;
error_log $WORK/upstream-error.log;
events { worker_connections 19000; }
http {
  access_log off;
  client_body_temp_path $WORK/ng-up;
  server {
    listen 127.0.0.1:$UP_PORT;
    keepalive_requests 1000000;
    keepalive_timeout 600s;
    location / { default_type text/plain; return 200 "hello from upstream\n"; }
  }
}
CONF
nginx -c "$WORK/upstream.conf" -e "$WORK/upstream-error.log"

cp policies/model.conf "$WORK/model.conf"
echo "p, group:bench, app:bench/*, GET|HEAD, allow" > "$WORK/policy.csv"
export GATEHOUSE_SECRET_KEY
GATEHOUSE_SECRET_KEY=$(head -c 32 /dev/urandom | base64)
mkdir -p "$WORK/gh"
cat > "$WORK/gh.toml" <<CONF
data_dir = "$WORK/gh"
[gateway]
listen = "127.0.0.1:$GH_PORT"
public_url = "https://$HOST:$GH_PORT"
tls_cert = "$WORK/cert.pem"
tls_key = "$WORK/key.pem"
max_connections = 19000
idle_timeout = "30m"
[admin]
listen = "127.0.0.1:0"
[bastion]
enabled = false
[identity]
users_file = "$WORK/users.toml"
[policy]
model = "$WORK/model.conf"
policy = "$WORK/policy.csv"
[audit]
dir = "$WORK/gh/audit"
[log]
level = "warn"
[[apps]]
name = "bench"
host = "$HOST"
upstream = "http://127.0.0.1:$UP_PORT"
CONF

BENCH_PASSWORD="idle-$(head -c 12 /dev/urandom | base64 | tr -d '/+=')"
TOTP_SECRET=$("$BIN" --config "$WORK/gh.toml" user add bench --groups bench --password-stdin <<<"$BENCH_PASSWORD" \
  | sed -n 's/.*otpauth:.*secret=\([A-Z2-7]*\).*/\1/p' | head -1)
[ -n "$TOTP_SECRET" ] || { echo "could not create the bench user" >&2; exit 1; }

"$BIN" serve --config "$WORK/gh.toml" >"$WORK/gh.out" 2>"$WORK/gh.err" &
GH_PID=$!
PIDS+=("$GH_PID")
for _ in $(seq 1 400); do grep -q "gatehouse ready" "$WORK/gh.out" 2>/dev/null && break; sleep 0.05; done
grep -q "gatehouse ready" "$WORK/gh.out" || { echo "gatehouse did not start:" >&2; cat "$WORK/gh.err" >&2; exit 1; }
ADMIN=$(sed -n 's/.*admin=http:\/\/\([^ ]*\).*/\1/p' "$WORK/gh.out" | head -1)
metric() { curl -s "http://$ADMIN/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

totp_now() {
  python3 - "$1" <<'PY'
import base64, hashlib, hmac, struct, sys, time
s = sys.argv[1].upper(); s += "=" * (-len(s) % 8)
mac = hmac.new(base64.b32decode(s), struct.pack(">Q", int(time.time()) // 30), hashlib.sha1).digest()
o = mac[-1] & 15
print("%06d" % ((struct.unpack(">I", mac[o:o + 4])[0] & 0x7fffffff) % 1000000))
PY
}
login() {
  local jar="$WORK/jar" page csrf code
  page=$(curl -sk -c "$jar" --resolve "$HOST:$GH_PORT:127.0.0.1" "https://$HOST:$GH_PORT/.gatehouse/login")
  csrf=$(sed -n 's/.*name="csrf" value="\([^"]*\)".*/\1/p' <<<"$page" | head -1)
  code=$(totp_now "$TOTP_SECRET")
  curl -sk -b "$jar" -c "$jar" --resolve "$HOST:$GH_PORT:127.0.0.1" -o /dev/null \
    --data-urlencode "csrf=$csrf" --data-urlencode "user=bench" --data-urlencode "password=$BENCH_PASSWORD" \
    --data-urlencode "code=$code" --data-urlencode "next=/" "https://$HOST:$GH_PORT/.gatehouse/login"
  awk '$6 == "__Host-gatehouse" {print $7}' "$jar"
}
COOKIE=$(login)
[ -n "$COOKIE" ] || { echo "login failed" >&2; cat "$WORK/gh.err" >&2; exit 1; }

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$GH_PID/status"; }

# measure LABEL COUNT [COOKIE]
measure() {
  local label=$1 count=$2 cookie=${3:-}
  # Warm-up: allocator arenas, TLS and session caches, worker runtimes.
  python3 benches/idle.py "$GH_PORT" "$HOST" 300 "$cookie" <<<"" >/dev/null
  sleep 1
  local before during after fifo="$WORK/stdin.$label" out="$WORK/out.$label"
  before=$(rss_kib)
  mkfifo "$fifo"
  python3 benches/idle.py "$GH_PORT" "$HOST" "$count" "$cookie" <"$fifo" >"$out" &
  local client=$!
  exec 7>"$fifo"
  for _ in $(seq 1 1200); do grep -q '^ready' "$out" 2>/dev/null && break; sleep 0.1; done
  grep -q '^ready' "$out" || { echo "the client did not open $count connections" >&2; cat "$out" >&2; exit 1; }
  local parked=0
  for _ in $(seq 1 300); do
    parked=$(metric gatehouse_parked_connections); parked=${parked:-0}
    [ "$parked" -ge "$count" ] && break
    sleep 0.1
  done
  during=$(rss_kib)
  echo >&7; exec 7>&-
  wait "$client"
  sleep 2
  after=$(rss_kib)
  awk -v l="$label" -v n="$count" -v b="$before" -v d="$during" -v a="$after" -v p="$parked" -v s="$(sed 's/^ready [0-9]* //' "$out")" \
    'BEGIN { printf "%-5s %6d idle connections (%s, %d parked): RSS %.1f MiB before, %.1f MiB idle, %.1f MiB after close: %.1f KiB per connection\n", l, n, s, p, b/1024, d/1024, a/1024, (d-b)/n }'
}

echo "gatehouse $(git describe --always --dirty 2>/dev/null || echo '?'), release build, $(nproc) cores"
case "$MODE" in
  anon) measure anon "$N" ;;
  auth) measure auth "$((N < 9000 ? N : 9000))" "$COOKIE" ;;
  both) measure anon "$N"; measure auth "$((N < 9000 ? N : 9000))" "$COOKIE" ;;
  *) echo "usage: benches/idle.sh [N] [anon|auth|both]" >&2; exit 2 ;;
esac
