// Package upstream reads store paths from a local nix-daemon over its unix
// socket: path metadata through a small pool of reused connections, NARs
// each on a connection of their own. It is safe for concurrent use.
package upstream
