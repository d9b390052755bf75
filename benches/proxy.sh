#!/usr/bin/env bash
# Benchmark: the Gatehouse gateway beside nginx, both as TLS reverse proxies to the same upstream,
# in one run. nginx proxies without authentication; every Gatehouse request is authenticated
# (session cookie from a real password + TOTP login), authorized against a 1,000-rule casbin
# policy, audited and given a signed identity assertion, with the memory store and with Redis.
# Prints requests/s, p50/p99 latency and CPU time per request for each, and the ratios.
#
# Usage: benches/proxy.sh [DURATION_SECONDS] [CONNECTIONS] [ROUNDS]
# The three runs are interleaved ROUNDS times (default 3) and the medians compared: on a
# small shared machine one run of either proxy can be off by 15%. nginx and the memory-store
# gateway run back to back in alternating order, and the median of their per-round ratios is
# printed too.
# GATEHOUSE_BENCH_LONG=SECONDS: afterwards, a long run of each gateway (memory, then Redis) of
# that length, printing the requests served and the gateway's RSS before, every 10 s and after
# (GATEHOUSE_BENCH_LONG_ONLY=gh_memory|gh_redis: that one only).
# Needs: nginx, wrk, openssl, redis-server, curl, python3 (./test.sh installs the Debian ones).
# Builds gatehouse in release. Everything listens on 127.0.0.1 only and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
CONNS=${2:-64}
ROUNDS=${3:-3}
for tool in nginx wrk openssl redis-server curl python3; do
  command -v "$tool" >/dev/null || { echo "benches/proxy.sh: $tool is missing (run ./test.sh or apt-get install $tool)" >&2; exit 1; }
done
NGINX=$(command -v nginx)

# GATEHOUSE_BIN=PATH: use that binary instead of building one.
if [ -n "${GATEHOUSE_BIN:-}" ]; then
  BIN=$GATEHOUSE_BIN
else
  cargo build --release --quiet
  BIN=${CARGO_TARGET_DIR:-$PWD/target}/release/gatehouse
fi
WORK=$(mktemp -d /tmp/gatehouse-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/upstream.pid" ] && kill "$(cat "$WORK/upstream.pid")" 2>/dev/null || true
  [ -f "$WORK/proxy.pid" ] && kill "$(cat "$WORK/proxy.pid")" 2>/dev/null || true
  [ -f "$WORK/redis.pid" ] && kill "$(cat "$WORK/redis.pid")" 2>/dev/null || true
  sleep 0.2
  # GATEHOUSE_BENCH_KEEP=1: keep the configs and logs.
  if [ -n "${GATEHOUSE_BENCH_KEEP:-}" ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP_PORT=$(free_port); NG_PORT=$(free_port); GH_PORT=$(free_port)
HOST=bench.gatehouse.localhost

# One P-256 certificate for both proxies, so the TLS work is the same.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=$HOST" \
  -addext "subjectAltName=DNS:$HOST,IP:127.0.0.1" -keyout "$WORK/key.pem" -out "$WORK/cert.pem" 2>/dev/null

mkdir -p "$WORK/ng-up" "$WORK/ng-proxy"
# The shared upstream: nginx answering a small fixed body.
cat > "$WORK/upstream.conf" <<CONF
worker_processes 1;
pid $WORK/upstream.pid;
error_log $WORK/upstream-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/ng-up;
  server {
    listen 127.0.0.1:$UP_PORT;
    keepalive_requests 1000000;
    location / { default_type text/plain; return 200 "hello from upstream\n"; }
  }
}
CONF
# nginx as the peer TLS reverse proxy (Mozilla intermediate, keep-alive to the upstream).
cat > "$WORK/proxy.conf" <<CONF
worker_processes auto;
pid $WORK/proxy.pid;
error_log $WORK/proxy-error.log;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/ng-proxy;
  proxy_temp_path $WORK/ng-proxy;
  upstream app { server 127.0.0.1:$UP_PORT; keepalive 128; }
  server {
    listen 127.0.0.1:$NG_PORT ssl http2;
    server_name $HOST;
    ssl_certificate $WORK/cert.pem;
    ssl_certificate_key $WORK/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_ciphers ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305;
    keepalive_requests 1000000;
    add_header Strict-Transport-Security "max-age=63072000" always;
    location / {
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$remote_addr;
      proxy_set_header X-Forwarded-Proto https;
    }
  }
}
CONF
"$NGINX" -c "$WORK/upstream.conf" -e "$WORK/upstream-error.log"
"$NGINX" -c "$WORK/proxy.conf" -e "$WORK/proxy-error.log"

