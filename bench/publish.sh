#!/usr/bin/env bash
# Throughput and peak RSS of `decross-store publish`:
#   example   the example closure (example/build.sh), zstd, xz and none
#   big       one SIZE_MIB MiB path (bench/big.nix), to file:// and to S3
#             (versitygw on a local directory)
# each cold (empty --cache-dir: rewrite, then compress and write) and warm
# (rewritten NARs cached: compress and write only), into a fresh cache.
#
#   bench/publish.sh [SIZE_MIB] [DATA]   (defaults 1024, random)
#
# MB/s is NAR bytes (uncompressed) per wall-clock second. Debian 12, root.
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-1024}
data=${2:-random}
work=$(mktemp -d /tmp/decross-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
. bench/lib.sh
bench_setup

# measure LABEL MAPPING CACHE_DIR DEST [FLAGS...]: one publish; prints
# LABEL, seconds, NAR MiB, MB/s and peak RSS. The example's mapping has a
# leaky script and a build-platform bash that cannot be served, so exit
# status 1 is expected there; the summary line says what was published.
measure() {
	local label=$1 mapping=$2 cache=$3 dest=$4
	shift 4
	/usr/bin/time -f '%e %M' -o "$work/time" "$work/decross-store" publish --mapping "$mapping" \
		--signing-key "$work/secret.key" --cache-dir "$cache" --to "$dest" "$@" >"$work/out" 2>"$work/err" || true
	grep -q '^published ' "$work/out" || { cat "$work/err" >&2; exit 1; }
	echo "bench: $label: $(cat "$work/out")" >&2
	read -r secs rss <"$work/time"
	# "(2.1 MiB of NAR" in the summary line.
	mib=$(sed -E 's/.*\(([0-9.]+) ([KMG]i)?B of NAR.*/\1 \2/' "$work/out" |
		awk '{ f = $2 == "Ki" ? 1/1024 : $2 == "Mi" ? 1 : $2 == "Gi" ? 1024 : 1/1048576; printf "%.1f", $1 * f }')
	awk -v l="$label" -v s="$secs" -v m="$mib" -v r="$rss" 'BEGIN {
		printf "%-28s %7.2fs %9.1f MiB %8.0f MB/s %7.1f MiB RSS\n", l, s, m, m * 1048576 / (s > 0 ? s : 0.01) / 1e6, r / 1024 }'
}

echo "bench: building the example" >&2
example/build.sh "$work/example" >/dev/null 2>"$work/build.log" || { cat "$work/build.log" >&2; exit 1; }
ex=$work/example/mapping.json
results=()
results+=("$(measure "example zstd, cold" "$ex" "$work/excache" "file://$work/ex-zstd")")
results+=("$(measure "example zstd, warm" "$ex" "$work/excache" "file://$work/ex-zstd2")")
results+=("$(measure "example xz, warm" "$ex" "$work/excache" "file://$work/ex-xz" --compression xz)")
results+=("$(measure "example none, warm" "$ex" "$work/excache" "file://$work/ex-none" --compression none)")
results+=("$(measure "example zstd, again (no-op)" "$ex" "$work/excache" "file://$work/ex-zstd")")

echo "bench: building a $size MiB path" >&2
attr() { nix-build --no-out-link bench/big.nix --arg cross true --arg sizeMiB "$size" --argstr data "$data" -A "$1"; }
native_attr() { nix eval --raw --impure --expr "(import $PWD/bench/big.nix { cross = false; sizeMiB = $size; data = \"$data\"; }).$1.outPath"; }
cat >"$work/mapping.json" <<JSON
{"paths": [{"native": "$(native_attr big)", "cross": "$(attr big)"}, {"native": "$(native_attr dep)", "cross": "$(attr dep)"}]}
JSON
big=$work/mapping.json
results+=("$(measure "$size MiB zstd, cold" "$big" "$work/bigcache" "file://$work/big-zstd")")
rm -rf "$work/big-zstd"
results+=("$(measure "$size MiB zstd, warm" "$big" "$work/bigcache" "file://$work/big-zstd")")
results+=("$(measure "$size MiB none, warm" "$big" "$work/bigcache" "file://$work/big-none" --compression none)")

# S3: versitygw's posix backend, whose buckets are directories.
s3port=$(free_port)
mkdir -p "$work/s3/bench"
versitygw --access bench --secret bench-secret --port "127.0.0.1:$s3port" --quiet posix "$work/s3" >"$work/versitygw.log" 2>&1 &
for _ in $(seq 1 100); do (exec 3<>"/dev/tcp/127.0.0.1/$s3port") 2>/dev/null && break; sleep 0.05; done
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench-secret TMPDIR=$work
results+=("$(measure "$size MiB zstd to S3, warm" "$big" "$work/bigcache" "s3://bench?endpoint=http://127.0.0.1:$s3port&region=us-east-1")")

printf '%-28s %8s %13s %13s %15s\n' "" wall NAR throughput "peak RSS"
printf '%s\n' "${results[@]}"
