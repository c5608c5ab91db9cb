// Package daemonproto speaks the Nix daemon worker protocol, the byte
// protocol behind nix-daemon --stdio, unix:// and ssh-ng:// stores.
//
// The server side (Server.ServeConn) answers read requests from a Store and
// refuses every write while consuming the request, so that a client talking
// to a read-only store gets a clear error and keeps a usable connection. It
// knows nothing about transports: an SSH channel, stdio or a unix socket all
// work.
//
// The client side (NewClient) reads metadata and NARs from an upstream
// nix-daemon.
//
// Every length and count that comes off the wire is capped before anything
// is allocated, and uploads are drained through a bounded buffer.
package daemonproto