# A 1,000-rule policy: the bench user's group may read the bench app; 999 rules for others.
cp policies/model.conf "$WORK/model.conf"
{
  for i in $(seq 1 499); do
    echo "p, group:team$i, app:tool$i/*, GET|HEAD, allow"
    echo "p, group:team$i, app:tool$i/admin/*, *, deny"
  done
  echo "p, group:bench, app:bench/admin/*, *, deny"
  echo "p, group:bench, app:bench/*, GET|HEAD, allow"
} > "$WORK/policy.csv"
RULES=$(grep -c '^p,' "$WORK/policy.csv")
export GATEHOUSE_SECRET_KEY
GATEHOUSE_SECRET_KEY=$(head -c 32 /dev/urandom | base64)

REDIS_PORT=$(free_port)
redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
  --pidfile "$WORK/redis.pid" --logfile "$WORK/redis.log" --dir "$WORK"
for _ in $(seq 1 100); do redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG && break; sleep 0.05; done

# gatehouse_config NAME STORE_URL PORT: writes $WORK/NAME.toml
gatehouse_config() {
  mkdir -p "$WORK/$1"
  cat > "$WORK/$1.toml" <<CONF
data_dir = "$WORK/$1"
[gateway]
listen = "127.0.0.1:$3"
public_url = "https://$HOST:$3"
tls_cert = "$WORK/cert.pem"
tls_key = "$WORK/key.pem"
[admin]
listen = "127.0.0.1:0"
[bastion]
enabled = false
[store]
url = "$2"
[identity]
users_file = "$WORK/users.toml"
[policy]
model = "$WORK/model.conf"
policy = "$WORK/policy.csv"
[audit]
dir = "$WORK/$1/audit"
[log]
level = "warn"
[[apps]]
name = "bench"
host = "$HOST"
upstream = "http://127.0.0.1:$UP_PORT"
CONF
}

start_gatehouse() { # NAME: starts it, sets GH_PID
  "$BIN" serve --config "$WORK/$1.toml" >"$WORK/$1.out" 2>"$WORK/$1.err" &
  GH_PID=$!
  PIDS+=("$GH_PID")
  for _ in $(seq 1 400); do grep -q "gatehouse ready" "$WORK/$1.out" 2>/dev/null && break; sleep 0.05; done
  grep -q "gatehouse ready" "$WORK/$1.out" || { echo "gatehouse ($1) did not start:" >&2; cat "$WORK/$1.err" >&2; exit 1; }
}

