package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/pelletier/go-toml/v2"
	"github.com/pelletier/go-toml/v2/unstable"
)

// configFlag names the flag that points at a configuration file. Every
// command with this flag reads the file in parseFlags.
const configFlag = "config"

// maxConfigFile bounds a configuration file: a wrong path (a log, a
// device) must not be read into memory whole.
const maxConfigFile = 1 << 20

// configKeys is every key a configuration file may hold: the flags of every
// command that reads one. One file can then configure both serve and
// prefetch; each command applies its own flags and ignores the others'.
func configKeys() map[string]bool {
	serve, _ := newServeFlags(io.Discard)
	prefetch, _ := newPrefetchFlags(io.Discard)
	publish, _ := newPublishFlags(io.Discard)
	keys := make(map[string]bool)
	for _, fs := range []*flag.FlagSet{serve, prefetch, publish} {
		fs.VisitAll(func(f *flag.Flag) { keys[f.Name] = true })
	}
	delete(keys, configFlag)
	return keys
}

// setting is one top-level key of a configuration file.
type setting struct {
	key   string
	line  int
	value any // as go-toml decodes it; nil for a table
}

// readConfig parses a TOML file into its top-level settings, in file order.
func readConfig(path string) ([]setting, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxConfigFile+1))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	if len(data) > maxConfigFile {
		return nil, fmt.Errorf("config %s: larger than %d bytes", path, maxConfigFile)
	}
	// The decoder checks the whole document (syntax, duplicate keys) and
	// gives the values; the parser below only adds where each key is.
	var values map[string]any
	if err := toml.Unmarshal(data, &values); err != nil {
		var de *toml.DecodeError
		if errors.As(err, &de) {
			row, col := de.Position()
			return nil, fmt.Errorf("config %s:%d:%d: %s", path, row, col, strings.TrimPrefix(de.Error(), "toml: "))
		}
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	var p unstable.Parser
	p.Reset(data)
	var out []setting
	for p.NextExpression() {
		e := p.Expression()
		switch e.Kind {
		case unstable.Table, unstable.ArrayTable:
			// Settings are top-level keys; a table would silently hide
			// the keys in it, whatever its name.
			name, line := keyName(&p, e)
			return nil, fmt.Errorf("config %s:%d: table [%s]: settings are top-level keys (the long flag names), not tables", path, line, name)
		case unstable.KeyValue:
			name, line := keyName(&p, e)
			s := setting{key: name, line: line}
			if !strings.Contains(name, ".") {
				s.value = values[name]
			}
			out = append(out, s)
		}
	}
	if err := p.Error(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err) // the decoder above already accepted it
	}
	return out, nil
}

// keyName returns the dotted key of a key-value or table expression and
// the line it starts on.
func keyName(p *unstable.Parser, e *unstable.Node) (string, int) {
	var parts []string
	line := 0
	for it := e.Key(); it.Next(); {
		k := it.Node()
		if line == 0 {
			line = p.Shape(k.Raw).Start.Line
		}
		parts = append(parts, string(k.Data))
	}
	return strings.Join(parts, "."), line
}

// applyConfig sets the flags of fs that the command line left unset from
// the file at path. known lists the keys a file may hold (configKeys): a
// key outside it is an error, a known key that is not a flag of fs is
// ignored.
func applyConfig(fs *flag.FlagSet, path string, known map[string]bool) error {
	settings, err := readConfig(path)
	if err != nil {
		return err
	}
	onCommandLine := make(map[string]bool)
	fs.Visit(func(f *flag.Flag) { onCommandLine[f.Name] = true })
	for _, s := range settings {
		if s.key == configFlag {
			return fmt.Errorf("config %s:%d: key %q: a configuration file cannot name another one", path, s.line, s.key)
		}
		f := fs.Lookup(s.key)
		if f == nil {
			if known[s.key] {
				continue
			}
			return fmt.Errorf("config %s:%d: unknown key %q (the keys are the long flag names, see decross-store %s -h)", path, s.line, s.key, fs.Name())
		}
		// Checked even when the command line wins: the file is wrong
		// either way, and will be used without that flag some day.
		v, err := flagText(f, s.value)
		if err != nil {
			return fmt.Errorf("config %s:%d: key %q: %w", path, s.line, s.key, err)
		}
		if onCommandLine[s.key] {
			continue
		}
		if err := fs.Set(s.key, v); err != nil {
			return fmt.Errorf("config %s:%d: key %q: invalid value %q: %w", path, s.line, s.key, v, err)
		}
	}
	return nil
}

// flagText turns a TOML value into the text the flag's Set parses, so that
// any flag type works (sizes, durations, custom values). Plain string and
// boolean flags insist on the matching TOML type, so that a quoting
// mistake is caught here rather than as a strange value later.
func flagText(f *flag.Flag, v any) (string, error) {
	var want string
	if g, ok := f.Value.(flag.Getter); ok {
		switch g.Get().(type) {
		case string:
			want = "a string"
		case bool:
			want = "a boolean"
		case time.Duration:
			want = `a string such as "30s"`
		}
	}
	var text, got string
	switch v := v.(type) {
	case string:
		text, got = v, "a string"
	case bool:
		text, got = strconv.FormatBool(v), "a boolean"
	case int64:
		text, got = strconv.FormatInt(v, 10), "an integer"
	case float64:
		text, got = strconv.FormatFloat(v, 'g', -1, 64), "a float"
	case nil:
		return "", errors.New("a table, want a single value")
	case []any:
		return "", errors.New("an array, want a single value")
	case map[string]any:
		return "", errors.New("a table, want a single value")
	case time.Time, toml.LocalDate, toml.LocalTime, toml.LocalDateTime:
		return "", errors.New("a date or time, want a string, number or boolean")
	default:
		return "", fmt.Errorf("unsupported value of type %T", v)
	}
	mismatch := false
	switch want {
	case "":
	case "a boolean":
		mismatch = got != want
	default: // strings and durations
		mismatch = got != "a string"
	}
	if mismatch {
		return "", fmt.Errorf("%s, want %s", got, want)
	}
	return text, nil
}
