#!/usr/bin/env bash
# Builds the cross side of the example package set, instantiates the native
# side and writes a mapping file pairing them.
#
#   example/build.sh OUTDIR [TARGET]
#
# TARGET is the host platform of the cross build (pkgs.nix's target):
#   aarch64  (default)  gcc-aarch64-linux-gnu    libc6-dev-arm64-cross
#   riscv64             gcc-riscv64-linux-gnu    libc6-dev-riscv64-cross
#   armv7l              gcc-arm-linux-gnueabihf  libc6-dev-armhf-cross
#
# OUTDIR receives:
#   mapping.json   {"paths": [{native, cross, deriver, output}]}
#   paths.json     every attribute/output pair, with both .drv paths
#   gcroots/       GC roots for the cross outputs and the native .drv files
#
# Needs Debian's nix-bin and the target's cross compiler and C library
# (above).
# Runs as root: it may create the nixbld build users and start nix-daemon.
# Safe to run again: Nix reuses what is already built and the outputs are
# rewritten in place.
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
	echo "usage: $0 OUTDIR [aarch64|riscv64|armv7l]" >&2
	exit 2
fi
target=${2:-aarch64}
case $target in
aarch64) triple=aarch64-linux-gnu debs="gcc-aarch64-linux-gnu libc6-dev-arm64-cross" ;;
riscv64) triple=riscv64-linux-gnu debs="gcc-riscv64-linux-gnu libc6-dev-riscv64-cross" ;;
armv7l) triple=arm-linux-gnueabihf debs="gcc-arm-linux-gnueabihf libc6-dev-armhf-cross" ;;
*)
	echo "build.sh: unknown target $target; known: aarch64, riscv64, armv7l" >&2
	exit 2
	;;
esac

here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$1"
out=$(cd "$1" && pwd)

base_config=$'experimental-features = nix-command\nsandbox = false\nsubstituters ='
# Settings from the caller come last so they win.
export NIX_CONFIG="$base_config${NIX_CONFIG:+$'\n'$NIX_CONFIG}"
export NIX_REMOTE=daemon

t0=$EPOCHREALTIME
elapsed() {
	awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2fs", b - a }'
}
log() { echo "build.sh: [$(elapsed)] $*" >&2; }

for tool in nix nix-daemon nix-build nix-instantiate nix-store "/usr/bin/$triple-gcc"; do
	if ! command -v "$tool" >/dev/null; then
		echo "build.sh: $tool not found; install it with:" >&2
		echo "  apt-get install -y nix-bin $debs" >&2
		exit 1
	fi
done

# Nix builds as the nixbld users when running as root. Debian's nix-setup
# (postinst) creates them; containers built without it lack them.
if ! getent group nixbld >/dev/null; then
	log "creating group nixbld and build users nixbld1..nixbld10"
	groupadd --system nixbld
	for i in $(seq 1 10); do
		useradd --system --no-create-home --home-dir /var/empty \
			--shell /usr/sbin/nologin --gid nixbld --groups nixbld \
			--comment "Nix build user $i" "nixbld$i"
	done
fi

socket=/nix/var/nix/daemon-socket/socket
# A wedged daemon accepts connections but never replies: bound the wait.
daemon_answers() { timeout 5 nix store ping --store daemon >/dev/null 2>&1; }
if daemon_answers; then
	log "nix-daemon answers on $socket"
else
	mkdir -p /nix/var/nix/daemon-socket
	daemon_log=${TMPDIR:-/tmp}/nix-daemon.log
	log "starting nix-daemon (log: $daemon_log)"
	# Without NIX_REMOTE: a daemon whose own store is "daemon" connects to
	# itself for every request, recursively, until the process table is full.
	env -u NIX_REMOTE setsid nix-daemon >>"$daemon_log" 2>&1 </dev/null &
	for _ in $(seq 1 100); do
		daemon_answers && break
		sleep 0.1
	done
	if ! daemon_answers; then
		echo "build.sh: nix-daemon did not answer on $socket; see $daemon_log" >&2
		exit 1
	fi
	log "nix-daemon started (pid $!)"
fi

mkdir -p "$out/gcroots"

log "building the cross set (x86_64-linux -> $target-linux)"
mapfile -t cross_drvs < <(nix-instantiate "$here/pkgs.nix" --arg cross true --argstr target "$target" -A packages \
	--add-root "$out/gcroots/cross.drv")
# Realising the .drv files (rather than nix-build) builds and roots every
# output of the multiple-output derivations.
mapfile -t cross_outs < <(nix-store --realise "${cross_drvs[@]}" --add-root "$out/gcroots/cross")
log "built ${#cross_outs[@]} cross outputs of ${#cross_drvs[@]} derivations"

log "instantiating the native set ($target-linux)"
mapfile -t native_drvs < <(nix-instantiate "$here/pkgs.nix" --arg cross false --argstr target "$target" -A packages \
	--add-root "$out/gcroots/native.drv")
log "instantiated ${#native_drvs[@]} native derivations"

nix-instantiate --eval --strict --json "$here/mapping.nix" --argstr target "$target" -A file >"$out/mapping.json.tmp"
nix-instantiate --eval --strict --json "$here/mapping.nix" --argstr target "$target" -A attrs >"$out/paths.json.tmp"
mv "$out/paths.json.tmp" "$out/paths.json"
mv "$out/mapping.json.tmp" "$out/mapping.json"

# Every mapped cross path must now be in the store, every deriver too.
nix eval --raw --file "$here/mapping.nix" --argstr target "$target" paths \
	--apply 'ps: builtins.concatStringsSep "\n" (builtins.concatMap (p: [ p.cross p.deriver ]) ps)' |
	xargs nix-store --check-validity

nix eval --raw --file "$here/mapping.nix" --argstr target "$target" attrs --apply '
	ps: builtins.concatStringsSep "" (map (p:
		"  ${p.attr}.${p.output}\n    native ${p.native}\n    cross  ${p.cross}\n") ps)' >&2
log "wrote $out/mapping.json ($(grep -o '"native"' "$out/mapping.json" | wc -l) entries) and $out/paths.json"