totp_now() { # BASE32 secret -> current RFC 6238 code (SHA-1, 6 digits, 30 s)
  python3 - "$1" <<'PY'
import base64, hashlib, hmac, struct, sys, time
s = sys.argv[1].upper(); s += "=" * (-len(s) % 8)
mac = hmac.new(base64.b32decode(s), struct.pack(">Q", int(time.time()) // 30), hashlib.sha1).digest()
o = mac[-1] & 15
print("%06d" % ((struct.unpack(">I", mac[o:o + 4])[0] & 0x7fffffff) % 1000000))
PY
}

login() { # PORT -> prints the session cookie value (a real password + TOTP login)
  local jar="$WORK/jar.$1" page csrf code
  page=$(curl -sk -c "$jar" --resolve "$HOST:$1:127.0.0.1" "https://$HOST:$1/.gatehouse/login")
  csrf=$(sed -n 's/.*name="csrf" value="\([^"]*\)".*/\1/p' <<<"$page" | head -1)
  code=$(totp_now "$TOTP_SECRET")
  curl -sk -b "$jar" -c "$jar" --resolve "$HOST:$1:127.0.0.1" -o /dev/null \
    --data-urlencode "csrf=$csrf" --data-urlencode "user=bench" --data-urlencode "password=$BENCH_PASSWORD" \
    --data-urlencode "code=$code" --data-urlencode "next=/" "https://$HOST:$1/.gatehouse/login"
  awk '$6 == "__Host-gatehouse" {print $7}' "$jar"
}

GH_PORT_REDIS=$(free_port)
gatehouse_config mem "memory://" "$GH_PORT"
gatehouse_config redis "redis://127.0.0.1:$REDIS_PORT/0" "$GH_PORT_REDIS"
BENCH_PASSWORD="load-$(head -c 12 /dev/urandom | base64 | tr -d '/+=')"
TOTP_SECRET=$("$BIN" --config "$WORK/mem.toml" user add bench --groups bench --password-stdin <<<"$BENCH_PASSWORD" \
  | sed -n 's/.*otpauth:.*secret=\([A-Z2-7]*\).*/\1/p' | head -1)
[ -n "$TOTP_SECRET" ] || { echo "could not create the bench user" >&2; exit 1; }

start_gatehouse mem; MEM_PID=$GH_PID
MEM_COOKIE=$(login "$GH_PORT")
# The TOTP replay cache refuses a code twice: the second login waits for the next window.
sleep $((31 - $(date +%s) % 30))
start_gatehouse redis; REDIS_PID=$GH_PID
REDIS_COOKIE=$(login "$GH_PORT_REDIS")
[ -n "$MEM_COOKIE" ] && [ -n "$REDIS_COOKIE" ] || { echo "login failed" >&2; cat "$WORK"/mem.err "$WORK"/redis.err >&2; exit 1; }
for _ in $(seq 1 100); do [ -s "$WORK/proxy.pid" ] && break; sleep 0.05; done

# CPU ticks (user+system) of a process and its children threads/workers.
cpu_ticks() {
  local total=0 pid
  for pid in "$@"; do
    [ -r "/proc/$pid/stat" ] || continue
    total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
  done
  echo "$total"
}
nginx_pids() { local m; m=$(cat "$WORK/proxy.pid"); echo "$m $(pgrep -P "$m" | tr '\n' ' ')"; }

to_ms() { # wrk prints 1.23ms / 456.00us / 1.02s
  awk -v v="$1" 'BEGIN { if (v ~ /us$/) { sub(/us$/,"",v); print v/1000 } else if (v ~ /ms$/) { sub(/ms$/,"",v); print v+0 } else if (v ~ /s$/) { sub(/s$/,"",v); print v*1000 } else print v }'
}

run() { # name port cookie pids... (STORE_PID, when set, is also counted apart: redis-server)
  local name=$1 port=$2 cookie=$3; shift 3
  local auth=(-H "Host: $HOST")
  [ -n "$cookie" ] && auth+=(-H "Cookie: __Host-gatehouse=$cookie")
  wrk -t1 -c"$CONNS" -d2s "${auth[@]}" "https://127.0.0.1:$port/" >/dev/null 2>&1 || true  # warm-up
  local before after out
  before=$(cpu_ticks "$@")
  local store_before=0 store_after=0
  [ -n "${STORE_PID:-}" ] && store_before=$(cpu_ticks "$STORE_PID")
  # GATEHOUSE_BENCH_PERF=FILE: also profile one Gatehouse run with perf (GATEHOUSE_BENCH_PERF_RUN:
  # gh_memory, the default, or gh_redis).
  if [ -n "${GATEHOUSE_BENCH_PERF:-}" ] && [ "$name" = "${GATEHOUSE_BENCH_PERF_RUN:-gh_memory}" ]; then
    perf record -q -e cpu-clock -F 999 -g -p "$1" -o "$GATEHOUSE_BENCH_PERF" -- sleep "$DURATION" >/dev/null 2>&1 &
  fi
  out=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency "${auth[@]}" "https://127.0.0.1:$port/")
  after=$(cpu_ticks "$@")
  [ -n "${STORE_PID:-}" ] && store_after=$(cpu_ticks "$STORE_PID")
  local rps p50 p99 reqs non2xx
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  p50=$(to_ms "$(awk '$1=="50%" {print $2}' <<<"$out")")
  p99=$(to_ms "$(awk '$1=="99%" {print $2}' <<<"$out")")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out"); non2xx=${non2xx:-0}
  local hz; hz=$(getconf CLK_TCK)
  local cpu_us; cpu_us=$(awk -v t=$((after - before)) -v hz="$hz" -v n="$reqs" 'BEGIN { printf "%.1f", (t / hz) * 1e6 / n }')
  local store_us="-"
  [ -n "${STORE_PID:-}" ] && store_us=$(awk -v t=$((store_after - store_before)) -v hz="$hz" -v n="$reqs" 'BEGIN { printf "%.1f", (t / hz) * 1e6 / n }')
  printf '%-10s %12.0f %10.3f %10.3f %14s %8s %12s\n' "$name" "$rps" "$p50" "$p99" "$cpu_us" "$non2xx" "$store_us"
  eval "${name}_RPS_ALL+=\" $rps\"; ${name}_CPU_ALL+=\" $cpu_us\""
}

median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}'; }

