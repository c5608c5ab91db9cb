package e2e

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestCacheMaxSize serves the example's closure from a cache bounded to
// half of it: the copy verifies (Nix checks every NAR against its signed
// narHash), the directory stays within the bound plus one entry, and the
// paths evicted meanwhile are rebuilt on demand by a second copy, made
// while a `serve --stdio` session shares the cache directory.
func TestCacheMaxSize(t *testing.T) {
	RequireNix(t)
	work := t.TempDir()
	ex := BuildExample(t, filepath.Join(work, "example"))
	mappingFile, _ := servableMapping(t, ex, work)
	main := ex.Get(t, Main)
	ctx := testContext(t, 5*time.Minute)

	// Served NARs are as long as the cross ones, or shorter (scripts lose
	// the host suffix of the paths they name).
	out, err := nixCommand(ctx, "nix", "path-info", "--json", "-r", main.Cross)
	if err != nil {
		t.Fatal(err)
	}
	var total, largest int64
	infos := pathInfoJSON(t, out)
	for _, info := range infos {
		total += int64(info.NarSize)
		largest = max(largest, int64(info.NarSize))
	}
	bound := total / 2
	const metadata = 16 << 10 // an entry's metadata, generously
	cache := filepath.Join(work, "cache")
	size := func() (bytes int64, entries int) {
		t.Helper()
		des, err := os.ReadDir(cache)
		if err != nil {
			t.Fatal(err)
		}
		for _, de := range des {
			fi, err := de.Info()
			if err != nil {
				t.Fatal(err)
			}
			bytes += fi.Size()
			if strings.HasSuffix(de.Name(), ".json") {
				entries++
			}
		}
		return bytes, entries
	}

	srv := startServer(t, mappingFile, "--cache-dir", cache, "--cache-max-size", strconv.FormatInt(bound, 10))
	url := srv.url(srv.clientKey)
	copyTo := func(url, dest string) error {
		t.Cleanup(func() { makeWritable(t, dest) })
		_, _, err := srv.nix(ctx, "require-sigs = true", "nix", "copy", "--from", url, "--to", dest, main.Native)
		if err == nil {
			_, err = os.Stat(filepath.Join(dest, main.Native))
		}
		return err
	}
	if err := copyTo(url, filepath.Join(work, "dest-1")); err != nil {
		t.Fatal(err)
	}
	bytes, entries := size()
	t.Logf("closure of %d paths, %d NAR bytes, the largest %d; bound %d; the cache holds %d entries, %d bytes", len(infos), total, largest, bound, entries, bytes)
	if bytes > bound+largest+metadata {
		t.Errorf("the cache holds %d bytes, more than the bound %d plus one entry (%d)", bytes, bound, largest+metadata)
	}
	if entries >= len(infos) {
		t.Errorf("the cache holds %d entries of a closure of %d bigger than its bound: nothing evicted", entries, len(infos))
	}
	rewrites := strings.Count(srv.logs(), "msg=\"rewrote path\"")

	// Evicted paths are rebuilt, by the server and by a --stdio session
	// beside it, each evicting what it needs to.
	bin := serverBinary(t)
	prog := strings.Join([]string{bin, "serve", "--mapping", mappingFile, "--signing-key", filepath.Join(srv.dir, "secret.key"),
		"--cache-dir", cache, "--cache-max-size", strconv.FormatInt(bound, 10)}, " ")
	stdioURL := "ssh-ng://localhost?remote-program=" + strings.ReplaceAll(prog, " ", "%20")
	errs := make(chan error, 2)
	go func() { errs <- copyTo(url, filepath.Join(work, "dest-2")) }()
	go func() { errs <- copyTo(stdioURL, filepath.Join(work, "dest-3")) }()
	for range 2 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if again := strings.Count(srv.logs(), "msg=\"rewrote path\""); again == rewrites {
		t.Error("the server rewrote nothing for the second copy: evicted paths were not rebuilt")
	}
	if strings.Contains(srv.logs(), "level=ERROR") {
		t.Errorf("the server logged errors:\n%s", srv.logs())
	}
	// Each process keeps the bound as far as it knows the directory, which
	// it reads again at most every 10 s: two writing at once may together
	// exceed it by what the other wrote since, never by more than the
	// closure.
	if bytes, _ := size(); bytes > total+2*metadata*int64(len(infos)) {
		t.Errorf("the cache holds %d bytes after two processes wrote to it, more than the closure's %d", bytes, total)
	}
}
