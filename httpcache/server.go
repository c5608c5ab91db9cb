package httpcache

import (
	"log/slog"
	"net/http"
	"time"
)

// Server limits: a client gets ReadHeaderTimeout to send its request
// line and headers, and a connection kept alive is closed after
// IdleTimeout without a request, so idle or slow clients hold no
// connection for long. GET and HEAD carry no body: ReadTimeout only bounds
// one sent anyway. Responses are bounded per write (Config.StallTimeout),
// not as a whole: a large NAR takes as long as it takes.
const (
	ReadHeaderTimeout = 10 * time.Second
	ReadTimeout       = 30 * time.Second
	IdleTimeout       = 2 * time.Minute
	MaxHeaderBytes    = 16 << 10
)

// NewServer returns an HTTP server for h with the limits above. The
// server's own errors (a malformed request, a TLS handshake on the plain
// port) are logged at debug level.
func NewServer(h http.Handler, logger *slog.Logger) *http.Server {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelDebug),
	}
}
