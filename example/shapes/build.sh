#!/usr/bin/env bash
# Builds the cross side of the nixpkgs-shaped package set, instantiates the
# native side and writes the mapping `decross-store map` must find.
#
#   example/shapes/build.sh OUTDIR
#
# OUTDIR receives:
#   mapping.json   the expected mapping, {"paths": [{native, cross, deriver, output}]}
#   roles.json     every pair with its role, output names and both .drv paths
#   roots.json     the root pairs of .drv paths, a `map --pairs` file
#   gcroots/       GC roots for the cross outputs and the native .drv files
#
# Needs Debian's nix-bin, gcc-aarch64-linux-gnu, g++-aarch64-linux-gnu and
# patchelf. Runs as root: it may create the nixbld build users and start
# nix-daemon. Safe to run again: Nix reuses what is already built.
set -euo pipefail

if [ $# -ne 1 ]; then
	echo "usage: $0 OUTDIR" >&2
	exit 2
fi

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
log() { echo "shapes/build.sh: [$(elapsed)] $*" >&2; }

for tool in nix nix-daemon nix-instantiate nix-store patchelf \
	/usr/bin/aarch64-linux-gnu-gcc /usr/bin/aarch64-linux-gnu-g++; do
	if ! command -v "$tool" >/dev/null; then
		echo "shapes/build.sh: $tool not found; install it with:" >&2
		echo "  apt-get install -y nix-bin gcc-aarch64-linux-gnu g++-aarch64-linux-gnu libc6-dev-arm64-cross patchelf" >&2
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
if ! daemon_answers; then
	mkdir -p /nix/var/nix/daemon-socket
	daemon_log=${TMPDIR:-/tmp}/nix-daemon.log
	log "starting nix-daemon (log: $daemon_log)"
	# Without NIX_REMOTE: a daemon whose own store is "daemon" connects to
	# itself for every request, recursively.
	env -u NIX_REMOTE setsid nix-daemon >>"$daemon_log" 2>&1 </dev/null &
	for _ in $(seq 1 100); do
		daemon_answers && break
		sleep 0.1
	done
	if ! daemon_answers; then
		echo "shapes/build.sh: nix-daemon did not answer on $socket; see $daemon_log" >&2
		exit 1
	fi
fi

mkdir -p "$out/gcroots"

log "building the cross roots (x86_64-linux -> aarch64-linux)"
mapfile -t cross_drvs < <(nix-instantiate "$here/pkgs.nix" --arg cross true -A roots \
	--add-root "$out/gcroots/cross.drv")
mapfile -t cross_outs < <(nix-store --realise "${cross_drvs[@]}" --add-root "$out/gcroots/cross")
log "built ${#cross_outs[@]} cross outputs"

log "instantiating the native set (aarch64-linux)"
mapfile -t native_drvs < <(nix-instantiate "$here/pkgs.nix" --arg cross false -A roots \
	--add-root "$out/gcroots/native.drv")
log "instantiated ${#native_drvs[@]} native roots"

for attr in file roles roots; do
	nix-instantiate --eval --strict --json "$here/mapping.nix" -A "$attr" >"$out/$attr.json.tmp"
done
mv "$out/roles.json.tmp" "$out/roles.json"
mv "$out/roots.json.tmp" "$out/roots.json"
mv "$out/file.json.tmp" "$out/mapping.json"

# Every expected cross path must now be in the store, every deriver too.
nix eval --raw --file "$here/mapping.nix" roles \
	--apply 'ps: builtins.concatStringsSep "\n" (builtins.concatMap (p: [ p.cross p.nativeDrv ]) ps)' |
	xargs nix-store --check-validity

nix eval --raw --file "$here/mapping.nix" roles --apply '
	ps: builtins.concatStringsSep "" (map (p:
		"  ${p.role}\n    native ${p.native}\n    cross  ${p.cross}\n") ps)' >&2
log "wrote $out/mapping.json ($(grep -o '"native"' "$out/mapping.json" | wc -l) entries), roles.json and roots.json"
