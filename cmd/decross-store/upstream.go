package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"strings"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"

	"github.com/decross-store/decross-store/binarycache"
	"github.com/decross-store/decross-store/upstream"
)

// upstreamFlags are the flags of every command that reads cross builds.
type upstreamFlags struct {
	addr        string
	trustedKeys keyList
	noCheckSigs bool
}

const upstreamUsage = "where cross paths are read: daemon (the local nix-daemon), unix:///path/to/socket, or a binary cache: file:///dir, http(s)://host/path, s3://bucket?endpoint=...&region=..."

func (u *upstreamFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&u.addr, "upstream", "daemon", upstreamUsage)
	fs.Var(&u.trustedKeys, "trusted-public-key", "a `NAME:BASE64` public key (Nix's trusted-public-keys format) whose signature a binary-cache upstream's paths must carry; repeatable, or several separated by spaces")
	fs.BoolVar(&u.noCheckSigs, "upstream-no-check-sigs", false, "read a binary-cache upstream without checking signatures (for a file:// cache the administrator wrote)")
}

// isBinaryCache reports whether addr names a binary cache rather than a
// nix-daemon.
func isBinaryCache(addr string) bool {
	for _, scheme := range []string{"file://", "http://", "https://", "s3://"} {
		if strings.HasPrefix(addr, scheme) {
			return true
		}
	}
	return false
}

// open opens the upstream; close releases it.
func (u *upstreamFlags) open(ctx context.Context, logger *slog.Logger) (r upstream.Reader, closeFn func(), err error) {
	if !isBinaryCache(u.addr) {
		if len(u.trustedKeys) > 0 || u.noCheckSigs {
			return nil, nil, fmt.Errorf("--trusted-public-key and --upstream-no-check-sigs apply to binary-cache upstreams, not to %q (a nix-daemon checks its own)", u.addr)
		}
		d, err := upstream.Open(u.addr)
		if err != nil {
			return nil, nil, err
		}
		return d, func() { d.Close() }, nil
	}
	if len(u.trustedKeys) == 0 && !u.noCheckSigs {
		return nil, nil, fmt.Errorf("upstream %s: give the key its paths are signed with (--trusted-public-key NAME:BASE64), or --upstream-no-check-sigs for a cache you wrote yourself", u.addr)
	}
	c, err := binarycache.Open(ctx, u.addr, binarycache.Options{TrustedKeys: u.trustedKeys, NoCheckSigs: u.noCheckSigs, Logger: logger})
	if err != nil {
		return nil, nil, err
	}
	return c, func() { c.Close() }, nil
}

// keyList is a repeatable flag of Nix public keys; one value may hold
// several, separated by spaces, as nix.conf's trusted-public-keys does.
type keyList []signature.PublicKey

func (k *keyList) String() string {
	if k == nil {
		return ""
	}
	var s []string
	for _, key := range *k {
		s = append(s, key.String())
	}
	return strings.Join(s, " ")
}

func (k *keyList) Set(v string) error {
	fields := strings.Fields(v)
	if len(fields) == 0 {
		return fmt.Errorf("no key in %q", v)
	}
	for _, f := range fields {
		key, err := signature.ParsePublicKey(f)
		if err != nil {
			return fmt.Errorf("public key %q: %w", f, err)
		}
		*k = append(*k, key)
	}
	return nil
}
