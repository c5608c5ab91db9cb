package testenv

import (
	"fmt"
	"os"
	"testing"
)

// InCI reports whether the tests run in CI (CI=true, as scripts/test and
// .ci/run set it).
func InCI() bool { return os.Getenv("CI") == "true" }

// SkipOrFail skips t with the formatted message, or fails it in CI.
func SkipOrFail(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if InCI() {
		t.Fatalf("%s (CI=true, so this is an error)", msg)
	}
	t.Skip(msg)
}
