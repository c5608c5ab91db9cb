package binarycache

import (
	"crypto/ed25519"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
	"github.com/nix-community/go-nix/pkg/nixhash"

	"github.com/decross-store/decross-store/internal/fuzzseed"
)

// fuzzKey is a fixed key, so that seeds can carry valid signatures.
var fuzzKey = func() signature.SecretKey {
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(i)
	}
	sk, err := signature.LoadSecretKey("cache-1:" + base64.StdEncoding.EncodeToString(ed25519.NewKeyFromSeed(seed)))
	if err != nil {
		panic(err)
	}
	return sk
}()

// fuzzSeeds are narinfos as Nix 2.8 writes them (see the e2e test), and
// variants of them.
func fuzzSeeds() map[string][]byte {
	const real = "StorePath: /nix/store/y1x2prjycmsd96d80g87a1zyfaf139k6-f.txt\n" +
		"URL: nar/1q0ykpy1skkxm533yxxcy0y0axlqm8xqlfk183s3b20vk0jrcchj.nar.xz\n" +
		"Compression: xz\n" +
		"FileHash: sha256:1q0ykpy1skkxm533yxxcy0y0axlqm8xqlfk183s3b20vk0jrcchj\n" +
		"FileSize: 140\n" +
		"NarHash: sha256:0i9js3vmxl8f5r005nqnk4w30gs5icxlld97dckc7cnc96f3gmch\n" +
		"NarSize: 128\n" +
		"References: \n" +
		"Sig: test-1:WpX6g6ughAFsJkGANdhyeL8VzSPA/THxrYfMmulSf+rBtRSe1g1TI0IN4dVJwZMObZgylcIDCBCJO9EiWxxiBw==\n" +
		"CA: fixed:r:sha256:0i9js3vmxl8f5r005nqnk4w30gs5icxlld97dckc7cnc96f3gmch\n"
	refs := fmt.Sprintf("StorePath: %s\nURL: nar/x.nar.zst\nCompression: zstd\n"+
		"NarHash: sha256:0i9js3vmxl8f5r005nqnk4w30gs5icxlld97dckc7cnc96f3gmch\nNarSize: 128\n"+
		"References: %s %s\nDeriver: %s\nSystem: x86_64-linux\n",
		helloPath, helloPath[11:], depPath[11:], drvPath[11:])
	info, err := parseNarInfo([]byte(refs))
	if err != nil {
		panic(err)
	}
	sig, err := toPathInfo(info).Sign(fuzzKey)
	if err != nil {
		panic(err)
	}
	return map[string][]byte{
		"real":          []byte(real),
		"signed":        []byte(refs + "Sig: " + sig + "\n"),
		"no-final-nl":   []byte(strings.TrimSuffix(real, "\n")),
		"unknown-field": []byte(real + "Future: yes\n"),
		"dotdot":        []byte(strings.Replace(real, "URL: nar/", "URL: nar/../", 1)),
		"absolute-url":  []byte(strings.Replace(real, "URL: nar/", "URL: https://127.0.0.2/", 1)),
		"no-narhash":    []byte(strings.Replace(real, "NarHash", "Narhash", 1)),
		"sha1-narhash":  []byte(strings.Replace(real, "NarHash: sha256:0i9js3vmxl8f5r005nqnk4w30gs5icxlld97dckc7cnc96f3gmch", "NarHash: sha1:0000000000000000000000000000000000000000", 1)),
		"bad-sig":       []byte(strings.Replace(real, "Sig: test-1:", "Sig: test-1", 1)),
		"bad-ref":       []byte(strings.Replace(refs, "References: ", "References:  x ", 1)),
		"empty":         {},
		"crlf":          []byte(strings.ReplaceAll(real, "\n", "\r\n")),
	}
}

// FuzzParseNarInfo feeds arbitrary narinfo files to the parser and the
// signature check. Neither may panic, and whatever parses must satisfy
// what NarFromPath relies on.
func FuzzParseNarInfo(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	keys := []signature.PublicKey{fuzzKey.ToPublicKey()}
	f.Fuzz(func(t *testing.T, data []byte) {
		ni, err := parseNarInfo(data)
		if err != nil {
			return
		}
		if err := checkNarURL(ni.URL); err != nil {
			t.Fatalf("parsed with a bad URL: %v", err)
		}
		if ni.NarHash == nil || ni.NarHash.Algo() != nixhash.SHA256 || ni.NarSize == 0 {
			t.Fatalf("parsed without a usable NarHash and NarSize: %+v", ni)
		}
		info := toPathInfo(ni)
		for _, r := range info.References {
			if !strings.HasPrefix(r, "/nix/store/") {
				t.Fatalf("reference %q is not absolute", r)
			}
		}
		_ = checkSigs(info, ni.Signatures, keys)
		if info.CA != "" {
			_ = checkCA(info)
		}
	})
}

func TestFuzzSeeds(t *testing.T) {
	seeds := fuzzSeeds()
	if _, err := parseNarInfo(seeds["real"]); err != nil {
		t.Errorf("the real narinfo does not parse: %v", err)
	}
	ni, err := parseNarInfo(seeds["signed"])
	if err != nil {
		t.Fatal(err)
	}
	if err := checkSigs(toPathInfo(ni), ni.Signatures, []signature.PublicKey{fuzzKey.ToPublicKey()}); err != nil {
		t.Errorf("the signed seed does not verify: %v", err)
	}
	fuzzseed.Check(t, "FuzzParseNarInfo", seeds, *update, "go test ./binarycache -run TestFuzzSeeds -update")
}
