package daemonproto

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/decross-store/decross-store/pathinfo"
)

// memStore is a Store held in memory, loadable from a JSON fixture so a
// child process can serve the same content.
type memStore struct {
	Paths map[string]memPath
	// FailPath makes every lookup of that path fail, to exercise store errors.
	FailPath string
}

type memPath struct {
	Info pathinfo.PathInfo
	NAR  []byte
}

func (s *memStore) add(info pathinfo.PathInfo, nar []byte) {
	if s.Paths == nil {
		s.Paths = map[string]memPath{}
	}
	s.Paths[info.Path] = memPath{Info: info, NAR: nar}
}

var errInjected = errors.New("injected store failure")

func (s *memStore) QueryPathInfo(_ context.Context, p string) (*pathinfo.PathInfo, error) {
	if p == s.FailPath {
		return nil, errInjected
	}
	mp, ok := s.Paths[p]
	if !ok {
		return nil, nil
	}
	return mp.Info.Clone(), nil
}

func (s *memStore) QueryPathFromHashPart(_ context.Context, h string) (string, error) {
	for p := range s.Paths {
		if strings.HasPrefix(p, storePrefix+h+"-") {
			return p, nil
		}
	}
	return "", nil
}

func (s *memStore) NarFromPath(_ context.Context, p string) (io.ReadCloser, error) {
	if p == s.FailPath {
		return nil, errInjected
	}
	mp, ok := s.Paths[p]
	if !ok {
		return nil, fmt.Errorf("path '%s' is not valid", p)
	}
	return io.NopCloser(bytes.NewReader(mp.NAR)), nil
}

func (s *memStore) ValidPaths(context.Context) ([]string, error) {
	var out []string
	for p := range s.Paths {
		out = append(out, p)
	}
	sort.Strings(out)
	return out, nil
}

func (s *memStore) save(file string) error {
	b, err := json.Marshal(s)
	if err != nil {
		return err
	}
	return os.WriteFile(file, b, 0o644)
}

func loadMemStore(file string) (*memStore, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	s := &memStore{}
	return s, json.Unmarshal(b, s)
}

const (
	greetingPath = "/nix/store/433id1qnb29zpay0665622fzcbqy07zp-greeting.txt"
	helloPath    = "/nix/store/dz74wzka8397lnd18h4v5lvvi544dsv4-hello-aarch64-unknown-linux-gnu-2.12"
	missingPath  = "/nix/store/00000000000000000000000000000000-nope"
	failingPath  = "/nix/store/11111111111111111111111111111111-broken"
)

// greetingNAR is `nix-store --dump` of a file holding "hello wire\n" (T5 in
// the protocol notes).
var greetingNAR = []byte("\x0d\x00\x00\x00\x00\x00\x00\x00nix-archive-1\x00\x00\x00" +
	"\x01\x00\x00\x00\x00\x00\x00\x00(\x00\x00\x00\x00\x00\x00\x00" +
	"\x04\x00\x00\x00\x00\x00\x00\x00type\x00\x00\x00\x00" +
	"\x07\x00\x00\x00\x00\x00\x00\x00regular\x00" +
	"\x08\x00\x00\x00\x00\x00\x00\x00contents" +
	"\x0b\x00\x00\x00\x00\x00\x00\x00hello wire\n\x00\x00\x00\x00\x00" +
	"\x01\x00\x00\x00\x00\x00\x00\x00)\x00\x00\x00\x00\x00\x00\x00")

// fixtureStore holds a CA path with a real NAR, an input-addressed path
// shaped like T3 of the protocol notes, and a path whose lookups fail.
func fixtureStore() *memStore {
	s := &memStore{FailPath: failingPath}
	s.add(pathinfo.PathInfo{
		Path:             greetingPath,
		NarHash:          sha256.Sum256(greetingNAR),
		NarSize:          uint64(len(greetingNAR)),
		RegistrationTime: 1700000000,
		CA:               "text:sha256:1yq0ymqbmhr3ssbgcy0xnl62d1pm0nd8ryzgn5zl0dnb8qzmz9ga",
	}, greetingNAR)
	h, err := pathinfo.ParseNarHash("20d7ad401581bbf12bcd6da194a762ce7535dd9f6a0e1ab50b993ad91e531b69")
	if err != nil {
		panic(err)
	}
	s.add(pathinfo.PathInfo{
		Path:    helloPath,
		Deriver: "/nix/store/aarb5i4jlyyz9jxxq5x7hndnn7hbjbnd-hello-aarch64-unknown-linux-gnu-2.12.drv",
		NarHash: h,
		NarSize: 71288,
		References: []string{
			"/nix/store/3m5g8y6pc3mm4s2h7i0bb9q4bd0iv3s5-hello.c",
			"/nix/store/4nlgxhb09sdr51nc9hdm8az5b08vzkgx-glibc-aarch64-unknown-linux-gnu-2.35-163",
			"/nix/store/dz74wzka8397lnd18h4v5lvvi544dsv4-hello-aarch64-unknown-linux-gnu-2.12",
		},
		RegistrationTime: 0x6b05dc90,
		Ultimate:         true,
	}, nil)
	return s
}
