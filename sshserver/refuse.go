package sshserver

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"golang.org/x/crypto/ssh"
)

// Reason codes of SSH_MSG_DISCONNECT (RFC 4253, section 11.1).
const (
	msgDisconnect               = 1
	disconnectByApplication     = 11
	disconnectTooManyConnection = 12
)

const (
	// maxLingering caps the refused connections drained at once from the
	// accept loop; beyond it, a refused connection is closed right after
	// the message is written, so a flood costs no goroutines.
	maxLingering = 64
	// lingerTimeout bounds the drain of a refused connection: a client
	// that got the message hangs up at once.
	lingerTimeout = 2 * time.Second
	// maxLingerBytes is what a refused client may send before it is cut.
	maxLingerBytes = 64 << 10
)

// refuseFromAccept refuses nc without holding up the accept loop.
func (s *Server) refuseFromAccept(nc net.Conn, why error) {
	if s.lingering.Add(1) > maxLingering {
		s.lingering.Add(-1)
		refuse(nc, why, false)
		return
	}
	go func() {
		defer s.lingering.Add(-1)
		refuse(nc, why, true)
	}()
}

// refuse turns a connection away before the SSH handshake and tells the
// client why, as far as the protocol allows: the server's identification,
// then SSH_MSG_DISCONNECT, which needs no key exchange (OpenSSH prints
// "Received disconnect from HOST port PORT:12: <why>"). With linger, the
// connection is then half-closed and drained until the client hangs up:
// closing a socket with unread input resets it, and the reset can
// overtake the message on its way to the client.
func refuse(nc net.Conn, why error, linger bool) {
	defer nc.Close()
	code := uint32(disconnectTooManyConnection)
	if errors.Is(why, errStopped) {
		code = disconnectByApplication
	}
	msg := append([]byte(serverVersion+"\r\n"), disconnectPacket(code, why.Error())...)
	// A fresh socket's send buffer takes this at once; the deadline only
	// guards against the impossible.
	_ = nc.SetWriteDeadline(time.Now().Add(time.Second))
	if _, err := nc.Write(msg); err != nil || !linger {
		return
	}
	if cw, ok := nc.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_ = nc.SetReadDeadline(time.Now().Add(lingerTimeout))
	_, _ = io.CopyN(io.Discard, nc, maxLingerBytes)
}

// disconnectPacket is an unencrypted SSH binary packet (RFC 4253, section
// 6) holding SSH_MSG_DISCONNECT, as sent before key exchange.
func disconnectPacket(code uint32, description string) []byte {
	const maxDescription = 400 // what OpenSSH prints of it
	if len(description) > maxDescription {
		description = description[:maxDescription]
	}
	payload := binary.BigEndian.AppendUint32([]byte{msgDisconnect}, code)
	payload = binary.BigEndian.AppendUint32(payload, uint32(len(description)))
	payload = append(payload, description...)
	payload = binary.BigEndian.AppendUint32(payload, 0) // language tag
	// Padding of at least 4 bytes makes length, padding length, payload
	// and padding a multiple of the cipher block size, 8 without a cipher.
	padding := 8 - (4+1+len(payload))%8
	if padding < 4 {
		padding += 8
	}
	pkt := binary.BigEndian.AppendUint32(nil, uint32(1+len(payload)+padding))
	pkt = append(pkt, byte(padding))
	pkt = append(pkt, payload...)
	pad := make([]byte, padding)
	_, _ = rand.Read(pad)
	return append(pkt, pad...)
}

// refuseSessions tells an authenticated client that was not admitted why:
// on the stderr of its first session, with exit status 1, as for a
// refused command (ssh prints that whatever its LogLevel, unlike the
// reason of a refused channel, which it logs at INFO). Other channels are
// refused with the reason. The connection ends when the client hangs up,
// or after HandshakeTimeout.
func (s *Server) refuseSessions(sc *ssh.ServerConn, chans <-chan ssh.NewChannel, why error) {
	t := time.AfterFunc(s.handshakeTimeout(), func() { sc.Close() })
	defer t.Stop()
	told := false
	for nch := range chans {
		if told || nch.ChannelType() != "session" {
			_ = nch.Reject(ssh.ResourceShortage, why.Error())
			continue
		}
		ch, reqs, err := nch.Accept()
		if err != nil {
			continue
		}
		told = true
		go func() {
			done := false
			for req := range reqs {
				if done || (req.Type != "exec" && req.Type != "shell") {
					if req.WantReply {
						_ = req.Reply(false, nil)
					}
					continue
				}
				done = true
				_ = req.Reply(true, nil)
				_, _ = fmt.Fprintf(ch.Stderr(), "decross-store: %v\n", why)
				finish(ch, 1)
			}
		}()
	}
}
