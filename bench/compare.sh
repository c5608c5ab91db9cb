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
# Debian 12, root.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-256}
runs=${2:-3}
data=${3:-random}
work=$(mktemp -d /tmp/decross-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
. bench/lib.sh
bench_setup

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
rc=$(round_ratio "${base[*]}" "${cold[*]}") rw=$(round_ratio "${base[*]}" "${warm[*]}")
awk -v b="$b" -v c="$c" -v w="$w" -v s="$nar_size" -v rss="$rss" -v rc="$rc" -v rw="$rw" 'BEGIN {
	printf "NAR size        %d bytes\n", s
	printf "nix-daemon+sshd %.3fs (%.0f MB/s)\n", b, s / b / 1e6
	printf "decross cold    %.3fs  ratio %.2f (per round: %.2f)\n", c, c / b, rc
	printf "decross warm    %.3fs  ratio %.2f (per round: %.2f)\n", w, w / b, rw
	printf "server peak RSS %.1f MiB (last run)\n", rss / 1024
}'
