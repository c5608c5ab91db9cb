package main

import (
	"context"
	"errors"
	"io"
)

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("serve: not available yet")
}

func runKeygen(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("keygen: not available yet")
}