echo "TLS reverse proxy to one upstream, wrk -t2 -c$CONNS -d${DURATION}s, HTTP/1.1 keep-alive, $(nproc) cores"
echo "nginx: no authentication. gatehouse: session + $RULES-rule policy + audit + assertion on every request."
printf '%-10s %12s %10s %10s %14s %8s %12s\n' proxy "requests/s" "p50 ms" "p99 ms" "CPU us/req" "non-2xx" "of it redis"
nginx_RPS_ALL= nginx_CPU_ALL= gh_memory_RPS_ALL= gh_memory_CPU_ALL= gh_redis_RPS_ALL= gh_redis_CPU_ALL=
for round in $(seq 1 "$ROUNDS"); do
  # nginx and the memory-store gateway run back to back, in alternating order, so each
  # round is a fair pair even while the machine's speed drifts.
  if [ $((round % 2)) = 1 ]; then
    run nginx "$NG_PORT" "" $(nginx_pids)
    run gh_memory "$GH_PORT" "$MEM_COOKIE" "$MEM_PID"
  else
    run gh_memory "$GH_PORT" "$MEM_COOKIE" "$MEM_PID"
    run nginx "$NG_PORT" "" $(nginx_pids)
  fi
  STORE_PID=$(cat "$WORK/redis.pid") run gh_redis "$GH_PORT_REDIS" "$REDIS_COOKIE" "$REDIS_PID" "$(cat "$WORK/redis.pid")"
done
for name in nginx gh_memory gh_redis; do
  eval "${name}_RPS=\$(median <<<\"\$${name}_RPS_ALL\"); ${name}_CPU=\$(median <<<\"\$${name}_CPU_ALL\")"
done
echo "medians of $ROUNDS rounds: nginx $nginx_RPS req/s ($nginx_CPU us CPU/req), gatehouse memory $gh_memory_RPS ($gh_memory_CPU), redis $gh_redis_RPS ($gh_redis_CPU)"
awk -v g="$gh_memory_RPS" -v n="$nginx_RPS" -v gc="$gh_memory_CPU" -v nc="$nginx_CPU" \
  'BEGIN { printf "ratio gatehouse(memory)/nginx: %.2fx requests/s, %.2fx CPU per request\n", g/n, gc/nc }'
awk -v g="$gh_redis_RPS" -v n="$nginx_RPS" -v gc="$gh_redis_CPU" -v nc="$nginx_CPU" \
  'BEGIN { printf "ratio gatehouse(redis)/nginx:  %.2fx requests/s, %.2fx CPU per request (incl. redis-server)\n", g/n, gc/nc }'
# The same comparison round by round (each round's pair ran back to back): the median of
# those ratios is the least disturbed by drift between rounds.
# shellcheck disable=SC2086  # the lists are space-separated numbers
paired=$(paste -d' ' <(tr ' ' '\n' <<<"$gh_memory_RPS_ALL" | grep -v '^$') <(tr ' ' '\n' <<<"$nginx_RPS_ALL" | grep -v '^$') |
  awk '{ printf "%.3f ", $1 / $2 }')
echo "per-round ratios gatehouse(memory)/nginx: $paired-> median $(median <<<"$paired" | awk '{ printf "%.2fx", $1 }')"

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
long_run() { # name port cookie pid
  local before after out reqs non2xx
  before=$(rss_kib "$4")
  wrk -t2 -c"$CONNS" -d"${GATEHOUSE_BENCH_LONG}s" -H "Host: $HOST" -H "Cookie: __Host-gatehouse=$3" \
    "https://127.0.0.1:$2/" >"$WORK/long.out" &
  local wrk_pid=$! samples=""
  # RSS every 10 s: a leak climbs steadily, allocator growth levels off.
  while kill -0 "$wrk_pid" 2>/dev/null; do
    sleep 10
    kill -0 "$wrk_pid" 2>/dev/null && samples+=" $(rss_kib "$4")"
  done
  wait "$wrk_pid"
  out=$(cat "$WORK/long.out")
  after=$(rss_kib "$4")
  echo "long run $1 RSS KiB every 10 s:$samples"
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  non2xx=$(awk '/Non-2xx/ {print $NF}' <<<"$out")
  printf 'long run %-10s %s requests in %ss (non-2xx: %s): RSS %s KiB before, %s KiB after (%+d KiB)\n' \
    "$1" "$reqs" "$GATEHOUSE_BENCH_LONG" "${non2xx:-0}" "$before" "$after" $((after - before))
}
if [ -n "${GATEHOUSE_BENCH_LONG:-}" ]; then
  if [ "${GATEHOUSE_BENCH_LONG_ONLY:-gh_memory}" = gh_memory ]; then
    long_run gh_memory "$GH_PORT" "$MEM_COOKIE" "$MEM_PID"
  fi
  if [ "${GATEHOUSE_BENCH_LONG_ONLY:-gh_redis}" = gh_redis ]; then
    long_run gh_redis "$GH_PORT_REDIS" "$REDIS_COOKIE" "$REDIS_PID"
  fi
fi
