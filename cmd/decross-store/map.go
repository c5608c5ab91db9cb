package main

import (
	"context"
	"errors"
	"io"
)

// Placeholder until the derivation pairing lands; replaced by the real command.
func runMap(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("map: not available yet")
}

func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("check: not available yet")
}
