// Package sshserver is the SSH front end of decross-store.
//
// Nix reaches an ssh-ng:// store by running `nix-daemon --stdio` on the
// remote host over SSH and speaking the worker protocol on the command's
// stdin and stdout. This package accepts exactly that: public-key
// authenticated connections, session channels, and an exec request for
// nix-daemon --stdio, which it hands to a Handler. Everything an ordinary
// sshd would also offer (shells, ptys, subsystems, forwarding) is refused,
// so the server never runs a program on behalf of a client.
//
// Connections in the handshake hold slots of their own (MaxStartups),
// apart from authenticated ones, and one address (one /64 for IPv6) may
// hold only a share of them, so that connections which never authenticate
// cannot lock real clients out. A connection that finds no slot free waits
// for one in a bounded queue, served in turn by address, instead of being
// reset; past the queue's bounds it is refused with an SSH disconnect
// message that says why. An authenticated client beyond MaxConnections
// likewise waits for a slot. A session holds its slot until the client
// acknowledges its end, and a connection left without sessions is closed. The from= and expiry-time= restrictions of
// authorized_keys are enforced; options the server cannot honour, and
// certificates, make the file fail to load.
//
// The lifecycle follows net/http: Serve blocks until the listener fails or
// the server is stopped, Shutdown drains active sessions, Close cuts them.
package sshserver
