package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

var waitedRE = regexp.MustCompile(`(?m)msg="connection opened" .*waited=`)

// TestConcurrentClients starts 64 nix clients at the same moment from one
// address against the server with its default limits, as a CI runner with
// parallel jobs or a host behind NAT does: half copy a closure, half query
// path info. Every one must succeed; connections beyond the handshake
// slots wait for one instead of being reset.
func TestConcurrentClients(t *testing.T) {
	RequireNix(t)
	const clients = 64
	work := t.TempDir()
	ex := BuildExample(t, filepath.Join(work, "example"))
	mappingFile, _ := servableMapping(t, ex, work)
	srv := startServer(t, mappingFile)
	url := srv.url(srv.clientKey)
	ctx := testContext(t, 5*time.Minute)
	hello := ex.Get(t, "hello").Native

	type client struct {
		name string
		args []string
		dest string // the store a copy goes to
	}
	var all []client
	for i := range clients {
		if i%2 == 0 {
			dest := filepath.Join(work, fmt.Sprintf("dest-%d", i))
			t.Cleanup(func() { makeWritable(t, dest) })
			all = append(all, client{fmt.Sprintf("copy %d", i), []string{"copy", "--from", url, "--to", dest, hello}, dest})
		} else {
			all = append(all, client{fmt.Sprintf("path-info %d", i), []string{"path-info", "--store", url, "-r", hello}, ""})
		}
	}

	start := make(chan struct{})
	errs := make(chan error, clients)
	var ready sync.WaitGroup
	ready.Add(clients)
	for _, c := range all {
		go func() {
			ready.Done()
			<-start
			out, _, err := srv.nix(ctx, "require-sigs = true", "nix", c.args...)
			switch {
			case err != nil:
				err = fmt.Errorf("%s: %w", c.name, err)
			case c.dest == "" && !strings.Contains(out, hello):
				err = fmt.Errorf("%s: output does not list %s:\n%s", c.name, hello, out)
			case c.dest != "":
				if _, serr := os.Stat(filepath.Join(c.dest, hello)); serr != nil {
					err = fmt.Errorf("%s: nothing copied: %w", c.name, serr)
				}
			}
			errs <- err
		}()
	}
	ready.Wait()
	began := time.Now()
	close(start)
	failed := 0
	for range clients {
		if err := <-errs; err != nil {
			failed++
			t.Error(err)
		}
	}
	logs := srv.logs()
	t.Logf("%d clients in %v: %d waited for a handshake slot, %d failed",
		clients, time.Since(began).Round(time.Millisecond), len(waitedRE.FindAllString(logs, -1)), failed)
	if n := strings.Count(logs, "refused"); n > 0 {
		t.Errorf("the server refused %d connections or sessions", n)
	}
}
