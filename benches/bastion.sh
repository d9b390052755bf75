#!/usr/bin/env bash
# Bastion throughput and set-up time of the real `gatehouse serve`, beside plain OpenSSH as a
# jump host.
#
# Builds the release `gatehouse` binary (or uses $GATEHOUSE_BIN), starts a target sshd, a
# second sshd used as an OpenSSH ProxyJump host, and `gatehouse serve` with the bastion on the
# shared services (users.toml made with `gatehouse user add`, casbin policy, audit log,
# recording on; the target has `require_totp = false` so the client runs in batch mode).
# Pushes SIZE (default 1G) of zeros through each path into `cat > /dev/null`, and prints MB/s,
# the ratio, CPU per MB and the median connection set-up time. Then holds IDLE (default 100;
# GATEHOUSE_BENCH_IDLE_SESSIONS) idle interactive sessions (`ssh -tt`, a shell at its prompt,
# clients spread over 127.0.0.2-201) open through each path, lets them settle for
# GATEHOUSE_BENCH_IDLE_SETTLE seconds (default 12), and prints the memory each costs:
# the gatehouse process's RSS, and the PSS of OpenSSH's jump sshd and its per-connection
# processes.
#
# Usage: benches/bastion.sh [SIZE] [SETUP_RUNS]     (run as root: sshd needs it)
#        GATEHOUSE_BIN=target/debug/gatehouse benches/bastion.sh 256M 3   (smoke run)
set -euo pipefail

SIZE="${1:-1G}"
RUNS="${2:-9}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

for tool in /usr/sbin/sshd ssh ssh-keygen openssl head awk base64; do
  command -v "$tool" >/dev/null || { echo "missing $tool (install openssh-server openssh-client openssl)" >&2; exit 1; }
done

if [ -n "${GATEHOUSE_BIN:-}" ]; then
  BIN="$(cd "$(dirname "$GATEHOUSE_BIN")" && pwd)/$(basename "$GATEHOUSE_BIN")"
else
  echo "building release gatehouse..." >&2
  cargo build --release -q -p gatehouse --bin gatehouse
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/gatehouse"
fi

TMP="$(mktemp -d /tmp/gh-bastion-bench.XXXXXX)"
PIDS=()
IDLE_PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}" "${IDLE_PIDS[@]:-}"; do [ -n "$p" ] && kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_banner() { # port what
  local end=$((SECONDS + 15))
  until (head -c 7 < /dev/tcp/127.0.0.1/"$1") 2>/dev/null | grep -q SSH-2.0; do
    [ $SECONDS -lt $end ] || { echo "$2 on port $1 did not start" >&2; exit 1; }
    sleep 0.05
  done
}

mkdir -p /run/sshd
for k in user cred target_host jump_host; do ssh-keygen -q -t ed25519 -N '' -C bench -f "$TMP/$k"; done
cat "$TMP/cred.pub" "$TMP/user.pub" > "$TMP/authorized_keys"

start_sshd() { # name port hostkey
  cat > "$TMP/$1_config" <<CFG
Port $2
ListenAddress 127.0.0.1
HostKey $3
AuthorizedKeysFile $TMP/authorized_keys
UsePAM no
StrictModes no
PidFile none
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowTcpForwarding yes
LogLevel ERROR
MaxStartups 100
CFG
  /usr/sbin/sshd -D -e -f "$TMP/$1_config" 2>"$TMP/$1.log" &
  PIDS+=($!)
  wait_banner "$2" "$1"
}

TARGET_PORT=$(free_port); JUMP_PORT=$(free_port)
start_sshd target "$TARGET_PORT" "$TMP/target_host"
start_sshd jump "$JUMP_PORT" "$TMP/jump_host"

# The gateway starts too (one process): a throw-away self-signed certificate.
mkdir -p "$TMP/certs" "$TMP/policies"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
  -subj "/CN=gatehouse.localhost" -addext "subjectAltName=DNS:gatehouse.localhost" \
  -keyout "$TMP/certs/gateway.key" -out "$TMP/certs/gateway.crt" 2>/dev/null
cp "$ROOT/policies/model.conf" "$TMP/policies/model.conf"
echo "p, group:bench, ssh:bench/root, ssh|sftp, allow" > "$TMP/policies/policy.csv"

PINNED="$(awk '{print $1" "$2}' "$TMP/target_host.pub")"
cat > "$TMP/gatehouse.toml" <<CFG
data_dir = "data"
[gateway]
listen = "127.0.0.1:0"
public_url = "https://gatehouse.localhost"
tls_cert = "certs/gateway.crt"
tls_key = "certs/gateway.key"
[admin]
listen = "127.0.0.1:0"
[bastion]
listen = "127.0.0.1:0"
host_key = "certs/bastion_ed25519"
[store]
url = "memory://"
[identity]
users_file = "users.toml"
[policy]
model = "policies/model.conf"
policy = "policies/policy.csv"
[audit]
dir = "data/audit"
[recording]
dir = "data/recordings"
[log]
level = "warn"
[[targets]]
name = "bench"
address = "127.0.0.1:$TARGET_PORT"
host_key = "$PINNED"
logins = ["root"]
credential = "$TMP/cred"
require_totp = false
CFG

