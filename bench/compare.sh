#!/usr/bin/env bash
# Wall time of `nix copy --from ssh-ng://...` of one large path:
#   baseline  nix-daemon --stdio behind OpenSSH sshd, serving the cross path
#   cold      decross-store with an empty cache, serving the native path
#   warm      decross-store again, cache filled
# and the peak RSS of the decross-store server.
#
#   bench/compare.sh [SIZE_MIB] [RUNS] [DATA]   (defaults 256, 3, random)
#
# DATA=random is incompressible; DATA=code is the host's binaries, which
# compress like real packages and so cost more on the cold path.
#
# Debian 12, root. Installs openssh-server (for the baseline) if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH
size=${1:-256}
runs=${2:-3}
data=${3:-random}
scripts/install-deps
command -v sshd >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server >/dev/null; }
command -v sshd >/dev/null || export PATH=$PATH:/usr/sbin

work=$(mktemp -d /tmp/decross-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
export NIX_CONFIG=$'experimental-features = nix-command\nsandbox = false\nsubstituters ='
export NIX_REMOTE=daemon
# The daemon itself must not have NIX_REMOTE=daemon: it would connect to itself.
if ! nix store ping --store daemon >/dev/null 2>&1; then
	env -u NIX_REMOTE setsid nix-daemon >/tmp/nix-daemon.log 2>&1 </dev/null &
	for _ in $(seq 1 100); do nix store ping --store daemon >/dev/null 2>&1 && break; sleep 0.1; done
	nix store ping --store daemon >/dev/null || { cat /tmp/nix-daemon.log >&2; exit 1; }
fi

echo "bench: building a $size MiB path" >&2
attr() { nix-build --no-out-link bench/big.nix --arg cross true --arg sizeMiB "$size" --argstr data "$data" -A "$1"; }
native_attr() { nix eval --raw --impure --expr "(import $PWD/bench/big.nix { cross = false; sizeMiB = $size; data = \"$data\"; }).$1.outPath"; }
cross=$(attr big)
crossdep=$(attr dep)
native=$(native_attr big)
nativedep=$(native_attr dep)
cat >"$work/mapping.json" <<JSON
{"paths": [{"native": "$native", "cross": "$cross"}, {"native": "$nativedep", "cross": "$crossdep"}]}
JSON
nar_size=$(nix path-info -s "$cross" | awk '{print $2}')
echo "bench: cross $cross ($nar_size bytes NAR)" >&2
echo "bench: native $native" >&2

go build -o "$work/decross-store" ./cmd/decross-store
"$work/decross-store" keygen --name bench-1 --secret-key-file "$work/secret.key" --public-key-file "$work/public.key" >/dev/null
ssh-keygen -q -t ed25519 -N '' -f "$work/client_key"
cp "$work/client_key.pub" "$work/authorized_keys"
free_port() { # a port nothing listens on (bash's /dev/tcp, no python needed)
	local p
	while :; do
		p=$(shuf -i 20000-60000 -n 1)
		(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
	done
}

# Baseline: OpenSSH sshd running the real nix-daemon --stdio.
sshd_port=$(free_port)
ssh-keygen -q -t ed25519 -N '' -f "$work/sshd_host_key"
mkdir -p /run/sshd
cat >"$work/sshd_config" <<CFG
Port $sshd_port
ListenAddress 127.0.0.1
HostKey $work/sshd_host_key
AuthorizedKeysFile $work/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
StrictModes no
UsePAM no
PidFile $work/sshd.pid
CFG
$(command -v sshd) -D -f "$work/sshd_config" -E "$work/sshd.log" &
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$sshd_port") 2>/dev/null && break; sleep 0.05; done

dport=$(free_port)
start_server() {
	"$work/decross-store" serve --listen "127.0.0.1:$dport" --host-key "$work/host_key" \
		--authorized-keys "$work/authorized_keys" --mapping "$work/mapping.json" \
		--signing-key "$work/secret.key" --cache-dir "$work/cache" 2>>"$work/server.log" &
	server=$!
	for _ in $(seq 1 100); do grep -q 'msg=serving' "$work/server.log" 2>/dev/null && break; sleep 0.05; done
	grep -q 'msg=serving' "$work/server.log" || { cat "$work/server.log" >&2; exit 1; }
	: >"$work/server.log.seen"
}
stop_server() { kill "$server"; wait "$server" 2>/dev/null || true; }
sshopts="-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o Compression=no"
trusted="trusted-public-keys = $(cat "$work/public.key")"

copy() { # port path
	rm -rf "$work/dst"
	local t0=$EPOCHREALTIME
	NIX_SSHOPTS="-p $1 $sshopts" NIX_CONFIG="$NIX_CONFIG"$'\n'"$trusted" \
		nix copy --no-check-sigs --from "ssh-ng://root@127.0.0.1?ssh-key=$work/client_key" --to "$work/dst" "$2"
	awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f\n", b - a }'
}
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

base=(); cold=(); warm=()
for i in $(seq 1 "$runs"); do
	base+=("$(copy "$sshd_port" "$cross")")
	rm -rf "$work/cache"; start_server
	cold+=("$(copy "$dport" "$native")")
	warm+=("$(copy "$dport" "$native")")
	rss=$(awk '/VmHWM/ { print $2 }' /proc/$server/status)
	stop_server
	echo "bench: run $i: baseline ${base[-1]}s cold ${cold[-1]}s warm ${warm[-1]}s server peak RSS ${rss} KiB" >&2
done
b=$(printf '%s\n' "${base[@]}" | median)
c=$(printf '%s\n' "${cold[@]}" | median)
w=$(printf '%s\n' "${warm[@]}" | median)
awk -v b="$b" -v c="$c" -v w="$w" -v s="$nar_size" -v rss="$rss" 'BEGIN {
	printf "NAR size        %d bytes\n", s
	printf "nix-daemon+sshd %.3fs (%.0f MB/s)\n", b, s / b / 1e6
	printf "decross cold    %.3fs  ratio %.2f\n", c, c / b
	printf "decross warm    %.3fs  ratio %.2f\n", w, w / b
	printf "server peak RSS %.1f MiB (last run)\n", rss / 1024
}'
