// Command decross-store serves cross-built Nix store paths as their native
// counterparts over ssh-ng. See the README for usage.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"syscall"
)

type command struct {
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
	summary string
}

func commands() map[string]command {
	return map[string]command{
		"serve":    {runServe, "serve native store paths over ssh-ng and as an HTTP binary cache"},
		"keygen":   {runKeygen, "generate a Nix signing key pair"},
		"map":      {runMap, "build a mapping file from native and cross derivations"},
		"check":    {runCheck, "dry run: what a mapping would serve, and every problem"},
		"prefetch": {runPrefetch, "prepare every servable path into the cache ahead of the first client"},
		"publish":  {runPublish, "write every servable path into a static binary cache (file:// or s3://)"},
		"version":  {runVersion, "print the version of this build"},
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: decross-store <command> [flags]\n\ncommands:")
	cmds := commands()
	names := make([]string, 0, len(cmds))
	for n := range cmds {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, cmds[n].summary)
	}
}

func main() {
	if len(os.Args) < 2 {
		usage(os.Stderr)
		os.Exit(2)
	}
	cmd, ok := commands()[os.Args[1]]
	if !ok {
		if os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
			usage(os.Stdout)
			return
		}
		fmt.Fprintf(os.Stderr, "decross-store: unknown command %q\n", os.Args[1])
		usage(os.Stderr)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The first signal asks the command to stop cleanly; a second one
	// kills it, even if it is stuck where no context reaches (opening a
	// FIFO, say).
	go func() {
		<-ctx.Done()
		stop()
	}()
	if err := cmd.run(ctx, os.Args[2:], os.Stdout, os.Stderr); err != nil && !errors.Is(err, errHelp) {
		fmt.Fprintf(os.Stderr, "decross-store %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

// errHelp ends a command that printed its usage because -h was given.
var errHelp = errors.New("help requested")

// parseFlags parses args into fs and rejects positional arguments; -h
// returns errHelp, which main treats as success. A command with a --config
// flag then takes what the command line left unset from that file.
func parseFlags(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return errHelp
		}
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if f := fs.Lookup(configFlag); f != nil && f.Value.String() != "" {
		return applyConfig(fs, f.Value.String(), configKeys())
	}
	return nil
}