GATEHOUSE_SECRET_KEY="$(head -c 32 /dev/urandom | base64)"
export GATEHOUSE_SECRET_KEY
PASSWORD="Pw-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')-Zq9"
(cd "$TMP" && echo "$PASSWORD" | "$BIN" --config gatehouse.toml user add bench --groups bench \
  --ssh-key "$TMP/user.pub" --password-stdin > "$TMP/user_add.out")

(cd "$TMP" && exec "$BIN" serve --config gatehouse.toml) > "$TMP/serve.out" 2>"$TMP/serve.log" &
BASTION_PID=$!
PIDS+=($BASTION_PID)
end=$((SECONDS + 60))
until grep -q '^gatehouse ready:' "$TMP/serve.out"; do
  kill -0 "$BASTION_PID" 2>/dev/null || { echo "gatehouse exited: $(cat "$TMP/serve.log")" >&2; exit 1; }
  [ $SECONDS -lt $end ] || { echo "gatehouse did not start: $(cat "$TMP/serve.log")" >&2; exit 1; }
  sleep 0.05
done
BASTION_PORT="$(grep '^gatehouse ready:' "$TMP/serve.out" | tr ' ' '\n' | awk -F: '/^bastion=/ {print $NF}')"
[ -n "$BASTION_PORT" ] || { echo "no bastion= on the ready line: $(cat "$TMP/serve.out")" >&2; exit 1; }

# One client config for both paths; -J reads the jump host's settings from it too.
cat > "$TMP/ssh_config" <<CFG
Host *
  UserKnownHostsFile $TMP/known_hosts
  StrictHostKeyChecking no
  IdentitiesOnly yes
  IdentityFile $TMP/user
  BatchMode yes
  LogLevel ERROR
Host jump
  HostName 127.0.0.1
  Port $JUMP_PORT
  User root
Host target
  HostName 127.0.0.1
  Port $TARGET_PORT
  User root
  ProxyJump jump
Host bastion
  HostName 127.0.0.1
  Port $BASTION_PORT
  User bench:root@bench
CFG
SSH=(ssh -F "$TMP/ssh_config")

busy_jiffies() { awk '/^cpu / {print $2+$3+$4+$7+$8}' /proc/stat; }
proc_jiffies() { awk '{print $14+$15}' "/proc/$1/stat"; }
HZ=$(getconf CLK_TCK)
BYTES=$(head -c "$SIZE" /dev/zero | wc -c)
MB=$(awk -v b="$BYTES" 'BEGIN {print b/1000000}')

transfer() { # host -> prints "seconds system_cpu_seconds bastion_cpu_seconds"
  local b0 p0 t0 t1 b1 p1
  b0=$(busy_jiffies); p0=$(proc_jiffies "$BASTION_PID"); t0=$(date +%s.%N)
  head -c "$SIZE" /dev/zero | "${SSH[@]}" "$1" 'cat > /dev/null'
  t1=$(date +%s.%N); b1=$(busy_jiffies); p1=$(proc_jiffies "$BASTION_PID")
  awk -v t0="$t0" -v t1="$t1" -v b="$((b1 - b0))" -v p="$((p1 - p0))" -v hz="$HZ" 'BEGIN {printf "%.3f %.3f %.3f\n", t1-t0, b/hz, p/hz}'
}

setup_median() { # host
  local times=() t0 t1
  for _ in $(seq "$RUNS"); do
    t0=$(date +%s%N); "${SSH[@]}" "$1" true; t1=$(date +%s%N)
    times+=($(( (t1 - t0) / 1000000 )))
  done
  printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'
}

