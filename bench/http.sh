#!/usr/bin/env bash
# Wall time of `nix copy --from http://...` of one large path:
#   baseline    nginx (Debian package) serving a file:// binary cache of the
#               cross path, written by nix copy with compression=none
#   cold        decross-store --http with an empty cache, serving the native path
#   warm-plain  again at once: the NAR still plain in the cache, sent as zstd raw blocks
#   warm        again once the cache has compacted it: the stored zstd file sent as is
# Each copy starts with an empty client narinfo cache (XDG_CACHE_HOME).
#
#   bench/http.sh [SIZE_MIB] [RUNS] [DATA]   (defaults 256, 3, random; DATA as in compare.sh)
#
# Debian 12, root.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-256}
runs=${2:-3}
data=${3:-random}
work=$(mktemp -d /tmp/decross-bench-http.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
. bench/lib.sh
bench_setup
# RUNLEVEL=1: the package's own nginx service is not started.
command -v nginx >/dev/null || PATH=$PATH:/usr/sbin
command -v nginx >/dev/null || RUNLEVEL=1 DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx >&2

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

nix copy --to "file://$work/bincache?compression=none" "$cross"
nport=$(free_port)
mkdir -p "$work/nginx-tmp"
cat >"$work/nginx.conf" <<CONF
daemon off;
user root;
worker_processes 1;
pid $work/nginx.pid;
error_log $work/nginx.log;
events { worker_connections 256; }
http {
	access_log off;
	sendfile on;
	tcp_nopush on;
	client_body_temp_path $work/nginx-tmp;
	types { text/x-nix-narinfo narinfo; }
	default_type application/octet-stream;
	server { listen 127.0.0.1:$nport; root $work/bincache; }
}
CONF
nginx -c "$work/nginx.conf" &
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$nport") 2>/dev/null && break; sleep 0.05; done

hport=$(free_port)
start_http() {
	"$work/decross-store" serve --listen none --http "127.0.0.1:$hport" --mapping "$work/mapping.json" \
		--signing-key "$work/secret.key" --cache-dir "$work/cache" 2>>"$work/server.log" &
	server=$!
	for _ in $(seq 1 100); do grep -q 'msg=serving' "$work/server.log" 2>/dev/null && break; sleep 0.05; done
	grep -q 'msg=serving' "$work/server.log" || { cat "$work/server.log" >&2; exit 1; }
	: >"$work/server.log"
}
hcopy() { # url path: seconds for nix copy --from of path's closure into an empty store
	rm -rf "$work/dst" "$work/xdg"
	local t0=$EPOCHREALTIME
	XDG_CACHE_HOME="$work/xdg" nix copy --no-check-sigs --from "$1" --to "$work/dst" "$2"
	elapsed "$t0"
}
compacted() { # waits until the cache holds no plain NAR (compaction runs once it is quiet)
	for _ in $(seq 1 600); do
		compgen -G "$work/cache/*.nar" >/dev/null || return 0
		sleep 0.1
	done
	echo "bench: the cache was not compacted within 60 s" >&2
	exit 1
}

base=(); cold=(); plain=(); warm=()
for i in $(seq 1 "$runs"); do
	base+=("$(hcopy "http://127.0.0.1:$nport" "$cross")")
	rm -rf "$work/cache"; start_http
	cold+=("$(hcopy "http://127.0.0.1:$hport" "$native")")
	rewrite=$(grep -o 'msg="rewrote path" path=[^ ]*benchbig[^ ]* .*duration=[^ ]*' "$work/server.log" | sed 's/.*duration=//')
	plain+=("$(hcopy "http://127.0.0.1:$hport" "$native")")
	compacted
	warm+=("$(hcopy "http://127.0.0.1:$hport" "$native")")
	rss=$(awk '/VmHWM/ { print $2 }' /proc/$server/status)
	stop_server
	echo "bench: run $i: nginx ${base[-1]}s cold ${cold[-1]}s (rewrite $rewrite) warm-plain ${plain[-1]}s warm ${warm[-1]}s server peak RSS ${rss} KiB" >&2
done
zst_size=$(stat -c %s "$work"/cache/*.nar.zst | sort -n | tail -1)
b=$(printf '%s\n' "${base[@]}" | median)
c=$(printf '%s\n' "${cold[@]}" | median)
p=$(printf '%s\n' "${plain[@]}" | median)
w=$(printf '%s\n' "${warm[@]}" | median)
rc=$(round_ratio "${base[*]}" "${cold[*]}") rp=$(round_ratio "${base[*]}" "${plain[*]}") rw=$(round_ratio "${base[*]}" "${warm[*]}")
awk -v b="$b" -v c="$c" -v p="$p" -v w="$w" -v s="$nar_size" -v z="$zst_size" -v rss="$rss" -v rc="$rc" -v rp="$rp" -v rw="$rw" 'BEGIN {
	printf "NAR size           %d bytes (stored zstd: %d bytes)\n", s, z
	printf "nginx file://      %.3fs (%.0f MB/s)\n", b, s / b / 1e6
	printf "decross cold       %.3fs  ratio %.2f (per round: %.2f)\n", c, c / b, rc
	printf "decross warm-plain %.3fs  ratio %.2f (per round: %.2f)\n", p, p / b, rp
	printf "decross warm       %.3fs  ratio %.2f (per round: %.2f)\n", w, w / b, rw
	printf "server peak RSS    %.1f MiB (last run)\n", rss / 1024
}'
