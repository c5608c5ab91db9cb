package pathinfo

import (
	"strings"
	"testing"

	"github.com/nix-community/go-nix/pkg/narinfo/signature"
)

func TestParseNarHash(t *testing.T) {
	const hexForm = "20d7ad401581bbf12bcd6da194a762ce7535dd9f6a0e1ab50b993ad91e531b69"
	h, err := ParseNarHash(hexForm)
	if err != nil {
		t.Fatal(err)
	}
	if h.Hex() != hexForm {
		t.Fatalf("Hex() = %s", h.Hex())
	}
	for _, s := range []string{"sha256:" + hexForm, h.String(), "sha256-INetQBWBu/ErzW2hlKdiznU13Z9qDhq1C5k62R5TG2k="} {
		h2, err := ParseNarHash(s)
		if err != nil || h2 != h {
			t.Errorf("ParseNarHash(%q) = %x, %v; want %x", s, h2, err, h)
		}
	}
	for _, bad := range []string{"", "sha256:", "md5:abc", strings.Repeat("z", 64), strings.Repeat("e", 52), "sha256-AAAA"} {
		if _, err := ParseNarHash(bad); err == nil {
			t.Errorf("ParseNarHash(%q) succeeded", bad)
		}
	}
}

func TestFingerprintAndSign(t *testing.T) {
	h, _ := ParseNarHash("20d7ad401581bbf12bcd6da194a762ce7535dd9f6a0e1ab50b993ad91e531b69")
	p := &PathInfo{
		Path:    "/nix/store/dz74wzka8397lnd18h4v5lvvi544dsv4-hello-2.12",
		NarHash: h,
		NarSize: 71288,
		References: []string{
			"/nix/store/dz74wzka8397lnd18h4v5lvvi544dsv4-hello-2.12",
			"/nix/store/433id1qnb29zpay0665622fzcbqy07zp-greeting.txt",
		},
	}
	want := "1;/nix/store/dz74wzka8397lnd18h4v5lvvi544dsv4-hello-2.12;" + h.String() + ";71288;" +
		"/nix/store/433id1qnb29zpay0665622fzcbqy07zp-greeting.txt,/nix/store/dz74wzka8397lnd18h4v5lvvi544dsv4-hello-2.12"
	if got := p.Fingerprint(); got != want {
		t.Fatalf("Fingerprint() =\n%s\nwant\n%s", got, want)
	}
	sk, pk, err := signature.GenerateKeypair("test-1", nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := p.Sign(sk)
	if err != nil {
		t.Fatal(err)
	}
	sig, err := signature.ParseSignature(s)
	if err != nil {
		t.Fatal(err)
	}
	if !pk.Verify(want, sig) {
		t.Fatal("signature does not verify")
	}
}
