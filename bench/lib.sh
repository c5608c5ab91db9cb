# Shared by the benchmark scripts: a nix-daemon, an OpenSSH sshd running the
# real `nix-daemon --stdio` (the baseline), a decross-store server, and
# timing helpers. Source it from the repository root after setting $work.
# BENCH_SSHOPTS adds ssh options to every client (both servers), e.g.
# "-c aes128-gcm@openssh.com" to take the cipher out of the comparison.
# Debian 12, root.

export PATH=/usr/local/go/bin:$PATH
export NIX_CONFIG=$'experimental-features = nix-command\nsandbox = false\nsubstituters ='
export NIX_REMOTE=daemon

bench_setup() {
	scripts/install-deps
	command -v sshd >/dev/null || export PATH=$PATH:/usr/sbin
	# The daemon itself must not have NIX_REMOTE=daemon: it would connect to itself.
	if ! nix store ping --store daemon >/dev/null 2>&1; then
		env -u NIX_REMOTE setsid nix-daemon >/tmp/nix-daemon.log 2>&1 </dev/null &
		for _ in $(seq 1 100); do nix store ping --store daemon >/dev/null 2>&1 && break; sleep 0.1; done
		nix store ping --store daemon >/dev/null || { cat /tmp/nix-daemon.log >&2; exit 1; }
	fi
	go build -o "$work/decross-store" ./cmd/decross-store
	"$work/decross-store" keygen --name bench-1 --secret-key-file "$work/secret.key" --public-key-file "$work/public.key" >/dev/null
	ssh-keygen -q -t ed25519 -N '' -f "$work/client_key"
	cp "$work/client_key.pub" "$work/authorized_keys"
	sshopts="-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR -o Compression=no ${BENCH_SSHOPTS:-}"
	trusted="trusted-public-keys = $(cat "$work/public.key")"
	start_sshd
	dport=$(free_port)
}

free_port() { # a port nothing listens on (bash's /dev/tcp, no python needed)
	local p
	while :; do
		p=$(shuf -i 20000-60000 -n 1)
		(exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
	done
}

# Baseline: OpenSSH sshd running the real nix-daemon --stdio.
start_sshd() {
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
}

start_server() { # serves $work/mapping.json from $work/cache
	"$work/decross-store" serve --listen "127.0.0.1:$dport" --host-key "$work/host_key" \
		--authorized-keys "$work/authorized_keys" --mapping "$work/mapping.json" \
		--signing-key "$work/secret.key" --cache-dir "$work/cache" 2>>"$work/server.log" &
	server=$!
	for _ in $(seq 1 100); do grep -q 'msg=serving' "$work/server.log" 2>/dev/null && break; sleep 0.05; done
	grep -q 'msg=serving' "$work/server.log" || { cat "$work/server.log" >&2; exit 1; }
	: >"$work/server.log"
}
stop_server() { kill "$server"; wait "$server" 2>/dev/null || true; }

elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f\n", b - a }'; }

copy() { # port path: seconds for nix copy --from of path's closure into an empty store
	rm -rf "$work/dst"
	local t0=$EPOCHREALTIME
	NIX_SSHOPTS="-p $1 $sshopts" NIX_CONFIG="$NIX_CONFIG"$'\n'"$trusted" \
		nix copy --no-check-sigs --from "ssh-ng://root@127.0.0.1?ssh-key=$work/client_key" --to "$work/dst" "$2"
	elapsed "$t0"
}

pathinfo() { # port path: seconds for nix path-info -r of path
	local t0=$EPOCHREALTIME
	NIX_SSHOPTS="-p $1 $sshopts" nix path-info -r --store "ssh-ng://root@127.0.0.1?ssh-key=$work/client_key" "$2" >"$work/path-info.out"
	elapsed "$t0"
}

median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
# round_ratio "BASE TIMES" "TIMES": the median of the per-round ratios. Rounds
# interleave baseline and decross-store, so a machine that drifts during a
# run (page-cache writeback, a neighbour) moves both sides of each ratio.
round_ratio() {
	paste <(printf '%s\n' $1) <(printf '%s\n' $2) | awk '{ print $2 / $1 }' | median
}
