package daemonproto

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
)

// TestDocCaptures replays the requests of the "Verified on Nix 2.8.0"
// captures and compares the replies byte for byte. The server announces
// 1.38 where the 2.8 daemon announced 1.34; everything after that word is
// what the 2.8 daemon sent.
func TestDocCaptures(t *testing.T) {
	const (
		t1Server = "6f69786400000000 2601000000000000"
		last     = "73746c6100000000"
	)
	tests := []struct {
		name string
		nix  string // NixVersion
		in   *enc
		want string
	}{
		{"T1 handshake at 1.34", "2.8.0", hello(34),
			t1Server + " 0500000000000000 322e382e30000000 " + last},
		{"T4 QueryPathInfo missing", "2.8.0", hello(34).u64(opQueryPathInfo).str(missingPath),
			t1Server + " 0500000000000000 322e382e30000000 " + last + " " + last + " 0000000000000000"},
		{"T5 NarFromPath at 1.34", "2.8.0", hello(34).u64(opNarFromPath).str(greetingPath),
			t1Server + " 0500000000000000 322e382e30000000 " + last + " " + last + " " + t5NAR},
		{"T5 NarFromPath at 1.21", "2.8.0", hello(21).u64(opNarFromPath).str(greetingPath),
			t1Server + " " + last + " " + last + " " + t5NAR},
		{"T8 BuildPathsWithResults", "2.8.0",
			hello(34).u64(opBuildPathsWithResults).strs(greetingPath).u64(0),
			t1Server + " 0500000000000000 322e382e30000000 " + last + " " + last +
				" 0100000000000000 3800000000000000 " + hexOf(greetingPath) +
				" 0200000000000000 0000000000000000 0000000000000000 0000000000000000" +
				" 0000000000000000 0000000000000000 0000000000000000"},
		{"T9 AddMultipleToStore count 0", "2.8.0",
			hello(34).u64(opAddMultipleToStore, 0, 0).frames(make([]byte, 8)),
			t1Server + " 0500000000000000 322e382e30000000 " + last + " " + last},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out bytes.Buffer
			srv := &Server{Store: fixtureStore(), NixVersion: tt.nix}
			if err := srv.ServeConn(t.Context(), stdio{bytes.NewReader(tt.in.Bytes()), &out}); err != nil {
				t.Fatal(err)
			}
			if want := hexWords(t, tt.want); !bytes.Equal(out.Bytes(), want) {
				t.Errorf("got  %s\nwant %s", words(out.Bytes()), words(want))
			}
		})
	}
}

const t5NAR = `0d00000000000000 6e69782d61726368 6976652d31000000 0100000000000000
2800000000000000 0400000000000000 7479706500000000 0700000000000000 726567756c617200
0800000000000000 636f6e74656e7473 0b00000000000000 68656c6c6f207769 72650a0000000000
0100000000000000 2900000000000000`

func hexOf(s string) string {
	return fmt.Sprintf("%x", append([]byte(s), make([]byte, padLen(uint64(len(s))))...))
}

// TestQueryPathInfoLayout checks the T3 reply field by field.
func TestQueryPathInfoLayout(t *testing.T) {
	for _, m := range []uint64{21, 34, 38} {
		out, err := serve(fixtureStore(), hello(m).u64(opQueryPathInfo).str(helloPath).Bytes())
		if err != nil {
			t.Fatal(err)
		}
		d := &dec{t: t, b: out}
		d.handshake(m)
		d.expect("stderr", stderrLast)
		d.expect("valid", 1)
		if s := d.str(); !strings.HasSuffix(s, "-hello-aarch64-unknown-linux-gnu-2.12.drv") {
			t.Errorf("deriver %q", s)
		}
		if s := d.str(); s != "20d7ad401581bbf12bcd6da194a762ce7535dd9f6a0e1ab50b993ad91e531b69" {
			t.Errorf("narHash %q", s)
		}
		d.expect("references", 3)
		prev := ""
		for i := 0; i < 3; i++ {
			s := d.str()
			if s <= prev {
				t.Errorf("references not sorted: %q after %q", s, prev)
			}
			prev = s
		}
		d.expect("registrationTime", 0x6b05dc90)
		d.expect("narSize", 71288)
		d.expect("ultimate", 1)
		d.expect("sigs", 0)
		if s := d.str(); s != "" {
			t.Errorf("ca %q", s)
		}
		d.end()
	}
}

