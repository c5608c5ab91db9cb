package daemonproto

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/decross-store/decross-store/internal/fuzzseed"
)

// fuzzVersions are the client versions FuzzServeConn picks from with the
// first input byte.
var fuzzVersions = []uint64{16, 21, 22, 23, 25, 26, 27, 29, 31, 34, 36, 37, 38}

// fuzzSeeds are real requests: every op of TestOps and TestRefusals.
func fuzzSeeds() [][]byte {
	nar := greetingNAR
	reqs := map[uint64][]*enc{
		34: {
			(&enc{}).u64(opQueryPathInfo).str(helloPath),
			(&enc{}).u64(opNarFromPath).str(greetingPath),
			(&enc{}).u64(opQueryValidPaths).strs(greetingPath, missingPath).u64(0),
			(&enc{}).u64(opQueryMissing).strs(greetingPath, helloPath+".drv!out"),
			(&enc{}).u64(opBuildPathsWithResults).strs(greetingPath, missingPath).u64(0),
			(&enc{}).u64(opSetOptions, 0, 0, 0, 3, 1, 0, 1, 7, 0, 0, 2, 1).u64(1).str("a", "b"),
			(&enc{}).u64(opAddMultipleToStore, 0, 0).frames(make([]byte, 8)),
			pathInfoFields((&enc{}).u64(opAddToStoreNar).str(greetingPath), 128).u64(0, 0).frames(nar),
			(&enc{}).u64(opBuildDerivation).str(helloPath+".drv").u64(1).str("out", helloPath, "", "").
				strs().str("x86_64-linux", "/bin/sh").strs("-c").u64(1).str("k", "v").u64(0),
			(&enc{}).u64(opCollectGarbage, 0).strs().u64(0, 0, 0, 0, 0),
			(&enc{}).u64(opAddTextToStore).str("x", "text").strs(),
			(&enc{}).u64(opQueryPathFromHashPart).str("433id1qnb29zpay0665622fzcbqy07zp"),
		},
		21: {
			(&enc{}).u64(opAddToStore).str("x").u64(0, 1).str("sha256").write(dirNAR()),
			(&enc{}).u64(opQuerySubstitutablePathInfos).strs(greetingPath),
			(&enc{}).u64(opEnsurePath).str(missingPath),
		},
		38: {
			(&enc{}).u64(opBuildPathsWithResults).strs(greetingPath).u64(0),
			(&enc{}).u64(opRegisterDrvOutput).str("{}"),
		},
	}
	var seeds [][]byte
	for m, list := range reqs {
		idx := -1
		for i, fv := range fuzzVersions {
			if fv == m {
				idx = i
			}
		}
		for _, r := range list {
			seeds = append(seeds, append([]byte{byte(idx)}, r.Bytes()...))
		}
	}
	return seeds
}

// FuzzServeConn feeds arbitrary requests after a valid handshake. The
// server must not panic, must stop at the end of input, and must keep its
// allocations within the (small) limits set here.
func FuzzServeConn(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		m := fuzzVersions[int(data[0])%len(fuzzVersions)]
		in := append(hello(m).Bytes(), data[1:]...)
		var out bytes.Buffer
		srv := &Server{
			Store:           fixtureStore(),
			MaxStringLen:    4096,
			MaxListLen:      256,
			MaxRequestBytes: 64 << 10,
			MaxDrainLen:     1 << 20,
		}
		r := bytes.NewReader(in)
		err := srv.ServeConn(context.Background(), stdio{r, &out})
		if err == nil && r.Len() != 0 {
			t.Fatalf("clean end with %d bytes unread", r.Len())
		}
		d := &dec{t: t, b: out.Bytes()}
		d.handshake(m)
	})
}

// FuzzClientReply feeds arbitrary daemon replies to QueryPathInfo.
func FuzzClientReply(f *testing.F) {
	f.Add(fuzzClientSeeds[0])
	for _, s := range fuzzClientSeeds[1:] {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		conn := &replyConn{Reader: bytes.NewReader(append(daemonHello(34).Bytes(), data...))}
		c, err := NewClient(context.Background(), conn)
		if err != nil {
			t.Fatal(err)
		}
		info, err := c.QueryPathInfo(context.Background(), greetingPath)
		if err == nil && info != nil && info.Path != greetingPath {
			t.Fatalf("path info for %q", info.Path)
		}
	})
}

var fuzzClientSeeds = [][]byte{
	(&enc{}).u64(stderrLast, 0).Bytes(),
	pathInfoFields((&enc{}).u64(stderrNext).str("log\n").u64(stderrLast, 1), 128).Bytes(),
	(&enc{}).u64(stderrError).str("Error").u64(0).str("Error", "\x1b[31mno\x1b[0m").u64(0, 1, 0).str("trace").Bytes(),
	(&enc{}).u64(stderrStartActivity, 1, 0, 0).str("x").u64(1, 1).str("f").u64(0, stderrStopActivity, 1, stderrLast, 0).Bytes(),
}

// TestFuzzSeeds checks the committed seed corpora, so that `go test -fuzz`
// starts from real requests; regenerate them with
// go test ./daemonproto -run TestFuzzSeeds -update.
func TestFuzzSeeds(t *testing.T) {
	named := func(seeds [][]byte) map[string][]byte {
		m := make(map[string][]byte, len(seeds))
		for i, s := range seeds {
			m[fmt.Sprintf("seed-%02d", i)] = s
		}
		return m
	}
	seeds := fuzzSeeds()
	// Map iteration order varies; sort for stable file names.
	slices.SortFunc(seeds, bytes.Compare)
	const regen = "go test ./daemonproto -run TestFuzzSeeds -update"
	fuzzseed.Check(t, "FuzzServeConn", named(seeds), *update, regen)
	fuzzseed.Check(t, "FuzzClientReply", named(fuzzClientSeeds), *update, regen)
}
