#!/bin/sh
# Regenerates the executables of this directory (Debian 12: gcc and
# gcc-aarch64-linux-gnu). Tests use them as real x86_64 and aarch64 files.
set -eu
cd "$(dirname "$0")"
flags="-Os -static -nostdlib -fno-asynchronous-unwind-tables -Wl,--build-id=none -s"
gcc $flags -o hello-x86_64 hello.c
aarch64-linux-gnu-gcc $flags -o hello-aarch64 hello.c