// TestHandshake pins the server's side of the handshake for each client
// generation, and checks it against the version gates.
func TestHandshake(t *testing.T) {
	tests := []struct {
		name string
		m    uint64
		in   *enc
	}{
		{"1.21", 21, hello(21)},
		{"1.26", 26, hello(26)},
		{"1.34", 34, hello(34)},
		{"1.35", 35, hello(35)},
		{"1.37", 37, hello(37)},
		{"1.38", 38, hello(38)},
		{"1.38 with features", 38, hello(38, "realisation-with-path-not-hash", "delete-dead-specific-referrers", "disable-set-options")},
		{"1.255 from the future", 38, (&enc{}).u64(workerMagic1, v(255)).strs().u64(0, 0)},
		{"1.34 with CPU affinity", 34, (&enc{}).u64(workerMagic1, v(34), 1, 3, 0)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// An IsValidPath after the handshake proves the server read
			// exactly the client's handshake bytes.
			in := tt.in.u64(opIsValidPath).str(greetingPath)
			out, err := serve(fixtureStore(), in.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			golden(t, "handshake-"+strings.ReplaceAll(tt.name, " ", "-"), out,
				"go test ./daemonproto -run 'TestHandshake' -update")
			d := &dec{t: t, b: out}
			d.handshake(tt.m)
			d.expect("stderr", stderrLast)
			d.expect("valid", 1)
			d.end()
		})
	}
}

func TestHandshakeReject(t *testing.T) {
	tests := []struct {
		name string
		in   *enc
		sent int // bytes the server wrote before giving up
	}{
		{"bad magic", (&enc{}).u64(0x12345678), 0},
		{"major 2", (&enc{}).u64(workerMagic1, 2<<8|34), 16},
		{"too old", (&enc{}).u64(workerMagic1, v(9)), 16},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := serve(fixtureStore(), tt.in.Bytes())
			if !IsMalformed(err) {
				t.Errorf("ServeConn = %v, want a protocol error", err)
			}
			if len(out) != tt.sent {
				t.Errorf("server wrote %d bytes, want %d", len(out), tt.sent)
			}
		})
	}
	// A client that connects and leaves is not an error.
	if _, err := serve(fixtureStore(), nil); err != nil {
		t.Errorf("empty connection: %v", err)
	}
}

