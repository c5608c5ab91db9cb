// Package upstream is where decross-store reads cross builds from. Reader
// is the one interface the store, the mapping tools and publishing read
// through; Daemon implements it over a local nix-daemon's unix socket
// (path metadata through a small pool of reused connections, each NAR on
// a pooled connection that returns to the pool once the NAR has been read
// to its end). WalkClosure visits the closure of some paths in a
// deterministic order, asking for a level's path infos concurrently.
package upstream