"${SSH[@]}" bastion true && "${SSH[@]}" target true   # warm up, learn host keys
IDLE="${GATEHOUSE_BENCH_IDLE_SESSIONS:-100}"
SETTLE="${GATEHOUSE_BENCH_IDLE_SETTLE:-12}"
TARGET_SSHD=${PIDS[0]}
JUMP_SSHD=${PIDS[1]}
descendants() { # pid -> it and every process under it
  ps -e -o pid=,ppid= | awk -v root="$1" '{ kids[$2] = kids[$2] " " $1 }
    END { n = split(root, todo, " "); while (n > 0) { p = todo[n--]; print p; m = split(kids[p], k, " "); for (i = 1; i <= m; i++) todo[++n] = k[i] } }'
}
pss_kib() { # pid -> PSS of it and its descendants, KiB
  local total=0 p v
  for p in $(descendants "$1"); do
    v=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null || true)
    total=$((total + ${v:-0}))
  done
  echo "$total"
}
rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }
shells() { descendants "$TARGET_SSHD" | while read -r p; do cat "/proc/$p/comm" 2>/dev/null; done | grep -c -x -E 'bash|sh|dash' || true; }
hold_idle() { # host: opens IDLE sessions and waits until each has its shell on the target
  local base i end
  base=$(shells)
  for i in $(seq 0 $((IDLE - 1))); do
    sleep 100000 | "${SSH[@]}" -tt -o BindAddress="127.0.0.$((2 + i % 200))" "$1" >/dev/null 2>&1 &
    IDLE_PIDS+=($!)
    # A few at a time: the bastion's pre-authentication slots are bounded, as sshd's MaxStartups.
    if [ $((i % 20)) = 19 ]; then
      end=$((SECONDS + 60))
      until [ "$(shells)" -ge $((base + i + 1)) ]; do
        [ $SECONDS -lt $end ] || { echo "only $(( $(shells) - base )) of $((i + 1)) sessions opened through $1" >&2; exit 1; }
        sleep 0.2
      done
    fi
  done
  end=$((SECONDS + 60))
  until [ "$(shells)" -ge $((base + IDLE)) ]; do
    [ $SECONDS -lt $end ] || { echo "only $(( $(shells) - base )) of $IDLE sessions opened through $1" >&2; exit 1; }
    sleep 0.2
  done
  # Let the sessions settle into idleness: first prompt drawn and recorded, and the
  # recordings' virtual terminals at rest (they rest after 10 s of quiet).
  sleep "$SETTLE"
}
drop_idle() {
  local base=$1 end=$((SECONDS + 60))
  kill "${IDLE_PIDS[@]}" 2>/dev/null || true
  pkill -f '^sleep 100000$' 2>/dev/null || true
  IDLE_PIDS=()
  until [ "$(shells)" -le "$base" ]; do
    [ $SECONDS -lt $end ] || break
    sleep 0.2
  done
}
idle_memory() {
echo "holding $IDLE idle interactive sessions through each path..." >&2
SHELLS0=$(shells)
sleep 3  # the warm-up's buffers given back
G0=$(rss_kib "$BASTION_PID")
hold_idle bastion
G1=$(rss_kib "$BASTION_PID")
drop_idle "$SHELLS0"
J0=$(pss_kib "$JUMP_SSHD")
hold_idle target
J1=$(pss_kib "$JUMP_SSHD")
drop_idle "$SHELLS0"
awk -v n="$IDLE" -v g0="$G0" -v g1="$G1" -v j0="$J0" -v j1="$J1" 'BEGIN {
  printf "%d idle sessions: gatehouse RSS %d -> %d KiB, %.0f KiB per session (target <= 128)\n", n, g0, g1, (g1 - g0) / n
  printf "%d idle sessions: OpenSSH jump host PSS %d -> %d KiB, %.0f KiB per session\n", n, j0, j1, (j1 - j0) / n
}'
}
[ "$IDLE" -gt 0 ] && idle_memory


echo "pushing $SIZE through the gatehouse bastion (recording and audit on)..." >&2
read -r B_SECS B_CPU B_PROC < <(transfer bastion)
echo "pushing $SIZE through OpenSSH ProxyJump..." >&2
read -r J_SECS J_CPU _ < <(transfer target)
echo "measuring connection set-up ($RUNS runs each)..." >&2
B_SETUP=$(setup_median bastion)
J_SETUP=$(setup_median target)

awk -v mb="$MB" -v bs="$B_SECS" -v bc="$B_CPU" -v bp="$B_PROC" -v js="$J_SECS" -v jc="$J_CPU" -v bsu="$B_SETUP" -v jsu="$J_SETUP" 'BEGIN {
  br = mb / bs; jr = mb / js
  printf "%-28s %12s %12s\n", "", "bastion", "ssh -J"
  printf "%-28s %12.1f %12.1f\n", "throughput (MB/s)", br, jr
  printf "%-28s %12.2f %12.2f\n", "system CPU (ms per MB)", 1000 * bc / mb, 1000 * jc / mb
  printf "%-28s %12.2f %12s\n", "gatehouse process CPU (ms/MB)", 1000 * bp / mb, "-"
  printf "%-28s %12d %12d\n", "median set-up (ms)", bsu, jsu
  printf "ratio bastion / OpenSSH: %.2f (target >= 0.70)\n", br / jr
}'
echo "recordings written: $(ls "$TMP/data/recordings" | wc -l)" >&2

