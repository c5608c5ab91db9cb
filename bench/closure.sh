#!/usr/bin/env bash
# Wall time of a wide closure (bench/closure.nix: about 300 small packages,
# 75 MB) over ssh-ng, cold and warm:
#   baseline  nix-daemon --stdio behind OpenSSH sshd, serving the cross closure
#   decross   decross-store serving the native closure (cold: empty cache,
#             fresh process; warm: same process again)
# for `nix copy --from` of the whole closure and for `nix path-info -r`.
#
#   bench/closure.sh [RUNS] [COUNT]   (defaults 3, 300)
#
# The closure is built once and stays in the store (a nix-collect-garbage
# removes it). Debian 12, root.
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}
count=${2:-300}
work=$(mktemp -d /tmp/decross-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; [ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
. bench/lib.sh
bench_setup

echo "bench: building a closure of $count packages (once)" >&2
cross=$(nix-build --no-out-link -j2 bench/closure.nix --arg count "$count" -A p0 2>"$work/build.log") || { cat "$work/build.log" >&2; exit 1; }
nix eval --json --impure --expr "
  let c = import $PWD/bench/closure.nix { cross = true; count = $count; };
      n = import $PWD/bench/closure.nix { cross = false; count = $count; };
  in { paths = map (a: { native = n.\${a}.outPath; cross = c.\${a}.outPath; }) (builtins.attrNames c); }" >"$work/mapping.json"
native=$(nix eval --raw --impure --expr "(import $PWD/bench/closure.nix { cross = false; count = $count; }).p0.outPath")
paths=$(nix-store -qR "$cross" | wc -l)
bytes=$(nix path-info -S "$cross" | awk '{print $2}')
echo "bench: $paths paths, $bytes bytes of NAR; native root $native" >&2

declare -A t
for i in $(seq 1 "$runs"); do
	t[base_copy]+="$(copy "$sshd_port" "$cross") "
	t[base_info]+="$(pathinfo "$sshd_port" "$cross") "
	[ "$(wc -l <"$work/path-info.out")" = "$paths" ] || { echo "baseline path-info listed $(wc -l <"$work/path-info.out") paths" >&2; exit 1; }
	rm -rf "$work/cache"; start_server
	t[cold_copy]+="$(copy "$dport" "$native") "
	t[warm_copy]+="$(copy "$dport" "$native") "
	stop_server
	rm -rf "$work/cache"; start_server
	t[cold_info]+="$(pathinfo "$dport" "$native") "
	[ "$(wc -l <"$work/path-info.out")" = "$paths" ] || { echo "decross path-info listed $(wc -l <"$work/path-info.out") paths" >&2; exit 1; }
	t[warm_info]+="$(pathinfo "$dport" "$native") "
	rss=$(awk '/VmHWM/ { print $2 }' /proc/$server/status)
	stop_server
	echo -n "bench: run $i:" >&2
	for k in base_copy cold_copy warm_copy base_info cold_info warm_info; do set -- ${t[$k]}; echo -n " $k=${!#}s" >&2; done
	echo >&2
done
m() { printf '%s\n' ${t[$1]} | median; }
bc=$(m base_copy) cc=$(m cold_copy) wc=$(m warm_copy) bi=$(m base_info) ci=$(m cold_info) wi=$(m warm_info)
rcc=$(round_ratio "${t[base_copy]}" "${t[cold_copy]}") rwc=$(round_ratio "${t[base_copy]}" "${t[warm_copy]}")
rci=$(round_ratio "${t[base_info]}" "${t[cold_info]}") rwi=$(round_ratio "${t[base_info]}" "${t[warm_info]}")
awk -v p="$paths" -v s="$bytes" -v bc="$bc" -v cc="$cc" -v wc="$wc" -v bi="$bi" -v ci="$ci" -v wi="$wi" -v rss="$rss" \
	-v rcc="$rcc" -v rwc="$rwc" -v rci="$rci" -v rwi="$rwi" 'BEGIN {
	printf "closure                 %d paths, %d bytes of NAR\n", p, s
	printf "                        nix-daemon+sshd  decross-store  ratio  ratio per round\n"
	printf "nix copy --from, cold   %8.2fs        %8.2fs      %.2f   %.2f\n", bc, cc, cc / bc, rcc
	printf "nix copy --from, warm   %8.2fs        %8.2fs      %.2f   %.2f\n", bc, wc, wc / bc, rwc
	printf "nix path-info -r, cold  %8.2fs        %8.2fs      %.2f   %.2f\n", bi, ci, ci / bi, rci
	printf "nix path-info -r, warm  %8.2fs        %8.2fs      %.2f   %.2f\n", bi, wi, wi / bi, rwi
	printf "server peak RSS         %.1f MiB (last run)\n", rss / 1024
}'
