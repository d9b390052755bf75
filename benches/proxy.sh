#!/usr/bin/env bash
# Benchmark: the Gatehouse gateway beside nginx, both as TLS reverse proxies to the same upstream,
# in one run. Prints requests/s, p50/p99 latency and CPU time per request for both, and the ratio.
#
# Usage: benches/proxy.sh [DURATION_SECONDS] [CONNECTIONS]
# Needs: nginx, wrk, openssl (Debian packages; ./test.sh installs them). Builds gatehouse in release.
# Everything listens on 127.0.0.1 only and stops by itself.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
CONNS=${2:-64}
for tool in nginx wrk openssl; do
  command -v "$tool" >/dev/null || { echo "benches/proxy.sh: $tool is missing (run ./test.sh or apt-get install $tool)" >&2; exit 1; }
done
NGINX=$(command -v nginx)

cargo build --release --quiet
BIN=$PWD/target/release/gatehouse
WORK=$(mktemp -d /tmp/gatehouse-bench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/upstream.pid" ] && kill "$(cat "$WORK/upstream.pid")" 2>/dev/null || true
  [ -f "$WORK/proxy.pid" ] && kill "$(cat "$WORK/proxy.pid")" 2>/dev/null || true
  sleep 0.2
  rm -rf "$WORK"
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
    listen 127.0.0.1:$NG_PORT ssl;
    http2 on;
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

cat > "$WORK/gatehouse.toml" <<CONF
data_dir = "$WORK/data"
[gateway]
listen = "127.0.0.1:$GH_PORT"
public_url = "https://$HOST:$GH_PORT"
tls_cert = "$WORK/cert.pem"
tls_key = "$WORK/key.pem"
[admin]
listen = "127.0.0.1:0"
[bastion]
enabled = false
[log]
level = "warn"
[[apps]]
name = "bench"
host = "$HOST"
upstream = "http://127.0.0.1:$UP_PORT"
CONF
${GATEHOUSE_BENCH_ENV:-} "$BIN" serve --config "$WORK/gatehouse.toml" >"$WORK/gh.out" 2>"$WORK/gh.err" &
GH_PID=$!
PIDS+=("$GH_PID")
for _ in $(seq 1 200); do grep -q "gatehouse ready" "$WORK/gh.out" 2>/dev/null && break; sleep 0.05; done
grep -q "gatehouse ready" "$WORK/gh.out" || { echo "gatehouse did not start:" >&2; cat "$WORK/gh.err" >&2; exit 1; }
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

run() { # name port pids...
  local name=$1 port=$2; shift 2
  wrk -t1 -c"$CONNS" -d2s -H "Host: $HOST" "https://127.0.0.1:$port/" >/dev/null 2>&1 || true  # warm-up
  local before after out
  before=$(cpu_ticks "$@")
  out=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency -H "Host: $HOST" "https://127.0.0.1:$port/")
  after=$(cpu_ticks "$@")
  local rps p50 p99 reqs non2xx
  rps=$(awk '/^Requests\/sec:/ {print $2}' <<<"$out")
  reqs=$(awk '/requests in/ {print $1}' <<<"$out")
  p50=$(to_ms "$(awk '$1=="50%" {print $2}' <<<"$out")")
  p99=$(to_ms "$(awk '$1=="99%" {print $2}' <<<"$out")")
  non2xx=$(awk '/Non-2xx/ {print $4}' <<<"$out"); non2xx=${non2xx:-0}
  local hz; hz=$(getconf CLK_TCK)
  local cpu_us; cpu_us=$(awk -v t=$((after - before)) -v hz="$hz" -v n="$reqs" 'BEGIN { printf "%.1f", (t / hz) * 1e6 / n }')
  printf '%-10s %12.0f %10.3f %10.3f %14s %8s\n' "$name" "$rps" "$p50" "$p99" "$cpu_us" "$non2xx"
  eval "${name}_RPS=$rps; ${name}_CPU=$cpu_us"
}

echo "TLS reverse proxy to one upstream, wrk -t2 -c$CONNS -d${DURATION}s, HTTP/1.1 keep-alive, $(nproc) cores"
printf '%-10s %12s %10s %10s %14s %8s\n' proxy "requests/s" "p50 ms" "p99 ms" "CPU us/req" "non-2xx"
run nginx "$NG_PORT" $(nginx_pids)
run gatehouse "$GH_PORT" "$GH_PID"
awk -v g="$gatehouse_RPS" -v n="$nginx_RPS" -v gc="$gatehouse_CPU" -v nc="$nginx_CPU" \
  'BEGIN { printf "ratio gatehouse/nginx: %.2fx requests/s, %.2fx CPU per request\n", g/n, gc/nc }'