// TestOps pins every op's reply (golden files) and checks its meaning.
// Each request is followed by IsValidPath, whose answer proves the server
// consumed exactly the request.
func TestOps(t *testing.T) {
	opaque := func(m uint64, paths ...string) *enc { return hello(m).u64(opBuildPaths).strs(paths...).u64(0) }
	tests := []struct {
		name  string
		m     uint64
		req   *enc
		check func(d *dec) // reads the op's reply; nil = golden only
	}{
		{"IsValidPath missing", 34, hello(34).u64(opIsValidPath).str(missingPath), func(d *dec) {
			d.expect("stderr", stderrLast)
			d.expect("valid", 0)
		}},
		{"QueryPathInfo at 1.16, missing", 16, hello(16).u64(opQueryPathInfo).str(missingPath), func(d *dec) {
			if msg := d.errorMsg(16); !strings.Contains(msg, "is not valid") {
				t.Errorf("message %q", msg)
			}
		}},
		{"QueryPathInfo at 1.16, valid", 16, hello(16).u64(opQueryPathInfo).str(greetingPath), func(d *dec) {
			d.expect("stderr", stderrLast)
			d.str() // deriver, no valid flag before it
			if h := d.str(); len(h) != 64 {
				t.Errorf("narHash %q", h)
			}
			d.expect("references", 0)
			d.expect("registrationTime", 1700000000)
			d.expect("narSize", 128)
			d.expect("ultimate", 0)
			d.expect("sigs", 0)
			if ca := d.str(); !strings.HasPrefix(ca, "text:sha256:") {
				t.Errorf("ca %q", ca)
			}
		}},
		{"QueryPathInfo at 1.15", 15, hello(15).u64(opQueryPathInfo).str(greetingPath), func(d *dec) {
			d.expect("stderr", stderrLast)
			d.str()
			d.str()
			d.expect("references", 0)
			d.expect("registrationTime", 1700000000)
			d.expect("narSize", 128)
		}},
		{"NarFromPath missing", 34, hello(34).u64(opNarFromPath).str(missingPath), func(d *dec) {
			if msg := d.errorMsg(34); !strings.Contains(msg, missingPath) {
				t.Errorf("message %q", msg)
			}
		}},
		{"QueryValidPaths at 1.26", 26, hello(26).u64(opQueryValidPaths).strs(missingPath, greetingPath, helloPath), func(d *dec) {
			d.expect("stderr", stderrLast)
			d.expect("count", 2)
			if a, b := d.str(), d.str(); a != greetingPath || b != helloPath {
				t.Errorf("valid paths %q %q", a, b)
			}
		}},
		{"QueryValidPaths at 1.27", 27, hello(27).u64(opQueryValidPaths).strs(missingPath, greetingPath).u64(1), func(d *dec) {
			d.expect("stderr", stderrLast)
			d.expect("count", 1)
			if a := d.str(); a != greetingPath {
				t.Errorf("valid path %q", a)
			}
		}},
		{"QueryPathFromHashPart hit", 34, hello(34).u64(opQueryPathFromHashPart).str("433id1qnb29zpay0665622fzcbqy07zp"), func(d *dec) {
			d.expect("stderr", stderrLast)
			if p := d.str(); p != greetingPath {
				t.Errorf("path %q", p)
			}
		}},
		{"QueryPathFromHashPart miss", 34, hello(34).u64(opQueryPathFromHashPart).str("00000000000000000000000000000000"), func(d *dec) {
			d.expect("stderr", stderrLast)
			if p := d.str(); p != "" {
				t.Errorf("path %q", p)
			}
		}},
		{"QueryPathFromHashPart garbage", 34, hello(34).u64(opQueryPathFromHashPart).str("../../etc"), func(d *dec) {
			d.expect("stderr", stderrLast)
			if p := d.str(); p != "" {
				t.Errorf("path %q", p)
			}
		}},
		{"QueryMissing", 34, hello(34).u64(opQueryMissing).strs(greetingPath, missingPath, helloPath+".drv!out"), func(d *dec) {
			d.expect("stderr", stderrLast)
			d.expect("willBuild", 0)
			d.expect("willSubstitute", 0)
			d.expect("unknown", 2)
			if a, b := d.str(), d.str(); a != missingPath || b != helloPath+".drv" {
				t.Errorf("unknown %q %q", a, b)
			}
			d.expect("downloadSize", 0)
			d.expect("narSize", 0)
		}},
		{"BuildPaths valid", 34, opaque(34, greetingPath, helloPath), func(d *dec) {
			d.expect("stderr", stderrLast)
			d.expect("result", 1)
		}},
		{"BuildPaths missing at 1.21", 21, opaque(21, greetingPath, missingPath), func(d *dec) {
			if msg := d.errorMsg(21); !strings.Contains(msg, missingPath) {
				t.Errorf("message %q", msg)
			}
		}},
		{"BuildPaths drv at 1.29", 29, opaque(29, helloPath+".drv"), func(d *dec) {
			if msg := d.errorMsg(29); !strings.Contains(msg, "serves no derivations") {
				t.Errorf("message %q", msg)
			}
		}},
		{"BuildPaths at 1.14 has no mode", 14, hello(14).u64(opBuildPaths).strs(greetingPath), func(d *dec) {
			d.expect("stderr", stderrLast)
			d.expect("result", 1)
		}},
		{"BuildPathsWithResults at 1.28", 28, hello(28).u64(opBuildPathsWithResults).strs(missingPath).u64(0), func(d *dec) {
			d.expect("stderr", stderrLast)
			d.expect("results", 1)
			d.str()
			d.expect("status", buildStatusNoSubstituters)
			if msg := d.str(); !strings.Contains(msg, "no substituter") {
				t.Errorf("message %q", msg)
			}
			d.expect("builtOutputs", 0)
		}},
		{"BuildPathsWithResults at 1.29", 29, hello(29).u64(opBuildPathsWithResults).strs(greetingPath).u64(0), func(d *dec) {
			d.expect("stderr", stderrLast)
			d.expect("results", 1)
			d.str()
			d.expect("status", buildStatusAlreadyValid)
			d.str()
			for _, f := range []string{"timesBuilt", "isNonDeterministic", "startTime", "stopTime", "builtOutputs"} {
				d.expect(f, 0)
			}
		}},
		{"BuildPathsWithResults at 1.37", 37, hello(37).u64(opBuildPathsWithResults).strs(greetingPath, helloPath+".drv!*").u64(0), func(d *dec) {
			d.expect("stderr", stderrLast)
			d.expect("results", 2)
			for i, want := range []uint64{buildStatusAlreadyValid, buildStatusNoSubstituters} {
				d.str()
				d.expect("status", want)
				d.str()
				for _, f := range []string{"timesBuilt", "isNonDeterministic", "startTime", "stopTime", "cpuUser", "cpuSystem", "builtOutputs"} {
					d.expect(fmt.Sprint(f, i), 0)
				}
			}
		}},
		{"SetOptions", 34, hello(34).u64(opSetOptions, 0, 0, 0, 3, 1, 0, 1, 7, 0, 0, 2, 1).u64(2).str("store", "unix://x", "substituters", ""), func(d *dec) {
			d.expect("stderr", stderrLast)
		}},
		{"SetOptions at 1.11", 11, hello(11).u64(opSetOptions, 0, 0, 0, 3, 1, 0, 1, 7, 0, 0, 2, 1), func(d *dec) {
			d.expect("stderr", stderrLast)
		}},
		{"EnsurePath valid", 34, hello(34).u64(opEnsurePath).str(greetingPath), func(d *dec) {
			d.expect("stderr", stderrLast)
			d.expect("result", 1)
		}},
		{"EnsurePath missing at 1.25", 25, hello(25).u64(opEnsurePath).str(missingPath), func(d *dec) {
			if msg := d.errorMsg(25); !strings.Contains(msg, "does not exist") {
				t.Errorf("message %q", msg)
			}
		}},
		{"EnsurePath missing at 1.26", 26, hello(26).u64(opEnsurePath).str(missingPath), func(d *dec) {
			if msg := d.errorMsg(26); !strings.Contains(msg, "does not exist") {
				t.Errorf("message %q", msg)
			}
		}},
		{"QueryDeriver", 34, hello(34).u64(opQueryDeriver).str(helloPath), func(d *dec) {
			d.expect("stderr", stderrLast)
			if s := d.str(); !strings.HasSuffix(s, ".drv") {
				t.Errorf("deriver %q", s)
			}
		}},
		{"QueryDeriver missing", 34, hello(34).u64(opQueryDeriver).str(missingPath), func(d *dec) {
			d.errorMsg(34)
		}},
		{"QueryPathHash", 34, hello(34).u64(opQueryPathHash).str(helloPath), func(d *dec) {
			d.expect("stderr", stderrLast)
			if s := d.str(); s != "20d7ad401581bbf12bcd6da194a762ce7535dd9f6a0e1ab50b993ad91e531b69" {
				t.Errorf("hash %q", s)
			}
		}},
		{"QueryReferences", 34, hello(34).u64(opQueryReferences).str(helloPath), func(d *dec) {
			d.expect("stderr", stderrLast)
			d.expect("references", 3)
			d.str()
			d.str()
			d.str()
		}},
		{"QueryAllValidPaths", 34, hello(34).u64(opQueryAllValidPaths), func(d *dec) {
			d.expect("stderr", stderrLast)
			d.expect("count", 2)
			if a, b := d.str(), d.str(); a != greetingPath || b != helloPath {
				t.Errorf("paths %q %q", a, b)
			}
		}},
		{"HasSubstitutes", 34, hello(34).u64(opHasSubstitutes).str(missingPath), lastThen(0)},
		{"QueryReferrers", 34, hello(34).u64(opQueryReferrers).str(greetingPath), lastThen(0)},
		{"QueryValidDerivers", 34, hello(34).u64(opQueryValidDerivers).str(helloPath), lastThen(0)},
		{"QueryDerivationOutputs", 34, hello(34).u64(opQueryDerivationOutputs).str(helloPath), lastThen(0)},
		{"QueryDerivationOutputNames", 34, hello(34).u64(opQueryDerivationOutputNames).str(helloPath), lastThen(0)},
		{"QueryDerivationOutputMap", 34, hello(34).u64(opQueryDerivationOutputMap).str(helloPath), lastThen(0)},
		{"QuerySubstitutablePathInfo", 34, hello(34).u64(opQuerySubstitutablePathInfo).str(missingPath), lastThen(0)},
		{"QuerySubstitutablePathInfos at 1.21", 21, hello(21).u64(opQuerySubstitutablePathInfos).strs(missingPath, greetingPath), lastThen(0)},
		{"QuerySubstitutablePathInfos at 1.22", 22, hello(22).u64(opQuerySubstitutablePathInfos).u64(1).str(missingPath, ""), lastThen(0)},
		{"QuerySubstitutablePaths", 34, hello(34).u64(opQuerySubstitutablePaths).strs(missingPath), lastThen(0)},
		{"AddTempRoot", 34, hello(34).u64(opAddTempRoot).str(greetingPath), lastThen(1)},
		{"AddIndirectRoot", 34, hello(34).u64(opAddIndirectRoot).str("/home/u/result"), lastThen(1)},
		{"SyncWithGC", 34, hello(34).u64(opSyncWithGC), lastThen(1)},
		{"OptimiseStore", 34, hello(34).u64(opOptimiseStore), lastThen(1)},
		{"FindRoots", 34, hello(34).u64(opFindRoots), lastThen(0)},
		{"QueryRealisation at 1.30", 30, hello(30).u64(opQueryRealisation).str("sha256:0000!out"), lastThen(0)},
		{"QueryRealisation at 1.31", 31, hello(31).u64(opQueryRealisation).str("sha256:0000!out"), lastThen(0)},
		{"AddMultipleToStore count 0 in chunks", 34,
			hello(34).u64(opAddMultipleToStore, 0, 0).frames([]byte{0, 0, 0}, []byte{0, 0, 0, 0, 0}), func(d *dec) {
				d.expect("stderr", stderrLast)
			}},
		{"store failure", 34, hello(34).u64(opQueryPathInfo).str(failingPath), func(d *dec) {
			if msg := d.errorMsg(34); !strings.Contains(msg, errInjected.Error()) {
				t.Errorf("message %q", msg)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := tt.req.u64(opIsValidPath).str(greetingPath)
			out, err := serve(fixtureStore(), in.Bytes())
			if err != nil {
				t.Fatal(err)
			}
			golden(t, "op-"+strings.NewReplacer(" ", "-", ",", "", ".", "_").Replace(tt.name), out,
				"go test ./daemonproto -run 'TestOps' -update")
			d := &dec{t: t, b: out}
			d.handshake(tt.m)
			if tt.check != nil {
				tt.check(d)
			}
			d.expect("stderr", stderrLast)
			d.expect("valid", 1)
			d.end()
		})
	}
}

func lastThen(n uint64) func(d *dec) {
	return func(d *dec) {
		d.t.Helper()
		d.expect("stderr", stderrLast)
		d.expect("reply", n)
	}
}
